"""Who is responsible where: the inspectors of each unit grid (one primary, the others
standing in), staff absences and inspector profiles.

Plain functions over a SQLAlchemy ``Session``; the ``/api/v1/admin/...`` routes (verb
``admin:duties``) and the ``gridops duties`` commands are thin adapters over them. Each checks
its whole input first and raises ``InvalidInput`` naming every bad field, so nothing is
written on error; the caller commits and writes the audit record.

Administrators manage everything. Community, town and district managers hold ``admin:duties``
too, but only for their own area (``DutyScope``): the unit grids inside it, and the users who
are inspectors of a grid inside it (their absences and profiles). Anything else is not found.

Duties follow the grid *code* (unit grids are versioned; a regenerated grid keeps its code),
and an inspector may only be put on a grid their inspector role covers: the role says where
someone may work, the duty says who is on call for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import MANAGER_ROLES, Actor, area_prefix
from gridops.errors import Conflict, FieldError, InvalidInput, NotFound
from gridops.features import Layer
from gridops.incidents.admin import parse_day
from gridops.incidents.workcal import local_today
from gridops.incidents.workflow import NotAllowed

ADMIN_DUTIES = "admin:duties"
TRAVEL_MODES = ("walk", "bike", "drive")
MAX_TASKS_PER_DAY = 200  # the CHECK constraint of inspector_profile.tasks_per_day
MAX_NOTE = 500
GRID_CODE_RE = re.compile(r"^[0-9]{14,15}$")
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "primary", "是"})
FALSE_WORDS = frozenset({"", "0", "false", "f", "no", "n", "否"})


@dataclass(frozen=True)
class DutyScope:
    """Where an actor may manage duties: everywhere (admins, the CLI) or inside ``areas``."""

    everything: bool = False
    areas: tuple[str, ...] = ()

    @property
    def prefixes(self) -> list[str]:
        """LIKE patterns of the codes (grids, areas) inside the scope's areas."""
        return [area_prefix(a) + "%" for a in self.areas]

    def grid_condition(self, column: str) -> str:
        return "true" if self.everything else f"{column} LIKE ANY(:duty_prefixes)"

    def inspector_condition(self, user_column: str) -> str:
        """SQL: the user is an inspector of some unit grid inside the scope."""
        grids = "true" if self.everything else "gc LIKE ANY(:duty_prefixes)"
        return (
            "EXISTS (SELECT 1 FROM role_assignment r, unnest(r.grid_codes) AS gc "
            f"WHERE r.user_id = {user_column} AND r.role = 'inspector' AND {grids})"
        )

    def params(self) -> dict[str, Any]:
        return {"duty_prefixes": self.prefixes}


EVERYWHERE = DutyScope(everything=True)


def duty_scope(actor: Actor) -> DutyScope:
    """The actor's duty scope; NotAllowed (403) for anyone who is neither admin nor manager."""
    if actor.is_admin:
        return EVERYWHERE
    areas = tuple(
        sorted({a.area_code for a in actor.assignments if a.role in MANAGER_ROLES and a.area_code})
    )
    if not areas:
        raise NotAllowed("managing duties needs an administrator's or a manager's role")
    return DutyScope(areas=areas)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _person(row: Any) -> dict[str, Any]:
    return {"id": row.user_id, "username": row.username, "display_name": row.display_name}


# Components (部件) on the map, with who owns and who maintains each: scoped like enterprises
# (a point inside the reader's areas or grids). Loaded by ``gridops import components``.
COMPONENTS = Layer(
    "components",
    "部件 Components",
    "Managed public facilities (GB/T 30428.3) with their owner and maintainer departments.",
    "component",
    "id",
    (
        "code",
        "category_code",
        "category_name",
        "name",
        "owner",
        "owner_name",
        "maintainer",
        "maintainer_name",
    ),
    "Point",
    key_is_int=True,
    filters={"category": "category_code", "owner": "owner", "maintainer": "maintainer"},
    from_sql=(
        "(SELECT k.*, c.code AS category_code, c.name_zh AS category_name, od.code AS owner, "
        "od.name AS owner_name, md.code AS maintainer, md.name AS maintainer_name "
        "FROM component k JOIN category c ON c.id = k.category_id "
        "LEFT JOIN department od ON od.id = k.owner_department_id "
        "LEFT JOIN department md ON md.id = k.maintainer_department_id)"
    ),
)


# -- inspectors per unit grid ------------------------------------------------------------


def _check_grid(session: Session, scope: DutyScope, grid_code: str) -> str:
    """The code of a current unit grid inside the scope, else NotFound (the same for a grid
    that does not exist and for one outside the scope)."""
    found = None
    if GRID_CODE_RE.match(grid_code):
        found = session.execute(
            text(
                "SELECT code FROM unit_grid WHERE valid_to IS NULL AND code = :code "
                f"AND {scope.grid_condition('code')}"
            ),
            {"code": grid_code, **scope.params()},
        ).scalar()
    if found is None:
        raise NotFound(f"no unit grid {grid_code!r}")
    return str(found)


def grid_inspectors(session: Session, scope: DutyScope, grid_code: str) -> dict[str, Any]:
    """``{"grid_code", "primary": person | None, "stand_ins": [person, …]}`` of one grid."""
    code = _check_grid(session, scope, grid_code)
    return _grid_duties(session, code)


def _grid_duties(session: Session, grid_code: str) -> dict[str, Any]:
    rows = session.execute(
        text(
            "SELECT gi.user_id, gi.is_primary, u.username, u.display_name FROM grid_inspector gi "
            "JOIN app_user u ON u.id = gi.user_id WHERE gi.grid_code = :code "
            "ORDER BY gi.is_primary DESC, u.username"
        ),
        {"code": grid_code},
    ).all()
    primary = next((_person(r) for r in rows if r.is_primary), None)
    return {
        "grid_code": grid_code,
        "primary": primary,
        "stand_ins": [_person(r) for r in rows if not r.is_primary],
    }


def _inspectors_of(session: Session, grid_code: str, user_ids: Iterable[int]) -> set[int]:
    """Those of ``user_ids`` who are active users with an inspector role covering the grid."""
    return set(
        session.execute(
            text(
                "SELECT DISTINCT u.id FROM app_user u JOIN role_assignment r ON r.user_id = u.id "
                "AND r.role = 'inspector' AND :grid = ANY(r.grid_codes) "
                "WHERE u.is_active AND u.id = ANY(:ids)"
            ),
            {"grid": grid_code, "ids": list(user_ids)},
        ).scalars()
    )


def _write_grid(
    session: Session, grid_code: str, primary: int | None, stand_ins: Sequence[int]
) -> None:
    session.execute(text("DELETE FROM grid_inspector WHERE grid_code = :g"), {"g": grid_code})
    rows = [(primary, True)] if primary is not None else []
    rows += [(user_id, False) for user_id in stand_ins]
    for user_id, is_primary in rows:
        session.execute(
            text("INSERT INTO grid_inspector (grid_code, user_id, is_primary) VALUES (:g, :u, :p)"),
            {"g": grid_code, "u": user_id, "p": is_primary},
        )


def _lock_grid(session: Session, grid_code: str) -> None:
    # Two replacements of one grid at once would both delete, then collide on insert.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('grid_inspector:' || :g))"), {"g": grid_code}
    )


def replace_grid_inspectors(
    session: Session, scope: DutyScope, grid_code: str, body: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replace the inspectors of one grid: ``{"primary": user id | null, "stand_ins": [ids]}``.

    All at once (the old list is gone, the new one in place) or nothing: InvalidInput names
    every bad field, e.g. a user who is not an inspector of this grid. Returns (before, after).
    """
    code = _check_grid(session, scope, grid_code)
    errors: list[FieldError] = []
    for name in body:
        if name not in ("primary", "stand_ins"):
            errors.append(FieldError(name, "unknown field; primary, stand_ins"))
    if "primary" not in body:
        errors.append(FieldError("primary", "required: a user id, or null for no primary"))
    primary = body.get("primary")
    if primary is not None and not _is_id(primary):
        errors.append(FieldError("primary", "a user id, or null"))
        primary = None
    stand_ins = body.get("stand_ins", [])
    wanted: list[tuple[str, int]] = [("primary", primary)] if primary is not None else []
    if not isinstance(stand_ins, list):
        errors.append(FieldError("stand_ins", "a list of user ids"))
        stand_ins = []
    seen = {primary}
    for i, user_id in enumerate(stand_ins):
        if not _is_id(user_id):
            errors.append(FieldError(f"stand_ins[{i}]", "a user id"))
        elif user_id in seen:
            errors.append(FieldError(f"stand_ins[{i}]", f"user {user_id} is named twice"))
        else:
            seen.add(user_id)
            wanted.append((f"stand_ins[{i}]", user_id))
    inspectors = _inspectors_of(session, code, [user_id for _, user_id in wanted])
    for field, user_id in wanted:
        if user_id not in inspectors:
            errors.append(
                FieldError(field, f"user {user_id} is not an active inspector of unit grid {code}")
            )
    if errors:
        raise InvalidInput(f"the inspectors of unit grid {code} were not changed", errors)
    _lock_grid(session, code)
    before = _grid_duties(session, code)
    _write_grid(session, code, primary, [u for f, u in wanted if f != "primary"])
    return before, _grid_duties(session, code)


def import_grid_inspectors(session: Session, rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Replace the inspectors of every grid named in ``rows`` (``grid_code``, ``username``,
    ``primary``: yes/no, 1/0, true/false; empty is no), all or nothing.

    Row ``i`` is line ``i + 2`` of a CSV file with its header; every bad line is named. Grids
    the rows do not name keep their inspectors. At most one primary per grid.
    """
    errors: list[FieldError] = []
    by_grid: dict[str, dict[int, tuple[int, bool]]] = {}
    grid_codes = {(r.get("grid_code") or "").strip() for r in rows}
    current = set(
        session.execute(
            text("SELECT code FROM unit_grid WHERE valid_to IS NULL AND code = ANY(:c)"),
            {"c": sorted(grid_codes)},
        ).scalars()
    )
    usernames = {(r.get("username") or "").strip().lower() for r in rows}
    users: dict[str, int] = {
        r.username: r.id
        for r in session.execute(
            text("SELECT username, id FROM app_user WHERE is_active AND username = ANY(:u)"),
            {"u": sorted(usernames)},
        )
    }
    covered = {
        (r.user_id, r.gc)
        for r in session.execute(
            text(
                "SELECT r.user_id, gc FROM role_assignment r, unnest(r.grid_codes) AS gc "
                "WHERE r.role = 'inspector' AND r.user_id = ANY(:ids)"
            ),
            {"ids": list(users.values())},
        )
    }
    for i, row in enumerate(rows):
        line = f"line {i + 2}"
        grid = (row.get("grid_code") or "").strip()
        username = (row.get("username") or "").strip().lower()
        flag = (row.get("primary") or "").strip().lower()
        problems = []
        if grid not in current:
            problems.append(f"no current unit grid {grid!r}")
        user_id = users.get(username)
        if user_id is None:
            problems.append(f"no active user {username!r}")
        elif grid in current and (user_id, grid) not in covered:
            problems.append(f"{username} is not an inspector of unit grid {grid}")
        if flag not in TRUE_WORDS | FALSE_WORDS:
            problems.append(f"primary {flag!r} is not yes/no (1/0, true/false)")
        is_primary = flag in TRUE_WORDS
        if not problems and user_id is not None:
            duties = by_grid.setdefault(grid, {})
            if user_id in duties:
                problems.append(f"{username} is named twice for {grid} (line {duties[user_id][0]})")
            elif is_primary and any(p for _, p in duties.values()):
                first = next(n for n, p in duties.values() if p)
                problems.append(f"{grid} has a primary inspector already (line {first})")
            else:
                duties[user_id] = (i + 2, is_primary)
        errors += [FieldError(line, p) for p in problems]
    if not rows:
        errors.append(FieldError("file", "no rows"))
    if errors:
        raise InvalidInput(f"{len(errors)} problem(s); nothing was changed", errors)
    replaced = 0
    for grid, duties in sorted(by_grid.items()):
        _lock_grid(session, grid)
        replaced += session.execute(
            text("SELECT count(*) FROM grid_inspector WHERE grid_code = :g"), {"g": grid}
        ).scalar_one()
        primary = next((u for u, (_, p) in duties.items() if p), None)
        _write_grid(session, grid, primary, [u for u, (_, p) in duties.items() if not p])
    return {
        "grids": len(by_grid),
        "inspectors": sum(len(d) for d in by_grid.values()),
        "replaced": replaced,
    }


# -- absences ------------------------------------------------------------------------------


def _absence_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": {"id": row.user_id, "username": row.username, "display_name": row.display_name},
        "starts_on": row.starts_on.isoformat(),
        "ends_on": row.ends_on.isoformat(),
        "note": row.note,
    }


_ABSENCE_SELECT = (
    "SELECT a.id, a.user_id, a.starts_on, a.ends_on, a.note, u.username, u.display_name "
    "FROM staff_absence a JOIN app_user u ON u.id = a.user_id"
)


def _person_in_scope(session: Session, scope: DutyScope, user_id: int) -> bool:
    """An active user the scope may manage: anyone for admins, an inspector of a grid in the
    area for managers."""
    return bool(
        session.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM app_user u WHERE u.id = :id AND u.is_active "
                f"AND {'true' if scope.everything else scope.inspector_condition('u.id')})"
            ),
            {"id": user_id, **scope.params()},
        ).scalar()
    )


def list_absences(
    session: Session, scope: DutyScope, *, user_id: int | None = None, since: date | None = None
) -> list[dict[str, Any]]:
    """Absences ending on or after ``since`` (default today), of one user or all in scope."""
    people = "true" if scope.everything else scope.inspector_condition("a.user_id")
    rows = session.execute(
        text(
            f"{_ABSENCE_SELECT} WHERE a.ends_on >= :since AND {people} "
            "AND (CAST(:user AS bigint) IS NULL OR a.user_id = :user) "
            "ORDER BY a.starts_on, u.username, a.id"
        ),
        {"since": since or local_today(), "user": user_id, **scope.params()},
    ).all()
    return [_absence_dict(r) for r in rows]


def add_absence(session: Session, scope: DutyScope, body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"user": id, "starts_on": "YYYY-MM-DD", "ends_on": …, "note": …}``: the user is off
    on those days (both included), so routing passes their grids to a stand-in.

    InvalidInput names every bad field; Conflict (409) when it overlaps an absence of the same
    user that is stored already (a retried request, or a typing error).
    """
    errors: list[FieldError] = []
    for name in body:
        if name not in ("user", "starts_on", "ends_on", "note"):
            errors.append(FieldError(name, "unknown field; user, starts_on, ends_on, note"))
    user_id = body.get("user")
    if not _is_id(user_id):
        errors.append(FieldError("user", "a user id"))
    elif not _person_in_scope(session, scope, user_id):
        who = "an active user" if scope.everything else "an active inspector in your area"
        errors.append(FieldError("user", f"user {user_id} is not {who}"))
    days: dict[str, date] = {}
    for name in ("starts_on", "ends_on"):
        try:
            days[name] = parse_day(body.get(name), name)
        except InvalidInput as exc:
            errors += exc.errors
    if len(days) == 2 and days["ends_on"] < days["starts_on"]:
        errors.append(FieldError("ends_on", "is before starts_on"))
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        errors.append(FieldError("note", f"text of at most {MAX_NOTE} characters"))
    if errors:
        raise InvalidInput("the absence was not recorded", errors)
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('staff_absence:' || :u))"), {"u": user_id}
    )
    overlap = session.execute(
        text(
            "SELECT id, starts_on, ends_on FROM staff_absence WHERE user_id = :u "
            "AND starts_on <= :e AND ends_on >= :s ORDER BY starts_on LIMIT 1"
        ),
        {"u": user_id, "s": days["starts_on"], "e": days["ends_on"]},
    ).first()
    if overlap is not None:
        raise Conflict(
            f"user {user_id} is absent from {overlap.starts_on} to {overlap.ends_on} already "
            f"(absence {overlap.id})",
            [FieldError("starts_on", f"overlaps absence {overlap.id}")],
        )
    made = session.execute(
        text(
            "INSERT INTO staff_absence (user_id, starts_on, ends_on, note) "
            "VALUES (:u, :s, :e, :n) RETURNING id"
        ),
        {"u": user_id, "s": days["starts_on"], "e": days["ends_on"], "n": note.strip()},
    ).scalar_one()
    return _absence(session, scope, made)


def _absence(session: Session, scope: DutyScope, absence_id: int) -> dict[str, Any]:
    people = "true" if scope.everything else scope.inspector_condition("a.user_id")
    row = session.execute(
        text(f"{_ABSENCE_SELECT} WHERE a.id = :id AND {people}"),
        {"id": absence_id, **scope.params()},
    ).first()
    if row is None:
        raise NotFound(f"no absence {absence_id}")
    return _absence_dict(row)


def remove_absence(session: Session, scope: DutyScope, absence_id: int) -> dict[str, Any]:
    """Delete an absence (the user is back); returns it. NotFound outside the scope."""
    record = _absence(session, scope, absence_id)
    session.execute(text("DELETE FROM staff_absence WHERE id = :id"), {"id": absence_id})
    return record


# -- inspector profiles --------------------------------------------------------------------


def _inspector(session: Session, scope: DutyScope, user_id: int) -> Any:
    row = session.execute(
        text(
            "SELECT u.id AS user_id, u.username, u.display_name FROM app_user u "
            f"WHERE u.id = :id AND u.is_active AND {scope.inspector_condition('u.id')}"
        ),
        {"id": user_id, **scope.params()},
    ).first()
    if row is None:
        raise NotFound(f"no inspector {user_id}")
    return row


def inspector_profile(session: Session, scope: DutyScope, user_id: int) -> dict[str, Any]:
    """An inspector's capacity (tasks per day), travel mode and home point (the defaults when
    none is stored: ``stored`` says which)."""
    person = _inspector(session, scope, user_id)
    row = session.execute(
        text(
            "SELECT tasks_per_day, travel_mode, ST_X(home) AS lon, ST_Y(home) AS lat "
            "FROM inspector_profile WHERE user_id = :id"
        ),
        {"id": user_id},
    ).first()
    profile = {
        "user": _person(person),
        "tasks_per_day": 12,
        "travel_mode": "walk",
        "home": None,
        "stored": row is not None,
    }
    if row is not None:
        profile.update(tasks_per_day=row.tasks_per_day, travel_mode=row.travel_mode)
        if row.lon is not None:
            profile["home"] = {"lon": row.lon, "lat": row.lat}
    return profile


def _home(errors: list[FieldError], value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"lon", "lat"}:
        errors.append(FieldError("home", '{"lon": …, "lat": …} or null'))
        return None
    out = []
    for name, limit in (("lon", 180), ("lat", 90)):
        number = value[name]
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not -limit <= number <= limit  # first: isfinite() overflows on a huge int
            or not math.isfinite(number)
        ):
            errors.append(FieldError(f"home.{name}", f"a number within -{limit}..{limit}"))
        else:
            out.append(float(number))
    return (out[0], out[1]) if len(out) == 2 else None


def set_inspector_profile(
    session: Session, scope: DutyScope, user_id: int, body: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set the fields given of ``tasks_per_day`` (0–200), ``travel_mode`` (walk, bike, drive)
    and ``home`` (``{"lon", "lat"}`` or null); the others keep their value (or default).
    Returns (before, after)."""
    before = inspector_profile(session, scope, user_id)  # NotFound first
    errors: list[FieldError] = []
    allowed = ("tasks_per_day", "travel_mode", "home")
    for name in body:
        if name not in allowed:
            errors.append(FieldError(name, f"unknown field; one of {', '.join(allowed)}"))
    if not body:
        errors.append(FieldError("body", f"send at least one of {', '.join(allowed)}"))
    values = {
        "tasks_per_day": before["tasks_per_day"],
        "travel_mode": before["travel_mode"],
        "lon": (before["home"] or {}).get("lon"),
        "lat": (before["home"] or {}).get("lat"),
    }
    if "tasks_per_day" in body:
        tasks = body["tasks_per_day"]
        if not isinstance(tasks, int) or isinstance(tasks, bool) or not 0 <= tasks <= 200:
            errors.append(FieldError("tasks_per_day", f"a whole number 0–{MAX_TASKS_PER_DAY}"))
        values["tasks_per_day"] = tasks
    if "travel_mode" in body:
        if body["travel_mode"] not in TRAVEL_MODES:
            errors.append(FieldError("travel_mode", f"one of {', '.join(TRAVEL_MODES)}"))
        values["travel_mode"] = body["travel_mode"]
    if "home" in body:
        home = _home(errors, body["home"])
        values["lon"], values["lat"] = home if home else (None, None)
    if errors:
        raise InvalidInput(f"the profile of inspector {user_id} was not changed", errors)
    session.execute(
        text(
            "INSERT INTO inspector_profile (user_id, tasks_per_day, travel_mode, home) "
            "VALUES (:id, :tasks, :mode, CASE WHEN CAST(:lon AS float8) IS NULL THEN NULL "
            "ELSE ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) END) "
            "ON CONFLICT (user_id) DO UPDATE SET tasks_per_day = EXCLUDED.tasks_per_day, "
            "travel_mode = EXCLUDED.travel_mode, home = EXCLUDED.home"
        ),
        {
            "id": user_id,
            "tasks": values["tasks_per_day"],
            "mode": values["travel_mode"],
            "lon": values["lon"],
            "lat": values["lat"],
        },
    )
    return before, inspector_profile(session, scope, user_id)


__all__ = [
    "ADMIN_DUTIES",
    "COMPONENTS",
    "EVERYWHERE",
    "DutyScope",
    "add_absence",
    "duty_scope",
    "grid_inspectors",
    "import_grid_inspectors",
    "inspector_profile",
    "list_absences",
    "remove_absence",
    "replace_grid_inspectors",
    "set_inspector_profile",
]

"""The dispatcher's queue, bulk assignment and the workload of inspectors and departments.

Only dispatchers use these (community, town and district managers, and admins): their
jurisdiction here is the areas of their manager roles (an inspector role elsewhere adds
nothing). A case outside it is never listed or counted, and assigning it is "not found".

**The queue** holds the open cases that wait on a dispatcher or are at risk, in this order:

1. *unassigned*: nobody is assigned (``assignee_id`` NULL) and the case waits on the
   dispatchers: verified / filed / returned / checked / extension_requested, and reported
   cases that found no inspector on duty to verify them;
2. *returned* (by the department) but already given to someone;
3. *overdue*: the handling deadline has passed (``deadline_at < now``);
4. *due soon*: less than a fifth (``clock.WARN_SHARE``) of the case's handling time limit
   is left, in working hours on the working calendar.

A case is in the first group that applies (its ``overdue`` and ``warning`` flags say the
rest). Within a group: earliest handling deadline first (none last), then the oldest
received, then the id. Pages are keyset pages on that order; as time passes a case may move
up a group (due soon → overdue), so a later page may miss a case that moved onto an earlier
one: reload the first page to see everything that changed.

**Bulk assignment** is all or nothing: each item has its own version guard; if any item fails
(404, 412, 409, 422, 403) nothing is written and the answer lists every failing item.

**Workload**: per person (inspectors of the area's grids, and anyone holding an open case of
the area) and per department (those serving the area or holding an open case of it): open
cases, due today (the deadline lies later today, local time: not yet overdue), overdue, and for
people the open inspection tasks due today.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor, Assignment, area_prefix
from gridops.errors import FieldError, GridopsError, InvalidInput
from gridops.incidents.cases import assign
from gridops.incidents.clock import WARN_SHARE, load_calendar
from gridops.incidents.workcal import TZ
from gridops.incidents.workflow import DISPATCH, NotAllowed, allowed_actions
from gridops.parsing import is_digits

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_BULK = 200
# The states in which a case waits on the dispatchers (cases.WAITS_ON gives them no
# assignee), and "reported" for a report nobody could be found to verify.
WAITING_ON_DISPATCH = (
    "reported",
    "verified",
    "filed",
    "returned",
    "checked",
    "extension_requested",
)
GROUPS = ("unassigned", "returned", "overdue", "due_soon")
# The department is working on these (its workload); parked cases wait on nobody.
DEPARTMENT_STATES = ("dispatched", "in_handling", "extension_requested")


@dataclass(frozen=True)
class Jurisdiction:
    """The areas an actor dispatches in (``everything`` for admins)."""

    everything: bool = False
    areas: tuple[str, ...] = ()

    def case_condition(self, geom: str = "t.geom") -> str:
        if self.everything:
            return "true"
        # The box test lets the GiST index skip far-away cases before the exact test.
        return (
            f"{geom} && (SELECT ST_SetSRID(ST_Extent(jb.geom)::geometry, 4326) FROM admin_area "
            f"jb WHERE jb.code = ANY(:j_areas)) AND EXISTS (SELECT 1 FROM admin_area ja "
            f"WHERE ja.code = ANY(:j_areas) AND ST_Covers(ja.geom, {geom}))"
        )

    def params(self) -> dict[str, Any]:
        return {
            "j_areas": list(self.areas),
            "j_prefixes": [area_prefix(a) + "%" for a in self.areas],
        }


def jurisdiction(actor: Actor) -> Jurisdiction:
    """Where the actor dispatches; NotAllowed (403) without a dispatcher's role."""
    if actor.is_admin:
        return Jurisdiction(everything=True)
    areas = sorted({a.area_code for a in actor.assignments if a.role in DISPATCH and a.area_code})
    if not areas:
        raise NotAllowed("the dispatch queue needs a community, town or district manager's role")
    return Jurisdiction(areas=tuple(areas))


# -- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCursor:
    rank: int
    deadline: str  # ISO time, or 'infinity' for none
    received_at: str
    case_id: int


def encode_cursor(cursor: QueueCursor) -> str:
    raw = json.dumps([cursor.rank, cursor.deadline, cursor.received_at, cursor.case_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> QueueCursor:
    try:
        rank, deadline, received_at, case_id = json.loads(
            base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        )
        if deadline != "infinity":
            datetime.fromisoformat(deadline)
        datetime.fromisoformat(received_at)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, case_id)):
            raise ValueError
        return QueueCursor(rank, deadline, received_at, case_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "cursor is not valid", [FieldError("cursor", "use the next link as given")]
        ) from None


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not is_digits(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(
            f"limit is a whole number from 1 to {MAX_LIMIT}", [FieldError("limit", f"{raw!r}")]
        )
    return int(raw)


def soon_thresholds(
    session: Session, where: Jurisdiction, now: datetime
) -> tuple[list[int], list[datetime]]:
    """For each handling time limit of open cases with a deadline: the moment before which a
    deadline leaves less than WARN_SHARE of the limit, in working hours from ``now``."""
    limits = (
        session.execute(
            text(
                "SELECT DISTINCT t.time_limit_hours FROM incident t "
                "WHERE t.deadline_at IS NOT NULL AND t.time_limit_hours IS NOT NULL "
                "AND t.status NOT IN ('closed', 'void') "
                f"AND {where.case_condition()}"
            ),
            where.params(),
        )
        .scalars()
        .all()
    )
    calendar = load_calendar(session)
    return list(limits), [calendar.add_working_hours(now, WARN_SHARE * h) for h in limits]


def role_columns(actor: Actor) -> tuple[str, dict[str, Any], list[Assignment]]:
    """A boolean column per role assignment: does it cover the case (``q.geom``)?"""
    columns, params, kept = [], {}, []
    for n, a in enumerate(actor.assignments):
        if a.role == "admin":
            continue
        if a.role == "inspector":
            params[f"rg_{n}"] = list(a.grid_codes)
            sql = (
                "EXISTS (SELECT 1 FROM unit_grid rg WHERE rg.valid_to IS NULL "
                f"AND rg.code = ANY(:rg_{n}) AND ST_Covers(rg.geom, q.geom))"
            )
        else:
            params[f"ra_{n}"] = list(a.areas)
            sql = (
                f"EXISTS (SELECT 1 FROM admin_area ra WHERE ra.code = ANY(:ra_{n}) "
                "AND ST_Covers(ra.geom, q.geom))"
            )
        columns.append(f"{sql} AS role_{len(kept)}")
        kept.append(a)
    return "".join(f", {c}" for c in columns), params, kept


def queue_page(
    session: Session,
    actor: Actor,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: QueueCursor | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the actor's queue (see the module docstring) and the next cursor."""
    where = jurisdiction(actor)
    now = now or session.execute(text("SELECT now()")).scalar_one()
    limits, soon = soon_thresholds(session, where, now)
    role_sql, role_params, assignments = role_columns(actor)
    params: dict[str, Any] = {
        **where.params(),
        **role_params,
        "now": now,
        "limits": limits,
        "soon": soon,
        "waiting": list(WAITING_ON_DISPATCH),
        "limit": limit + 1,
    }
    in_queue = ["r.rank IS NOT NULL"]
    if cursor is not None:
        in_queue.append(
            "(r.rank, r.deadline_key, r.received_at, r.id) > (:after_rank, "
            "CAST(:after_deadline AS timestamptz), CAST(:after_received AS timestamptz), "
            ":after_id)"
        )
        params.update(
            after_rank=cursor.rank,
            after_deadline=cursor.deadline,
            after_received=cursor.received_at,
            after_id=cursor.case_id,
        )
    rows = session.execute(
        text(
            f"""
            WITH soon AS (
                SELECT * FROM unnest(CAST(:limits AS integer[]), CAST(:soon AS timestamptz[]))
                    AS s (limit_hours, before)
            ),
            flagged AS (
                SELECT t.*, coalesce(t.deadline_at < :now, false) AS overdue,
                       coalesce(t.deadline_at >= :now AND t.deadline_at < s.before, false)
                           AS warning
                FROM incident t LEFT JOIN soon s ON s.limit_hours = t.time_limit_hours
                WHERE t.status NOT IN ('closed', 'void') AND {where.case_condition()}
            ),
            ranked AS (
                SELECT f.*, CASE
                    WHEN f.assignee_id IS NULL AND f.status = ANY(:waiting) THEN 0
                    WHEN f.status = 'returned' THEN 1
                    WHEN f.overdue THEN 2
                    WHEN f.warning THEN 3 END AS rank,
                    coalesce(f.deadline_at, 'infinity'::timestamptz) AS deadline_key
                FROM flagged f
            )
            SELECT q.id, q.status, q.version, q.rank, q.deadline_key::text AS deadline_key,
                   q.received_at, q.received_at::text AS received_key, q.deadline_at,
                   q.overdue, q.warning, ST_X(q.geom) AS lon, ST_Y(q.geom) AS lat,
                   c.code AS category_code, c.name_zh AS category_name, g.code AS grid_code,
                   d.code AS department_code, d.name AS department_name,
                   u.id AS assignee_id, u.username AS assignee_username,
                   u.display_name AS assignee_name, q.assigned_at,
                   route.department_code AS route_department_code,
                   route.department_name AS route_department_name,
                   route.reason AS route_reason, route.at AS route_at
                   {role_sql}
            FROM (SELECT * FROM ranked r WHERE {" AND ".join(in_queue)}
                  ORDER BY r.rank, r.deadline_key, r.received_at, r.id LIMIT :limit) AS q
            JOIN category c ON c.id = q.category_id
            LEFT JOIN unit_grid g ON g.id = q.grid_id
            LEFT JOIN department d ON d.id = q.department_id
            LEFT JOIN app_user u ON u.id = q.assignee_id
            LEFT JOIN LATERAL (
                SELECT rd.code AS department_code, rd.name AS department_name, cd.reason, cd.at
                FROM case_decision cd LEFT JOIN department rd ON rd.id = cd.department_id
                WHERE cd.incident_id = q.id AND cd.kind = 'route'
                ORDER BY cd.id DESC LIMIT 1
            ) AS route ON true
            ORDER BY q.rank, q.deadline_key, q.received_at, q.id
            """
        ),
        params,
    ).all()
    items = [_item(row, assignments) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(
            QueueCursor(last.rank, last.deadline_key, last.received_key, last.id)
        )
    return items, next_cursor


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def department_of(row: Any) -> dict[str, str] | None:
    """A case row's department (``department_code``/``_name`` columns) as the API shows it."""
    if not row.department_code:
        return None
    return {"code": row.department_code, "name": row.department_name}


def assignee_of(row: Any) -> dict[str, Any] | None:
    """A case row's assignee (``assignee_id``/``_username``/``_name`` columns) as the API
    shows it."""
    if not row.assignee_id:
        return None
    return {
        "id": row.assignee_id,
        "username": row.assignee_username,
        "display_name": row.assignee_name,
    }


def _item(row: Any, assignments: Sequence[Assignment]) -> dict[str, Any]:
    roles = {a.role for n, a in enumerate(assignments) if getattr(row, f"role_{n}")}
    return {
        "id": row.id,
        "status": row.status,
        "version": row.version,
        "group": GROUPS[row.rank],
        "category": {"code": row.category_code, "name": row.category_name},
        "grid_code": row.grid_code,
        "point": [row.lon, row.lat],
        "department": department_of(row),
        "assignee": assignee_of(row),
        "assigned_at": iso(row.assigned_at),
        "received_at": iso(row.received_at),
        "deadline_at": iso(row.deadline_at),
        "overdue": row.overdue,
        "warning": row.warning,
        "suggestion": (
            {
                "department": (
                    {"code": row.route_department_code, "name": row.route_department_name}
                    if row.route_department_code
                    else None
                ),
                "reason": row.route_reason,
                "at": iso(row.route_at),
            }
            if row.route_reason is not None
            else None
        ),
        "actions": allowed_actions(row.status, roles),
    }


# -- bulk assignment -----------------------------------------------------------------------


@dataclass
class BulkRejected(GridopsError):
    """Some items failed; nothing was written. ``failures``: one entry per failing item."""

    status: int = 422
    title: str = "Bulk assignment refused"
    type_slug: str = "bulk-rejected"
    failures: list[dict[str, Any]] = field(default_factory=list)


def parse_bulk(body: Mapping[str, Any]) -> dict[str, Any]:
    """The validated body of a bulk assignment: items, assignee, department, note."""
    errors: list[FieldError] = []
    for name in body:
        if name not in ("items", "assignee", "department", "note"):
            errors.append(FieldError(name, "unknown field; items, assignee, department, note"))
    items = body.get("items")
    parsed: list[tuple[int, int]] = []
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK:
        errors.append(FieldError("items", f'1 to {MAX_BULK} of {{"id": …, "version": …}}'))
        items = []
    seen: dict[int, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"id", "version"}:
            errors.append(FieldError(f"items[{i}]", '{"id": case id, "version": its version}'))
            continue
        case_id, version = item["id"], item["version"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (case_id, version)):
            errors.append(FieldError(f"items[{i}]", "id and version are whole numbers"))
        elif case_id in seen:
            errors.append(
                FieldError(f"items[{i}]", f"case {case_id} is items[{seen[case_id]}] too")
            )
        else:
            seen[case_id] = i
            parsed.append((case_id, version))
    fields = _assignment_fields(body, errors)
    if errors:
        raise InvalidInput("the bulk assignment is not valid", errors)
    return {"items": parsed, **fields}


def parse_assignment(body: Mapping[str, Any]) -> dict[str, Any]:
    """The validated body of one assignment: assignee (user id), department (code), note."""
    errors: list[FieldError] = []
    for name in body:
        if name not in ("assignee", "department", "note"):
            errors.append(FieldError(name, "unknown field; assignee, department, note"))
    fields = _assignment_fields(body, errors)
    if errors:
        raise InvalidInput("the assignment is not valid", errors)
    return fields


def _assignment_fields(body: Mapping[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    assignee, department, note = body.get("assignee"), body.get("department"), body.get("note", "")
    if assignee is not None and (not isinstance(assignee, int) or isinstance(assignee, bool)):
        errors.append(FieldError("assignee", "a user id"))
    if department is not None and (not isinstance(department, str) or not department.strip()):
        errors.append(FieldError("department", "a department code"))
    if assignee is None and department is None:
        errors.append(FieldError("assignee", "name an assignee, a department or both"))
    if not isinstance(note, str):
        errors.append(FieldError("note", "text"))
    return {
        "assignee_id": assignee,
        "department": department.strip() if isinstance(department, str) else None,
        "note": note if isinstance(note, str) else "",
    }


def bulk_assign(
    session: Session,
    actor: Actor,
    items: Sequence[tuple[int, int]],
    *,
    assignee_id: int | None = None,
    department: str | None = None,
    note: str = "",
) -> list[dict[str, Any]]:
    """Assign every ``(case id, expected version)`` through ``cases.assign``, all or nothing.

    Cases are locked in id order (two overlapping batches cannot deadlock). On any failure the
    whole batch is rolled back to where it started and BulkRejected lists each failing item:
    its status is the items' common status (e.g. 412: reload them), else 422.
    """
    jurisdiction(actor)  # 403 for non-dispatchers before anything is looked at
    index = {case_id: i for i, (case_id, _) in enumerate(items)}
    done: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    batch = session.begin_nested()
    for case_id, version in sorted(items):
        try:
            with session.begin_nested():
                done.append(
                    assign(
                        session,
                        case_id,
                        actor,
                        expected_version=version,
                        assignee_id=assignee_id,
                        department=department,
                        note=note,
                    )
                )
        except GridopsError as exc:
            failures.append(
                {
                    "index": index[case_id],
                    "id": case_id,
                    "status": exc.status,
                    "type": f"/problems/{exc.type_slug}",
                    "detail": exc.detail,
                    "errors": [e.as_dict() for e in exc.errors],
                }
            )
    if failures:
        batch.rollback()
        failures.sort(key=lambda f: f["index"])
        statuses = {f["status"] for f in failures}
        raise BulkRejected(
            f"{len(failures)} of {len(items)} cases cannot be assigned; nothing was changed",
            [FieldError(f"items[{f['index']}]", f"{f['status']}: {f['detail']}") for f in failures],
            status=statuses.pop() if len(statuses) == 1 else 422,
            failures=failures,
        )
    batch.commit()
    done.sort(key=lambda d: index[d["id"]])
    return done


# -- workload ------------------------------------------------------------------------------


def workload(session: Session, actor: Actor, *, now: datetime | None = None) -> dict[str, Any]:
    """Open, due-today and overdue cases per person and department in the actor's
    jurisdiction, and each person's open inspection tasks due today."""
    where = jurisdiction(actor)
    now = now or session.execute(text("SELECT now()")).scalar_one()
    today = now.astimezone(TZ).date()
    tomorrow = datetime.combine(today + timedelta(days=1), time(0), TZ)
    params = {
        **where.params(),
        "now": now,
        "tomorrow": tomorrow,
        "today": today,
        "dept_states": list(DEPARTMENT_STATES),
    }
    anywhere = "true" if where.everything else None
    open_cases = (
        "SELECT t.id, t.assignee_id, t.department_id, t.status, t.deadline_at FROM incident t "
        f"WHERE t.status NOT IN ('closed', 'void') AND {where.case_condition()}"
    )
    people = session.execute(
        text(
            f"""
            WITH cases AS ({open_cases}),
            people AS (
                SELECT r.user_id FROM role_assignment r, unnest(r.grid_codes) AS gc
                WHERE r.role = 'inspector' AND {anywhere or "gc LIKE ANY(:j_prefixes)"}
                UNION SELECT gi.user_id FROM grid_inspector gi
                WHERE {anywhere or "gi.grid_code LIKE ANY(:j_prefixes)"}
                UNION SELECT assignee_id FROM cases WHERE assignee_id IS NOT NULL
            )
            SELECT u.id, u.username, u.display_name,
                   count(c.id) AS open,
                   count(c.id) FILTER (WHERE c.deadline_at >= :now
                                       AND c.deadline_at < :tomorrow) AS due_today,
                   count(c.id) FILTER (WHERE c.deadline_at < :now) AS overdue,
                   (SELECT count(*) FROM inspection_task k WHERE k.assignee_id = u.id
                    AND k.due_on = :today AND k.status = 'open') AS tasks_today
            FROM people p JOIN app_user u ON u.id = p.user_id AND u.is_active
            LEFT JOIN cases c ON c.assignee_id = u.id
            GROUP BY u.id ORDER BY u.username
            """
        ),
        params,
    ).all()
    serving = anywhere or (
        "(d.area_code LIKE ANY(:j_prefixes) OR EXISTS (SELECT 1 FROM unnest("
        "CAST(:j_areas AS text[])) AS ja (code) WHERE ja.code LIKE (CASE WHEN "
        "length(d.area_code) = 6 AND d.area_code LIKE '%00' THEN left(d.area_code, 4) "
        "ELSE d.area_code END) || '%'))"
    )
    departments = session.execute(
        text(
            f"""
            WITH cases AS ({open_cases})
            SELECT d.id, d.code, d.name, d.kind,
                   count(c.id) AS open,
                   count(c.id) FILTER (WHERE c.deadline_at >= :now
                                       AND c.deadline_at < :tomorrow) AS due_today,
                   count(c.id) FILTER (WHERE c.deadline_at < :now) AS overdue
            FROM department d
            LEFT JOIN cases c ON c.department_id = d.id AND c.status = ANY(:dept_states)
            WHERE {serving} OR EXISTS (SELECT 1 FROM cases x WHERE x.department_id = d.id)
            GROUP BY d.id ORDER BY d.code
            """
        ),
        params,
    ).all()
    return {
        "day": today.isoformat(),
        "people": [
            {
                "id": r.id,
                "username": r.username,
                "display_name": r.display_name,
                "open": r.open,
                "due_today": r.due_today,
                "overdue": r.overdue,
                "tasks_today": r.tasks_today,
            }
            for r in people
        ],
        "departments": [
            {
                "id": r.id,
                "code": r.code,
                "name": r.name,
                "kind": r.kind,
                "open": r.open,
                "due_today": r.due_today,
                "overdue": r.overdue,
            }
            for r in departments
        ],
    }


__all__ = [
    "GROUPS",
    "BulkRejected",
    "QueueCursor",
    "bulk_assign",
    "decode_cursor",
    "jurisdiction",
    "parse_assignment",
    "parse_bulk",
    "queue_page",
    "workload",
]

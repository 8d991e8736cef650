"""The case list (the dispatcher's queue and map) and the duplicate hint, over a Session; the
thin HTTP routes are at the end.

Cases come as the incidents layer shows them (``gridops.features``): restricted readers
(planners, department handlers) get no reporter, no point (their H3 cell instead), and a bbox
filters them by snapped points. Order: newest received first, ``(received_at, id)``
descending, with keyset paging. ``received_at`` never changes, so pages stay exact while cases
move through the workflow (an ``updated_at`` order would skip a case updated between two
pages); cases received after the first page sort before it and do not show up later.

The duplicate hint gives exact distances, so it lists only cases the actor sees in full, and
its routes need ``write:incidents``: it serves those who file reports and mark duplicates
(inspectors and managers), not planners or departments, whose view hides points.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.api import actor_scope, feature_page_response
from gridops.auth.actor import MANAGER_ROLES, Actor, Scope
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.features import (
    LAYERS,
    MAX_LIMIT,
    RESTRICTED_SNAP_DEG,
    feature_as_seen,
    feature_select,
    parse_bbox,
)
from gridops.grids.locate import check_lonlat
from gridops.incidents.workcal import TZ
from gridops.incidents.workflow import FINAL_STATES, STATES

DEFAULT_LIMIT = 100
DUPLICATE_LIMIT = 10
OPEN = "open"  # status filter shorthand: every state but the final ones
OPEN_STATES = tuple(s for s in STATES if s not in FINAL_STATES)
# The SQL form matches the predicate of incident_open_deadline_idx, so the planner can use it.
OPEN_SQL = "t.status NOT IN ('closed', 'void')"
OVERDUE_SQL = f"({OPEN_SQL} AND t.deadline_at < now())"

# "Waiting on me": the states in which a case waits on each kind of role.
WAITING_ON_DEPARTMENT = ("dispatched", "in_handling")
WAITING_ON_MANAGER = ("verified", "filed", "returned", "extension_requested", "checked")

CATEGORY_RE = re.compile(r"^[A-Z][0-9]{2}(?:[0-9]{2})?$")  # E05 (major) or E0502 (minor)
AREA_RE = re.compile(r"^[0-9]{6}(?:[0-9]{3}){0,2}$")  # district, town or community code
PARAMETERS = frozenset(
    {"status", "category", "area", "from", "to", "overdue", "assigned", "bbox", "limit", "cursor"}
)

_CASE_PROPERTIES = (
    "category_code",
    "category_name",
    "reported_at",
    "received_at",
    "source",
    "grid_code",
    "status",
    "version",
    "deadline_at",
    "overdue",
    "department",
    "department_name",
    "duplicate_of",
)
# The incidents layer with the case's workflow columns: same scope rules, same restricted view.
CASES = replace(
    LAYERS["incidents"],
    id="cases",
    title="案件 Cases",
    properties=(*_CASE_PROPERTIES, "reporter_name", "reporter_phone", "device_id"),
    restricted_properties=_CASE_PROPERTIES,
    from_sql=(
        "(SELECT i.*, c.code AS category_code, c.name_zh AS category_name, "
        "g.code AS grid_code, d.code AS department, d.name AS department_name, "
        "coalesce(i.status NOT IN ('closed', 'void') AND i.deadline_at < now(), false) "
        "AS overdue FROM incident i JOIN category c ON c.id = i.category_id "
        "LEFT JOIN unit_grid g ON g.id = i.grid_id "
        "LEFT JOIN department d ON d.id = i.department_id)"
    ),
)


@dataclass(frozen=True)
class CaseQuery:
    """The validated filters, paging and position of one page of the case list."""

    statuses: tuple[str, ...] | None = None
    category_ids: tuple[int, ...] | None = None
    area: str | None = None
    reported_from: datetime | None = None
    reported_to: datetime | None = None
    overdue: bool | None = None
    assigned_to_me: bool = False
    bbox: tuple[float, float, float, float] | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[datetime, int] | None = None  # (received_at, id) of the last case seen


# -- parameters ----------------------------------------------------------------------------


def encode_cursor(received_at: datetime, case_id: int) -> str:
    raw = json.dumps([received_at.isoformat(), case_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[datetime, int]:
    """The position an opaque cursor holds; InvalidInput naming ``cursor`` if it is not one."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        at, case_id = decoded
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or isinstance(case_id, bool) or not isinstance(case_id, int):
            raise ValueError
        return when, case_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "cursor is not valid", [FieldError("cursor", "use the next link as given")]
        ) from None


def _parse_time(name: str, raw: str) -> datetime:
    """A date (a whole day) or an ISO datetime; without an offset it is Foshan local time."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"{name} must be a date or an ISO 8601 datetime",
            [FieldError(name, f"{raw!r} is not YYYY-MM-DD or an ISO datetime (send '+' as %2B)")],
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=TZ)


def _parse_limit(raw: str) -> int:
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(
            "limit must be a whole number", [FieldError("limit", f"{raw!r} is not a number")]
        ) from None
    if limit < 1:
        raise InvalidInput("limit must be at least 1", [FieldError("limit", f"{limit} < 1")])
    return min(limit, MAX_LIMIT)  # a larger page is clamped, as OGC API - Features allows


def _parse_statuses(raw: str) -> tuple[str, ...]:
    wanted: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if part == OPEN:
            wanted += OPEN_STATES
        elif part in STATES:
            wanted.append(part)
        else:
            raise InvalidInput(
                f"status {part!r} is not a case state",
                [FieldError("status", f"comma-separated, from: {OPEN}, {', '.join(STATES)}")],
            )
    return tuple(dict.fromkeys(wanted))


def _category_ids(session: Session, raw: str) -> tuple[int, ...]:
    code = raw.strip().upper()
    if not CATEGORY_RE.match(code):
        raise InvalidInput(
            f"category {raw!r} is not a category code",
            [FieldError("category", "a minor code such as E0502 or a major one such as E05")],
        )
    # A major code stands for itself and every minor class under it.
    ids = (
        session.execute(
            text(
                "SELECT id FROM category WHERE code = :code "
                "OR (length(:code) = 3 AND code LIKE :code || '__')"
            ),
            {"code": code},
        )
        .scalars()
        .all()
    )
    if not ids:
        raise InvalidInput(
            f"no category {code!r}", [FieldError("category", "not in the category catalogue")]
        )
    return tuple(ids)


def _flag(name: str, raw: str) -> bool:
    if raw in ("true", "false"):
        return raw == "true"
    raise InvalidInput(f"{name} is true or false", [FieldError(name, f"{raw!r}: true or false")])


def parse_case_query(session: Session, args: Mapping[str, str]) -> CaseQuery:
    """The list's query parameters, validated; InvalidInput (422) names every bad one."""
    errors: list[FieldError] = []
    values: dict[str, Any] = {}

    def take(key: str, parse: Any, *parse_args: Any) -> None:
        raw = args.get(key, "")
        if raw == "":
            return
        try:
            values[key] = parse(*parse_args, raw)
        except InvalidInput as exc:
            errors.extend(exc.errors)

    for unknown in sorted(set(args) - PARAMETERS):
        errors.append(
            FieldError(unknown, f"unknown parameter; known: {', '.join(sorted(PARAMETERS))}")
        )
    take("status", _parse_statuses)
    take("category", _category_ids, session)
    area = args.get("area", "")
    if area and not AREA_RE.match(area):
        errors.append(FieldError("area", "a district, town or community code (6, 9 or 12 digits)"))
    take("from", _parse_time, "from")
    take("to", _parse_time, "to")
    if "from" in values and "to" in values and values["to"] < values["from"]:
        errors.append(FieldError("to", "is before from"))
    take("overdue", _flag, "overdue")
    assigned = args.get("assigned", "")
    if assigned not in ("", "me"):
        errors.append(FieldError("assigned", "only 'me' (the cases waiting on you)"))
    take("bbox", parse_bbox)
    take("limit", _parse_limit)
    take("cursor", decode_cursor)
    if errors:
        raise InvalidInput("the case list query is not valid", errors)
    return CaseQuery(
        statuses=values.get("status"),
        category_ids=values.get("category"),
        area=area or None,
        reported_from=values.get("from"),
        reported_to=values.get("to"),
        overdue=values.get("overdue"),
        assigned_to_me=assigned == "me",
        bbox=values.get("bbox"),
        limit=values.get("limit", DEFAULT_LIMIT),
        after=values.get("cursor"),
    )


# -- the list ------------------------------------------------------------------------------


def _waiting_on(actor: Actor) -> tuple[str, dict[str, Any]]:
    """SQL over ``t`` for "waiting on me", one alternative per role assignment of the actor.

    Department handlers: cases of their department to accept or handle. Inspectors: reports to
    verify and handled cases to check on site in their grids (not those they handled
    themselves: the check is someone else's). Managers: cases to file, dispatch, decide an
    extension on, or close in their area. Planners and admins have no queue: nothing.
    """
    alternatives: list[str] = []
    params: dict[str, Any] = {
        "me_id": actor.user_id,
        "me_department_states": list(WAITING_ON_DEPARTMENT),
        "me_manager_states": list(WAITING_ON_MANAGER),
    }
    for n, a in enumerate(actor.assignments):
        if a.role == "department_handler" and a.department_id is not None:
            params[f"me_dept_{n}"] = a.department_id
            alternatives.append(
                f"(t.department_id = :me_dept_{n} AND t.status = ANY(:me_department_states))"
            )
        elif a.role == "inspector" and a.grid_codes:
            params[f"me_grids_{n}"] = list(a.grid_codes)
            alternatives.append(
                "((t.status = 'reported' OR (t.status = 'handled' AND t.handler_id IS DISTINCT "
                "FROM :me_id)) AND EXISTS (SELECT 1 FROM unit_grid mg WHERE mg.valid_to IS NULL "
                f"AND mg.code = ANY(:me_grids_{n}) AND ST_Covers(mg.geom, t.geom)))"
            )
        elif a.role in MANAGER_ROLES and a.area_code:
            params[f"me_area_{n}"] = a.area_code
            alternatives.append(
                f"(t.status = ANY(:me_manager_states) AND EXISTS (SELECT 1 FROM admin_area ma "
                f"WHERE ma.code = :me_area_{n} AND ST_Covers(ma.geom, t.geom)))"
            )
    return f"({' OR '.join(alternatives) or 'false'})", params


def _scope_box(scope: Scope) -> str:
    """The box around the actor's areas and grids: lets the GiST index on incident.geom skip
    cases far outside the jurisdiction before the exact (per-row) scope test."""
    if scope.everything:
        return "true"
    return (
        "t.geom && (SELECT ST_SetSRID(ST_Extent(sb.geom)::geometry, 4326) FROM (SELECT geom "
        "FROM admin_area WHERE code = ANY(:scope_all_areas) UNION ALL SELECT geom FROM "
        "unit_grid WHERE valid_to IS NULL AND code = ANY(:scope_full_grids)) AS sb)"
    )


def _bbox_condition(scope: Scope) -> str:
    """As ``features.feature_page`` does for the incidents layer: a restricted reader's points
    are matched snapped (about 200 m), so a tiny box cannot find an exact point."""
    envelope = "ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"
    if scope.everything:
        return f"t.geom && {envelope} AND ST_Intersects(t.geom, {envelope})"
    snapped = f"ST_SnapToGrid(t.geom, {RESTRICTED_SNAP_DEG})"
    return (
        f"t.geom && ST_Expand({envelope}, {RESTRICTED_SNAP_DEG}) AND CASE WHEN "
        f"{scope.point_in_full('t.geom')} THEN ST_Intersects(t.geom, {envelope}) "
        f"ELSE ST_Intersects({snapped}, {envelope}) END"
    )


def case_page(
    session: Session, actor: Actor, query: CaseQuery
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the cases ``actor`` may see, newest received first, and the next cursor.

    NotFound (404) for an ``area`` the actor may not look at, the same as for one that does not
    exist (like ``/api/v1/areas/<code>``).
    """
    scope = actor.scope()
    clauses = [CASES.where, _scope_box(scope), CASES.scope_condition(scope)]
    params: dict[str, Any] = {"limit": query.limit + 1, **scope.params()}
    if query.area is not None:
        visible = session.execute(
            text(f"SELECT 1 FROM admin_area t WHERE t.code = :code AND {scope.area_visible()}"),
            {"code": query.area, **scope.params()},
        ).scalar()
        if visible is None:
            raise NotFound(f"no area {query.area!r}", [FieldError("area", "no such area")])
        clauses.append(
            "ST_Covers((SELECT fa.geom FROM admin_area fa WHERE fa.code = :area), t.geom)"
        )
        params["area"] = query.area
    if query.statuses is not None:
        clauses.append("t.status = ANY(:statuses)")
        params["statuses"] = list(query.statuses)
    if query.category_ids is not None:
        clauses.append("t.category_id = ANY(:category_ids)")
        params["category_ids"] = list(query.category_ids)
    if query.reported_from is not None:
        clauses.append("t.reported_at >= :reported_from")
        params["reported_from"] = query.reported_from
    if query.reported_to is not None:
        clauses.append("t.reported_at < :reported_to")
        params["reported_to"] = query.reported_to
    if query.overdue is not None:
        clauses.append(OVERDUE_SQL if query.overdue else f"NOT coalesce({OVERDUE_SQL}, false)")
    if query.assigned_to_me:
        condition, waiting_params = _waiting_on(actor)
        clauses.append(condition)
        params.update(waiting_params)
    if query.bbox is not None:
        clauses.append(_bbox_condition(scope))
        params.update(x0=query.bbox[0], y0=query.bbox[1], x1=query.bbox[2], y1=query.bbox[3])
    if query.after is not None:
        clauses.append("(t.received_at, t.id) < (:after_at, :after_id)")
        params.update(after_at=query.after[0], after_id=query.after[1])
    # The feature as this reader may see it (features.feature_select), plus the paging key.
    select = feature_select(CASES, scope)
    assert select.startswith("SELECT ")
    rows = session.execute(
        text(
            f"SELECT t.received_at AS sort_at, {select.removeprefix('SELECT ')} "
            f"WHERE {' AND '.join(clauses)} "
            "ORDER BY t.received_at DESC, t.id DESC LIMIT :limit"
        ),
        params,
    ).all()
    next_cursor = None
    if len(rows) > query.limit:
        last = rows[query.limit - 1]
        next_cursor = encode_cursor(last.sort_at, int(last.key))
    return [feature_as_seen(r) for r in rows[: query.limit]], next_cursor


# -- the duplicate hint --------------------------------------------------------------------


def _search_box(lon: float, lat: float, radius_m: float) -> tuple[float, float, float, float]:
    """A lon/lat box holding every point within ``radius_m`` of (lon, lat), for the GiST index
    on incident.geom; the exact test is on geography. Generous: a degree of longitude is at
    least 111 km × cos(lat), a degree of latitude at least 110 km."""
    dy = radius_m / 110_000 * 1.01
    cos_lat = math.cos(math.radians(min(abs(lat) + dy, 90.0)))
    if cos_lat < 0.01:  # at the poles: every longitude
        return -180.0, max(lat - dy, -90.0), 180.0, min(lat + dy, 90.0)
    dx = radius_m / (111_000 * cos_lat) * 1.01
    return lon - dx, max(lat - dy, -90.0), lon + dx, min(lat + dy, 90.0)


def possible_duplicates(
    session: Session,
    scope: Scope,
    *,
    category_id: int,
    lon: float,
    lat: float,
    exclude_id: int | None = None,
    limit: int = DUPLICATE_LIMIT,
) -> list[dict[str, Any]]:
    """Open cases of the category within its ``duplicate_radius_m`` of (lon, lat), nearest
    first, among those ``scope`` sees in full (a distance would pinpoint any other)."""
    check_lonlat(lon, lat)
    radius = session.execute(
        text("SELECT duplicate_radius_m FROM category WHERE id = :id"), {"id": category_id}
    ).scalar()
    if radius is None:
        raise InvalidInput(f"no category {category_id}", [FieldError("category", "unknown")])
    x0, y0, x1, y1 = _search_box(lon, lat, radius)
    rows = session.execute(
        text(
            "WITH p AS (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography AS g) "
            "SELECT t.id, t.status, t.received_at, ST_Distance(t.geom::geography, p.g) AS d "
            f"FROM incident t, p WHERE t.category_id = :category AND {OPEN_SQL} "
            "AND t.id IS DISTINCT FROM CAST(:exclude AS bigint) "
            "AND t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) "
            "AND ST_DWithin(t.geom::geography, p.g, :radius) "
            f"AND {scope.point_in_full('t.geom')} ORDER BY d, t.id LIMIT :limit"
        ),
        {
            "lon": lon,
            "lat": lat,
            "category": category_id,
            "exclude": exclude_id,
            "radius": radius,
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "limit": limit,
            **scope.params(),
        },
    ).all()
    return _hint_rows(rows)


def _hint_rows(rows: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "status": r.status,
            "received_at": r.received_at.isoformat(),
            "distance_m": round(float(r.d), 1),
        }
        for r in rows
    ]


def case_duplicates(
    session: Session, scope: Scope, case_id: int, *, limit: int = DUPLICATE_LIMIT
) -> dict[str, Any]:
    """The hint for an existing case; NotFound unless ``scope`` sees the case in full."""
    row = session.execute(
        text(
            "SELECT t.category_id, c.code, c.duplicate_radius_m, ST_X(t.geom) AS lon, "
            "ST_Y(t.geom) AS lat FROM incident t JOIN category c ON c.id = t.category_id "
            f"WHERE t.id = :id AND {scope.point_in_full('t.geom')}"
        ),
        {"id": case_id, **scope.params()},
    ).first()
    if row is None:
        raise NotFound(f"no case {case_id}")
    found = possible_duplicates(
        session,
        scope,
        category_id=row.category_id,
        lon=row.lon,
        lat=row.lat,
        exclude_id=case_id,
        limit=limit,
    )
    return {
        "case_id": case_id,
        "category": row.code,
        "radius_m": row.duplicate_radius_m,
        "possible_duplicates": found,
    }


def hint_after_intake(session: Session, actor: Actor, case_id: int) -> list[dict[str, Any]]:
    """The hint for a report just filed, in one query (it runs on every report a tablet
    sends): open cases of its category within the radius that the reporter sees in full."""
    scope = actor.scope()
    rows = session.execute(
        text(
            "WITH me AS (SELECT i.id, i.category_id, i.geom, i.geom::geography AS g, "
            "c.duplicate_radius_m AS r, c.duplicate_radius_m / (111000.0 * "
            "greatest(cos(radians(ST_Y(i.geom))), 0.01)) * 1.02 AS pad "
            "FROM incident i JOIN category c ON c.id = i.category_id WHERE i.id = :id) "
            "SELECT t.id, t.status, t.received_at, ST_Distance(t.geom::geography, me.g) AS d "
            f"FROM me JOIN incident t ON t.category_id = me.category_id AND t.id <> me.id "
            f"AND {OPEN_SQL} AND t.geom && ST_Expand(me.geom, me.pad) "
            "AND ST_DWithin(t.geom::geography, me.g, me.r) "
            f"WHERE {scope.point_in_full('t.geom')} ORDER BY d, t.id LIMIT :limit"
        ),
        {"id": case_id, "limit": DUPLICATE_LIMIT, **scope.params()},
    ).all()
    return _hint_rows(rows)


# -- HTTP ----------------------------------------------------------------------------------

bp = Blueprint("case_list", __name__, url_prefix="/api/v1")


@bp.get("/cases")
@requires("read:incidents")
def cases() -> ResponseReturnValue:
    """The cases the actor may see, as a FeatureCollection page; see ``parse_case_query``."""
    actor = current_actor()
    assert actor is not None
    db = get_session()
    query = parse_case_query(db, request.args)
    features, next_cursor = case_page(db, actor, query)
    return feature_page_response(features, "case_list.cases", next_cursor, query.limit)


@bp.get("/cases/<int:case_id>/duplicates")
@requires("write:incidents")
def case_duplicates_view(case_id: int) -> ResponseReturnValue:
    return case_duplicates(get_session(), actor_scope(), case_id)


def _number(name: str, errors: list[FieldError]) -> float:
    raw = request.args.get(name, "")
    try:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError
        return value
    except ValueError:
        errors.append(FieldError(name, f"{raw!r} is not a number" if raw else "required"))
        return 0.0


@bp.get("/duplicates")
@requires("write:incidents")
def duplicates() -> ResponseReturnValue:
    """``?category=E0502&lon=&lat=``: open cases a report about to be filed may repeat."""
    errors: list[FieldError] = []
    lon, lat = _number("lon", errors), _number("lat", errors)
    code = request.args.get("category", "").strip().upper()
    db = get_session()
    category = None
    if CATEGORY_RE.match(code):
        category = db.execute(
            text(
                "SELECT id, duplicate_radius_m FROM category WHERE code = :code "
                "ORDER BY standard_ref DESC LIMIT 1"
            ),
            {"code": code},
        ).first()
    if category is None:
        errors.append(FieldError("category", "a category code of the catalogue, e.g. E0502"))
    if errors:
        raise InvalidInput("the duplicate query is not valid", errors)
    assert category is not None
    found = possible_duplicates(db, actor_scope(), category_id=category.id, lon=lon, lat=lat)
    return {
        "category": code,
        "lon": lon,
        "lat": lat,
        "radius_m": category.duplicate_radius_m,
        "possible_duplicates": found,
    }

"""Open311 GeoReport v2 over the case log, as plain functions (no Flask).

Mapping (DESIGN.md): ``service_code`` is a minor class of the catalogue (``E0502``), ``group``
its major class, ``jurisdiction_id`` a 6-digit administrative code (the city ``440600`` or one
of its districts), ``status`` open/closed with our workflow state in ``status_notes``,
``expected_datetime`` the handling deadline (``incident.deadline_at``), ``agency_responsible``
the case's department, else its category's default department.

Privacy, decided here and nowhere else:
- Reporter data (name, phone, e-mail, device) is stored on the incident and never returned,
  to anybody, in any format: not even to an administrator's key (they have /api/v1 for that).
- Reads are public, as the spec has them. Every case of the jurisdiction is listed, whoever
  reported it, with its category, state, dates, department and address (unit grid,
  community, town, district, city). The description is published as written only for
  requests the public filed (through Open311): inspectors' and the hotline's descriptions are
  working notes and may name people, so only a key that sees the case in full gets them.
  Without a key, and with the key of a user who may not see the case in full (planners,
  department handlers, another jurisdiction's staff), ``lat``/``long`` are rounded to 0.001°
  (about 100 m, the size of a unit grid); the key of a user who sees the case in full gives
  the exact point. A browser session is not a key: Open311 never reads the cookie.
- ``media_url`` is never fetched nor stored (photos go through /api/v1 with the case), so
  ``media_url`` is always empty.

Filing (POST requests): the key must be a gridops API token whose user may
``write:incidents``; the report goes through ``intake`` like every other (the server finds the
grid, a point outside the key holder's jurisdiction is refused, nothing is written on any
error). It is filed with ``source = 'public'``: GeoReport is the citizens' channel, whatever
app relays it; agencies referring cases use /api/v1/incidents with ``source: referral``.
``lat``/``long`` are required: an ``address_string`` or ``address_id`` alone is refused
(400), because addresses cannot be geocoded offline. The server makes the client UUID, which
serves as the request's ``token`` (tablets can resolve their own client UUIDs the same way).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor
from gridops.errors import FieldError, GridopsError, InvalidInput, NotFound
from gridops.incidents.intake import intake
from gridops.incidents.workcal import TZ
from gridops.incidents.workflow import FINAL_STATES, STATES
from gridops.parsing import is_digits

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
# When this endpoint's behaviour last changed (the discovery document's changeset).
CHANGESET = datetime(2026, 11, 27, tzinfo=TZ)
FORMATS = {"xml": "text/xml", "json": "application/json"}
MAX_REQUESTS = 1000  # per GET requests, newest first (the spec's response volume)
DEFAULT_WINDOW = timedelta(days=90)
MAX_IDS = 1000
PUBLIC_DECIMALS = 3  # 0.001° ≈ 100 m: where, without saying at which door
EXACT_DECIMALS = 7
MAX_DESCRIPTION = 4000  # the spec's limit; intake's own (2000) applies first
LOCALES = ("zh", "en")

# Our state, as status_notes shows it after the state's code.
STATE_LABELS: dict[str, tuple[str, str]] = {
    "reported": ("已上报，待核实", "reported, to be verified"),
    "verified": ("已核实，待立案", "verified on site, to be filed"),
    "filed": ("已立案，待派遣", "filed, to be dispatched"),
    "dispatched": ("已派遣", "dispatched to the handling department"),
    "in_handling": ("处置中", "being handled"),
    "extension_requested": ("申请延期中", "extension requested"),
    "handled": ("已处置，待核查", "handled, to be checked"),
    "checked": ("核查通过，待结案", "checked, to be closed"),
    "closed": ("已结案", "closed"),
    "returned": ("退回派遣", "returned to the dispatcher"),
    "parked": ("挂账", "parked"),
    "void": ("不予立案", "not filed"),
}
KIND_LABELS = {"component": ("部件", "component"), "event": ("事件", "event")}

# Fields a POST may carry (the spec's); anything else is refused, so that a misspelt field
# (``lng``) is not silently dropped. attribute[...] is accepted and ignored (no service has
# attributes yet).
POST_FIELDS = {
    "api_key",
    "jurisdiction_id",
    "service_code",
    "lat",
    "long",
    "address_string",
    "address_id",
    "email",
    "device_id",
    "account_id",
    "first_name",
    "last_name",
    "phone",
    "description",
    "media_url",
    "csrf_token",  # a browser form's; harmless
}
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
# Characters XML 1.0 cannot carry, and control characters a form field has no business with.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class KeyRefused(GridopsError):
    """403: the api_key is missing, invalid, or its user may not file reports (the spec's
    status for every api_key problem)."""

    status: int = 403
    title: str = "Forbidden"
    type_slug: str = "forbidden"


def public_status(state: str) -> str:
    """The spec's two states: final states (closed, void) are closed, all others open."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    return "closed" if state in FINAL_STATES else "open"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(TZ).isoformat(timespec="seconds") if value else None


def _pick(locale: str, zh: str | None, en: str | None) -> str:
    return (en or zh or "") if locale == "en" else (zh or en or "")


# -- discovery and services ----------------------------------------------------------------


def discovery(endpoint_url: str, locale: str = "zh") -> dict[str, Any]:
    """The Service Discovery document for this one endpoint."""
    contact, key_service = (
        (
            "Grid management centre (网格化管理中心) of the city; report problems with this "
            "API to its administrator.",
            "API keys are gridops API tokens: ask the administrator for an account that may "
            "file incidents, then create a token on its token page.",
        )
        if locale == "en"
        else (
            "市网格化管理中心；本接口的问题请联系系统管理员。",
            "api_key 即 gridops API 令牌：请管理员开通可上报事件的账号，"
            "再在账号的令牌页面创建令牌。",
        )
    )
    return {
        "changeset": _iso(CHANGESET),
        "contact": contact,
        "key_service": key_service,
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": endpoint_url,
                "changeset": _iso(CHANGESET),
                "type": "production",
                "formats": list(FORMATS.values()),
            }
        ],
    }


_CATEGORY_SQL = """
    SELECT DISTINCT ON (c.code) c.code, c.kind, c.name_zh, c.name_en, c.time_limit_hours,
           c.verify_limit_hours, m.name_zh AS group_zh, m.name_en AS group_en
    FROM category c
    LEFT JOIN category m ON m.standard_ref = c.standard_ref AND m.kind = c.kind
         AND m.major_code = c.major_code AND m.minor_code IS NULL
    WHERE c.minor_code IS NOT NULL AND c.active {extra}
    ORDER BY c.code, c.standard_ref DESC
"""


def _hours(value: float | None) -> str:
    return f"{value:g}"


def _limit_notice(locale: str, hours: float | None) -> str:
    if hours is None:
        return ""
    if locale == "en":
        return f"Handling time limit: {_hours(hours)} working hours from dispatch."
    return f"处置时限：派遣后 {_hours(hours)} 个工作小时。"


def _service(row: Any, locale: str) -> dict[str, Any]:
    kind_zh, kind_en = KIND_LABELS.get(row.kind, (row.kind, row.kind))
    kind = kind_en if locale == "en" else kind_zh
    group = _pick(locale, row.group_zh, row.group_en)
    name = _pick(locale, row.name_zh, row.name_en)
    sep = ": " if locale == "en" else "："
    description = f"{kind}{sep}{group} / {name}"
    notice = _limit_notice(locale, row.time_limit_hours)
    if notice:
        description += (". " if locale == "en" else "。") + notice
    return {
        "service_code": row.code,
        "service_name": name,
        "description": description,
        "metadata": False,
        "type": "realtime",
        "keywords": ", ".join(k for k in (kind, group, row.code) if k),
        "group": group,
    }


def list_services(session: Session, locale: str = "zh") -> list[dict[str, Any]]:
    """Every active minor class (of its newest edition), ordered by code."""
    rows = session.execute(text(_CATEGORY_SQL.format(extra=""))).all()
    return [_service(r, locale) for r in rows]


def _category(session: Session, code: str) -> Any:
    return session.execute(
        text(_CATEGORY_SQL.format(extra="AND c.code = :code")), {"code": code}
    ).first()


def service_definition(session: Session, service_code: str) -> dict[str, Any]:
    """The definition of one service: no extra attributes (metadata is false everywhere)."""
    row = _category(session, service_code.strip().upper())
    if row is None:
        raise NotFound(f"service_code {service_code!r} was not found")
    return {"service_code": row.code, "attributes": []}


def check_jurisdiction(session: Session, raw: str | None) -> str | None:
    """The jurisdiction's area code, or None when none was declared (empty = not declared).

    Accepted: the 6-digit code of a city or district in the area table; anything else is
    not found (404, as the spec has it)."""
    if raw is None or not raw.strip():
        return None
    code = raw.strip()
    known = (
        re.fullmatch(r"\d{6}", code)
        and session.execute(
            text(
                "SELECT 1 FROM admin_area WHERE code = :code AND level IN ('city', 'district') "
                "AND length(code) = 6"
            ),
            {"code": code},
        ).first()
    )
    if not known:
        raise NotFound(
            f"jurisdiction_id {code!r} was not found; use the 6-digit administrative code of "
            "the city or one of its districts, e.g. 440600"
        )
    return code


# -- filing a request ----------------------------------------------------------------------


def _text_field(fields: Mapping[str, str], name: str, limit: int, errors: list[FieldError]) -> str:
    value = (fields.get(name) or "").strip()
    if len(value) > limit:
        errors.append(FieldError(name, f"at most {limit} characters"))
    if CONTROL_RE.search(value):
        errors.append(FieldError(name, "contains control characters"))
    return value


def _coordinate(
    fields: Mapping[str, str], name: str, low: float, high: float, errors: list[FieldError]
) -> float | None:
    raw = (fields.get(name) or "").strip()
    try:
        value = float(raw)
    except ValueError:
        errors.append(FieldError(name, f"a number (WGS84 degrees), not {raw!r}"))
        return None
    if not math.isfinite(value) or not low <= value <= high:
        errors.append(FieldError(name, f"between {low:g} and {high:g}"))
        return None
    return value


def _reporter_name(first: str, last: str, email: str) -> str | None:
    """One mailbox-style string: 'Given Family <email>' (Chinese names: family name first)."""
    cjk = any(ord(ch) > 0x2E80 for ch in first + last)
    name = f"{last}{first}" if cjk else " ".join(p for p in (first, last) if p)
    if email:
        name = f"{name} <{email}>" if name else f"<{email}>"
    return name or None


def _service_notice(locale: str, row: Any) -> str:
    if locale == "en":
        notice = "Received. The grid centre verifies the report on site, then files it"
        if row.verify_limit_hours:
            notice += f" (verification within {_hours(row.verify_limit_hours)} working hours)"
        notice += " and dispatches it to the responsible department."
    else:
        notice = "已受理。网格中心将现场核实"
        if row.verify_limit_hours:
            notice += f"（{_hours(row.verify_limit_hours)} 个工作小时内）"
        notice += "后立案，并派遣至责任部门处置。"
    limit = _limit_notice(locale, row.time_limit_hours)
    return f"{notice} {limit}" if limit else notice


def create_request(
    session: Session, actor: Actor, fields: Mapping[str, str], locale: str = "zh"
) -> dict[str, Any]:
    """File one service request for the key holder ``actor``; the caller commits.

    KeyRefused (403) when the key's user may not file reports, InvalidInput (every bad field
    at once) before anything is written, NotFound for an unknown service_code or
    jurisdiction_id, OutsideJurisdiction when the point lies outside the key holder's area.
    """
    if not actor.may("write:incidents"):
        raise KeyRefused(
            "this api_key's account may not file reports (it needs the write:incidents "
            "permission of an inspector or a manager)"
        )
    errors = [
        FieldError(name, "is not a GeoReport v2 field")
        for name in sorted(fields)
        if name not in POST_FIELDS and not re.fullmatch(r"attribute\[[^\]]*\](\[\])?", name)
    ]
    code = (fields.get("service_code") or "").strip().upper()
    if not code:
        errors.append(FieldError("service_code", "required (see services.xml)"))
    has_point = any((fields.get(n) or "").strip() for n in ("lat", "long"))
    lon = lat = None
    if has_point:
        lat = _coordinate(fields, "lat", -90, 90, errors)
        lon = _coordinate(fields, "long", -180, 180, errors)
    elif any((fields.get(n) or "").strip() for n in ("address_string", "address_id")):
        errors.append(
            FieldError(
                "lat,long",
                "required: addresses cannot be geocoded here, send the point (WGS84) as well",
            )
        )
    else:
        errors.append(FieldError("lat,long", "required (WGS84 degrees)"))
    description = _text_field(fields, "description", MAX_DESCRIPTION, errors)
    first = _text_field(fields, "first_name", 50, errors)
    last = _text_field(fields, "last_name", 50, errors)
    email = _text_field(fields, "email", 100, errors)
    phone = _text_field(fields, "phone", 40, errors)
    device = _text_field(fields, "device_id", 100, errors)
    if email and not EMAIL_RE.match(email):
        errors.append(FieldError("email", "an e-mail address such as name@example.cn"))
    reporter = _reporter_name(first, last, email)
    if reporter is not None and len(reporter) > 100:
        errors.append(FieldError("first_name,last_name,email", "together at most 100 characters"))
    if errors:
        raise InvalidInput("the service request is not valid", errors)
    jurisdiction = check_jurisdiction(session, fields.get("jurisdiction_id"))
    category = _category(session, code)
    if category is None:
        raise NotFound(f"service_code {code!r} was not found (see services.xml)")
    if (
        jurisdiction is not None
        and not session.execute(
            text(
                "SELECT ST_Covers(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) "
                "FROM admin_area WHERE code = :code"
            ),
            {"lon": lon, "lat": lat, "code": jurisdiction},
        ).scalar()
    ):
        raise InvalidInput(
            f"the point is outside jurisdiction {jurisdiction}",
            [FieldError("lat,long", f"outside jurisdiction_id {jurisdiction}")],
        )
    incident, _ = intake(
        session,
        actor,
        {
            "client_uuid": str(uuid.uuid4()),
            "category": code,
            "lon": lon,
            "lat": lat,
            "captured_at": datetime.now(UTC).isoformat(),
            "source": "public",
            "description": description,
        },
    )
    session.execute(
        text(
            "UPDATE incident SET reporter_name = :name, reporter_phone = :phone, "
            "device_id = :device WHERE id = :id"
        ),
        {"name": reporter, "phone": phone or None, "device": device or None, "id": incident["id"]},
    )
    return {
        "service_request_id": incident["id"],
        "service_notice": _service_notice(locale, category),
        "account_id": None,
    }


# -- reading requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestQuery:
    """The filters of GET requests, parsed."""

    ids: tuple[int, ...] = ()
    service_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def parse_w3_datetime(name: str, raw: str) -> datetime:
    """A W3C-profile ISO 8601 time with its offset (a bare date is midnight in Foshan)."""
    value = raw.strip()
    # An unencoded '+' in a query string arrives as a space: the offset is unambiguous.
    value = re.sub(r" (\d{2}:?\d{2})$", r"+\1", value)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.fromisoformat(value).replace(tzinfo=TZ)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value:
        raise InvalidInput(
            f"{name} is not a w3 datetime",
            [FieldError(name, "e.g. 2026-11-01T00:00:00+08:00 or 2026-11-01T00:00:00Z")],
        )
    return parsed


def parse_request_query(session: Session, args: Mapping[str, str]) -> RequestQuery:
    """GET requests' filters; InvalidInput naming every bad one."""
    errors: list[FieldError] = []
    ids: list[int] = []
    for part in _split(args.get("service_request_id")):
        if is_digits(part) and len(part) <= 18:
            ids.append(int(part))
        else:
            errors.append(FieldError("service_request_id", f"{part!r} is not a request id"))
    if len(ids) > MAX_IDS:
        errors.append(FieldError("service_request_id", f"at most {MAX_IDS} ids"))
    codes = [c.upper() for c in _split(args.get("service_code"))]
    if codes:
        known = set(
            session.execute(
                text(
                    "SELECT code FROM category WHERE code = ANY(:codes) AND minor_code IS NOT NULL"
                ),
                {"codes": codes},
            ).scalars()
        )
        errors += [FieldError("service_code", f"no service {c!r}") for c in codes if c not in known]
    statuses = [s.lower() for s in _split(args.get("status"))]
    errors += [
        FieldError("status", f"{s!r}: use open or closed")
        for s in statuses
        if s not in ("open", "closed")
    ]
    dates: dict[str, datetime | None] = {}
    for name in ("start_date", "end_date"):
        raw = args.get(name)
        dates[name] = None
        if raw and raw.strip():
            try:
                dates[name] = parse_w3_datetime(name, raw)
            except InvalidInput as exc:
                errors += exc.errors
    start, end = dates["start_date"], dates["end_date"]
    if start and end and start > end:
        errors.append(FieldError("start_date", "is after end_date"))
    if errors:
        raise InvalidInput("the query is not valid", errors)
    return RequestQuery(tuple(ids), tuple(codes), tuple(statuses), start, end)


_REQUEST_SQL = """
    SELECT i.id, i.status, i.description, i.source, i.reported_at, i.updated_at, i.closed_at,
           i.deadline_at, i.duplicate_of,
           coalesce(i.time_limit_hours, c.time_limit_hours) AS limit_hours,
           c.code AS service_code, c.name_zh, c.name_en,
           d.name AS agency_zh, d.name_en AS agency_en,
           g.code AS grid_code,
           a1.name AS a1_zh, a1.name_en AS a1_en, a2.name AS a2_zh, a2.name_en AS a2_en,
           a3.name AS a3_zh, a3.name_en AS a3_en, a4.name AS a4_zh, a4.name_en AS a4_en,
           ST_X(i.geom) AS lon, ST_Y(i.geom) AS lat, {exact} AS exact
    FROM incident i
    JOIN category c ON c.id = i.category_id
    LEFT JOIN department d ON d.id = coalesce(i.department_id, c.department_id)
    LEFT JOIN unit_grid g ON g.id = i.grid_id
    LEFT JOIN admin_area a1 ON a1.code = g.community_code
    LEFT JOIN admin_area a2 ON a2.code = a1.parent_code
    LEFT JOIN admin_area a3 ON a3.code = a2.parent_code
    LEFT JOIN admin_area a4 ON a4.code = a3.parent_code
    WHERE {where}
    ORDER BY i.reported_at DESC, i.id DESC
    LIMIT :limit
"""


def _address(row: Any, locale: str) -> str:
    """Most specific first, as the spec asks: unit grid, community, town, district, city."""
    if row.grid_code is None:
        return ""
    parts = [f"Unit grid {row.grid_code}" if locale == "en" else f"单元网格{row.grid_code}"]
    for level in ("a1", "a2", "a3", "a4"):
        name = _pick(locale, getattr(row, f"{level}_zh"), getattr(row, f"{level}_en"))
        if name:
            parts.append(name)
    return (", " if locale == "en" else "，").join(parts)


def _status_notes(row: Any, locale: str) -> str:
    zh, en = STATE_LABELS.get(row.status, (row.status, row.status))
    notes = f"{row.status} {en if locale == 'en' else zh}"
    if row.duplicate_of is not None:
        notes += (
            f" (duplicate of request {row.duplicate_of})"
            if locale == "en"
            else f"（重复上报，见 {row.duplicate_of}）"
        )
    return notes


def _as_request(row: Any, locale: str) -> dict[str, Any]:
    decimals = EXACT_DECIMALS if row.exact else PUBLIC_DECIMALS
    closed = public_status(row.status) == "closed"
    updated = row.closed_at if row.status == "closed" and row.closed_at else row.updated_at
    return {
        "service_request_id": row.id,
        "status": "closed" if closed else "open",
        "status_notes": _status_notes(row, locale),
        "service_name": _pick(locale, row.name_zh, row.name_en),
        "service_code": row.service_code,
        # Staff notes are working records; only what the public itself wrote is published.
        "description": (row.description or "") if row.exact or row.source == "public" else "",
        "agency_responsible": _pick(locale, row.agency_zh, row.agency_en),
        "service_notice": _limit_notice(locale, row.limit_hours),
        "requested_datetime": _iso(row.reported_at),
        "updated_datetime": _iso(updated),
        "expected_datetime": _iso(row.deadline_at),
        "address": _address(row, locale),
        "address_id": row.grid_code or "",
        "zipcode": "",
        "lat": round(row.lat, decimals),
        "long": round(row.lon, decimals),
        "media_url": "",
    }


def _select_requests(
    session: Session,
    viewer: Actor | None,
    clauses: list[str],
    params: dict[str, Any],
    jurisdiction: str | None,
    locale: str,
    limit: int,
) -> list[dict[str, Any]]:
    if viewer is None:
        exact, scope_params = "false", {}
    else:
        scope = viewer.scope()
        exact, scope_params = scope.point_in_full("i.geom"), scope.params()
    if jurisdiction is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM admin_area j WHERE j.code = :jurisdiction "
            "AND ST_Covers(j.geom, i.geom))"
        )
        params["jurisdiction"] = jurisdiction
    sql = _REQUEST_SQL.format(exact=exact, where=" AND ".join(clauses or ["true"]))
    rows = session.execute(text(sql), {**params, **scope_params, "limit": limit}).all()
    return [_as_request(r, locale) for r in rows]


def find_requests(
    session: Session,
    query: RequestQuery,
    *,
    viewer: Actor | None = None,
    jurisdiction: str | None = None,
    locale: str = "zh",
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Requests matching ``query``, newest first, at most MAX_REQUESTS.

    ``service_request_id`` overrides the other filters (the spec); without dates the window
    is the last 90 days, with only an end date the 90 days before it. ``viewer`` (the key
    holder, None without a key) decides only whether points are exact.
    """
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if query.ids:
        clauses.append("i.id = ANY(:ids)")
        params["ids"] = list(query.ids)
    else:
        start, end = query.start, query.end
        if start is None:
            start = (end or now or datetime.now(UTC)) - DEFAULT_WINDOW
        clauses.append("i.reported_at >= :start")
        params["start"] = start
        if end is not None:
            clauses.append("i.reported_at <= :end")
            params["end"] = end
        if query.service_codes:
            clauses.append("c.code = ANY(:codes)")
            params["codes"] = list(query.service_codes)
        if len(set(query.statuses)) == 1:
            final = "i.status IN ('closed', 'void')"
            clauses.append(final if query.statuses[0] == "closed" else f"NOT ({final})")
    return _select_requests(session, viewer, clauses, params, jurisdiction, locale, MAX_REQUESTS)


def get_request(
    session: Session,
    request_id: str,
    *,
    viewer: Actor | None = None,
    jurisdiction: str | None = None,
    locale: str = "zh",
) -> dict[str, Any]:
    """One request by id (NotFound when there is none, or not in ``jurisdiction``)."""
    if not is_digits(request_id) or len(request_id) > 18:
        raise NotFound(f"service_request_id {request_id!r} was not found")
    found = _select_requests(
        session,
        viewer,
        ["i.id = :id"],
        {"id": int(request_id)},
        jurisdiction,
        locale,
        1,
    )
    if not found:
        raise NotFound(f"service_request_id {request_id!r} was not found")
    return found[0]


def resolve_token(session: Session, token: str) -> dict[str, Any]:
    """The request id behind a token (the client UUID the request was filed with)."""
    try:
        client_uuid = uuid.UUID(token)
    except ValueError:
        raise NotFound(f"token {token!r} was not found") from None
    found = session.execute(
        text("SELECT id FROM incident WHERE client_uuid = :uuid"), {"uuid": client_uuid}
    ).scalar()
    if found is None:
        raise NotFound(f"token {token!r} was not found")
    return {"service_request_id": found, "token": token}

"""HTTP routes of dispatch: the dispatcher's queue, (bulk) assignment and workload; duties
administration (inspectors per grid, absences, inspector profiles); components on the map.

Thin adapters over ``gridops.dispatch.queue`` and ``gridops.dispatch.duties``. The dispatch
routes need ``write:cases`` and a manager's role (403 without one); the duties routes need
``admin:duties`` (admins everywhere, managers in their own area); each duties change is
audited.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, json, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.api import if_match_version, json_body, layer_page_response
from gridops.auth import audit
from gridops.auth.actor import Actor
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.dispatch import duties, queue
from gridops.errors import FieldError, InvalidInput, problem
from gridops.incidents.admin import parse_day
from gridops.incidents.cases import assign
from gridops.parsing import is_digits

bp = Blueprint("dispatch", __name__, url_prefix="/api/v1")

QUEUE_PARAMETERS = frozenset({"limit", "cursor"})


def _actor() -> Actor:
    actor = current_actor()
    assert actor is not None  # authorize() answered 401 first
    return actor


def _audit(event: str, detail: dict[str, Any]) -> None:
    actor = _actor()
    audit.record(event, actor_id=actor.user_id, actor=actor.username, detail=detail)


# -- the dispatcher's side -----------------------------------------------------------------


@bp.get("/dispatch/queue")
@requires("write:cases")
def queue_view() -> ResponseReturnValue:
    """``?limit=&cursor=``: the cases waiting on dispatchers or at risk, most pressing first
    (order in ``gridops.dispatch.queue``); ``next`` link and ``Link`` header for the next page."""
    actor = _actor()
    unknown = sorted(set(request.args) - QUEUE_PARAMETERS)
    if unknown:
        raise InvalidInput(
            "unknown query parameters",
            [FieldError(n, "not a parameter: limit, cursor") for n in unknown],
        )
    limit = queue.parse_limit(request.args.get("limit"))
    raw_cursor = request.args.get("cursor")
    cursor = queue.decode_cursor(raw_cursor) if raw_cursor else None
    items, next_cursor = queue.queue_page(get_session(), actor, limit=limit, cursor=cursor)
    links = [
        {"rel": "self", "href": url_for("dispatch.queue_view", _external=True, **request.args)}
    ]
    href = None
    if next_cursor is not None:
        href = url_for("dispatch.queue_view", _external=True, limit=str(limit), cursor=next_cursor)
        links.append({"rel": "next", "href": href})
    response = jsonify({"items": items, "numberReturned": len(items), "links": links})
    if href is not None:
        response.headers["Link"] = f'<{href}>; rel="next"'
    return response


@bp.post("/dispatch/cases/<int:case_id>/assign")
@requires("write:cases")
def case_assign(case_id: int) -> ResponseReturnValue:
    """``{"assignee": user id, "department": code, "note": …}`` (either or both) with
    ``If-Match: "<version>"``: 428 without it, 412 when stale, 404 outside the jurisdiction."""
    actor = _actor()
    queue.jurisdiction(actor)  # 403 for non-dispatchers
    version = if_match_version("case")
    fields = queue.parse_assignment(json_body())
    db = get_session()
    result = assign(db, case_id, actor, expected_version=version, **fields)
    db.commit()
    response = jsonify(result)
    response.headers["ETag"] = f'"{result["version"]}"'
    return response


@bp.post("/dispatch/bulk-assign")
@requires("write:cases")
def bulk_assign() -> ResponseReturnValue:
    """``{"items": [{"id", "version"}, …], "assignee"?, "department"?, "note"?}``: all or
    nothing; a refusal lists each failing item in ``failures`` (index, id, status, detail)."""
    actor = _actor()
    queue.jurisdiction(actor)
    body = queue.parse_bulk(json_body())
    db = get_session()
    try:
        done = queue.bulk_assign(
            db,
            actor,
            body["items"],
            assignee_id=body["assignee_id"],
            department=body["department"],
            note=body["note"],
        )
    except queue.BulkRejected as exc:
        db.rollback()
        return _bulk_problem(exc)
    db.commit()
    return jsonify({"items": done, "count": len(done)})


def _bulk_problem(exc: queue.BulkRejected) -> Response:
    response = problem(
        exc.status, exc.title, exc.detail, type_slug=exc.type_slug, errors=exc.errors
    )
    body = json.loads(response.get_data())
    body["failures"] = exc.failures
    response.set_data(json.dumps(body, ensure_ascii=False))
    return response


@bp.get("/dispatch/workload")
@requires("write:cases")
def workload() -> ResponseReturnValue:
    """Per person and department of the jurisdiction: open, due today, overdue (and tasks)."""
    return jsonify(queue.workload(get_session(), _actor()))


# -- duties administration -----------------------------------------------------------------


@bp.get("/admin/grids/<grid_code>/inspectors")
@requires(duties.ADMIN_DUTIES)
def grid_inspectors(grid_code: str) -> ResponseReturnValue:
    scope = duties.duty_scope(_actor())
    return jsonify(duties.grid_inspectors(get_session(), scope, grid_code))


@bp.put("/admin/grids/<grid_code>/inspectors")
@requires(duties.ADMIN_DUTIES)
def grid_inspectors_replace(grid_code: str) -> ResponseReturnValue:
    """``{"primary": user id | null, "stand_ins": [ids]}`` replaces the grid's inspectors."""
    scope = duties.duty_scope(_actor())
    db = get_session()
    before, after = duties.replace_grid_inspectors(db, scope, grid_code, json_body())
    db.commit()
    _audit(
        "grid_inspectors_replaced",
        {"grid_code": after["grid_code"], "before": before, "after": after},
    )
    return jsonify(after)


@bp.get("/admin/absences")
@requires(duties.ADMIN_DUTIES)
def absences() -> ResponseReturnValue:
    """``?user=<id>&since=YYYY-MM-DD`` (default today): absences not over by then."""
    scope = duties.duty_scope(_actor())
    errors = [
        FieldError(n, "not a parameter: user, since")
        for n in sorted(set(request.args) - {"user", "since"})
    ]
    user = request.args.get("user")
    if user is not None and not is_digits(user):
        errors.append(FieldError("user", "a user id"))
    since = None
    if request.args.get("since"):
        try:
            since = parse_day(request.args["since"], "since")
        except InvalidInput as exc:
            errors += exc.errors
    if errors:
        raise InvalidInput("the absence query is not valid", errors)
    listed = duties.list_absences(
        get_session(), scope, user_id=int(user) if user else None, since=since
    )
    return jsonify({"absences": listed})


@bp.post("/admin/absences")
@requires(duties.ADMIN_DUTIES)
def absence_create() -> ResponseReturnValue:
    """``{"user": id, "starts_on", "ends_on", "note"}``: 201; 409 if it overlaps one stored."""
    scope = duties.duty_scope(_actor())
    db = get_session()
    record = duties.add_absence(db, scope, json_body())
    db.commit()
    _audit("absence_added", record)
    return jsonify(record), 201


@bp.delete("/admin/absences/<int:absence_id>")
@requires(duties.ADMIN_DUTIES)
def absence_delete(absence_id: int) -> ResponseReturnValue:
    scope = duties.duty_scope(_actor())
    db = get_session()
    record = duties.remove_absence(db, scope, absence_id)
    db.commit()
    _audit("absence_removed", record)
    return "", 204


@bp.get("/admin/inspectors/<int:user_id>/profile")
@requires(duties.ADMIN_DUTIES)
def inspector_profile(user_id: int) -> ResponseReturnValue:
    scope = duties.duty_scope(_actor())
    return jsonify(duties.inspector_profile(get_session(), scope, user_id))


@bp.put("/admin/inspectors/<int:user_id>/profile")
@requires(duties.ADMIN_DUTIES)
def inspector_profile_set(user_id: int) -> ResponseReturnValue:
    """``{"tasks_per_day": 12, "travel_mode": "walk|bike|drive", "home": {"lon", "lat"}}``:
    the fields given are set, the others kept."""
    scope = duties.duty_scope(_actor())
    db = get_session()
    before, after = duties.set_inspector_profile(db, scope, user_id, json_body())
    db.commit()
    _audit("inspector_profile_set", {"user": user_id, "before": before, "after": after})
    return jsonify(after)


# -- components on the map -----------------------------------------------------------------


@bp.get("/components")
@requires("read:map")
def components() -> ResponseReturnValue:
    """``?bbox=&category=&owner=&maintainer=&limit=&cursor=``: components as GeoJSON."""
    return layer_page_response(duties.COMPONENTS, "dispatch.components")

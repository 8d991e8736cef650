"""HTTP routes of inspections: an inspector's day, recording a result, the plans of an area.

Verbs: the day's list needs ``read:map`` (it shows enterprises and outlets, the map's own
records; everyone gets only the tasks they see: their own and those in their full
jurisdiction, so planners and handlers get an empty day). Recording a result needs
``write:incidents``: field findings, which inspectors and managers log, not departments or
planners. The plans (risk, frequency, next due) need ``read:analytics``: managers and planners.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.api import actor_scope, if_match_version, json_body
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput
from gridops.features import DEFAULT_LIMIT, parse_limit
from gridops.incidents.workcal import local_today
from gridops.inspections.queries import list_plans, list_tasks
from gridops.inspections.results import record_result
from gridops.parsing import is_digits

bp = Blueprint("inspections", __name__, url_prefix="/api/v1/inspections")

KINDS = ("enterprise", "outlet")


def _date_arg(name: str) -> date | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} is not a date", [FieldError(name, "YYYY-MM-DD")]) from None


@bp.get("/tasks")
@requires("read:map")
def tasks() -> ResponseReturnValue:
    """``?day=YYYY-MM-DD`` (default today) ``&assignee=me|any|none|<user id>`` (default me)."""
    actor = current_actor()
    assert actor is not None
    day = _date_arg("day") or local_today()
    raw = request.args.get("assignee", "me")
    assignee: int | str = raw
    if is_digits(raw):
        assignee = int(raw)
    elif raw not in ("me", "any", "none"):
        raise InvalidInput(
            "assignee is not valid", [FieldError("assignee", "me, any, none or a user id")]
        )
    found = list_tasks(get_session(), actor, day=day, assignee=assignee)
    return jsonify({"day": day.isoformat(), "assignee": raw, "tasks": found})


@bp.post("/tasks/<int:task_id>/result")
@requires("write:incidents")
def task_result(task_id: int) -> ResponseReturnValue:
    """``{"result": "ok"|"minor"|"major", "note": "…"}`` with ``If-Match: "<version>"``."""
    actor = current_actor()
    assert actor is not None
    expected_version = if_match_version("task")
    body = json_body()
    db = get_session()
    done = record_result(
        db,
        task_id,
        actor,
        result=body.get("result"),
        note=body.get("note", ""),
        expected_version=expected_version,
    )
    db.commit()
    response = jsonify(done)
    response.headers["ETag"] = f'"{done["version"]}"'
    return response


@bp.get("/plans")
@requires("read:analytics")
def plans() -> ResponseReturnValue:
    """``?kind=enterprise|outlet&due_by=YYYY-MM-DD&limit=&cursor=`` (keyset by plan id)."""
    kind = request.args.get("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidInput("kind is not valid", [FieldError("kind", "enterprise or outlet")])
    cursor = request.args.get("cursor")
    if cursor is not None and not is_digits(cursor):
        raise InvalidInput("cursor is not valid", [FieldError("cursor", "from a next link")])
    limit = parse_limit(request.args.get("limit"), DEFAULT_LIMIT)
    found, next_id = list_plans(
        get_session(),
        actor_scope(),
        today=local_today(),
        limit=limit,
        after=int(cursor) if cursor else None,
        kind=kind,
        due_by=_date_arg("due_by"),
    )
    body = {"plans": found, "numberReturned": len(found), "links": []}
    if next_id is not None:
        args = {**request.args, "cursor": str(next_id), "limit": str(limit)}
        body["links"].append(
            {"rel": "next", "href": url_for("inspections.plans", _external=True, **args)}
        )
    return jsonify(body)

"""HTTP routes of cases: intake, the case with its history, and workflow transitions."""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.api import feature_in_scope, json_body
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, GridopsError, InvalidInput
from gridops.features import LAYERS
from gridops.incidents.cases import history, transition
from gridops.incidents.clock import case_clock
from gridops.incidents.intake import intake

bp = Blueprint("cases", __name__, url_prefix="/api/v1")

ETAG_RE = re.compile(r'^(?:W/)?"(\d+)"$')


@bp.post("/incidents")
@requires("write:incidents")
def incident_create() -> ResponseReturnValue:
    """A report; 201 when new, 200 when the same client UUID was already received."""
    actor = current_actor()
    assert actor is not None
    db = get_session()
    incident, created = intake(db, actor, json_body())
    db.commit()
    response = jsonify(incident)
    response.status_code = 201 if created else 200
    response.headers["Location"] = url_for("cases.case", case_id=incident["id"])
    return response


def _case_body(case_id: int) -> tuple[dict, int]:
    """The case as the actor may see it (one scoped fetch), its clock and its history."""
    feature = feature_in_scope(LAYERS["incidents"], str(case_id))
    db = get_session()
    properties = feature["properties"]
    body = {
        **feature,
        "status": properties["status"],
        "version": properties["version"],
        "clock": case_clock(db, case_id),
        "history": [e.__dict__ for e in history(db, case_id)],
    }
    return body, int(properties["version"])


@bp.get("/cases/<int:case_id>")
@requires("read:incidents")
def case(case_id: int) -> ResponseReturnValue:
    body, version = _case_body(case_id)
    response = jsonify(body)
    response.headers["ETag"] = f'"{version}"'
    return response


@bp.post("/cases/<int:case_id>/transitions")
@requires("write:cases")
def case_transition(case_id: int) -> ResponseReturnValue:
    """``{"action": "file", "note": "…"}`` with ``If-Match: "<version>"`` (428 without it)."""
    actor = current_actor()
    assert actor is not None
    match = ETAG_RE.match(request.headers.get("If-Match", "").strip())
    if match is None:
        raise GridopsError(
            'send If-Match: "<version>" with the version of the case you saw',
            [FieldError("If-Match", "required")],
            status=428,
            title="Precondition required",
            type_slug="precondition-required",
        )
    body = json_body()
    action = body.get("action")
    note = body.get("note", "")
    if not isinstance(action, str) or not isinstance(note, str):
        raise InvalidInput(
            "action and note are text", [FieldError("action", "e.g. verify, file, dispatch")]
        )
    db = get_session()
    result = transition(db, case_id, action, actor, expected_version=int(match.group(1)), note=note)
    db.commit()
    response = jsonify(result)
    response.headers["ETag"] = f'"{result["version"]}"'
    return response

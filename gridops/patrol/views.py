"""HTTP routes of patrol tracks: a tablet's batch upload and the manager's view of a day.

Both need ``write:incidents``, the verb of field work: inspectors and the managers who send
them out. A track is personal data (where a named employee was, minute by minute), so the
restricted roles (planners, department handlers) are refused outright (403) rather than
given a thinned-out view; within the allowed roles, inspectors outside the caller's
jurisdiction are simply not found (404 / absent from the list).
"""

from __future__ import annotations

import re
from datetime import date

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from gridops.api import geojson_response, json_body
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput
from gridops.incidents.workcal import local_today
from gridops.parsing import is_digits
from gridops.patrol.service import patrol_day, upload

bp = Blueprint("patrol", __name__, url_prefix="/api/v1/patrol")

PATROL_VERB = "write:incidents"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@bp.post("/points")
@requires(PATROL_VERB)
def points_upload() -> ResponseReturnValue:
    """``{"points": [{"t", "lon", "lat", "accuracy_m"}, ...]}`` → received/stored/duplicates."""
    actor = current_actor()
    assert actor is not None
    db = get_session()
    counts = upload(db, actor, json_body())
    db.commit()
    return jsonify(counts)


@bp.get("/day")
@requires(PATROL_VERB)
def day() -> ResponseReturnValue:
    """``?date=YYYY-MM-DD[&user=<id>]``: each visible inspector's track of that local day."""
    actor = current_actor()
    assert actor is not None
    errors = []
    raw_date = request.args.get("date")
    when = local_today()
    if raw_date is not None:
        try:
            if not DATE_RE.match(raw_date):
                raise ValueError
            when = date.fromisoformat(raw_date)
        except ValueError:
            errors.append(FieldError("date", "a local date, YYYY-MM-DD"))
    raw_user = request.args.get("user")
    user_id = None
    if raw_user is not None:
        if is_digits(raw_user) and len(raw_user) <= 18:
            user_id = int(raw_user)
        else:
            errors.append(FieldError("user", "a user id"))
    if errors:
        raise InvalidInput("bad patrol day parameters", errors)
    return geojson_response(patrol_day(get_session(), actor, when, user_id=user_id))

"""The signed-in user's inbox: ``GET /api/v1/inbox``, ``POST /api/v1/inbox/<id>/read`` and
``POST /api/v1/inbox/read-all``. Any signed-in user; each sees only their own."""

from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from gridops.auth.actor import Actor
from gridops.auth.web import ANY_USER, current_actor, requires
from gridops.db import get_session
from gridops.notifications import service

bp = Blueprint("inbox", __name__, url_prefix="/api/v1")


def _me() -> Actor:
    actor = current_actor()
    if actor is None:  # pragma: no cover - authorize() answers 401 first
        raise RuntimeError("no actor")
    return actor


@bp.get("/inbox")
@requires(ANY_USER)
def inbox() -> ResponseReturnValue:
    """``?unread=true&limit=50&cursor=…``: newest first, with ``unread_count``."""
    query = service.parse_inbox_query(request.args)
    page = service.inbox(get_session(), _me().user_id, **query)
    if page["next_cursor"]:
        args = {**request.args, "cursor": page["next_cursor"], "limit": str(query["limit"])}
        page["next"] = url_for("inbox.inbox", _external=True, **args)
    return jsonify(page)


@bp.post("/inbox/<int:notification_id>/read")
@requires(ANY_USER)
def inbox_read(notification_id: int) -> ResponseReturnValue:
    db = get_session()
    result = service.mark_read(db, _me().user_id, notification_id)
    db.commit()
    return jsonify(result)


@bp.post("/inbox/read-all")
@requires(ANY_USER)
def inbox_read_all() -> ResponseReturnValue:
    db = get_session()
    user_id = _me().user_id
    marked = service.mark_all_read(db, user_id)
    db.commit()
    return jsonify({"marked": marked, "unread_count": service.unread_count(db, user_id)})

"""Login, logout, the signed-in user, device tokens and user administration."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, session
from flask.typing import ResponseReturnValue
from flask_login import login_user, logout_user

from gridops.api import json_body
from gridops.auth import audit
from gridops.auth import service as auth
from gridops.auth.web import ANY_USER, SignedIn, current_actor, public, requires, session_policy
from gridops.db import get_session
from gridops.errors import FieldError, GridopsError, InvalidInput, NotFound

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login would be a phishing aid.
    if target and target[:1] == "/" and target[1:2] not in "/\\" and target.isprintable():
        return target
    return "/"


def _limits() -> auth.LoginLimits:
    from datetime import timedelta

    config = current_app.config
    return auth.LoginLimits(
        window=timedelta(minutes=int(config["LOGIN_WINDOW_MINUTES"])),
        per_account=int(config["LOGIN_MAX_FAILURES_ACCOUNT"]),
        per_address=int(config["LOGIN_MAX_FAILURES_ADDRESS"]),
    )


@bp.get("/login")
@public
def login() -> ResponseReturnValue:
    return render_template("login.html", lang=g.lang, next=request.args.get("next", "/"))


@bp.post("/login")
@public
def login_post() -> ResponseReturnValue:
    wants_json = request.is_json
    data = json_body() if wants_json else request.form
    username = str(data.get("username", "")).strip().lower()
    password = str(data.get("password", ""))
    db = get_session()
    try:
        user_id = auth.authenticate(db, username, password, request.remote_addr, _limits())
    except auth.TooManyAttempts:
        db.rollback()
        audit.record("login_throttled", actor=username)
        raise
    except auth.LoginFailed:
        db.commit()  # keep the failed attempt: it counts towards the limit
        audit.record("login_failed", actor=username)
        if wants_json:
            raise
        return (
            render_template("login.html", lang=g.lang, next=data.get("next", "/"), failed=True),
            401,
        )
    # A new server-side session id at every login (no fixation), and a clean cookie.
    session.clear()
    sid = auth.start_session(
        db,
        user_id,
        session_policy(),
        address=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
    )
    actor = auth.load_actor(db, user_id, via="session")
    db.commit()
    assert actor is not None
    login_user(SignedIn(actor, sid))
    session.permanent = True
    audit.record("login", actor_id=user_id, actor=actor.username)
    if wants_json:
        return jsonify(actor.as_dict())
    return redirect(_safe_next(data.get("next")))


@bp.post("/logout")
@requires(ANY_USER)
def logout() -> ResponseReturnValue:
    actor = current_actor()
    from flask_login import current_user

    if getattr(current_user, "sid", None):
        db = get_session()
        auth.end_session(db, current_user.sid)
        db.commit()
    logout_user()
    session.clear()
    if actor:
        audit.record("logout", actor_id=actor.user_id, actor=actor.username)
    return ("", 204) if request.is_json else redirect("/login")


@bp.get("/api/v1/me")
@requires(ANY_USER)
def me() -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None
    return jsonify({**actor.as_dict(), "via": actor.via})


# -- device tokens -------------------------------------------------------------------------


def _session_only() -> None:
    actor = current_actor()
    if actor is not None and actor.via == "token":
        raise GridopsError(
            "device tokens are managed from a signed-in browser, not with a token",
            status=403,
            title="Forbidden",
            type_slug="forbidden",
        )


@bp.get("/api/v1/tokens")
@requires("self:tokens")
def tokens() -> ResponseReturnValue:
    _session_only()  # a stolen tablet token must not learn of the user's other devices
    actor = current_actor()
    assert actor is not None
    return jsonify({"tokens": auth.list_tokens(get_session(), actor.user_id)})


@bp.post("/api/v1/tokens")
@requires("self:tokens")
def token_create() -> ResponseReturnValue:
    _session_only()
    actor = current_actor()
    assert actor is not None
    body = json_body()
    days = body.get("days", 90)
    if not isinstance(days, int) or isinstance(days, bool):
        raise InvalidInput("days must be a whole number", [FieldError("days", "not an integer")])
    db = get_session()
    token_id, token = auth.create_token(db, actor.user_id, str(body.get("name", "")), days=days)
    db.commit()
    audit.record(
        "token_created", actor_id=actor.user_id, actor=actor.username, detail={"token": token_id}
    )
    return jsonify({"id": token_id, "token": token, "note": "shown once; store it now"}), 201


@bp.delete("/api/v1/tokens/<int:token_id>")
@requires("self:tokens")
def token_revoke(token_id: int) -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None
    if actor.via == "token" and actor.token_id != token_id:
        # A device may sign itself out (revoke its own token), not the user's other devices.
        raise NotFound(f"no active token {token_id}")
    db = get_session()
    auth.revoke_token(db, actor.user_id, token_id)
    db.commit()
    audit.record(
        "token_revoked", actor_id=actor.user_id, actor=actor.username, detail={"token": token_id}
    )
    return "", 204


# -- administration ------------------------------------------------------------------------


@bp.get("/api/v1/admin/users")
@requires("admin:users")
def users() -> ResponseReturnValue:
    return jsonify({"users": auth.list_users(get_session())})


@bp.post("/api/v1/admin/users")
@requires("admin:users")
def user_create() -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None
    body = json_body()
    display_name = body.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        raise InvalidInput("the user cannot be created", [FieldError("display_name", "text")])
    db = get_session()
    user_id = auth.create_user(
        db,
        str(body.get("username", "")),
        str(body.get("password", "")),
        display_name=display_name,
    )
    db.commit()
    audit.record(
        "user_created", actor_id=actor.user_id, actor=actor.username, detail={"user": user_id}
    )
    return jsonify({"id": user_id}), 201


@bp.post("/api/v1/admin/users/<int:user_id>/roles")
@requires("admin:users")
def role_assign(user_id: int) -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None
    body = json_body()
    db = get_session()
    if auth.load_actor(db, user_id) is None:
        raise GridopsError(f"no active user {user_id}", status=404, title="Not found")
    assignment = auth.assign_role(
        db,
        user_id,
        str(body.get("role", "")),
        area_code=body.get("area_code"),
        grid_codes=body.get("grid_codes"),
        department_code=body.get("department_code"),
        category_codes=body.get("category_codes"),
        by=actor.user_id,
    )
    db.commit()
    audit.record(
        "role_assigned",
        actor_id=actor.user_id,
        actor=actor.username,
        detail={"user": user_id, "assignment": assignment, **body},
    )
    return jsonify({"id": assignment}), 201


@bp.delete("/api/v1/admin/users/<int:user_id>/roles/<int:assignment_id>")
@requires("admin:users")
def role_revoke(user_id: int, assignment_id: int) -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None
    db = get_session()
    auth.revoke_role(db, user_id, assignment_id)
    db.commit()
    audit.record(
        "role_revoked",
        actor_id=actor.user_id,
        actor=actor.username,
        detail={"user": user_id, "assignment": assignment_id},
    )
    return "", 204


@bp.post("/api/v1/admin/users/<int:user_id>/disable")
@requires("admin:users")
def user_disable(user_id: int) -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None
    db = get_session()
    auth.disable_user(db, user_id)
    db.commit()
    audit.record(
        "user_disabled", actor_id=actor.user_id, actor=actor.username, detail={"user": user_id}
    )
    return "", 204

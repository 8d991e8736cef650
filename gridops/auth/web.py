"""Authentication and authorization at the HTTP edge.

Browsers: a server-side session (its random id in Flask's signed, HttpOnly cookie) managed
through Flask-Login; idle and absolute timeouts are checked on every request, and disabling a
user ends the session at once. Tablets: ``Authorization: Bearer gdo_…`` device tokens, exempt
from CSRF (an outbox replayed the next morning must not fail on an expired CSRF token).

Every view declares what it needs with ``@requires("verb:resource")`` or ``@public``; the app
refuses to start if one does not, and ``authorize`` enforces it before the view runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import Flask, current_app, g, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect

from gridops.auth import audit
from gridops.auth.actor import Actor
from gridops.auth.service import SessionPolicy, actor_for_token, resume_session
from gridops.db import get_session
from gridops.errors import GridopsError

F = TypeVar("F", bound=Callable[..., Any])
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ANY_USER = "self:session"  # any signed-in user, whatever their roles

csrf = CSRFProtect()
login_manager = LoginManager()


class Unauthorized(GridopsError):
    pass


def requires(permission: str) -> Callable[[F], F]:
    def mark(view: F) -> F:
        view.gridops_permission = permission  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    view.gridops_permission = None  # type: ignore[attr-defined]
    return view


class SignedIn(UserMixin):
    """Flask-Login's user: the actor plus the session id it was loaded by."""

    def __init__(self, actor: Actor, sid: str | None = None) -> None:
        self.actor = actor
        self.sid = sid

    def get_id(self) -> str | None:
        return self.sid


def current_actor() -> Actor | None:
    user = current_user
    return user.actor if getattr(user, "is_authenticated", False) else None


def session_policy(app: Flask | None = None) -> SessionPolicy:
    config = (app or current_app).config
    return SessionPolicy(
        idle=timedelta(minutes=int(config["SESSION_IDLE_MINUTES"])),
        absolute=timedelta(hours=int(config["SESSION_ABSOLUTE_HOURS"])),
    )


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@login_manager.user_loader
def _load_session(sid: str) -> SignedIn | None:
    db = get_session()
    actor = resume_session(db, sid, session_policy())
    db.commit()  # the touched last_seen_at
    return SignedIn(actor, sid) if actor else None


@login_manager.request_loader
def _load_token(req: Any) -> SignedIn | None:
    token = _bearer()
    if token is None:
        return None
    db = get_session()
    actor = actor_for_token(db, token)
    db.commit()
    if actor is None:
        audit.record("token_rejected", detail={"prefix": token[:12]})
        return None
    if actor.token_first_use_in_hour:
        audit.record(
            "token_used",
            actor_id=actor.user_id,
            actor=actor.username,
            detail={"token": actor.token_id, "path": req.path},
        )
    return SignedIn(actor)


def authorize() -> Any:
    """Before every request: CSRF for cookie-authenticated changes, then the view's need."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:  # 404/405 are answered by the router
        return None
    if request.method not in SAFE_METHODS and (_bearer() is None or current_user.get_id()):
        # Views marked @csrf.exempt never read the cookie (Open311's keyed POST).
        csrf.protect(apply_exemptions=True)
    permission = getattr(view, "gridops_permission", None)
    if permission is None:
        return None
    actor = current_actor()
    if actor is None:
        if _bearer() is not None or request.path.startswith(("/api/", "/collections")):
            raise Unauthorized(
                "sign in, or send a device token as 'Authorization: Bearer …'",
                status=401,
                title="Unauthorized",
                type_slug="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="gridops"'},
            )
        return redirect(url_for("auth.login", next=request.full_path))
    g.actor = actor
    if permission != ANY_USER and not actor.may(permission):
        audit.record(
            "access_denied",
            actor_id=actor.user_id,
            actor=actor.username,
            detail={"permission": permission, "path": request.path, "method": request.method},
        )
        raise GridopsError(
            f"your roles do not allow {permission}",
            status=403,
            title="Forbidden",
            type_slug="forbidden",
        )
    return None


def check_declarations(app: Flask) -> None:
    """Every view must say what it needs: a forgotten decorator must not mean "public"."""
    missing = [
        name
        for name, view in app.view_functions.items()
        if name != "static" and not hasattr(view, "gridops_permission")
    ]
    if missing:
        raise RuntimeError(f"views without @requires or @public: {', '.join(sorted(missing))}")


def init_app(app: Flask) -> None:
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # authorize() decides per request
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the session
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app.config["ENV"] == "production",
        SESSION_COOKIE_NAME="gridops_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=int(app.config["SESSION_ABSOLUTE_HOURS"])),
        REMEMBER_COOKIE_DURATION=timedelta(seconds=0),
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = None  # the server-side session already rotates
    app.before_request(authorize)

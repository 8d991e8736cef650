"""Accounts, role assignments, sessions and device tokens, without Flask."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gridops.auth.actor import ROLES, Actor, Assignment
from gridops.auth.passwords import dummy_verify, hash_password, password_problems, verify_password
from gridops.errors import Conflict, FieldError, GridopsError, InvalidInput, NotFound

TOKEN_PREFIX = "gdo_"
MAX_DISPLAY_NAME = 100
TOKEN_PREFIX_RE = re.compile(r"[0-9a-f]{8}")
# A tablet syncing all day would flood the audit log; its use is logged once an hour.
TOKEN_USE_AUDIT_EVERY = timedelta(hours=1)
TOKEN_LAST_USED_RESOLUTION = timedelta(minutes=1)
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")  # as the database's CHECK


@dataclass
class TooManyAttempts(GridopsError):
    status: int = 429
    title: str = "Too many login attempts"
    type_slug: str = "too-many-attempts"


@dataclass
class LoginFailed(GridopsError):
    status: int = 401
    title: str = "Login failed"
    type_slug: str = "login-failed"


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins allowed per window, per account and per client address."""

    window: timedelta = timedelta(minutes=15)
    per_account: int = 5
    per_address: int = 20


def _digest(secret: str) -> bytes:
    # Tokens and session ids are 256-bit random: a fast hash is enough (no guessing to slow).
    return hashlib.sha256(secret.encode()).digest()


# -- users and roles -----------------------------------------------------------------------


def create_user(
    session: Session, username: str, password: str, *, display_name: str | None = None
) -> int:
    username = username.strip().lower()
    display = (display_name or username).strip()
    errors = [
        FieldError("password", p)
        for p in password_problems(password, username=username, display_name=display)
    ]
    if (
        not username
        or len(username) > 64
        or not username.replace(".", "").replace("_", "").replace("-", "").isalnum()
        or not username.isascii()
    ):
        errors.insert(0, FieldError("username", "2-64 lower-case letters, digits, . _ -"))
    if not display or len(display) > MAX_DISPLAY_NAME:  # the column's size
        errors.append(FieldError("display_name", f"1-{MAX_DISPLAY_NAME} characters"))
    if errors:
        raise InvalidInput("the user cannot be created", errors)
    try:
        with session.begin_nested():
            user_id = session.execute(
                text(
                    "INSERT INTO app_user (username, display_name, password_hash) "
                    "VALUES (:u, :d, :h) RETURNING id"
                ),
                {"u": username, "d": display, "h": hash_password(password)},
            ).scalar_one()
    except IntegrityError:
        raise Conflict(
            f"user {username!r} exists", [FieldError("username", "already taken")]
        ) from None
    return int(user_id)


def set_password(session: Session, user_id: int, password: str) -> None:
    user = session.execute(
        text("SELECT username, display_name FROM app_user WHERE id = :id"), {"id": user_id}
    ).one()
    problems = password_problems(password, username=user.username, display_name=user.display_name)
    if problems:
        raise InvalidInput("the password is refused", [FieldError("password", p) for p in problems])
    session.execute(
        text("UPDATE app_user SET password_hash = :h WHERE id = :id"),
        {"h": hash_password(password), "id": user_id},
    )


def assign_role(
    session: Session,
    user_id: int,
    role: str,
    *,
    area_code: str | None = None,
    grid_codes: list[str] | None = None,
    department_code: str | None = None,
    category_codes: list[str] | None = None,
    by: int | None = None,
) -> int:
    """Give a user a role with its scope; InvalidInput says which part of the scope is wrong."""
    if role not in ROLES:
        raise InvalidInput("unknown role", [FieldError("role", f"one of {', '.join(ROLES)}")])
    shapes = [
        FieldError(name, "a code (text), or null")
        for name, value in (("area_code", area_code), ("department_code", department_code))
        if value is not None and not isinstance(value, str)
    ] + [
        FieldError(name, "a list of codes (text), or null")
        for name, value in (("grid_codes", grid_codes), ("category_codes", category_codes))
        if value is not None
        and (not isinstance(value, list) or not all(isinstance(v, str) for v in value))
    ]
    if shapes:  # from JSON, before they reach a query
        raise InvalidInput(f"the {role} role cannot be assigned", shapes)
    expected_level = {
        "community_manager": "community",
        "town_manager": "town",
        "district_manager": "district",
    }.get(role)
    errors: list[FieldError] = []
    if role == "inspector":
        if not grid_codes:
            errors.append(FieldError("grid_codes", "an inspector needs at least one unit grid"))
        else:
            known = set(
                session.execute(
                    text("SELECT code FROM unit_grid WHERE valid_to IS NULL AND code = ANY(:c)"),
                    {"c": grid_codes},
                ).scalars()
            )
            missing = sorted(set(grid_codes) - known)
            if missing:
                errors.append(FieldError("grid_codes", f"no current unit grid {missing}"))
    if expected_level or role == "planner":
        level = session.execute(
            text("SELECT level FROM admin_area WHERE code = :c"), {"c": area_code}
        ).scalar()
        if level is None:
            errors.append(FieldError("area_code", f"no area {area_code!r}"))
        elif expected_level and level != expected_level:
            errors.append(
                FieldError("area_code", f"{area_code} is a {level}, not a {expected_level}")
            )
    department_id = None
    if role == "department_handler":
        department_id = session.execute(
            text("SELECT id FROM department WHERE code = :c"), {"c": department_code}
        ).scalar()
        if department_id is None:
            errors.append(FieldError("department_code", f"no department {department_code!r}"))
    if errors:
        raise InvalidInput(f"the {role} role cannot be assigned", errors)
    assignment_id = session.execute(
        text(
            "INSERT INTO role_assignment (user_id, role, area_code, grid_codes, department_id, "
            "category_codes, created_by) VALUES (:user_id, :role, :area, :grids, :dept, :cats, "
            ":by) RETURNING id"
        ),
        {
            "user_id": user_id,
            "role": role,
            "area": area_code if (expected_level or role == "planner") else None,
            "grids": grid_codes if role == "inspector" else None,
            "dept": department_id,
            "cats": category_codes if role == "department_handler" else None,
            "by": by,
        },
    ).scalar_one()
    return int(assignment_id)


def revoke_role(session: Session, user_id: int, assignment_id: int) -> None:
    deleted = session.execute(
        text("DELETE FROM role_assignment WHERE id = :a AND user_id = :u"),
        {"a": assignment_id, "u": user_id},
    ).rowcount
    if not deleted:
        raise NotFound(f"user {user_id} has no role assignment {assignment_id}")


def disable_user(session: Session, user_id: int) -> None:
    """Disable an account: its sessions end and its tokens stop working at once."""
    updated = session.execute(
        text(
            "UPDATE app_user SET is_active = false, disabled_at = clock_timestamp() WHERE id = :id"
        ),
        {"id": user_id},
    ).rowcount
    if not updated:
        raise NotFound(f"no user {user_id}")
    session.execute(
        text(
            "UPDATE user_session SET revoked_at = clock_timestamp() "
            "WHERE user_id = :id AND revoked_at IS NULL"
        ),
        {"id": user_id},
    )
    session.execute(
        text(
            "UPDATE api_token SET revoked_at = clock_timestamp() "
            "WHERE user_id = :id AND revoked_at IS NULL"
        ),
        {"id": user_id},
    )


def load_actor(session: Session, user_id: int, **via: Any) -> Actor | None:
    user = session.execute(
        text("SELECT id, username, display_name FROM app_user WHERE id = :id AND is_active"),
        {"id": user_id},
    ).first()
    if user is None:
        return None
    rows = session.execute(
        text(
            "SELECT r.id, r.role, r.area_code, r.grid_codes, r.department_id, r.category_codes, "
            "d.area_code AS department_area FROM role_assignment r "
            "LEFT JOIN department d ON d.id = r.department_id WHERE r.user_id = :id ORDER BY r.id"
        ),
        {"id": user_id},
    ).all()
    assignments = tuple(
        Assignment(
            id=r.id,
            role=r.role,
            area_code=r.area_code,
            grid_codes=tuple(r.grid_codes or ()),
            department_id=r.department_id,
            department_area=r.department_area,
            category_codes=tuple(r.category_codes or ()),
        )
        for r in rows
    )
    return Actor(user.id, user.username, user.display_name, assignments, **via)


def list_users(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        text("SELECT id, username, display_name, is_active, created_at FROM app_user ORDER BY id")
    ).all()
    return [
        {
            "id": r.id,
            "username": r.username,
            "display_name": r.display_name,
            "active": r.is_active,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]


# -- login ---------------------------------------------------------------------------------


def check_login_allowed(
    session: Session, username: str, address: str | None, limits: LoginLimits
) -> None:
    """Raise TooManyAttempts (429 with Retry-After) when the account or address is throttled."""
    rows = session.execute(
        text(
            """
            SELECT 'account' AS what, count(*) AS n, min(at) AS first FROM login_attempt
            WHERE username = :u AND NOT success AND at > clock_timestamp() - :window
            UNION ALL
            SELECT 'address', count(*), min(at) FROM login_attempt
            WHERE address = CAST(:a AS inet) AND NOT success
              AND at > clock_timestamp() - :window
            """
        ),
        {"u": username, "a": address, "window": limits.window},
    ).all()
    now = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    for row in rows:
        limit = limits.per_account if row.what == "account" else limits.per_address
        if row.n >= limit:
            retry = max(1, int((row.first + limits.window - now).total_seconds()) + 1)
            raise TooManyAttempts(
                f"too many failed logins for this {row.what}; try again in {retry} s",
                headers={"Retry-After": str(retry)},
            )


def authenticate(
    session: Session,
    username: str,
    password: str,
    address: str | None,
    limits: LoginLimits | None = None,
) -> int:
    """The user id for a correct, active login; LoginFailed or TooManyAttempts otherwise.

    Every attempt is recorded (the caller commits); a stale hash is upgraded on success.
    """
    limits = limits or LoginLimits()
    username = (username or "").strip().lower()[:64]
    # Serialise attempts on one account, so that parallel guesses cannot all pass the count.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:u))"), {"u": username})
    check_login_allowed(session, username, address, limits)
    user = session.execute(
        text("SELECT id, password_hash, is_active FROM app_user WHERE username = :u"),
        {"u": username},
    ).first()
    ok, new_hash = (False, None)
    if user is None:
        dummy_verify()
    else:
        ok, new_hash = verify_password(user.password_hash, password or "")
    success = bool(ok and user is not None and user.is_active)
    session.execute(
        text(
            "INSERT INTO login_attempt (username, address, success) "
            "VALUES (:u, CAST(:a AS inet), :s)"
        ),
        {"u": username, "a": address, "s": success},
    )
    if not success:
        raise LoginFailed("wrong username or password, or the account is disabled")
    if new_hash:
        session.execute(
            text("UPDATE app_user SET password_hash = :h WHERE id = :id"),
            {"h": new_hash, "id": user.id},
        )
    return int(user.id)


# -- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)


def start_session(
    session: Session,
    user_id: int,
    policy: SessionPolicy,
    *,
    address: str | None = None,
    user_agent: str | None = None,
) -> str:
    """A new server-side session; returns its id (the only copy: it goes in the cookie)."""
    sid = secrets.token_urlsafe(32)
    session.execute(
        text(
            "INSERT INTO user_session (sid_hash, user_id, expires_at, address, user_agent) "
            "VALUES (:h, :u, clock_timestamp() + :absolute, CAST(:a AS inet), :ua)"
        ),
        {
            "h": _digest(sid),
            "u": user_id,
            "absolute": policy.absolute,
            "a": address,
            "ua": (user_agent or "")[:300],
        },
    )
    return sid


def resume_session(session: Session, sid: str, policy: SessionPolicy) -> Actor | None:
    """The actor of a live session (touching it), or None if ended, idle or expired."""
    row = session.execute(
        text(
            """
            UPDATE user_session s SET last_seen_at = clock_timestamp()
            FROM app_user u
            WHERE s.sid_hash = :h AND u.id = s.user_id AND u.is_active
              AND s.revoked_at IS NULL AND s.expires_at > clock_timestamp()
              AND s.last_seen_at > clock_timestamp() - :idle
            RETURNING s.id, s.user_id
            """
        ),
        {"h": _digest(sid), "idle": policy.idle},
    ).first()
    if row is None:
        return None
    return load_actor(session, row.user_id, via="session", session_id=row.id)


def end_session(session: Session, sid: str) -> None:
    session.execute(
        text(
            "UPDATE user_session SET revoked_at = clock_timestamp() "
            "WHERE sid_hash = :h AND revoked_at IS NULL"
        ),
        {"h": _digest(sid)},
    )


# -- device tokens -------------------------------------------------------------------------


def create_token(session: Session, user_id: int, name: str, *, days: int = 90) -> tuple[int, str]:
    """A named device token; returns (id, token). The token is shown once and stored hashed."""
    name = (name or "").strip()
    errors = []
    if not name or len(name) > 100:
        errors.append(FieldError("name", "1-100 characters naming the device"))
    if not 1 <= days <= 366:
        errors.append(FieldError("days", "between 1 and 366"))
    if errors:
        raise InvalidInput("the token cannot be created", errors)
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    token_id = session.execute(
        text(
            "INSERT INTO api_token (user_id, name, prefix, secret_hash, expires_at) "
            "VALUES (:u, :n, :p, :h, clock_timestamp() + make_interval(days => :d)) RETURNING id"
        ),
        {"u": user_id, "n": name, "p": prefix, "h": _digest(secret), "d": days},
    ).scalar_one()
    return int(token_id), f"{TOKEN_PREFIX}{prefix}_{secret}"


def actor_for_token(session: Session, token: str) -> Actor | None:
    """The actor of a valid, unexpired, unrevoked token of an active user (marks it used)."""
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        return None
    prefix, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not TOKEN_PREFIX_RE.fullmatch(prefix):  # made by create_token: 8 hex digits
        return None
    row = session.execute(
        text(
            "SELECT t.id, t.user_id, t.secret_hash, t.last_used_at, clock_timestamp() AS now "
            "FROM api_token t JOIN app_user u ON u.id = t.user_id WHERE t.prefix = :p "
            "AND t.revoked_at IS NULL AND t.expires_at > clock_timestamp() AND u.is_active"
        ),
        {"p": prefix},
    ).first()
    if row is None or not hmac.compare_digest(bytes(row.secret_hash), _digest(secret)):
        return None
    previous, now = row.last_used_at, row.now
    # A tablet sends many requests a minute; writing the time on each would make every read a
    # write. To the minute is all "last used" needs.
    if previous is None or now - previous >= TOKEN_LAST_USED_RESOLUTION:
        session.execute(
            text("UPDATE api_token SET last_used_at = :now WHERE id = :id"),
            {"id": row.id, "now": now},
        )
    return load_actor(
        session,
        row.user_id,
        via="token",
        token_id=row.id,
        token_first_use_in_hour=previous is None or now - previous > TOKEN_USE_AUDIT_EVERY,
    )


def list_tokens(session: Session, user_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT id, name, prefix, created_at, expires_at, last_used_at, revoked_at "
            "FROM api_token WHERE user_id = :u ORDER BY id"
        ),
        {"u": user_id},
    ).all()

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return [
        {
            "id": r.id,
            "name": r.name,
            "prefix": r.prefix,
            "created_at": iso(r.created_at),
            "expires_at": iso(r.expires_at),
            "last_used_at": iso(r.last_used_at),
            "revoked": r.revoked_at is not None,
        }
        for r in rows
    ]


def revoke_token(session: Session, user_id: int, token_id: int) -> None:
    updated = session.execute(
        text(
            "UPDATE api_token SET revoked_at = clock_timestamp() "
            "WHERE id = :id AND user_id = :u AND revoked_at IS NULL"
        ),
        {"id": token_id, "u": user_id},
    ).rowcount
    if not updated:
        raise NotFound(f"no active token {token_id}")

"""The in-app inbox: notify people once, list a user's notifications, mark them read.

``notify`` writes one row per user and ``dedupe_key``; the unique constraint
``notification_once (user_id, dedupe_key)`` with ``ON CONFLICT DO NOTHING`` makes a repeated
call (a sweep run twice, a retried request, two processes at once) a no-op instead of a second
notification. Keys name the event, e.g. ``escalate:{case}:{level}:{deadline}``.

Who to tell is decided here too: the managers whose area covers a case (a role assignment whose
``area_code`` is a prefix of the case's unit grid code), the handlers of a department, the
case's assignee. ``notify_case_change`` is called by the case workflow after a transition.

The inbox lists the signed-in user's own notifications only: another user's is "not found".
Order: newest first by ``(created_at, id)``, with keyset paging (an opaque cursor).
Delivery to other channels (SMS, e-mail) is ``senders.deliver_pending``'s job.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.parsing import is_digits

KINDS = frozenset({"assignment", "returned", "warning", "overdue", "escalation", "task"})
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MANAGER_LEVELS = {  # role -> the digits of the area code it manages
    "community_manager": 12,
    "town_manager": 9,
    "district_manager": 6,
}


def notify(
    session: Session,
    user_id: int,
    *,
    kind: str,
    title: str,
    body: str = "",
    incident_id: int | None = None,
    task_id: int | None = None,
    dedupe_key: str,
) -> bool:
    """Put a notification in ``user_id``'s inbox unless one with ``dedupe_key`` is there
    already; True when it is new. The caller commits."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    if not dedupe_key:
        raise ValueError("a notification needs a dedupe_key")
    inserted = session.execute(
        text(
            "INSERT INTO notification (user_id, kind, incident_id, task_id, title, body, "
            "dedupe_key) VALUES (:user, :kind, :incident, :task, :title, :body, :key) "
            "ON CONFLICT ON CONSTRAINT notification_once DO NOTHING RETURNING id"
        ),
        {
            "user": user_id,
            "kind": kind,
            "incident": incident_id,
            "task": task_id,
            "title": title,
            "body": body,
            "key": dedupe_key,
        },
    ).first()
    return inserted is not None


def notify_users(
    session: Session,
    user_ids: Iterable[int],
    *,
    kind: str,
    title: str,
    body: str = "",
    incident_id: int | None = None,
    task_id: int | None = None,
    dedupe_key: str,
    exclude: Iterable[int | None] = (),
) -> int:
    """``notify`` each user (once each, skipping ``exclude``); returns how many were new."""
    skip = set(exclude)
    new = 0
    for user_id in sorted(set(user_ids) - skip):
        new += notify(
            session,
            user_id,
            kind=kind,
            title=title,
            body=body,
            incident_id=incident_id,
            task_id=task_id,
            dedupe_key=dedupe_key,
        )
    return new


# -- who to tell ---------------------------------------------------------------------------


def case_area(session: Session, case_id: int) -> str | None:
    """The most precise area code of a case: its unit grid's code (which begins with its
    community's), else the code of the smallest community, town or district covering it."""
    return session.execute(
        text(
            "SELECT coalesce(g.code, (SELECT a.code FROM admin_area a "
            "WHERE a.level IN ('community', 'town', 'district') AND ST_Covers(a.geom, i.geom) "
            "ORDER BY length(a.code) DESC LIMIT 1)) "
            "FROM incident i LEFT JOIN unit_grid g ON g.id = i.grid_id WHERE i.id = :id"
        ),
        {"id": case_id},
    ).scalar()


def managers_covering(session: Session, area_code: str | None, role: str) -> list[int]:
    """Active users holding ``role`` (a manager role) for an area that contains ``area_code``
    (their area code is a prefix of it)."""
    if role not in MANAGER_LEVELS:
        raise ValueError(f"not a manager role: {role!r}")
    if not area_code:
        return []
    return list(
        session.execute(
            text(
                "SELECT DISTINCT ra.user_id FROM role_assignment ra "
                "JOIN app_user u ON u.id = ra.user_id AND u.is_active "
                "WHERE ra.role = :role AND ra.area_code IS NOT NULL "
                "AND :code LIKE ra.area_code || '%' ORDER BY ra.user_id"
            ),
            {"role": role, "code": area_code},
        ).scalars()
    )


def case_managers(session: Session, case_id: int, role: str = "community_manager") -> list[int]:
    """The managers of ``role`` whose area covers the case (community managers: its
    dispatchers)."""
    return managers_covering(session, case_area(session, case_id), role)


def department_handlers(session: Session, department_id: int | None) -> list[int]:
    """Active users with the department-handler role for ``department_id``."""
    if department_id is None:
        return []
    return list(
        session.execute(
            text(
                "SELECT DISTINCT ra.user_id FROM role_assignment ra "
                "JOIN app_user u ON u.id = ra.user_id AND u.is_active "
                "WHERE ra.role = 'department_handler' AND ra.department_id = :d "
                "ORDER BY ra.user_id"
            ),
            {"d": department_id},
        ).scalars()
    )


# -- the case workflow ---------------------------------------------------------------------


def notify_case_change(session: Session, case_id: int, action: str, actor_id: int) -> int:
    """Tell the people a transition concerns, in the transition's transaction; returns how
    many notifications are new. Call it after the case row is written.

    - whoever the case is now assigned to (``incident.assignee_id``), when that assignment is
      new (keyed by ``assigned_at``, so a transition that keeps the assignee is silent);
    - ``return``: the dispatchers, i.e. the community managers whose area covers the case;
    - ``dispatch``: the handlers of the department the case went to.
    The actor is never told of their own action.
    """
    row = session.execute(
        text(
            "SELECT i.id, i.version, i.assignee_id, i.assigned_at, i.department_id, "
            "c.code AS category, c.name_zh AS category_name, "
            "(SELECT e.note FROM case_event e WHERE e.incident_id = i.id "
            " ORDER BY e.version DESC LIMIT 1) AS note "
            "FROM incident i JOIN category c ON c.id = i.category_id WHERE i.id = :id"
        ),
        {"id": case_id},
    ).one()
    what = f"{row.category} {row.category_name}"
    new = 0
    if row.assignee_id is not None and row.assignee_id != actor_id and row.assigned_at:
        new += notify(
            session,
            row.assignee_id,
            kind="assignment",
            title=f"Case {case_id} is assigned to you",
            body=what,
            incident_id=case_id,
            dedupe_key=f"assignment:{case_id}:{row.assignee_id}:{row.assigned_at.isoformat()}",
        )
    if action == "return":
        new += notify_users(
            session,
            case_managers(session, case_id),
            kind="returned",
            title=f"Case {case_id} was returned to dispatch",
            body=f"{what}: {row.note}" if row.note else what,
            incident_id=case_id,
            dedupe_key=f"returned:{case_id}:v{row.version}",
            exclude=[actor_id],
        )
    elif action == "dispatch":
        new += notify_users(
            session,
            department_handlers(session, row.department_id),
            kind="assignment",
            title=f"Case {case_id} was dispatched to your department",
            body=what,
            incident_id=case_id,
            dedupe_key=f"dispatched:{case_id}:v{row.version}",
            exclude=[actor_id],
        )
    return new


# -- the inbox -----------------------------------------------------------------------------


def _encode_cursor(created_at: datetime, notification_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), notification_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, notification_id = json.loads(raw)
        after = datetime.fromisoformat(stamp)
        if after.tzinfo is None or not isinstance(notification_id, int):
            raise ValueError
        return after, notification_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidInput(
            "cursor is not valid", [FieldError("cursor", "use the next cursor as given")]
        ) from None


def parse_inbox_query(args: Mapping[str, str]) -> dict[str, Any]:
    """``unread``, ``limit`` and ``cursor`` from a query string, every bad one named."""
    errors: list[FieldError] = []
    unread = args.get("unread", "false").lower()
    if unread not in ("true", "false"):
        errors.append(FieldError("unread", "true or false"))
    raw_limit = args.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not is_digits(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            errors.append(FieldError("limit", f"a whole number from 1 to {MAX_LIMIT}"))
        else:
            limit = int(raw_limit)
    if errors:
        raise InvalidInput("bad inbox parameters", errors)
    cursor = args.get("cursor") or None
    if cursor is not None:
        _decode_cursor(cursor)
    return {"unread_only": unread == "true", "limit": limit, "cursor": cursor}


def _as_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "title": row.title,
        "body": row.body,
        "incident_id": row.incident_id,
        "task_id": row.task_id,
        "created_at": row.created_at.isoformat(),
        "read_at": row.read_at.isoformat() if row.read_at else None,
    }


def unread_count(session: Session, user_id: int) -> int:
    return int(
        session.execute(
            text("SELECT count(*) FROM notification WHERE user_id = :u AND read_at IS NULL"),
            {"u": user_id},
        ).scalar_one()
    )


def inbox(
    session: Session,
    user_id: int,
    *,
    unread_only: bool = False,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page of the user's notifications, newest first, with the next cursor (None on the
    last page) and the user's unread count."""
    conditions = ["user_id = :u"]
    params: dict[str, Any] = {"u": user_id, "n": limit + 1}
    if unread_only:
        conditions.append("read_at IS NULL")
    if cursor:
        params["after_at"], params["after_id"] = _decode_cursor(cursor)
        conditions.append("(created_at, id) < (:after_at, :after_id)")
    rows = session.execute(
        text(
            "SELECT id, kind, title, body, incident_id, task_id, created_at, read_at "
            f"FROM notification WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC LIMIT :n"
        ),
        params,
    ).all()
    page = rows[:limit]
    next_cursor = (
        _encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit and page else None
    )
    return {
        "notifications": [_as_dict(r) for r in page],
        "unread_count": unread_count(session, user_id),
        "next_cursor": next_cursor,
    }


def mark_read(session: Session, user_id: int, notification_id: int) -> dict[str, Any]:
    """Mark one of the user's notifications read (again: no change); NotFound for anyone
    else's. The caller commits."""
    row = session.execute(
        text(
            "UPDATE notification SET read_at = coalesce(read_at, clock_timestamp()) "
            "WHERE id = :id AND user_id = :u "
            "RETURNING id, kind, title, body, incident_id, task_id, created_at, read_at"
        ),
        {"id": notification_id, "u": user_id},
    ).first()
    if row is None:
        raise NotFound(f"no notification {notification_id}")
    return {**_as_dict(row), "unread_count": unread_count(session, user_id)}


def mark_all_read(session: Session, user_id: int) -> int:
    """Mark every unread notification of the user read; returns how many. The caller
    commits."""
    return session.execute(
        text(
            "UPDATE notification SET read_at = clock_timestamp() "
            "WHERE user_id = :u AND read_at IS NULL"
        ),
        {"u": user_id},
    ).rowcount


__all__ = [
    "KINDS",
    "case_area",
    "case_managers",
    "department_handlers",
    "inbox",
    "managers_covering",
    "mark_all_read",
    "mark_read",
    "notify",
    "notify_case_change",
    "notify_users",
    "parse_inbox_query",
    "unread_count",
]

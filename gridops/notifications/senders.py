"""Delivery of notifications to channels outside the app (SMS, e-mail, a log), pluggably.

The inbox row *is* the in-app delivery: a notification is visible the moment it is committed.
Other channels are ``Sender``s, chosen by ``GRIDOPS_NOTIFY_SENDERS``, a comma list of:

- ``inbox``: the in-app inbox only (the default; adds no sender);
- ``log``: log each notification (useful to watch what would be sent);
- ``package.module:Name``: any importable class or factory returning a ``Sender`` (an SMS
  or e-mail gateway adapter), called without arguments.

``deliver_pending`` (a scheduler job, every minute) hands every notification not yet sent
(``sent_at IS NULL``) to each configured sender and then sets ``sent_at``:

- **At least once.** Rows are locked in batches (``FOR UPDATE SKIP LOCKED``, so two
  deliverers never hold the same row) and ``sent_at`` is committed after the senders returned:
  a process killed in between sends the batch again next time. Senders must therefore treat
  ``Notification.id`` as an idempotency key (gateways accept one) or tolerate a duplicate.
- **A failing sender blocks nobody.** Its exception is logged and the other senders, and the
  other notifications, go ahead. The notification stays unsent and is offered again on the
  next run (to every sender: see the previous point), for ``RETRY_HOURS``; after that it is
  marked sent with an error in the log, since a days-old message about a case is noise.
- **Idempotent.** Sent notifications are never offered again; with no sender configured, a
  run just stamps ``sent_at``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.config import ConfigError, load_config

log = logging.getLogger(__name__)

RETRY_HOURS = 6
BATCH = 100


@dataclass(frozen=True)
class Notification:
    """What a sender gets: the stored notification and who it is for."""

    id: int
    user_id: int
    username: str
    display_name: str
    kind: str
    title: str
    body: str
    incident_id: int | None
    task_id: int | None
    created_at: datetime


@runtime_checkable
class Sender(Protocol):
    def send(self, notification: Notification) -> None:
        """Deliver one notification, or raise. May be called again for the same one."""


class LogSender:
    """Logs each notification (INFO) instead of sending it anywhere."""

    def send(self, notification: Notification) -> None:
        log.info(
            "notification %s to %s (%s): %s",
            notification.id,
            notification.username,
            notification.kind,
            notification.title,
        )


BUILTIN: dict[str, type | None] = {"inbox": None, "log": LogSender}


def load_senders(spec: str) -> list[Sender]:
    """The senders named by a ``GRIDOPS_NOTIFY_SENDERS`` value; ConfigError names a bad one."""
    senders: list[Sender] = []
    for name in (part.strip() for part in spec.split(",")):
        if not name:
            continue
        if name in BUILTIN:
            factory = BUILTIN[name]
            if factory is not None:
                senders.append(factory())
            continue
        module_name, _, attr = name.partition(":")
        if not module_name or not attr:
            raise ConfigError(
                f"GRIDOPS_NOTIFY_SENDERS: unknown sender {name!r} "
                "(inbox, log, or package.module:Class)"
            )
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"GRIDOPS_NOTIFY_SENDERS: cannot load {name!r}: {exc}") from exc
        try:
            sender = factory()
        except Exception as exc:
            raise ConfigError(f"GRIDOPS_NOTIFY_SENDERS: {name!r} failed to start: {exc}") from exc
        if not isinstance(sender, Sender):
            raise ConfigError(f"GRIDOPS_NOTIFY_SENDERS: {name!r} has no send(notification)")
        senders.append(sender)
    return senders


def configured_senders() -> list[Sender]:
    """The senders of this process's ``GRIDOPS_NOTIFY_SENDERS``."""
    return load_senders(str(load_config()["NOTIFY_SENDERS"]))


def _name(sender: Sender) -> str:
    return type(sender).__name__


def deliver_pending(
    session: Session, senders: Sequence[Sender] | None = None, *, batch: int = BATCH
) -> int:
    """Hand unsent notifications to ``senders`` (default: the configured ones), oldest first,
    committing ``sent_at`` batch by batch; returns how many were marked sent. See the module
    docstring for the guarantees."""
    senders = configured_senders() if senders is None else list(senders)
    marked = 0
    last_id = 0
    while True:
        rows = session.execute(
            text(
                "SELECT n.id, n.user_id, u.username, u.display_name, n.kind, n.title, n.body, "
                "n.incident_id, n.task_id, n.created_at, "
                "n.created_at < clock_timestamp() - make_interval(hours => :retry) AS stale "
                "FROM notification n JOIN app_user u ON u.id = n.user_id "
                "WHERE n.sent_at IS NULL AND n.id > :last ORDER BY n.id LIMIT :batch "
                "FOR UPDATE OF n SKIP LOCKED"
            ),
            {"last": last_id, "batch": batch, "retry": RETRY_HOURS},
        ).all()
        if not rows:
            session.commit()
            return marked
        done: list[int] = []
        for row in rows:
            notification = Notification(
                id=row.id,
                user_id=row.user_id,
                username=row.username,
                display_name=row.display_name,
                kind=row.kind,
                title=row.title,
                body=row.body,
                incident_id=row.incident_id,
                task_id=row.task_id,
                created_at=row.created_at,
            )
            failed = []
            for sender in senders:
                try:
                    sender.send(notification)
                except Exception:
                    log.exception("sender %s failed on notification %s", _name(sender), row.id)
                    failed.append(_name(sender))
            if not failed:
                done.append(row.id)
            elif row.stale:
                log.error(
                    "notification %s: %s failed for %s h; giving up (it stays in the inbox)",
                    row.id,
                    ", ".join(failed),
                    RETRY_HOURS,
                )
                done.append(row.id)
        if done:
            session.execute(
                text("UPDATE notification SET sent_at = clock_timestamp() WHERE id = ANY(:ids)"),
                {"ids": done},
            )
        session.commit()
        marked += len(done)
        last_id = rows[-1].id


__all__ = [
    "BUILTIN",
    "RETRY_HOURS",
    "LogSender",
    "Notification",
    "Sender",
    "configured_senders",
    "deliver_pending",
    "load_senders",
]

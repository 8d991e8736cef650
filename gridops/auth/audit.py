"""The append-only security log: logins, failures, role changes, token use, denied access.

Rows are written on a connection of their own and committed at once, so a refused request
(rolled back) still leaves its trace.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, has_request_context, request
from sqlalchemy import Engine, text


def _client_address() -> str | None:
    return request.remote_addr if has_request_context() else None


def record(
    event: str,
    *,
    actor_id: int | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> None:
    if engine is None:
        from gridops.db import get_database

        engine = get_database(current_app).audit_engine
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_event (event, actor_id, actor, address, request_id, detail) "
                "VALUES (:event, :actor_id, :actor, CAST(:address AS inet), :request_id, "
                "CAST(:detail AS jsonb))"
            ),
            {
                "event": event,
                "actor_id": actor_id,
                "actor": actor,
                "address": _client_address(),
                "request_id": g.get("request_id") if has_request_context() else None,
                "detail": json.dumps(detail or {}, ensure_ascii=False),
            },
        )

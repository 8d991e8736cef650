"""Readiness: the database answers, PostGIS is installed and the schema is current."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth.web import public
from gridops.db import get_session
from gridops.errors import ServiceUnavailable

bp = Blueprint("health", __name__)


@cache
def _head_revision() -> str | None:
    return migrate.head_revision()


def check_health(session: Session) -> dict[str, Any]:
    """Versions of PostgreSQL, PostGIS and the schema; raises ServiceUnavailable if not ready."""
    row = session.execute(
        text(
            "SELECT current_setting('server_version') AS pg, "
            "(SELECT extversion FROM pg_extension WHERE extname = 'postgis') AS postgis"
        )
    ).one()
    if row.postgis is None:
        raise ServiceUnavailable("PostGIS is not installed in the database.")
    full = session.execute(text("SELECT postgis_full_version()")).scalar_one()
    revision = None
    if session.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar():
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    head = _head_revision()
    if revision != head:
        raise ServiceUnavailable(
            f"The database schema is at {revision or 'nothing'} but this code expects {head}: "
            "run `gridops db upgrade`."
        )
    return {
        "status": "ok",
        "database": {"postgresql": row.pg, "postgis": row.postgis, "postgis_full": full},
        "schema": {"revision": revision},
    }


@bp.get("/health")
@public
def health() -> ResponseReturnValue:
    return jsonify(check_health(get_session()))

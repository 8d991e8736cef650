"""Typed errors of the service layer and their one mapping to RFC 9457 problem responses.

Service functions raise these without knowing about Flask; ``register_error_handlers`` turns
them (and every other 4xx/5xx) into ``application/problem+json``.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, json, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_MIME = "application/problem+json"
# What the system says when there is no room: a full disk, a quota, a file size limit.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass
class FieldError:
    """One bad input field: ``field`` is a JSON pointer-ish name, ``message`` says why."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass
class GridopsError(Exception):
    """Base of the typed errors; ``status`` is the HTTP status it maps to."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)
    status: int = 400
    title: str = "Bad request"
    type_slug: str = "bad-request"
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        return f"{self.detail} ({extra})" if extra else self.detail


@dataclass
class InvalidInput(GridopsError):
    status: int = 422
    title: str = "Invalid input"
    type_slug: str = "invalid-input"


@dataclass
class NotFound(GridopsError):
    status: int = 404
    title: str = "Not found"
    type_slug: str = "not-found"


@dataclass
class Conflict(GridopsError):
    status: int = 409
    title: str = "Conflict"
    type_slug: str = "conflict"


@dataclass
class ServiceUnavailable(GridopsError):
    status: int = 503
    title: str = "Service unavailable"
    type_slug: str = "service-unavailable"


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_slug: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{type_slug}" if type_slug else "about:blank",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = [e.as_dict() for e in errors]
    try:
        body["instance"] = request.path
        request_id = g.get("request_id")
        if request_id:
            body["request_id"] = request_id
    except RuntimeError:  # outside a request
        pass
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=PROBLEM_MIME)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(GridopsError)
    def _typed(exc: GridopsError) -> Response:
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            type_slug=exc.type_slug,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return problem(status, exc.name, exc.description, headers=headers)

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> Response:
        # A lost or refused connection is transient: tell clients when to retry.
        log.warning("database unavailable: %s", exc.orig)
        return problem(
            503,
            "Service unavailable",
            "The database is not reachable right now; retry shortly.",
            type_slug="database-unavailable",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(DBAPIError)
    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return problem(500, "Internal server error", "An unexpected error occurred.")

    @app.errorhandler(OSError)
    def _no_room(exc: OSError) -> Response:
        if exc.errno not in NO_ROOM:
            return _unexpected(exc)
        # E.g. an upload spooled to a full temporary folder before any view ran: nothing of
        # the request was taken in, and a retry once there is room is safe.
        log.error("no room to take a request in: %s", exc)
        return problem(
            507,
            "Insufficient storage",
            f"The server has no room to take this request in ({os.strerror(exc.errno)}); "
            "retry later.",
            type_slug="storage-full",
            headers={"Retry-After": "300"},
        )


@dataclass
class StaleVersion(GridopsError):
    """412: the record changed since the caller read it; reload and decide again."""

    status: int = 412
    title: str = "Precondition failed"
    type_slug: str = "stale-version"


def check_version(what: str, current: int, expected: int) -> None:
    """StaleVersion (with the current ETag) unless the caller saw the current version."""
    if current != expected:
        raise StaleVersion(
            f"{what} is at version {current}, not {expected}: reload it",
            [FieldError("If-Match", f"current version is {current}")],
            headers={"ETag": f'"{current}"'},
        )

"""The SQLAlchemy engine and one session per request.

``get_session()`` opens the request's session on first use; it is closed (and anything not
committed rolled back) when the request ends. Service functions take a ``Session`` argument
and never reach for Flask, so the CLI and the tests can call them directly.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from gridops.config import database_url

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    """Declarative base shared by every domain package's models."""


def make_engine(url: str, config: dict[str, Any] | None = None) -> Engine:
    config = config or {}
    timeout_ms = int(config.get("DB_STATEMENT_TIMEOUT_MS", 30_000))
    return create_engine(
        url,
        # A restarted database leaves dead pooled connections; test each before use.
        pool_pre_ping=True,
        pool_size=int(config.get("DB_POOL_SIZE", 5)),
        pool_timeout=int(config.get("DB_POOL_TIMEOUT", 10)),
        connect_args={
            "connect_timeout": 5,
            # JIT compiles short scoped queries for longer than they run (~0.6 s on a list).
            "options": f"-c statement_timeout={timeout_ms} -c timezone=UTC -c jit=off",
            "application_name": "gridops",
        },
    )


class Database:
    """Per-app holder of the engine, created on first use so that the app starts without a DB."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(database_url(self.app.config), self.app.config)
        return self._engine

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        if self._sessionmaker is None:
            self._sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)
        return self._sessionmaker

    @property
    def audit_engine(self) -> Engine:
        """The audit log is written on its own connection, never inside a request's
        transaction (a refused request is rolled back; its audit row must stay)."""
        return self.engine

    def bind_to(self, connection: Connection) -> None:
        """Run every session inside ``connection``'s transaction, each commit a savepoint.

        Tests use this to roll each test back; nothing else should.
        """
        self._sessionmaker = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def init_app(app: Flask) -> None:
    app.extensions["gridops.db"] = Database(app)

    @app.teardown_request
    def _close_session(exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            try:
                session.close()
            except DBAPIError as error:
                # The connection died under the request (a database restart), and its
                # transaction with it. The response is made already (a 503, or a success whose
                # commit went through): do not turn it into a bare 500. Drop the connection.
                log.warning("database connection lost while ending a request: %s", error.orig)
                session.invalidate()


def get_database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions["gridops.db"]


def get_session() -> Session:
    """The current request's session (opened lazily)."""
    if "db_session" not in g:
        g.db_session = get_database().sessionmaker()
    return g.db_session

"""Fixtures in the Warehouse shape: one throwaway PostGIS cluster per run, migrations applied
once, every test inside a transaction that is rolled back (its commits become savepoints).

Set GRIDOPS_TEST_DATABASE_URL to run against an existing PostGIS instead of a private cluster.
A skipped test fails the run: a missing database or browser must never pass silently.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, make_url, pool, text
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from gridops import create_app, migrate
from gridops.db import get_database
from gridops.localdb import LocalCluster

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The outside world is cut: every name fails to resolve, so a page that reached for a CDN
    # or a tile server would record a failed request. The server is an IP literal.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# Screenshots and other browser-test artefacts (kept after the run; not in git).
ARTIFACTS = Path(os.environ.get("GRIDOPS_ARTIFACTS") or Path(__file__).parent.parent / "artifacts")
AXE_JS = Path(__file__).parent.parent / "static" / "vendor" / "axe-core" / "axe.min.js"


# -- a skipped test is a failed run -------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} test(s) skipped; skips are not allowed.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- the database ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster | None]:
    """The run's private cluster (None when GRIDOPS_TEST_DATABASE_URL names a server)."""
    if os.environ.get("GRIDOPS_TEST_DATABASE_URL"):
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="gridops-test-"))
    local = LocalCluster(base, mode="test", dbname="gridops_test")
    try:
        local.start()
        yield local
    finally:
        local.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(cluster: LocalCluster | None) -> str:
    url = os.environ.get("GRIDOPS_TEST_DATABASE_URL") or cluster.url()  # type: ignore[union-attr]
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(database_url, pool_pre_ping=True)
    yield eng
    eng.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that is rolled back after the test."""
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


@pytest.fixture
def scratch_database(database_url: str) -> Iterator[str]:
    """A new, empty PostGIS database on the same server, dropped afterwards."""
    name = f"gridops_scratch_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    scratch = create_engine(url, poolclass=pool.NullPool)
    with scratch.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    scratch.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def own_database(database_url: str, prefix: str) -> tuple[str, Callable[[], None]]:
    """A new, migrated PostGIS database on the run's server; returns (url, drop)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with create_engine(url, poolclass=pool.NullPool).begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    migrate.upgrade(url)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


# -- the app (flaskr's app/client/runner) --------------------------------------------------


def app_config(database_url: str, **extra: object) -> dict[str, object]:
    return {"ENV": "testing", "DATABASE_URL": database_url, "SECRET_KEY": "test", **extra}


@pytest.fixture
def app(database_url: str, connection: Connection):
    application = create_app(app_config(database_url))
    get_database(application).bind_to(connection)
    yield application
    get_database(application).dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# -- the browser -------------------------------------------------------------------------


def chromium_path() -> str:
    for candidate in (os.environ.get("GRIDOPS_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is not installed: run `make test` (it installs it).")
    return found


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[str]:
    """The app on a free loopback port, against the committed (not rolled back) database."""
    application = create_app(app_config(database_url))
    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    get_database(application).dispose()


def _failed(tab, request) -> None:
    # The browser asks for the icon after the load event; a test that moves on at once
    # cancels that fetch, which is nothing failing.
    if request.url.endswith("/favicon.svg") and "ERR_ABORTED" in (request.failure or ""):
        return
    tab.problems.append(f"failed: {request.url} {request.failure}")


def open_page(browser, **context_options):
    """A fresh page in its own context that records page errors and failed or 4xx/5xx
    requests in ``page.problems``; ``page.context.close()`` ends it."""
    context = browser.new_context(locale="zh-CN", **context_options)
    tab = context.new_page()
    tab.problems = []  # type: ignore[attr-defined]
    tab.on("pageerror", lambda exc: tab.problems.append(f"page error: {exc}"))
    tab.on("requestfailed", lambda req: _failed(tab, req))
    tab.on(
        "response",
        lambda resp: resp.status >= 400 and tab.problems.append(f"{resp.status}: {resp.url}"),
    )
    return tab


@pytest.fixture
def page(browser):
    """A fresh browser page (see ``open_page``)."""
    tab = open_page(browser)
    yield tab
    tab.context.close()


def wait_until(page, expression: str, timeout_ms: float = 30_000) -> None:
    """``page.wait_for_function`` for pages under the Content-Security-Policy: Playwright polls
    a predicate inside the page with ``new Function``, which the policy (no 'unsafe-eval')
    refuses. This polls over DevTools (``page.evaluate``), which no page policy governs."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_ms:.0f} ms: {expression}")
        page.wait_for_timeout(100)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artefact under ``artifacts/screenshots/``."""
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core (from npm, in static/vendor/) run on the page as it is now; the violations of
    the given impacts, each as {id, impact, help, targets}. Evaluated over the DevTools
    protocol, so it needs no script tag and no Content-Security-Policy exception."""
    page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result = page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})); }"
    )
    return [v for v in result if v["impact"] in impacts]


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    """An ORM session inside the test's transaction; its commits are savepoints."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as db_session:
        yield db_session


# -- people --------------------------------------------------------------------------------

TEST_PASSWORD = "Lychee-Bridge-Kiln-47"


@pytest.fixture
def make_user(session):
    """Create a user with one role (and its scope) in the test's transaction.

    ``make_user("inspector", grid_codes=[...])`` → (user_id, username). The password is
    ``TEST_PASSWORD``.
    """
    from gridops.auth import service as auth

    counter = iter(range(1, 10_000))

    def create(role: str | None = None, username: str | None = None, **scope):
        name = username or f"{role or 'nobody'}{next(counter)}".replace("_", "-")
        user_id = auth.create_user(session, name, TEST_PASSWORD)
        if role:
            auth.assign_role(session, user_id, role, **scope)
        session.commit()
        return user_id, name

    return create


@pytest.fixture
def token_for(session):
    """A device token for a user id (created in the test's transaction)."""
    from gridops.auth import service as auth

    def create(user_id: int, name: str = "test tablet", days: int = 30) -> str:
        _, token = auth.create_token(session, user_id, name, days=days)
        session.commit()
        return token

    return create


@pytest.fixture
def admin_client(app, make_user, token_for):
    """A test client that sends an admin's device token with every request."""
    user_id, _ = make_user("admin")
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
    return test_client


@pytest.fixture(scope="session")
def live_admin(engine) -> tuple[str, str]:
    """An admin committed to the test database, for pages served by ``live_server``."""
    from gridops.auth import service as auth

    name = f"live-admin-{uuid.uuid4().hex[:6]}"
    with Session(engine) as db:
        user_id = auth.create_user(db, name, TEST_PASSWORD)
        auth.assign_role(db, user_id, "admin")
        db.commit()
    return name, TEST_PASSWORD


def sign_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


# -- the Foshan demo, served ---------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The demo's files (geodata/build.py), built once per run."""
    from tests.test_geodata import load_build

    out = tmp_path_factory.mktemp("demo-data")
    load_build().build(out)
    return out


@dataclass(frozen=True)
class DemoSite:
    database_url: str
    base_url: str
    users: dict[str, tuple[str, str]]  # username → (username, password), e.g. "demo.inspector"
    data: Path


@pytest.fixture(scope="session")
def demo_site(database_url: str, demo_data: Path, tmp_path_factory) -> Iterator[DemoSite]:
    """The whole ``make demo`` in a database of its own (loaded, people, roster, a year of case
    history, today's inspection tasks, the nightly hotspot runs), served on a free loopback
    port. Browser tests share it and may add to it: assert on what a test itself created."""
    from click.testing import CliRunner

    from gridops.auth.commands import DEMO_USERS
    from gridops.cli import main
    from gridops.demo import load_demo

    name = f"gridops_site_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    site_engine = create_engine(url, poolclass=pool.NullPool)
    server = None
    try:
        with site_engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        migrate.upgrade(url)
        with Session(site_engine) as db:
            load_demo(db, demo_data, log=lambda _: None)
        for command in (
            ["demo", "users"],
            ["demo", "roster"],
            ["demo", "history"],
            ["demo", "patrols"],
            ["scheduler", "--once", "inspection_tasks"],
            ["scheduler", "--once", "hotspot_run"],
        ):
            result = CliRunner().invoke(main, command, env={"GRIDOPS_DATABASE_URL": url})
            assert result.exit_code == 0, f"{command}: {result.output}"
        photos = tmp_path_factory.mktemp("site-photos")
        application = create_app(app_config(url, PHOTO_DIR=str(photos)))
        server = make_server("127.0.0.1", 0, application, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield DemoSite(
            database_url=url,
            base_url=f"http://127.0.0.1:{server.server_port}",
            users={u[0]: (u[0], u[4]) for u in DEMO_USERS},
            data=demo_data,
        )
        server.shutdown()
        get_database(application).dispose()
    finally:
        site_engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

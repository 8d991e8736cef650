"""The OpenAPI description (gridops/openapi.yaml) against the app.

- Completeness: every route of the app but the HTML pages and static files is described, with
  each of its methods, and nothing is described that the app does not route; each operation
  says what its view declares (``@public``: no security; ``@requires(verb)``:
  ``x-gridops-permission: verb``). The document is valid OpenAPI 3.1 and every ``$ref``
  resolves.
- Hostile input: schemathesis generates valid and invalid requests for every operation, from
  the document alone, and sends them to the app in-process, as an administrator (device token)
  and as a planner (browser session with its CSRF token, a restricted reader), on a world with
  records of every kind. No answer may be a 500, and every answer must be documented: its
  status, its content type and its body's schema. The world is committed in a database of the
  module's own (dropped at its end) and each example runs in a transaction that is rolled back,
  so an example that disables the caller or revokes their token does not spoil the next one.
- The bugs the fuzzing found, each pinned by a plain request.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Connection, Engine, create_engine, make_url, pool, text
from sqlalchemy.orm import Session

from gridops import create_app, migrate
from gridops.db import get_database
from gridops.openapi import load_spec
from tests.conftest import TEST_PASSWORD, app_config

SPEC = load_spec()

# HTML pages (and Flask's static files): not part of the JSON API, not described.
PAGES = {
    "static",
    "web.index",
    "auth.login",  # GET /login, the login page (POST /login is described)
    "tablet.page",
    "tablet.service_worker",
    "board.page",
    "planner.hotspot_map",
    "planner.kpi_dashboard",
}
METHODS = ("get", "put", "post", "delete", "patch")
CONVERTER = re.compile(r"<(?:[a-z_]+(?:\([^)]*\))?:)?([a-z_]+)>")
# Open311 routes answer in XML and JSON (``.<fmt>``); the document describes the JSON format.
OPEN311_FORMAT = ".<fmt>"

# Kept small so that the module stays within a couple of minutes (two callers, ~85 operations
# each). GRIDOPS_FUZZ_EXAMPLES=200 GRIDOPS_FUZZ_COVERAGE=1 digs deeper (schemathesis' coverage
# phase adds boundary and missing-parameter cases), still deterministic.
MAX_EXAMPLES = int(os.environ.get("GRIDOPS_FUZZ_EXAMPLES", "12"))
COVERAGE_PHASE = os.environ.get("GRIDOPS_FUZZ_COVERAGE", "") not in ("", "0")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path template: ``/cases/<int:case_id>`` → ``/cases/{case_id}``."""
    return CONVERTER.sub(r"{\1}", rule.replace(OPEN311_FORMAT, ".json"))


def routed_operations(app) -> dict[tuple[str, str], str]:
    """(path template, method) → endpoint, for every rule of the app but pages and statics."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PAGES:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found[openapi_path(rule.rule), method.lower()] = rule.endpoint
    return found


def described_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


URL_MAP_APP = create_app(
    {"ENV": "testing", "DATABASE_URL": "postgresql://x@y/z", "SECRET_KEY": "t"}
)


def test_every_route_is_described_and_nothing_else():
    routed = routed_operations(URL_MAP_APP)
    described = described_operations(SPEC)
    missing = sorted(f"{m.upper()} {p} ({routed[p, m]})" for p, m in set(routed) - set(described))
    unknown = sorted(f"{m.upper()} {p}" for p, m in set(described) - set(routed))
    assert not missing, f"routes the OpenAPI document does not describe: {missing}"
    assert not unknown, f"operations described that the app does not route: {unknown}"
    assert len(described) >= 80


def test_operations_declare_what_their_views_declare():
    routed = routed_operations(URL_MAP_APP)
    wrong = []
    for key, operation in described_operations(SPEC).items():
        view = URL_MAP_APP.view_functions[routed[key]]
        declared = view.gridops_permission
        public = operation.get("security", SPEC["security"]) == []
        if declared is None and not public:
            wrong.append(f"{key}: the view is @public, the operation asks for a login")
        elif declared is not None and operation.get("x-gridops-permission") != declared:
            wrong.append(f"{key}: x-gridops-permission is not {declared!r}")
        if "{" in key[0] and "404" not in operation["responses"]:
            wrong.append(f"{key}: no 404 (a path the router's converters refuse)")
    assert not wrong, wrong
    ids = [op["operationId"] for op in described_operations(SPEC).values()]
    assert len(ids) == len(set(ids)), "operationIds are unique"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_the_document_is_valid_openapi():
    schemathesis.openapi.from_dict(load_spec()).validate()  # the OpenAPI 3.1 meta-schema
    unresolved = []
    for ref in set(_refs(SPEC)):
        node: Any = SPEC
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if not ref.startswith("#/") or node is None:
            unresolved.append(ref)
    assert not unresolved, f"$refs that resolve to nothing: {sorted(unresolved)}"


def test_the_document_is_served(client):
    response = client.get("/api/v1/openapi.json")  # public: no token, no session
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == SPEC


# -- fuzzing with schemathesis ---------------------------------------------------------------

CONFIG = schemathesis.Config.from_dict(
    {
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,  # Hypothesis' derandomize: the same examples every run
            "database": "none",
            "with-security-parameters": False,  # the fixture signs the requests in
        },
        "phases": {
            "examples": {"enabled": True},
            "fuzzing": {"enabled": True},
            "coverage": {"enabled": COVERAGE_PHASE},
            "stateful": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_dict(load_spec(), config=CONFIG)


@dataclass
class Fuzz:
    """The app, the world's ids and who calls."""

    app: Any
    engine: Engine
    headers: dict[str, str]
    cookies: dict[str, str] = field(default_factory=dict)
    known: dict[str, list[Any]] = field(default_factory=dict)
    calls: int = 0
    started: float = field(default_factory=time.monotonic)
    statuses: dict[str, set[int]] = field(default_factory=dict)  # operation -> statuses seen

    @contextmanager
    def example(self) -> Iterator[None]:
        """One example's requests in a transaction of their own, rolled back afterwards (the
        app's commits are savepoints in it, as with the ``app`` fixture)."""
        with bound(self.app, self.engine, keep=False):
            yield
        self.calls += 1


@contextmanager
def bound(app, engine: Engine, *, keep: bool) -> Iterator[Connection]:
    """The app's sessions inside one transaction on one connection, committed if ``keep``."""
    with engine.connect() as connection:
        transaction = connection.begin()
        get_database(app).bind_to(connection)
        try:
            yield connection
        finally:
            if keep:
                transaction.commit()
            else:
                transaction.rollback()


def _build_world(connection: Connection, tmp_path) -> tuple[Any, dict[str, list[Any]]]:
    """The permission matrix's world (three sides with areas, grids, enterprises, outlets,
    incidents with photos, components, inspection plans and tasks, patrol points, users of
    every role with tokens), plus a hotspot run, a notification, a duty and an absence."""
    from argon2 import PasswordHasher

    from gridops.auth import passwords
    from gridops.auth import service as auth
    from gridops.hotspots import service as hotspots
    from gridops.notifications import service as notifications
    from tests.test_permissions import build_world

    counter = itertools.count(1)
    with (
        pytest.MonkeyPatch.context() as patch,
        Session(bind=connection, join_transaction_mode="create_savepoint") as db,
    ):
        # Cheap hashes: a dozen users are made here, and passwords are not what is tested.
        patch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))

        def make_user(role=None, username=None, **scope):
            name = username or f"{role or 'nobody'}{next(counter)}".replace("_", "-")
            user_id = auth.create_user(db, name, TEST_PASSWORD)
            if role:
                auth.assign_role(db, user_id, role, **scope)
            db.commit()
            return user_id, name

        def token_for(user_id, name="fuzz tablet", days=30):
            _, token = auth.create_token(db, user_id, name, days=days)
            db.commit()
            return token

        world = build_world(db, tmp_path, make_user, token_for)
        inspector = world.users["inspector"][0]
        own = world.sides["own"]
        run = hotspots.run_hotspots(db, start="2000-01-01", end="2100-01-01", area="440604")
        notifications.notify(
            db, world.users["admin"][0], kind="assignment", title="fuzz",
            incident_id=int(own.ids["incidents"][0]), dedupe_key="fuzz",
        )  # fmt: skip
        grid = own.ids["grids"][0]
        db.execute(
            text(
                "INSERT INTO grid_inspector (grid_code, user_id, is_primary) VALUES (:g, :u, true)"
            ),
            {"g": grid, "u": inspector},
        )
        absence = db.execute(
            text(
                "INSERT INTO staff_absence (user_id, starts_on, ends_on, note) "
                "VALUES (:u, current_date, current_date + 3, 'fuzz') RETURNING id"
            ),
            {"u": inspector},
        ).scalar_one()
        db.commit()
        ids = lambda sql: [r[0] for r in db.execute(text(sql))]  # noqa: E731
        known = {
            "case_id": [int(i) for s in world.sides.values() for i in s.ids["incidents"]],
            "photo_id": ids("SELECT id FROM incident_photo ORDER BY id"),
            "task_id": ids("SELECT id FROM inspection_task ORDER BY id"),
            "user_id": [inspector, *ids("SELECT id FROM app_user ORDER BY id")],
            "token_id": ids("SELECT id FROM api_token ORDER BY id"),
            "assignment_id": ids("SELECT id FROM role_assignment ORDER BY id"),
            "notification_id": ids("SELECT id FROM notification ORDER BY id"),
            "absence_id": [absence],
            "run_id": [run],
            "grid_code": [grid, *world.sides["foreign"].ids["grids"][:1]],
            "code": [*own.areas, grid],
            "feature_id": [i for s in world.sides.values() for i in s.ids["incidents"]]
            + [i for s in world.sides.values() for i in s.ids["enterprises"]],
            "category_code": ["E0502", "E05", "C0101"],
            "service_request_id": [i for s in world.sides.values() for i in s.ids["incidents"]],
        }
    return world, known


@pytest.fixture(scope="module")
def fuzz_world(database_url, tmp_path_factory) -> Iterator[tuple[Any, Engine, Any, dict]]:
    """The world, committed in a database of the module's own, dropped at its end: each
    example then runs in a transaction of its own that is rolled back. (Savepoints in one
    long transaction would not do: each request's write keeps a transaction-id lock until the
    outer transaction ends, and a few thousand requests exhaust PostgreSQL's lock table.)"""
    tmp_path = tmp_path_factory.mktemp("openapi")
    name = f"gridops_openapi_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    app = None
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        migrate.upgrade(url)
        app = create_app(app_config(url, PHOTO_DIR=str(tmp_path / "photos")))
        with bound(app, engine, keep=True) as connection:
            world, known = _build_world(connection, tmp_path)
        yield app, engine, world, known
    finally:
        if app is not None:
            get_database(app).dispose()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def _sign_in(app, username: str) -> tuple[str, str]:
    """A browser session's cookie and CSRF token, through the login form as a browser does."""
    browser = app.test_client()
    page = browser.get("/login").get_data(as_text=True)
    form = {"username": username, "password": TEST_PASSWORD}
    form["csrf_token"] = CSRF_FIELD.search(page).group(1)
    signed_in = browser.post("/login", data=form)
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    # Signing in clears the session, its CSRF secret too: take the token a page now holds.
    landing = browser.get("/", follow_redirects=True).get_data(as_text=True)
    cookie = browser.get_cookie("gridops_session")
    assert cookie is not None
    return cookie.value, CSRF_META.search(landing).group(1)


@pytest.fixture(scope="module", params=["admin:token", "planner:session"])
def fuzz(request, fuzz_world) -> Iterator[Fuzz]:
    """Who calls: an admin's device token, or a planner's browser session with its CSRF token
    (a restricted reader: no reporter data, no exact points outside the jurisdiction)."""
    app, engine, world, known = fuzz_world
    role, via = request.param.split(":")
    if via == "token":
        caller = Fuzz(app, engine, {"Authorization": f"Bearer {world.tokens[role]}"})
    else:
        with bound(app, engine, keep=True):  # the session stays for the module's requests
            cookie, csrf = _sign_in(app, world.users[role][1])
        caller = Fuzz(app, engine, {"X-CSRFToken": csrf}, {"gridops_session": cookie})
    caller.known = known
    yield caller
    elapsed = time.monotonic() - caller.started
    answered = [op for op, seen in caller.statuses.items() if any(s < 300 for s in seen)]
    print(
        f"\nschemathesis as {request.param}: {len(caller.statuses)} operations, "
        f"{caller.calls} requests in {elapsed:.1f} s; {len(answered)} operations answered 2xx"
    )
    for op in sorted(set(caller.statuses) - set(answered)):
        print(f"  never 2xx: {op} {sorted(caller.statuses[op])}")


QUERY_IDS = {"with": "run_id", "user": "user_id"}  # query parameters naming records


def _steer(case, known: dict[str, list[Any]], token: str | None) -> None:
    """Send a third of the generated ids and codes to records that exist, so that examples
    reach past "not found" (the choice follows the generated value: deterministic)."""
    for name, value in list((case.path_parameters or {}).items()):
        candidates = known.get(name)
        if not candidates:
            continue
        seed = value if isinstance(value, int) else len(str(value))
        if seed % 3 == 0:
            case.path_parameters[name] = candidates[(seed // 3) % len(candidates)]
    for name, known_as in QUERY_IDS.items():
        value = (case.query or {}).get(name)
        if isinstance(value, int) and value % 3 == 0:
            case.query[name] = known[known_as][(value // 3) % len(known[known_as])]
    match = re.fullmatch(r'(?:W/)?"([0-9]+)"', str((case.headers or {}).get("If-Match", "")))
    if match and int(match.group(1)) % 2 == 0:
        case.headers["If-Match"] = '"1"'  # the world's cases and tasks are at version 1
    body = case.body if isinstance(case.body, dict) else {}
    if token and "api_key" in body and len(str(body["api_key"])) % 2 == 0:
        body["api_key"] = token  # Open311: a key that resolves


@schema.parametrize()
def test_api_answers_as_documented(case, fuzz):
    token = fuzz.headers.get("Authorization", "").removeprefix("Bearer ") or None
    _steer(case, fuzz.known, token)
    with fuzz.example():
        response = case.call(app=fuzz.app, headers=dict(fuzz.headers), cookies=fuzz.cookies)
        fuzz.statuses.setdefault(case.operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)
    # Documented, but never right for this caller: the fuzzing would test nothing past the gate.
    refused = response.status_code == 401 and case.operation.path != "/login"
    sent_csrf_field = isinstance(case.body, dict) and "csrf_token" in case.body  # the login form
    refused |= response.status_code == 400 and "CSRF" in response.text and not sent_csrf_field
    assert not refused, f"the caller was refused at the gate: {response.text[:300]}"


# -- what the fuzzing found, pinned ------------------------------------------------------------

LONG_PASSWORD = "Lychee-Bridge-Kiln-47 " * 5  # longer than zxcvbn's 72 characters


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "field"),
    [
        # U+0000 in a filter reached the query: PostgreSQL text cannot hold it.
        ("get", "/api/v1/components?maintainer=a%00b", None, 422, "maintainer"),
        ("get", "/api/v1/areas/4406%0004", None, 422, "path"),
        ("post", "/api/v1/hotspots/runs", {"start": "2026-01-01\u0000"}, 422, "start"),
        ("post", "/api/v1/hotspots/runs", '{"area": "\\ud800"}', 422, "area"),
        # A body without start: run_hotspots() was called without its required argument.
        ("post", "/api/v1/hotspots/runs", {"k": None, "end": ""}, 422, "start"),
        # isdigit() is true for "²" and "¹", int() refuses them.
        ("get", "/api/v1/incidents/%C2%B99", None, 404, None),
        ("get", "/api/v1/dispatch/queue?limit=%C2%B2", None, 422, "limit"),
        ("get", "/api/v1/inbox?limit=%C2%B2", None, 422, "limit"),
        ("get", "/api/v1/admin/calendar?year=%C2%B2", None, 422, "year"),
        ("get", "/api/v1/admin/absences?user=%C2%B2", None, 422, "user"),
        ("get", "/api/v1/patrol/day?user=%C2%B2", None, 422, "user"),
        ("get", "/api/v1/inspections/tasks?assignee=%C2%B2", None, 422, "assignee"),
        ("get", "/api/v1/hotspots/runs/1/compare?with=%C2%B2", None, 422, "with"),
        ("get", "/api/v1/board/cases?cursor=%C2%B2", None, 422, "cursor"),
        ("get", "/collections/grids/items?limit=%C2%B2", None, 422, "limit"),
        # zxcvbn raises on passwords over 72 characters; the whole password still counts.
        ("post", "/api/v1/admin/users", {"username": "long.pw", "password": LONG_PASSWORD},
         201, None),
        # display_name: a list, and too long for its column.
        ("post", "/api/v1/admin/users", {"username": "dn.list", "password": LONG_PASSWORD,
                                         "display_name": [None]}, 422, "display_name"),
        ("post", "/api/v1/admin/users", {"username": "dn.long", "password": LONG_PASSWORD,
                                         "display_name": "名" * 101}, 422, "display_name"),
        # A role's scope of the wrong JSON type reached the query.
        ("post", "/api/v1/admin/users/{user}/roles", {"role": "district_manager",
                                                      "area_code": 0.0}, 422, "area_code"),
        ("post", "/api/v1/admin/users/{user}/roles", {"role": "inspector",
                                                      "grid_codes": "4406"}, 422, "grid_codes"),
        # A positive limit too small for a ``real`` column underflowed in the database.
        ("patch", "/api/v1/admin/categories/E0502", {"verify_limit_hours": 8e-133}, 422,
         "verify_limit_hours"),
        ("patch", "/api/v1/admin/categories/E0502", {"duplicate_radius_m": 1e-50}, 422,
         "duplicate_radius_m"),
    ],
)  # fmt: skip
def test_hostile_input_found_by_fuzzing_is_refused(
    admin_client, make_user, session, method, url, body, status, field
):
    user_id, _ = make_user()
    before = session.execute(text("SELECT updated_at FROM category WHERE code = 'E0502'")).all()
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, str) else {}
    response = getattr(admin_client, method)(
        url.format(user=user_id), **(kwargs or ({"json": body} if body is not None else {}))
    )
    assert response.status_code == status, response.get_data(as_text=True)
    if field is not None:
        problem = response.get_json()
        assert response.mimetype == "application/problem+json"
        assert field in [e["field"] for e in problem["errors"]], problem
    after = session.execute(text("SELECT updated_at FROM category WHERE code = 'E0502'")).all()
    assert after == before  # nothing written


def test_a_form_part_without_a_name_is_refused_before_the_csrf_check(client):
    """Flask-WTF's CSRF check (browser sessions) read such a part's name None and crashed."""
    body = b'--b\r\nContent-Disposition: form-data; name="a\nb"\r\n\r\n{}\r\n--b--\r\n'
    response = client.post(
        "/api/v1/incidents", data=body, content_type="multipart/form-data; boundary=b"
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["errors"][0]["field"] == "body"


def test_open311_refuses_nul_in_its_own_format(client):
    response = client.get("/open311/v2/services/E0502.json?jurisdiction_id=44%0006")
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    [summary, named] = response.get_json()
    assert summary["code"] == 400 and named["description"].startswith("jurisdiction_id:")

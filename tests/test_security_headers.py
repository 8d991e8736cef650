"""Security headers (gridops/security.py) on every page and API answer, and the
Content-Security-Policy enforced in a real Chromium on the served Foshan demo.

The routes are read from the app's ``url_map``: every GET route without arguments, plus a few
with arguments, is asked for by an admin, by a stranger and as a missing record, and each
answer must carry the headers of its kind:
- every answer: ``X-Content-Type-Options: nosniff``, a same-origin ``Referrer-Policy`` and no
  framing; HSTS only outside development and testing;
- pages: the strict policy (``'self'`` only, no ``unsafe-inline``/``unsafe-eval``); data
  (JSON, GeoJSON, CSV, tiles): a policy that allows nothing;
- ``Cache-Control: no-store`` except static files and the deliberate private caches.
In the browser, each role's page is opened with a listener for CSP violations: none may fire,
the pages still work, and an injected inline handler is blocked (so the listener can fail).
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from sqlalchemy import text
from werkzeug.exceptions import NotFound

from gridops import create_app
from gridops.db import get_database
from gridops.security import DATA_POLICY, PRIVATE_CACHES, inline_script, page_policy
from tests.conftest import app_config, open_page, sign_in, wait_until

URL_MAP_APP = create_app(
    {"ENV": "testing", "DATABASE_URL": "postgresql://x@y/z", "SECRET_KEY": "t"}
)
GET_ROUTES_WITHOUT_ARGUMENTS = sorted(
    rule.rule
    for rule in URL_MAP_APP.url_map.iter_rules()
    if "GET" in rule.methods and not rule.arguments and rule.endpoint != "static"
)
# Routes with arguments, filled in (found or not: both answers need the headers).
GET_ROUTES_WITH_ARGUMENTS = (
    "/api/v1/areas/440600",
    "/api/v1/grids/440604012001001",
    "/api/v1/enterprises/91440604MA0000000X",
    "/api/v1/cases/1",
    "/api/v1/cases/1/photos/1",
    "/api/v1/incidents/1",
    "/api/v1/hotspots/runs/1",
    "/api/v1/board/cases/1",
    "/api/v1/admin/inspectors/1/profile",
    "/api/v1/tiles/grids/10/836/445.pbf",
    "/api/v1/tiles/incidents/10/836/445.pbf",
    "/collections/grids",
    "/collections/grids/items",
    "/collections/grids/items/440604012001001",
    "/open311/v2/services.json",
    "/open311/v2/services.xml",
    "/open311/v2/requests.json",
    "/open311/v2/discovery.json",
    "/api/v1/kpis?format=csv",
    "/api/v1/nowhere",  # the router's 404
)
DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",
    "connect-src": "'self'",
    "worker-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def directives(policy: str) -> dict[str, str]:
    out = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value.strip()
    return out


def check_common(response, label: str, *, production: bool = False) -> None:
    headers = response.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", label
    assert headers.get("Referrer-Policy") in ("same-origin", "strict-origin-when-cross-origin")
    assert headers.get("X-Frame-Options") == "DENY", label
    hsts = headers.get("Strict-Transport-Security")
    if production:
        assert hsts == "max-age=31536000; includeSubDomains", label
    else:
        assert hsts is None, f"{label}: no HSTS over the plain http:// of development/testing"


def check_page_policy(response, label: str, hashes: tuple[str, ...] = ()) -> None:
    policy = response.headers.get("Content-Security-Policy", "")
    found = directives(policy)
    for name, value in DIRECTIVES.items():
        if name == "script-src":
            assert found[name].split() == ["'self'", *hashes], f"{label}: {policy}"
        else:
            assert found.get(name) == value, f"{label}: {name} in {policy}"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, label
    assert "http:" not in policy and "https:" not in policy and "*" not in policy, label


def check_kind(path: str, response, label: str) -> None:
    """The policy and caching an answer must have for what it is."""
    headers = response.headers
    try:
        endpoint = URL_MAP_APP.url_map.bind("localhost").match(path.split("?")[0])[0]
    except NotFound:
        endpoint = None
    if response.mimetype == "text/html" or endpoint == "tablet.service_worker":
        check_page_policy(response, label)
    else:
        assert headers.get("Content-Security-Policy") == DATA_POLICY, label
    cache = headers.get("Cache-Control", "")
    if endpoint in PRIVATE_CACHES and response.status_code in (200, 204, 304):
        assert PRIVATE_CACHES[endpoint] in cache and "public" not in cache, f"{label}: {cache}"
    else:
        assert cache == "no-store", f"{label}: {cache!r}"


@pytest.fixture
def admin_token(make_user, token_for) -> str:
    user_id, _ = make_user("admin")
    return token_for(user_id)


def test_the_route_lists_are_not_empty():
    # A url_map that stopped listing the pages would make the loops below check nothing.
    assert {"/", "/login", "/tablet", "/board", "/planner/map", "/planner/kpis", "/sw.js"} <= set(
        GET_ROUTES_WITHOUT_ARGUMENTS
    )
    assert len(GET_ROUTES_WITHOUT_ARGUMENTS) > 30


@pytest.mark.parametrize("path", GET_ROUTES_WITHOUT_ARGUMENTS + list(GET_ROUTES_WITH_ARGUMENTS))
def test_every_get_route_answers_with_the_headers_of_its_kind(client, admin_token, path):
    answers = {
        "admin": client.get(path, headers={"Authorization": f"Bearer {admin_token}"}),
        "stranger": client.get(path),
        "stranger asking for JSON": client.get(path, headers={"Accept": "application/json"}),
    }
    for who, response in answers.items():
        assert response.status_code < 500, f"{path} as {who}: {response.status_code}"
        label = f"{path} as {who} ({response.status_code}, {response.mimetype})"
        check_common(response, label)
        check_kind(path, response, label)


def test_pages_carry_the_strict_policy_and_api_answers_no_store(client, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    kinds = {}
    for path in ("/", "/login", "/tablet", "/board", "/planner/kpis", "/api/v1/me", "/sw.js"):
        response = client.get(path, headers=auth)
        assert response.status_code == 200, path
        kinds[path] = response.mimetype
        check_common(response, path)
        check_kind(path, response, path)
    assert kinds["/board"] == "text/html" and kinds["/api/v1/me"] == "application/json"
    # The login form carries a CSRF token of its own session: never kept by a cache either.
    assert client.get("/login").headers["Cache-Control"] == "no-store"


def test_unsafe_requests_and_errors_carry_them_too(client, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    answers = [
        (
            "POST /api/v1/incidents, bad body",
            client.post("/api/v1/incidents", json=[], headers=auth),
        ),
        ("POST /api/v1/incidents, stranger", client.post("/api/v1/incidents", json={})),
        ("DELETE /api/v1/tokens/1", client.delete("/api/v1/tokens/999999", headers=auth)),
        ("PUT /health (405)", client.put("/health")),
        ("POST /login without CSRF", client.post("/login", data={"username": "x"})),
    ]
    for label, response in answers:
        assert 400 <= response.status_code < 500, label
        check_common(response, label)
        assert response.headers["Cache-Control"] == "no-store", label
        assert response.headers["Content-Security-Policy"] in (DATA_POLICY, page_policy()), label


def test_static_files_stay_cacheable_and_need_no_policy(client):
    for path in (
        "/static/js/board.js",
        "/static/vendor/leaflet/leaflet.css",
        "/static/favicon.svg",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        check_common(response, path)
        assert "no-store" not in response.headers.get("Cache-Control", ""), path
        # Conditional requests keep them cheap to revalidate.
        assert response.headers.get("ETag") or response.headers.get("Last-Modified"), path


def test_the_deliberate_private_caches_are_private(client, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    categories = client.get("/api/v1/categories", headers=auth)
    assert categories.status_code == 200
    assert categories.headers["Cache-Control"] == "private, max-age=300"
    again = client.get(
        "/api/v1/categories", headers={**auth, "If-None-Match": categories.headers["ETag"]}
    )
    assert again.status_code == 304 and again.headers["Cache-Control"] == "private, max-age=300"
    tile = client.get("/api/v1/tiles/grids/10/836/445.pbf", headers=auth)
    assert tile.status_code in (200, 204)
    assert tile.headers["Cache-Control"] == "private, max-age=300"
    assert tile.headers["Vary"] == "Authorization, Cookie"
    worker = client.get("/sw.js")
    assert worker.headers["Cache-Control"] == "no-cache"
    # A refusal from a cached endpoint is not cached.
    refused = client.get("/api/v1/tiles/grids/40/0/0.pbf", headers=auth)
    assert 400 <= refused.status_code < 500
    assert refused.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("env", ["production", "development", "testing"])
def test_hsts_only_outside_development_and_testing(
    database_url, connection, make_user, token_for, env
):
    application = create_app(app_config(database_url, ENV=env))
    get_database(application).bind_to(connection)
    try:
        user_id, _ = make_user("admin")
        token = token_for(user_id)
        client = application.test_client()
        for path, auth in (
            ("/login", False),
            ("/api/v1/me", True),
            ("/board", True),
            ("/static/js/board.js", False),
            ("/api/v1/nowhere", True),
        ):
            headers = {"Authorization": f"Bearer {token}"} if auth else {}
            response = client.get(path, headers=headers)
            assert response.status_code < 500, path
            check_common(response, f"{env} {path}", production=env == "production")
    finally:
        get_database(application).dispose()


def test_an_inline_script_is_allowed_by_its_hash_only(app):
    source = "window.answer = 42;"
    expected = (
        "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"
    )
    with app.test_request_context("/"):
        assert str(inline_script(source)) == f"<script>{source}</script>"
        with pytest.raises(ValueError):
            inline_script("x = '</SCRIPT><script>alert(1)</script>';")
        response = app.make_response("<p>page</p>")
        response = app.process_response(response)
    assert directives(response.headers["Content-Security-Policy"])["script-src"] == (
        f"'self' {expected}"
    )


# -- in the browser, on the served Foshan demo ----------------------------------------------

# Collects violations from the first moment of every document (an init script runs through
# DevTools, outside the page's policy).
LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " +
                    (e.sourceFile || "") + ":" + e.lineNumber);
});
"""


def watched_page(browser, **options):
    page = open_page(browser, **options)
    page.csp_console = []
    page.on(
        "console",
        lambda msg: "Content Security Policy" in msg.text and page.csp_console.append(msg.text),
    )
    page.add_init_script(LISTEN)
    return page


def violations(page) -> list[str]:
    return page.evaluate("window.__csp") + page.csp_console


def inline_scripts_of(html: str) -> list[str]:
    """The executable inline scripts of a page (not src=, not JSON data blocks)."""
    found = re.findall(r"<script(\s[^>]*)?>(.*?)</script>", html, flags=re.S)
    return [
        body for attrs, body in found if "src=" not in (attrs or "") and "json" not in (attrs or "")
    ]


@pytest.fixture(scope="module")
def site_engine(demo_site):
    from sqlalchemy import create_engine, pool

    engine = create_engine(demo_site.database_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.mark.browser
def test_the_pages_run_under_the_policy_without_a_violation(browser, demo_site, site_engine):
    base = demo_site.base_url
    checked = {}

    # The sign-in page and the overview (an admin lands on it).
    page = watched_page(browser, viewport={"width": 1280, "height": 900})
    page.goto(base + "/login")
    page.wait_for_selector("input[name=username]")
    checked["login"] = violations(page)
    sign_in(page, base, *demo_site.users["demo.admin"])
    page.wait_for_selector("body[data-loaded]")
    page.locator("#map path.leaflet-interactive").first.hover()  # an area's tooltip
    page.wait_for_selector(".leaflet-tooltip")
    checked["overview"] = violations(page)
    assert page.problems == []
    page.context.close()

    # The inspector's tablet: its map, a popup, the service worker and the report form.
    page = watched_page(browser, viewport={"width": 1024, "height": 768})
    sign_in(page, base, *demo_site.users["demo.inspector"])
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("body[data-offline-ready]", timeout=20_000)  # the worker runs
    page.click("#log-incident")
    page.locator("#category-list summary").first.click()
    checked["tablet"] = violations(page)
    assert page.problems == []
    page.context.close()

    # The dispatcher's board: map, queue, workload, tracks and a case's panel.
    page = watched_page(browser, viewport={"width": 1366, "height": 900})
    sign_in(page, base, *demo_site.users["demo.community"])
    page.goto(base + "/board")
    page.wait_for_selector("body[data-board-ready]", timeout=15_000)
    page.wait_for_selector("body[data-tracks-ready]", timeout=15_000)
    page.locator(".queue-item").first.click()
    page.wait_for_load_state("networkidle")
    checked["board"] = violations(page)
    assert page.problems == []
    page.context.close()

    # The planner's hotspot map (folium's inline script, allowed by its hash) and dashboard.
    page = watched_page(browser, viewport={"width": 1400, "height": 1000})
    sign_in(page, base, *demo_site.users["demo.planner"])
    response = page.goto(base + "/planner/map")
    page.wait_for_selector("body[data-loaded=planner-map]")
    [script] = inline_scripts_of(response.text())
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in response.headers["content-security-policy"]
    assert page.locator("path.hotspot-cell").count() > 0, "folium's script ran"
    # folium's tooltip and popup of a hexagon (HTML made by its templates).
    for event in ("mouseover", "click"):
        page.evaluate(
            "(event) => { const cell = Object.values(map_hotspots._layers).find("
            " l => l.feature && l.feature.properties && l.feature.properties.bin > 0);"
            " const at = cell.getBounds().getCenter();"
            " cell.fire(event, {latlng: at, layer: cell, originalEvent: {}}, true); }",
            event,
        )
    page.wait_for_selector(".planner-tooltip")
    page.wait_for_selector(".leaflet-popup-content table")
    page.locator(".leaflet-control-layers-overlays input").last.check()  # an overlay of tiles
    page.wait_for_load_state("networkidle")
    checked["hotspot map"] = violations(page)
    page.goto(base + "/planner/kpis")
    page.wait_for_selector("body[data-loaded=kpi-dashboard]")
    page.wait_for_load_state("networkidle")
    assert page.locator("canvas").count() > 0
    with site_engine.connect() as db:
        assert db.execute(text("SELECT count(*) FROM incident")).scalar() > 0
    assert page.locator("table tbody tr").count() > 0, "the figures are drawn"
    checked["KPI dashboard"] = violations(page)
    assert page.problems == []

    assert checked == {name: [] for name in checked}, checked

    # The listener does hear a violation: an injected inline handler is blocked.
    page.evaluate(
        "document.body.insertAdjacentHTML('beforeend',"
        " '<img id=probe src=/nothing.png onerror=\"window.__ran = 1\">')"
    )
    wait_until(page, "window.__csp.length > 0")
    assert page.evaluate("window.__ran") is None
    assert any("script-src" in v for v in violations(page)), violations(page)
    page.context.close()

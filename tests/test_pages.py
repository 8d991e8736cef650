"""Pages in a real headless Chromium, with libraries served from static/vendor/."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_PASSWORD, axe_violations, screenshot, sign_in

pytestmark = pytest.mark.browser


def test_index_sends_strangers_to_the_login_page(page, live_server):
    page.goto(live_server + "/")
    assert page.url.startswith(live_server + "/login")
    assert "登录" in page.inner_text("h1")
    assert page.problems == []


def test_sign_in_then_the_map_loads_leaflet_offline(page, live_server, live_admin):
    sign_in(page, live_server, *live_admin)
    page.wait_for_selector("#map.leaflet-container")
    assert page.evaluate("typeof L !== 'undefined' && L.version.startsWith('1.9')")
    page.wait_for_selector("body[data-loaded]")
    assert "网格" in page.inner_text("header")
    cookie = next(c for c in page.context.cookies() if c["name"] == "gridops_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.problems == []


def test_sign_out_from_the_header(page, live_server, live_admin):
    sign_in(page, live_server, *live_admin)
    page.click("#logout")
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(live_server + "/login")
    page.goto(live_server + "/")
    assert page.url.startswith(live_server + "/login")  # the session really ended
    assert page.problems == []


def test_wrong_password_is_refused_in_chinese(page, live_server, live_admin):
    sign_in(page, live_server, live_admin[0], "not-the-password")
    assert "用户名或密码错误" in page.inner_text("main")
    # The refused login answers 401; that is the page working, not a failed request.
    assert [p for p in page.problems if not p.startswith("401")] == []


def test_language_switch_to_english(page, live_server, live_admin):
    sign_in(page, live_server, *live_admin)
    page.click("#lang-switch")
    page.wait_for_load_state("networkidle")
    assert "Grid management" in page.inner_text("main")
    assert page.problems == []


@pytest.mark.parametrize(
    ("role", "scope", "landing"),
    [
        ("inspector", {"grid_codes": ["440604001001001"]}, "/tablet"),
        ("community_manager", {"area_code": "440604001001"}, "/board"),
        ("district_manager", {"area_code": "440604"}, "/board"),
        ("planner", {"area_code": "440600"}, "/planner/map"),
    ],
)
def test_each_role_lands_on_its_page_and_sees_only_its_links(
    app, session, tmp_path, make_user, role, scope, landing
):
    from tests.test_cases import build_world
    from tests.test_permissions import csrf_token

    build_world(session, tmp_path)
    _, username = make_user(role, **scope)
    client = app.test_client()
    signed_in = client.post(
        "/login",
        data={"username": username, "password": TEST_PASSWORD, "csrf_token": csrf_token(client)},
    )
    assert signed_in.status_code == 302
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"] == landing
    page = client.get(landing).get_data(as_text=True)
    links = {
        "/tablet": role in ("inspector", "community_manager", "district_manager"),
        "/board": role in ("community_manager", "district_manager"),
        "/planner/map": role != "inspector",
        "/planner/kpis": role != "inspector",
    }
    for href, shown in links.items():
        assert (f'href="{href}"' in page) is shown, (role, href)
    assert 'aria-current="page"' in page


def test_login_and_overview_pages_pass_axe(page, live_server, live_admin):
    page.goto(live_server + "/login")
    assert axe_violations(page) == []
    screenshot(page, "login")
    sign_in(page, live_server, *live_admin)
    page.wait_for_selector("body[data-loaded]")
    assert axe_violations(page) == []
    screenshot(page, "admin-overview")
    assert page.problems == []

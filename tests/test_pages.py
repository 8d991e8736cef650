"""Pages in a real headless Chromium, with libraries served from static/vendor/."""

from __future__ import annotations

import pytest

from tests.conftest import sign_in

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

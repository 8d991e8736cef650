"""Pages in a real headless Chromium, with libraries served from static/vendor/."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_index_loads_leaflet_offline_without_errors(page, live_server):
    page.goto(live_server + "/")
    page.wait_for_selector("#map.leaflet-container")
    assert page.evaluate("typeof L !== 'undefined' && L.version.startsWith('1.9')")
    page.wait_for_selector("body[data-loaded]")
    assert "网格" in page.inner_text("header")
    assert page.problems == []


def test_language_switch_to_english(page, live_server):
    page.goto(live_server + "/")
    page.click("#lang-switch")
    page.wait_for_load_state("networkidle")
    assert "Grid management" in page.inner_text("main")
    assert page.problems == []

"""The planner's pages in a real headless Chromium against the Foshan demo: the hotspot map
(folium, every asset local) shows the nightly run's hexagons with a legend, a picker change
shows another run, the layer control toggles an overlay, and no incident point or reporter
reaches the page; the KPI dashboard draws the figures ``/api/v1/kpis`` gives, for a planner
and for a community manager. Render times are printed (``pytest -s``) and kept as an
artefact (artifacts/planner_timings.json)."""

from __future__ import annotations

import json
import time
from datetime import date

import h3
import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.orm import Session

from gridops.errors import InvalidInput
from gridops.web import planner_map
from tests.conftest import ARTIFACTS, axe_violations, open_page, screenshot, sign_in, wait_until

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1400, "height": 1000}
TIMINGS: dict[str, float] = {}


def timed(name: str, seconds: float) -> None:
    TIMINGS[name] = round(seconds, 3)
    path = ARTIFACTS / "planner_timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TIMINGS, indent=2), encoding="utf-8")
    print(f"{name}: {seconds:.3f} s")


@pytest.fixture(scope="module")
def site_db(demo_site):
    engine = create_engine(demo_site.database_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def planner_page(browser, demo_site):
    page = open_page(browser, viewport=VIEWPORT)
    sign_in(page, demo_site.base_url, *demo_site.users["demo.planner"])
    yield page
    page.context.close()


def open_map(page, url: str) -> dict:
    started = time.perf_counter()
    page.goto(url)
    # The map is built by folium's inline script, synchronously, before planner_map.js marks
    # the page loaded; overlays that fetch tiles are off at first.
    page.wait_for_selector("body[data-loaded=planner-map]")
    seconds = time.perf_counter() - started
    status = page.locator("#run-status")
    return {
        "seconds": seconds,
        "how": status.get_attribute("data-how"),
        "run": int(status.get_attribute("data-run-id") or 0),
        "hexagons": int(status.get_attribute("data-hexagons") or 0),
        "paths": page.locator("path.hotspot-cell").count(),
    }


def test_preset_periods_are_whole_months_like_the_nightly_runs():
    today = date(2026, 1, 15)
    assert planner_map.preset_period("standard", "gistar", today) == (
        date(2025, 12, 1),
        date(2025, 12, 31),
    )
    assert planner_map.preset_period("standard", "emerging", today) == (
        date(2025, 1, 1),
        date(2025, 12, 31),
    )
    assert planner_map.preset_period("last_3_months", "gistar", today) == (
        date(2025, 10, 1),
        date(2025, 12, 31),
    )


def test_bad_choices_are_named_together():
    with pytest.raises(InvalidInput) as caught:
        planner_map.parse_choice(
            {
                "kind": "heat",
                "preset": "custom",
                "start": "2026-13-01",
                "end": "",
                "resolution": "10",
            },
            date(2026, 1, 15),
        )
    assert {e.field for e in caught.value.errors} == {"kind", "start", "end", "resolution"}


def test_the_hotspot_map_shows_the_nightly_run_with_its_legend(planner_page, demo_site, site_db):
    page = planner_page
    shown = open_map(page, demo_site.base_url + "/planner/map")
    timed("hotspot map, first load (s)", shown["seconds"])
    again = open_map(page, demo_site.base_url + "/planner/map")
    timed("hotspot map, second load (cached map) (s)", again["seconds"])
    assert shown["how"] == "stored", "the default choice is the nightly job's run"
    with site_db.connect() as conn:
        run = conn.execute(
            text(
                "SELECT r.id, count(c.*) FILTER (WHERE c.bin <> 0 OR c.count > 0) AS drawn "
                "FROM hotspot_run r JOIN hotspot_cell c ON c.run_id = r.id "
                "WHERE r.kind = 'gistar' AND r.filters = '{}' AND r.area_code = '440600' "
                "AND r.created_by IS NULL GROUP BY r.id ORDER BY r.id DESC LIMIT 1"
            )
        ).one()
    assert shown["run"] == run.id
    assert shown["hexagons"] == shown["paths"] == run.drawn > 0
    # The map is Leaflet from static/vendor, with no tile server behind it.
    assert page.evaluate("L.version") == "1.9.4"
    assert page.evaluate("Object.keys(map_hotspots._layers).length") > run.drawn
    legend = page.locator("#planner-legend")
    assert legend.is_visible()
    assert "热点（99% 置信度）" in legend.inner_text()
    assert "Gi* 置信度" in legend.inner_text()
    scripts = page.eval_on_selector_all(
        "script[src], link[href]", "els => els.map(e => e.src || e.href)"
    )
    assert all(u.startswith(demo_site.base_url) for u in scripts), scripts
    # The cells table is the map's text alternative; its hot cells are the run's.
    table = page.locator("#class-table").inner_text()
    assert "热点（99% 置信度）" in table
    assert page.locator("#hotspot-map[role=region][aria-label]").count() == 1
    assert page.problems == []
    assert axe_violations(page) == []
    screenshot(page, "planner_map")


def test_switching_the_pickers_shows_another_run(planner_page, demo_site, site_db):
    page = planner_page
    first = open_map(page, demo_site.base_url + "/planner/map")
    page.select_option("#pick-kind", "emerging")
    with page.expect_navigation():
        page.click("#map-pickers button[type=submit]")
    page.wait_for_selector("body[data-loaded=planner-map]")
    emerging = {
        "how": page.get_attribute("#run-status", "data-how"),
        "run": int(page.get_attribute("#run-status", "data-run-id")),
        "paths": page.locator("path.hotspot-cell").count(),
    }
    assert emerging["how"] == "stored"  # the nightly emerging run, not computed
    assert emerging["run"] != first["run"] and emerging["paths"] > 0
    assert "时空模式" in page.locator("#planner-legend").inner_text()
    assert "kind=emerging" in page.url

    # A category no night has analysed: computed once, stored, then found.
    page.select_option("#pick-kind", "gistar")
    page.select_option("#pick-category", "E05")
    started = time.perf_counter()
    with page.expect_navigation():
        page.click("#map-pickers button[type=submit]")
    page.wait_for_selector("body[data-loaded=planner-map]")
    timed("hotspot map, new category run computed (s)", time.perf_counter() - started)
    how = page.get_attribute("#run-status", "data-how")
    made = int(page.get_attribute("#run-status", "data-run-id"))
    assert how in ("computed", "stored")  # stored: an earlier run of this test on the site
    assert made not in (first["run"], emerging["run"])
    assert page.locator("path.hotspot-cell").count() > 0
    with site_db.connect() as conn:
        stored = conn.execute(
            text("SELECT kind, filters, created_by FROM hotspot_run WHERE id = :id"),
            {"id": made},
        ).one()
        runs_before = conn.execute(text("SELECT count(*) FROM hotspot_run")).scalar_one()
    assert stored.kind == "gistar" and stored.filters == {"category": "E05"}
    page.reload()
    page.wait_for_selector("body[data-loaded=planner-map]")
    assert page.get_attribute("#run-status", "data-how") == "stored"
    assert int(page.get_attribute("#run-status", "data-run-id")) == made
    with site_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM hotspot_run")).scalar_one() == runs_before
    assert page.problems == []


def test_bad_or_empty_choices_are_told_and_store_nothing(planner_page, demo_site, site_db):
    page = planner_page
    with site_db.connect() as conn:
        runs_before = conn.execute(text("SELECT count(*) FROM hotspot_run")).scalar_one()
    bad = page.request.get(demo_site.base_url + "/planner/map?kind=heat&resolution=12")
    assert bad.status == 422
    assert "kind" in bad.text() and "resolution" in bad.text() and 'role="alert"' in bad.text()
    missing = page.request.get(demo_site.base_url + "/planner/map?run=987654321")
    assert missing.status == 404
    # A period without incidents: said so, with the nearest stored run shown instead.
    page.goto(demo_site.base_url + "/planner/map?preset=custom&start=2020-01-01&end=2020-01-31")
    page.wait_for_selector("body[data-loaded=planner-map]")
    assert page.get_attribute("#run-status", "data-how") == "nearest"
    assert "no counted incident" in page.inner_text("#run-status")
    assert page.locator("path.hotspot-cell").count() > 0
    with site_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM hotspot_run")).scalar_one() == runs_before
    assert page.problems == []


def test_the_layer_control_toggles_overlays(planner_page, demo_site):
    page = planner_page
    open_map(page, demo_site.base_url + "/planner/map")
    points = page.locator(".leaflet-points-pane path")
    assert points.count() == 0
    with page.expect_response(lambda r: "/api/v1/tiles/enterprises/" in r.url and r.status == 200):
        page.get_by_label("企业", exact=True).check()
    wait_until(page, "document.querySelectorAll('.leaflet-points-pane path').length > 100")
    page.get_by_label("企业", exact=True).uncheck()
    assert points.count() == 0
    districts = page.locator(".leaflet-boundaries-pane path")
    assert districts.count() == 5  # Foshan's five districts, shown at first
    page.get_by_label("区界", exact=True).uncheck()
    assert districts.count() == 0
    page.get_by_label("热点六边形", exact=True).uncheck()
    assert page.locator("path.hotspot-cell").count() == 0
    page.get_by_label("热点六边形", exact=True).check()
    assert page.locator("path.hotspot-cell").count() > 0
    assert page.problems == []


def test_planners_get_no_incident_point_or_reporter(planner_page, demo_site, site_db):
    page = planner_page
    open_map(page, demo_site.base_url + "/planner/map")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    html = page.request.get(demo_site.base_url + "/planner/map").text()
    for field in ("reporter", "device_id", '"Point"', "/api/v1/incidents", "tiles/incidents"):
        assert field not in html, field
    # Every drawn shape of the hotspot layer is exactly an H3 cell's hexagon.
    cells = page.evaluate(
        "() => { const out = []; map_hotspots.eachLayer(l => { if (l.feature && "
        "l.feature.properties.cell) out.push([l.feature.properties.cell, "
        "l.feature.geometry.coordinates[0]]); }); return out; }"
    )
    assert cells
    vertices = set()
    for cell, ring in cells:
        expected = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
        assert len(ring) == len(expected) + 1 == 7 and ring[0] == ring[-1], cell
        error = max(
            abs(a - b)
            for got, want in zip(ring[:-1], expected, strict=True)
            for a, b in zip(got, want, strict=True)
        )
        assert error < 1e-6, (cell, error)
        vertices.update((round(x, 6), round(y, 6)) for x, y in ring)
    with site_db.connect() as conn:
        points = {
            (round(x, 6), round(y, 6))
            for x, y in conn.execute(text("SELECT ST_X(geom), ST_Y(geom) FROM incident"))
        }
    assert not vertices & points
    # Zoomed in with every overlay on, nothing asks for incidents.
    for name in ("企业", "服务网点", "社区/村界"):
        page.get_by_label(name, exact=True).check()
    page.evaluate("() => { map_hotspots.setView([23.02, 113.11], 15); }")  # returns nothing
    page.get_by_label("单元网格（放大后显示）", exact=True).check()
    wait_until(page, "document.querySelectorAll('.leaflet-gridlines-pane path').length > 20")
    wait_until(page, "document.querySelectorAll('.leaflet-points-pane path').length > 20")
    assert any("/api/v1/tiles/grids/15/" in u for u in requested)
    assert not [u for u in requested if "incident" in u]
    assert page.problems == []
    screenshot(page, "planner_map_overlays")


def test_a_run_renders_one_same_script_with_local_assets_only(demo_site, site_db):
    """Element names are fixed, so a CSP hash of the map's script holds for the run."""
    from gridops.auth.service import load_actor
    from gridops.web.i18n import MESSAGES

    with Session(site_db) as db:
        user = db.execute(
            text("SELECT id FROM app_user WHERE username = 'demo.planner'")
        ).scalar_one()
        actor = load_actor(db, user)
        run_id = db.execute(
            text("SELECT id FROM hotspot_run WHERE kind = 'emerging' ORDER BY id LIMIT 1")
        ).scalar_one()
        run = planner_map.service.get_run(db, run_id, actor.scope())
        renders = []
        for _ in range(2):  # built twice, not from the cache
            fmap, drawn = planner_map.build_map(
                db, actor, run, lambda key: MESSAGES[key]["en"], static_url=lambda p: "/s/" + p
            )
            renders.append(planner_map.render_map(fmap, local_prefix="/s/"))
    first, second = renders
    assert drawn > 0 and first.script == second.script and first.html == second.html
    assert 'id="map_hotspots"' in first.html
    assert first.js == [
        "/s/vendor/leaflet/leaflet.js",
        "/s/vendor/jquery/jquery.min.js",
        "/s/vendor/leaflet.vectorgrid/Leaflet.VectorGrid.bundled.js",
    ]
    assert first.css == ["/s/vendor/leaflet/leaflet.css"]
    assert "http" not in first.script and "<script" not in first.script
    # A map element that needs a CDN is refused, not served.
    fmap.default_js = [("leaflet", "https://cdn.example/leaflet.js")]
    with pytest.raises(RuntimeError, match="non-local"):
        planner_map.render_map(fmap, local_prefix="/s/")


# -- the KPI dashboard ----------------------------------------------------------------------


def kpi_api(page, base_url: str, **query) -> list[dict]:
    response = page.request.get(base_url + "/api/v1/kpis", params=query)
    assert response.status == 200, response.text()
    return response.json()["rows"]


def chart_data(page, canvas: str) -> dict:
    return page.evaluate(
        "id => { const c = Chart.getChart(document.getElementById(id)); return {labels: "
        "c.data.labels, sets: c.data.datasets.map(d => d.data)}; }",
        canvas,
    )


def table_rows(page, table: str) -> dict[str, dict[str, str]]:
    return page.evaluate(
        "id => Object.fromEntries([...document.querySelectorAll('#' + id + ' tbody tr')]"
        ".map(tr => [tr.dataset.key, Object.fromEntries([...tr.querySelectorAll('td')]"
        ".map(td => [td.dataset.column, td.textContent]))]))",
        table,
    )


def as_int(text_: str) -> int:
    return int(text_.replace(",", ""))


def as_rate(text_: str) -> float | None:
    return None if text_ == "—" else float(text_.rstrip("%"))


def open_kpis(page, url: str) -> float:
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-loaded]")
    assert page.get_attribute("body", "data-loaded") == "kpi-dashboard", page.inner_text(
        "#kpi-status"
    )
    return time.perf_counter() - started


def canvas_is_drawn(page, canvas: str) -> bool:
    return page.evaluate(
        "id => { const c = document.getElementById(id); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length;"
        " i += 4) { if (d[i]) n++; } return n > 1000; }",
        canvas,
    )


def test_the_kpi_dashboard_draws_the_api_figures(planner_page, demo_site):
    page = planner_page
    query = {"period": "month", "start": "2026-01-01", "end": "2026-06-30"}
    url = demo_site.base_url + "/planner/kpis?" + "&".join(f"{k}={v}" for k, v in query.items())
    timed("KPI dashboard, load with charts (s)", open_kpis(page, url + "&by=district"))
    totals = kpi_api(page, demo_site.base_url, **query)
    assert [r["bucket"] for r in totals] == [f"2026-0{m}" for m in range(1, 7)]
    rates = chart_data(page, "chart-rates")
    assert rates["labels"] == [r["bucket"] for r in totals]
    assert rates["sets"] == [
        [r["closure_rate"] for r in totals],
        [r["on_time_rate"] for r in totals],
    ]
    counts = chart_data(page, "chart-counts")
    assert counts["sets"] == [[r[c] for r in totals] for c in ("reported", "filed", "closed")]
    assert sum(counts["sets"][0]) > 1000  # the demo's half-year
    for canvas in ("chart-rates", "chart-counts", "chart-groups"):
        assert canvas_is_drawn(page, canvas), canvas

    table = table_rows(page, "table-periods")
    assert list(table) == [r["bucket"] for r in totals]
    for row in totals:
        shown = table[row["bucket"]]
        for column in ("reported", "filed", "closed", "due", "closed_on_time", "overdue_open"):
            assert as_int(shown[column]) == row[column], (row["bucket"], column)
        for column in ("closure_rate", "on_time_rate"):
            assert as_rate(shown[column]) == pytest.approx(round(row[column] * 100, 1))

    districts = kpi_api(page, demo_site.base_url, **query, by="district")
    reported: dict[str, int] = {}
    for row in districts:
        reported[row["group"]] = reported.get(row["group"], 0) + row["reported"]
    groups = table_rows(page, "table-groups")
    assert {k: as_int(v["reported"]) for k, v in groups.items()} == reported
    assert set(reported) == {"440604", "440605", "440606", "440607", "440608"}
    bars = chart_data(page, "chart-groups")
    assert sorted(bars["sets"][0], reverse=True) == sorted(reported.values(), reverse=True)

    csv = page.request.get(demo_site.base_url + page.get_attribute("#kpi-csv", "href"))
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text().lstrip("\ufeff").startswith("bucket,from,to,group,")
    assert "reporter" not in json.dumps(districts)
    assert page.problems == []
    assert axe_violations(page) == []
    screenshot(page, "planner_kpis")

    # Narrowed to Chancheng: its towns, and periods summed from them.
    open_kpis(page, url + "&area=440604&by=district")
    towns = kpi_api(page, demo_site.base_url, **query, by="town")
    in_district = [r for r in towns if (r["group"] or "").startswith("440604")]
    table = table_rows(page, "table-periods")
    for bucket in table:
        assert as_int(table[bucket]["reported"]) == sum(
            r["reported"] for r in in_district if r["bucket"] == bucket
        )
    assert all(key.startswith("440604") for key in table_rows(page, "table-groups"))
    assert json.loads(page.inner_text("#kpi-config"))["by"] == "town"  # inside the district
    assert page.problems == []


def test_a_community_manager_sees_the_kpis_of_the_community(browser, demo_site):
    page = open_page(browser, viewport=VIEWPORT)
    try:
        sign_in(page, demo_site.base_url, *demo_site.users["demo.community"])
        open_kpis(page, demo_site.base_url + "/planner/kpis")
        config = json.loads(page.inner_text("#kpi-config"))
        assert config["by"] == "department"  # one community: by handling department
        totals = kpi_api(
            page, demo_site.base_url, period="month", start=config["start"], end=config["end"]
        )
        table = table_rows(page, "table-periods")
        assert [as_int(table[r["bucket"]]["reported"]) for r in totals] == [
            r["reported"] for r in totals
        ]
        theirs = sum(r["reported"] for r in totals)
        assert 0 < theirs < 1000  # a community's year, not the city's 50,000
        areas = page.eval_on_selector_all("#kpi-area option", "os => os.map(o => o.value)")
        assert areas == ["", "440604012001"]
        assert "南海区" not in page.content()
        assert page.problems == []
        assert axe_violations(page) == []
        screenshot(page, "planner_kpis_community")
    finally:
        page.context.close()

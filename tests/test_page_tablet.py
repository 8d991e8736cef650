"""The inspector's tablet page in a real headless Chromium against the served Foshan demo:
the map of their grids, logging incidents online and offline (service worker + IndexedDB
outbox), refused reports kept for attention, the session ending, signing out, first-load time.

The demo site is shared with the other page tests: every check is on what a test made itself
(a unique note, the outbox's client UUIDs).
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image
from sqlalchemy import Engine, create_engine, pool, text

from tests.conftest import ARTIFACTS, axe_violations, open_page, screenshot, sign_in

pytestmark = pytest.mark.browser

INSPECTOR = "demo.inspector"
READY = "body[data-ready='1']"
FIRST_LOAD_BUDGET_MS = 1000
VIEWPORTS = {"landscape": (1024, 768), "portrait": (768, 1024)}
# Every control an inspector taps: at least 44 x 44 px.
TARGETS = (
    "#log-incident",
    "[role=tab]",
    "#sync-now",
    "#use-gps",
    "#category-search",
    "label.file-button",
    "#send-report",
    "#clear-report",
    "#category-list summary",
    ".leaflet-control-zoom a",
    ".leaflet-control-layers label",
)


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_db(demo_site) -> Iterator[Engine]:
    engine = create_engine(demo_site.database_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def inspector_grids(site_db) -> list[str]:
    with site_db.connect() as db:
        codes = db.execute(
            text(
                "SELECT unnest(ra.grid_codes) FROM role_assignment ra "
                "JOIN app_user u ON u.id = ra.user_id "
                "WHERE u.username = :u AND ra.role = 'inspector' ORDER BY 1"
            ),
            {"u": INSPECTOR},
        ).scalars()
        return list(codes)


def grid_point(site_db, code: str) -> tuple[float, float]:
    """(lon, lat) of a point inside a unit grid."""
    with site_db.connect() as db:
        lon, lat = db.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p "
                "FROM unit_grid WHERE code = :c AND valid_to IS NULL) AS s"
            ),
            {"c": code},
        ).one()
    return lon, lat


def foreign_point(site_db, inspector_grids) -> tuple[float, float]:
    """A point in a unit grid of the demo that is not one of the inspector's."""
    with site_db.connect() as db:
        code = db.execute(
            text(
                "SELECT code FROM unit_grid WHERE valid_to IS NULL AND NOT code = ANY(:mine) "
                "AND community_code LIKE '440604012%' ORDER BY code LIMIT 1"
            ),
            {"mine": inspector_grids},
        ).scalar_one()
    return grid_point(site_db, code)


@pytest.fixture(scope="module")
def todays_task(site_db, inspector_grids) -> Iterator[dict]:
    """An inspection task for the inspector today, on a plan whose target lies in their
    grids (the demo's scheduler may give them none on the day the tests run)."""
    with site_db.begin() as db:
        row = db.execute(
            text(
                """
                SELECT p.id AS plan_id, coalesce(e.name, o.name) AS name, u.id AS user_id
                FROM inspection_plan p
                LEFT JOIN enterprise e ON p.target_kind = 'enterprise' AND e.id = p.target_id
                LEFT JOIN service_outlet o ON p.target_kind = 'outlet' AND o.id = p.target_id
                JOIN unit_grid g ON g.valid_to IS NULL AND g.code = ANY(:grids)
                     AND ST_Covers(g.geom, coalesce(e.geom, o.geom))
                CROSS JOIN app_user u
                WHERE p.active AND u.username = :u
                ORDER BY p.id LIMIT 1
                """
            ),
            {"grids": inspector_grids, "u": INSPECTOR},
        ).one()
        task_id = db.execute(
            text(
                "INSERT INTO inspection_task (plan_id, due_on, assignee_id, route_order) "
                "VALUES (:p, (now() AT TIME ZONE 'Asia/Shanghai')::date, :a, 1) "
                "ON CONFLICT (plan_id, due_on) DO NOTHING RETURNING id"
            ),
            {"p": row.plan_id, "a": row.user_id},
        ).scalar()
    assert task_id is not None, "the plan already had a task today"
    yield {"id": task_id, "name": row.name}
    with site_db.begin() as db:
        db.execute(text("DELETE FROM inspection_task WHERE id = :id"), {"id": task_id})


def incidents_noted(site_db, note: str) -> list[dict]:
    with site_db.connect() as db:
        rows = db.execute(
            text(
                "SELECT i.id, i.client_uuid::text AS uuid, i.status, g.code AS grid,"
                " c.code AS category, i.gps_accuracy_m AS accuracy, i.captured_at,"
                " u.username AS reporter,"
                " (SELECT count(*) FROM incident_photo p WHERE p.incident_id = i.id) AS photos "
                "FROM incident i JOIN category c ON c.id = i.category_id "
                "LEFT JOIN unit_grid g ON g.id = i.grid_id "
                "LEFT JOIN app_user u ON u.id = i.reported_by WHERE i.description = :note"
            ),
            {"note": note},
        ).mappings()
        return [dict(r) for r in rows]


def jpeg(colour: tuple[int, int, int] = (30, 120, 200)) -> dict:
    data = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(data, "JPEG")
    return {"name": "site.jpg", "mimeType": "image/jpeg", "buffer": data.getvalue()}


def unique_note(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def open_tablet(browser, demo_site, viewport=(1024, 768), **context_options):
    page = open_page(
        browser, viewport={"width": viewport[0], "height": viewport[1]}, **context_options
    )
    sign_in(page, demo_site.base_url, *demo_site.users[INSPECTOR])
    assert page.url == demo_site.base_url + "/tablet", "the inspector lands on the tablet page"
    page.wait_for_selector(READY)
    return page


def sign_in_quietly(page, demo_site, username: str) -> None:
    """Sign in through the API request context: no landing page is loaded (and measured)."""
    base = demo_site.base_url
    form = page.request.get(base + "/login").text()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    signed_in = page.request.post(
        base + "/login",
        form={"username": username, "password": demo_site.users[username][1], "csrf_token": csrf},
        max_redirects=0,
    )
    assert signed_in.status == 302


def spot_in_grid(page, site_db, code: str) -> tuple[float, float]:
    """A point inside a unit grid where a tap reaches the map itself, not a marker (the
    shared site gathers cases from every test) nor a control."""
    with site_db.connect() as db:
        candidates = db.execute(
            text(
                "SELECT ST_X(p.geom), ST_Y(p.geom) FROM unit_grid g, "
                "ST_Dump(ST_GeneratePoints(ST_Buffer(g.geom::geography, -8)::geometry, 40, 7)) p "
                "WHERE g.code = :c AND g.valid_to IS NULL"
            ),
            {"c": code},
        ).all()
    for lon, lat in candidates:
        free = page.evaluate(
            "([lat, lon]) => { const map = window.gridopsTablet.map;"
            " const p = map.latLngToContainerPoint([lat, lon]);"
            " const box = map.getContainer().getBoundingClientRect();"
            " const hit = document.elementFromPoint(box.left + p.x, box.top + p.y);"
            " return !!hit && (hit === map.getContainer() || hit.tagName === 'path'"
            "   || hit.classList.contains('leaflet-pane')); }",
            [lat, lon],
        )
        if free:
            return lon, lat
    raise AssertionError(f"no free spot to tap in grid {code}")


def tap_map(page, lon: float, lat: float) -> None:
    x, y = page.evaluate(
        "([lat, lon]) => { const p = window.gridopsTablet.map.latLngToContainerPoint([lat, lon]);"
        " return [p.x, p.y]; }",
        [lat, lon],
    )
    page.locator("#map").click(position={"x": x, "y": y})


def pick_category(page, search: str, code: str) -> None:
    page.fill("#category-search", search)
    shown = page.locator("#category-list button.minor:visible")
    assert shown.count() == 1, f"{search!r} should match one category"
    shown.click()
    assert page.get_attribute("#category-chosen", "data-code") == code


def log_incident(page, site_db, note: str, *, search: str, code: str, place, photos=()) -> None:
    """Log a report: ``place`` is "gps" or the code of a unit grid to tap in."""
    page.click("#log-incident")
    if place == "gps":
        page.click("#use-gps")
        page.wait_for_selector("#place-info[data-placed='gps']")
    else:
        tap_map(page, *spot_in_grid(page, site_db, place))
        page.wait_for_selector("#place-info[data-placed='tap']")
    pick_category(page, search, code)
    if photos:
        page.set_input_files("#photos", files=list(photos))
        page.wait_for_selector(f"#photo-info[data-count='{len(photos)}']")
    page.fill("#note", note)
    page.click("#send-report")
    page.wait_for_selector("#place-info:not([data-placed])")  # saved: the form is cleared


def outbox_count(page) -> int:
    return int(page.get_attribute("#outbox-count", "data-count"))


def wait_outbox(page, count: int, timeout: float = 20_000) -> None:
    page.wait_for_selector(f"#outbox-count[data-count='{count}']", timeout=timeout)


def outbox_uuids(page) -> list[str]:
    return page.eval_on_selector_all(
        "#outbox-list li[data-uuid]", "els => els.map(e => e.dataset.uuid)"
    )


def only_expected(problems: list[str], *patterns: str) -> list[str]:
    """The page's problems except those matching one of the expected patterns."""
    return [p for p in problems if not any(re.search(pattern, p) for pattern in patterns)]


def small_targets(page) -> list[str]:
    small = []
    for selector in TARGETS:
        boxes = [b for b in (e.bounding_box() for e in page.query_selector_all(selector)) if b]
        assert boxes, f"nothing matches {selector}"
        small += [f"{selector}: {b['width']:.0f}x{b['height']:.0f}" for b in boxes
                  if b["width"] < 44 or b["height"] < 44]  # fmt: skip
    return small


# -- the page -------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", VIEWPORTS)
def test_the_map_shows_my_grids_overlays_cases_and_tasks(
    browser, demo_site, site_db, inspector_grids, todays_task, orientation
):
    width, height = VIEWPORTS[orientation]
    page = open_tablet(browser, demo_site, (width, height))
    try:
        screenshot(page, f"tablet-{orientation}-{width}x{height}")
        assert page.get_attribute("#map", "role") == "region"
        labels = page.eval_on_selector_all(".grid-label", "els => els.map(e => e.textContent)")
        assert sorted(labels) == sorted(code[-3:] for code in inspector_grids)
        overlays = page.eval_on_selector_all(
            ".leaflet-control-layers-overlays label", "els => els.map(e => e.textContent.trim())"
        )
        assert overlays == ["我的网格", "企业", "服务网点", "未结案件", "今日任务"]
        # Enterprises and outlets of the grids, clustered, each with a popup.
        counts = page.evaluate(
            "() => { const l = window.gridopsTablet.layers; return {"
            " enterprises: l.enterprises.getLayers().length,"
            " outlets: l.outlets.getLayers().length, tasks: l.tasks.getLayers().length,"
            " cases: l.cases.getLayers().length }; }"
        )
        with site_db.connect() as db:
            expected = db.execute(
                text(
                    "SELECT (SELECT count(*) FROM enterprise t WHERE EXISTS (SELECT 1 FROM "
                    " unit_grid g WHERE g.code = ANY(:c) AND ST_Covers(g.geom, t.geom))),"
                    " (SELECT count(*) FROM service_outlet t WHERE EXISTS (SELECT 1 FROM "
                    " unit_grid g WHERE g.code = ANY(:c) AND ST_Covers(g.geom, t.geom))),"
                    " (SELECT count(*) FROM incident t WHERE t.status NOT IN ('closed', 'void')"
                    "  AND EXISTS (SELECT 1 FROM unit_grid g WHERE g.code = ANY(:c)"
                    "  AND ST_Covers(g.geom, t.geom)))"
                ),
                {"c": inspector_grids},
            ).one()
        assert (counts["enterprises"], counts["outlets"], counts["cases"]) == tuple(expected)
        assert counts["outlets"] > 0 and counts["tasks"] >= 1
        # Today's task: listed, and its button opens its popup on the map.
        page.click("#tab-todo")
        task = page.locator(f"#task-list button[data-task='{todays_task['id']}']")
        assert todays_task["name"] in task.inner_text()
        task.click()
        page.wait_for_selector(".leaflet-popup-content")
        assert todays_task["name"] in page.inner_text(".leaflet-popup-content")
        page.click("#tab-report")

        # Toggling an overlay hides its markers.
        page.click(".leaflet-control-layers-overlays label:has-text('服务网点')")
        assert page.evaluate(
            "!window.gridopsTablet.map.hasLayer(window.gridopsTablet.layers.outlets)"
        )
        page.click(".leaflet-control-layers-overlays label:has-text('服务网点')")

        # The log button and the whole form are reachable, every target big enough.
        page.click("#log-incident")
        for selector in (
            "#use-gps",
            "#category-search",
            "label.file-button",
            "#note",
            "#send-report",
        ):
            page.locator(selector).scroll_into_view_if_needed()
            box = page.locator(selector).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= height, selector
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, selector
        page.locator("#tab-report").scroll_into_view_if_needed()
        assert small_targets(page) == []
        assert axe_violations(page) == []
        screenshot(page, f"tablet-{orientation}-{width}x{height}-form")
        assert page.problems == []
    finally:
        page.context.close()


def test_an_incident_logged_online_reaches_the_server_once_with_its_photo(
    browser, demo_site, site_db, inspector_grids
):
    page = open_tablet(browser, demo_site)
    try:
        note = unique_note("井边有人摆摊")
        grid = inspector_grids[len(inspector_grids) // 2]
        log_incident(page, site_db, note, search="游商", code="E0502", place=grid, photos=[jpeg()])
        wait_outbox(page, 0)
        page.wait_for_selector("#last-sync[data-at]")
        [stored] = incidents_noted(site_db, note)
        assert stored["category"] == "E0502"
        assert stored["grid"] == grid
        assert stored["photos"] == 1
        assert stored["reporter"] == INSPECTOR
        assert stored["accuracy"] is None  # placed by a tap, not by GPS
        assert page.inner_text("#sync-message") == "上报已送达服务器"
        screenshot(page, "tablet-after-online-report")
        assert page.problems == []
    finally:
        page.context.close()


def test_two_incidents_logged_offline_are_sent_exactly_once_when_back_online(
    browser, demo_site, site_db, inspector_grids
):
    located = grid_point(site_db, inspector_grids[-1])
    page = open_tablet(
        browser,
        demo_site,
        permissions=["geolocation"],
        geolocation={"longitude": located[0], "latitude": located[1], "accuracy": 12},
    )
    context = page.context
    try:
        page.wait_for_selector("body[data-offline-ready]")  # the worker holds page and data
        context.set_offline(True)
        response = page.reload()
        assert response is not None and response.from_service_worker
        page.wait_for_selector(READY)  # the grids, overlays and categories from the cache
        assert page.get_attribute("#net-state", "data-online") == "false"
        assert len(page.query_selector_all(".grid-label")) == len(inspector_grids)

        notes = [unique_note("离线上报 甲"), unique_note("离线上报 乙")]
        log_incident(
            page, site_db, notes[0], search="E0102", code="E0102", place=inspector_grids[0],
            photos=[jpeg()],
        )  # fmt: skip
        log_incident(page, site_db, notes[1], search="游商", code="E0502", place="gps")
        assert outbox_count(page) == 2
        assert "2" in page.inner_text(".statusbar")
        page.click("#tab-outbox")
        uuids = outbox_uuids(page)
        assert len(set(uuids)) == 2
        screenshot(page, "tablet-offline-outbox")

        context.set_offline(False)
        wait_outbox(page, 0)
        stored = [incidents_noted(site_db, note) for note in notes]
        assert [len(rows) for rows in stored] == [1, 1]
        assert sorted(rows[0]["uuid"] for rows in stored) == sorted(uuids)
        assert stored[0][0]["photos"] == 1 and stored[0][0]["grid"] == inspector_grids[0]
        assert stored[1][0]["accuracy"] == pytest.approx(12)
        assert stored[1][0]["grid"] == inspector_grids[-1]
        # Each UUID once on the server, whatever the retries.
        with site_db.connect() as db:
            counts = db.execute(
                text("SELECT count(*) FROM incident WHERE client_uuid = ANY(CAST(:u AS uuid[]))"),
                {"u": uuids},
            ).scalar_one()
        assert counts == 2
        assert page.problems == []
    finally:
        context.close()


def refused_report(browser, demo_site, site_db, inspector_grids):
    """A page whose outbox holds one report the server refused (a place outside the
    inspector's grids, by GPS); returns (page, note)."""
    lon, lat = foreign_point(site_db, inspector_grids)
    page = open_tablet(
        browser,
        demo_site,
        permissions=["geolocation"],
        geolocation={"longitude": lon, "latitude": lat, "accuracy": 8},
    )
    note = unique_note("网格外")
    page.click("#log-incident")
    page.click("#use-gps")
    page.wait_for_selector("#place-warning:not([hidden])")  # the page says so before sending
    assert "精度 ±8 米" in page.inner_text("#place-info")
    pick_category(page, "暴露垃圾", "E0102")
    page.fill("#note", note)
    page.click("#send-report")
    page.wait_for_selector("#outbox-list li[data-state='attention']", state="attached")
    return page, note


REFUSED = r"^422: .*/api/v1/incidents$"


def test_a_refused_report_stays_in_the_outbox_for_attention(
    browser, demo_site, site_db, inspector_grids
):
    page, note = refused_report(browser, demo_site, site_db, inspector_grids)
    try:
        assert outbox_count(page) == 1
        assert page.inner_text("#attention-count") == "1 条需处理"
        assert "服务器拒收了上报" in page.inner_text("#sync-message")
        page.click("#tab-outbox")
        problem = page.inner_text("#outbox-list .problem")
        assert "位置不在您负责的网格内" in problem and "outside your jurisdiction" in problem
        assert incidents_noted(site_db, note) == []
        # Sent again, refused again: still kept.
        page.click("#outbox-list button:has-text('重新发送')")
        page.wait_for_selector("#outbox-list li[data-state='attention']")
        assert outbox_count(page) == 1
        screenshot(page, "tablet-refused-report")
        # Only an explicit discard removes it.
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#outbox-list button:has-text('删除')")
        wait_outbox(page, 0)
        assert incidents_noted(site_db, note) == []
        refusals = [p for p in page.problems if re.search(REFUSED, p)]
        assert len(refusals) == 2
        assert only_expected(page.problems, REFUSED) == []
    finally:
        page.context.close()


def test_signing_out_with_unsent_reports_warns_first(browser, demo_site, site_db, inspector_grids):
    page, _ = refused_report(browser, demo_site, site_db, inspector_grids)
    try:
        dialogs = []

        def cancel(dialog):
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", cancel)
        page.click("#logout")
        for _ in range(100):  # the dialog is handled while the click runs; allow a moment
            if dialogs:
                break
            page.wait_for_timeout(20)
        assert len(dialogs) == 1 and "1 条上报未发送" in dialogs[0]
        assert page.url == demo_site.base_url + "/tablet"
        assert page.request.get(demo_site.base_url + "/api/v1/me").status == 200  # signed in

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#logout")
        page.wait_for_url(re.compile(r".*/login"))
        assert page.request.get(demo_site.base_url + "/api/v1/me").status == 401
        # The report stayed on the device: signing in again shows it.
        sign_in(page, demo_site.base_url, *demo_site.users[INSPECTOR])
        page.wait_for_selector(READY)
        wait_outbox(page, 1)
        assert only_expected(page.problems, REFUSED, r"^401: .*/api/v1/me$") == []
    finally:
        page.context.close()


def test_an_ended_session_pauses_the_sync_and_keeps_the_reports(
    browser, demo_site, site_db, inspector_grids
):
    page = open_tablet(browser, demo_site)
    context = page.context
    try:
        note = unique_note("会话结束")
        context.set_offline(True)
        log_incident(page, site_db, note, search="游商", code="E0502", place=inspector_grids[1])
        assert outbox_count(page) == 1
        # The session ends elsewhere (another tab signs out) while the tablet is offline.
        token = page.get_attribute("meta[name=csrf-token]", "content")
        ended = page.request.post(demo_site.base_url + "/logout", headers={"X-CSRFToken": token})
        assert ended.ok
        context.set_offline(False)
        page.wait_for_selector("#sign-in-again:not([hidden])")
        assert "登录已失效" in page.inner_text("#sync-message")
        assert outbox_count(page) == 1
        assert incidents_noted(site_db, note) == []
        # Signing in again sends it.
        page.click("#sign-in-again")
        page.fill("input[name=username]", demo_site.users[INSPECTOR][0])
        page.fill("input[name=password]", demo_site.users[INSPECTOR][1])
        page.click("button[type=submit]")
        page.wait_for_url(demo_site.base_url + "/tablet")
        wait_outbox(page, 0)
        assert len(incidents_noted(site_db, note)) == 1
        assert only_expected(page.problems, r"^(400|401): .*/api/v1/incidents$") == []
    finally:
        context.close()


def test_first_load_is_under_a_second(browser, demo_site):
    """Cold cache, signed in: from navigation start to the map with its data shown."""
    page = open_page(browser, viewport={"width": 1024, "height": 768})
    try:
        base = demo_site.base_url
        sign_in_quietly(page, demo_site, INSPECTOR)
        page.goto(base + "/tablet")
        page.wait_for_selector("body[data-ready-ms]")
        ready_ms = int(page.get_attribute("body", "data-ready-ms"))
        path = ARTIFACTS / "timings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        timings = json.loads(path.read_text()) if path.exists() else {}
        timings["tablet_first_load_ms"] = ready_ms
        path.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
        print(f"tablet first load: {ready_ms} ms")
        page.wait_for_selector(READY)
        assert ready_ms < FIRST_LOAD_BUDGET_MS
        assert page.problems == []
    finally:
        page.context.close()


def test_a_district_scope_gets_its_layers_as_vector_tiles(browser, demo_site):
    """Thousands of grids do not come as GeoJSON: the page switches to tiles."""
    page = open_page(browser, viewport={"width": 1024, "height": 768})
    try:
        sign_in_quietly(page, demo_site, "demo.district")
        page.goto(demo_site.base_url + "/tablet")
        page.wait_for_selector(READY)
        assert page.get_attribute("body", "data-mode-grids") == "tiles"
        page.wait_for_selector("#map .leaflet-tile-container canvas, #map .leaflet-tile")
        page.wait_for_load_state("networkidle")
        screenshot(page, "tablet-district-tiles")
        assert page.problems == []
    finally:
        page.context.close()


# -- the service worker route -----------------------------------------------------------------


def test_the_service_worker_is_served_from_the_root_with_its_precache_manifest(client):
    response = client.get("/sw.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Service-Worker-Allowed"] == "/"
    body = response.get_data(as_text=True)
    config = json.loads(re.match(r"self\.GRIDOPS_SW = (\{.*\});\n", body).group(1))
    assert config["page"] == "/tablet"
    assert 'importScripts(config.workbox + "workbox-sw.js")' in body
    urls = [entry["url"] for entry in config["precache"]]
    assert {"/static/js/tablet.js", "/static/js/outbox.js", "/static/vendor/idb/idb.umd.js"} <= set(
        urls
    )
    for entry in config["precache"]:  # every precached file exists, with a content revision
        assert client.get(entry["url"]).status_code == 200, entry["url"]
        assert re.fullmatch(r"[0-9a-f]{16}", entry["revision"])
    assert client.get(config["workbox"] + "workbox-sw.js").status_code == 200


def test_an_incident_logged_on_the_tablet_appears_on_the_dispatchers_board(
    browser, demo_site, site_db, inspector_grids
):
    board = open_page(browser, viewport={"width": 1366, "height": 900})
    sign_in(board, demo_site.base_url, *demo_site.users["demo.community"])
    assert board.url == demo_site.base_url + "/board"
    board.wait_for_selector("body[data-board-ready]")

    tablet = open_tablet(browser, demo_site)
    try:
        note = unique_note("桥下堆放杂物")
        log_incident(tablet, site_db, note, search="游商", code="E0502", place=inspector_grids[0])
        wait_outbox(tablet, 0)
        [stored] = incidents_noted(site_db, note)
        assert tablet.problems == []
    finally:
        tablet.context.close()

    case_id = stored["id"]
    assert board.locator(f"path.case-{case_id}").count() == 0  # not there before the refresh
    board.click("#board-refresh")
    board.wait_for_selector(f"path.case-{case_id}", state="attached")
    # A new report waits on its grid's inspector to verify it, not yet on the dispatchers: it
    # is on the map, coloured as not yet dispatched, and not in the queue.
    assert "clock-no_deadline" in (board.get_attribute(f"path.case-{case_id}", "class") or "")
    assert board.locator(f'.queue-item[data-case-id="{case_id}"]').count() == 0
    screenshot(board, "flow-tablet-report-on-the-board")
    assert board.problems == []
    board.context.close()

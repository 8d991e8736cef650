"""The dispatcher's board: its case endpoint on a world with known answers (the queue's
world), then the page in a real headless Chromium against the Foshan demo: it loads with the
map, the legend, the queue and the workload; a dispatcher assigns from the queue and closes
from the map; a stale version is answered with a reload and a message; a new report shows up
after a refresh."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.orm import Session

from gridops import create_app
from gridops.db import get_database
from gridops.demo_patrols import WALK_M_PER_S, window, write_demo_patrols
from gridops.dispatch import queue
from gridops.incidents.workcal import TZ
from gridops.patrol.service import patrol_day
from gridops.web.board import board_cases
from tests import test_dispatch_queue as queue_tests
from tests.conftest import (
    ARTIFACTS,
    app_config,
    axe_violations,
    open_page,
    screenshot,
    sign_in,
    wait_until,
)
from tests.test_cases import build_world
from tests.test_dispatch_queue import NOW, names

browser_test = pytest.mark.browser
world = queue_tests.world  # the queue's world (a fixture): its answers are known
COMMUNITY = "440604012001"
DISTRICT = "440604"


# -- GET /api/v1/board/cases on the queue's world ------------------------------------------

WEST_OPEN = {
    "a_filed", "b_verified", "c_reported_nobody", "d_reported_inspector", "e_returned_assigned",
    "f_returned_overdue", "g_overdue", "h_overdue_dispatched", "i_due_soon", "j_in_time",
    "k_handled", "l_checked",
}  # fmt: skip


def by_name(world, features) -> dict[str, dict]:
    ids = {v: k for k, v in world["ids"].items()}
    return {ids[f["id"]]: f["properties"] for f in features}


def test_board_cases_are_every_open_case_of_the_jurisdiction_with_the_queues_flags(session, world):
    actor = world["actors"]["mgr.w"]
    features, last = board_cases(session, actor, now=NOW)
    assert last is None
    cases = by_name(world, features)
    assert set(cases) == WEST_OPEN  # not closed m, not the east side, not the foreign one
    items, _ = queue.queue_page(session, actor, now=NOW)
    assert items, "the queue's world has a queue"
    for item in items:  # the map and the queue never disagree
        [name] = names(world, [item])
        p = cases[name]
        for key in ("status", "version", "overdue", "warning", "assignee"):
            assert p[key] == item[key], (name, key)
        assert p["actions"] == [a for a in item["actions"] if a != "mark_duplicate"], name
    assert cases["g_overdue"]["overdue"] and not cases["g_overdue"]["warning"]
    assert cases["i_due_soon"]["warning"] and not cases["i_due_soon"]["overdue"]
    on_time = cases["j_in_time"]  # not in the queue: on time, with its deadline
    assert not on_time["overdue"] and not on_time["warning"] and on_time["deadline_at"]
    assert on_time["assignee"]["username"] == "handler"
    assert on_time["department"]["code"] == "CG"
    assert cases["a_filed"]["deadline_at"] is None and not cases["a_filed"]["paused"]
    assert "mark_duplicate" not in cases["a_filed"]["actions"]  # not a button of the board
    assert "dispatch" in cases["a_filed"]["actions"]
    # A parked case's clock is paused.
    session.execute(
        text("UPDATE incident SET status = 'parked' WHERE id = :id"),
        {"id": world["ids"]["j_in_time"]},
    )
    features, _ = board_cases(session, actor, now=NOW)
    assert by_name(world, features)["j_in_time"]["paused"]
    # The town manager dispatches both communities of the town, never the foreign case.
    features, _ = board_cases(session, world["actors"]["town"], now=NOW)
    assert set(by_name(world, features)) == WEST_OPEN | {"east_filed", "east_overdue"}


def test_board_cases_route_pages_and_refuses_what_it_should(world):
    west, town = world["clients"]["mgr.w"], world["clients"]["town"]
    seen, url, pages = [], "/api/v1/board/cases?limit=5", 0
    while url:
        response = west.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/geo+json"
        body = response.get_json()
        seen += [f["id"] for f in body["features"]]
        pages += 1
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = None
        if nxt:
            parts = urlsplit(nxt[0])
            assert parse_qs(parts.query)["limit"] == ["5"]
            url = f"{parts.path}?{parts.query}"
    assert pages == 3 and len(seen) == len(set(seen)) == len(WEST_OPEN)
    assert seen == sorted(seen)
    assert {world["ids"][n] for n in WEST_OPEN} == set(seen)
    # Bad parameters: 422 naming each; nothing else answers.
    bad = west.get("/api/v1/board/cases?limit=0&cursor=x&bbox=1")
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"limit", "cursor", "bbox"}
    # Only dispatchers: inspectors and handlers hold write:cases but no dispatcher's role;
    # planners do not even hold the verb.
    for who in ("insp.w", "handler", "planner"):
        response = world["clients"][who].get("/api/v1/board/cases")
        assert response.status_code == 403, who
    # One case, whatever its state, inside the jurisdiction; 404 outside it.
    closed = west.get(f"/api/v1/board/cases/{world['ids']['m_closed']}")
    assert closed.status_code == 200
    assert closed.get_json()["properties"]["status"] == "closed"
    assert closed.get_json()["properties"]["actions"] == []
    assert closed.headers["ETag"] == f'"{closed.get_json()["properties"]["version"]}"'
    east = world["ids"]["east_filed"]
    assert west.get(f"/api/v1/board/cases/{east}").status_code == 404
    assert town.get(f"/api/v1/board/cases/{east}").status_code == 200
    foreign = world["ids"]["foreign_filed"]
    assert town.get(f"/api/v1/board/cases/{foreign}").status_code == 404
    assert world["clients"]["admin"].get(f"/api/v1/board/cases/{foreign}").status_code == 200


def test_the_board_page_is_for_dispatchers(world):
    page = world["clients"]["mgr.w"].get("/board")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="board-config"' in html and "派遣调度台" in html
    assert "<script>" not in html and " onclick=" not in html  # no inline code (CSP)
    for who in ("insp.w", "handler"):
        refused = world["clients"][who].get("/board")
        assert refused.status_code == 403, who
        text_ = refused.get_data(as_text=True)
        assert "供管理人员使用" in text_ and "board-config" not in text_
        assert ('href="/tablet"' in text_) == (who == "insp.w"), who  # handlers: the start page
    assert world["clients"]["planner"].get("/board").status_code == 403


# -- gridops demo patrols --------------------------------------------------------------------


def test_demo_patrols_walk_the_grids_never_ahead_of_now_and_run_twice_safely(session, tmp_path):
    base = build_world(session, tmp_path)
    west = "440604001001"
    inspectors = [base["actors"][n].user_id for n in ("insp.w", "insp.w2")]
    for n in range(1, 5):
        for user_id, primary in zip(inspectors, (True, False), strict=True):
            session.execute(
                text(
                    "INSERT INTO grid_inspector (grid_code, user_id, is_primary) "
                    "VALUES (:g, :u, :p)"
                ),
                {"g": f"{west}{n:03d}", "u": user_id, "p": primary},
            )
    nine = datetime(2026, 3, 2, 9, 0, 30, tzinfo=TZ)
    first = write_demo_patrols(session, now=nine, community=west)
    assert first == {"inspectors": 2, "received": 2 * 61, "stored": 2 * 61}  # 08:00..09:00
    again = write_demo_patrols(session, now=nine, community=west)
    assert again == {"inspectors": 2, "received": 2 * 61, "stored": 0}
    later = write_demo_patrols(session, now=nine + timedelta(hours=1), community=west)
    assert later["stored"] == 2 * 60  # the walks go on from where they were
    rows = session.execute(
        text(
            "SELECT p.user_id, p.recorded_at, ST_Covers(a.geom, p.geom) AS inside, "
            "ST_Distance(p.geom::geography, lag(p.geom::geography) OVER w) AS step "
            "FROM patrol_point p, admin_area a WHERE a.code = :c AND p.user_id = ANY(:u) "
            "WINDOW w AS (PARTITION BY p.user_id ORDER BY p.recorded_at)"
        ),
        {"c": west, "u": inspectors},
    ).all()
    assert len(rows) == 2 * 121
    assert max(r.recorded_at for r in rows) == nine.replace(hour=10, second=0)
    assert all(r.inside for r in rows)
    assert max(r.step or 0 for r in rows) <= WALK_M_PER_S * 60 + 1  # a walk, no jumps
    # The board's manager sees both tracks of that day.
    day = patrol_day(session, base["actors"]["mgr.w"], nine.date())
    tracks = {f["id"]: f for f in day["features"] if f["geometry"]}
    assert set(tracks) == set(inspectors)
    assert all(f["properties"]["points"] == 121 for f in tracks.values())
    # The window: 08:00 to now, at most to 11:30, at least the last half hour of the day.
    at = partial(datetime, 2026, 3, 2, tzinfo=TZ)
    assert window(at(13, 5)) == (at(8), at(11, 30))
    assert window(at(3, 0, 59)) == (at(2, 30), at(3))
    assert window(at(0, 10)) == (at(0), at(0, 10))
    with pytest.raises(ValueError, match="no unit grids or no inspectors"):
        write_demo_patrols(session, now=nine, community="440604001002")


# -- the page against the Foshan demo --------------------------------------------------------


@dataclass
class Demo:
    """The shared demo site, an API client on its database (device tokens), and SQL."""

    base_url: str
    users: dict[str, tuple[str, str]]
    engine: Engine
    client: object
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def sql(self, query: str, **params: object) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(text(query), params))

    def call(self, who: str, method: str, url: str, body=None, headers=None):
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **(headers or {})}
        return self.client.open(url, method=method, json=body, headers=headers)

    def report(self, note: str) -> int:
        """A new report by demo.inspector at a random point of one of their grids."""
        seed = uuid.uuid4().int % 1_000_000
        lon, lat = self.sql(
            "SELECT ST_X(y.p), ST_Y(y.p) FROM (SELECT (ST_Dump(ST_GeneratePoints(ST_Buffer("
            "ST_Transform(g.geom, 4547), -8), 1, :seed))).geom AS p FROM unit_grid g "
            "WHERE g.community_code = :c AND g.valid_to IS NULL ORDER BY g.code "
            "OFFSET :n LIMIT 1) x, LATERAL (SELECT ST_Transform(x.p, 4326) AS p) y",
            seed=seed,
            c=COMMUNITY,
            n=seed % 30,
        )[0]
        body = {
            "client_uuid": str(uuid.uuid4()),
            "category": "E0502",
            "lon": lon,
            "lat": lat,
            "captured_at": datetime.now(UTC).isoformat(),
            "description": note,
        }
        response = self.call("demo.inspector", "POST", "/api/v1/incidents", body)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["id"]

    def version(self, case_id: int) -> int:
        return self.sql("SELECT version FROM incident WHERE id = :id", id=case_id)[0][0]

    def step(self, who: str, case_id: int, action: str, note: str = "") -> None:
        headers = {"If-Match": f'"{self.version(case_id)}"'}
        body = {"action": action, "note": note or f"board test: {action}"}
        response = self.call(who, "POST", f"/api/v1/cases/{case_id}/transitions", body, headers)
        assert response.status_code == 200, (action, response.get_data(as_text=True))

    def events(self, case_id: int, action: str, who: str) -> list:
        return self.sql(
            "SELECT e.note FROM case_event e WHERE e.incident_id = :id AND e.action = :a "
            "AND e.actor_id = :u ORDER BY e.version",
            id=case_id,
            a=action,
            u=self.ids[who],
        )

    def open_cases(self, area: str) -> int:
        return self.sql(
            "SELECT count(*) FROM incident i JOIN admin_area a ON a.code = :a "
            "AND ST_Covers(a.geom, i.geom) WHERE i.status NOT IN ('closed', 'void')",
            a=area,
        )[0][0]


@pytest.fixture(scope="module")
def demo(demo_site):
    from click.testing import CliRunner

    from gridops.auth import service as auth
    from gridops.cli import main

    # Today's patrol tracks (idempotent; `make demo` and the demo_site fixture run it too).
    result = CliRunner().invoke(
        main, ["demo", "patrols"], env={"GRIDOPS_DATABASE_URL": demo_site.database_url}
    )
    assert result.exit_code == 0, result.output
    engine = create_engine(demo_site.database_url, poolclass=pool.NullPool)
    app = create_app(app_config(demo_site.database_url))
    made = Demo(demo_site.base_url, demo_site.users, engine, app.test_client())
    with Session(engine) as db:
        for who in ("demo.inspector", "demo.community", "demo.town", "demo.handler"):
            user_id = db.execute(
                text("SELECT id FROM app_user WHERE username = :u"), {"u": who}
            ).scalar_one()
            made.ids[who] = user_id
            _, made.tokens[who] = auth.create_token(db, user_id, "board test", days=1)
        db.commit()
    yield made
    get_database(app).dispose()
    engine.dispose()


def open_board(browser, demo: Demo, who: str, query: str = "", *, fake_clock: bool = False):
    """A 1366x900 page signed in as ``who`` on the board, with its data loaded; and the
    milliseconds from navigation to the first full load of the board's data. ``fake_clock``:
    the page's timers run on Playwright's clock (``page.clock.fast_forward``)."""
    page = open_page(browser, viewport={"width": 1366, "height": 900})
    sign_in(page, demo.base_url, *demo.users[who])
    if fake_clock:
        page.clock.install()
    page.goto(f"{demo.base_url}/board{query}")
    page.wait_for_selector("body[data-board-ready]", timeout=15_000)
    page.wait_for_selector("body[data-tracks-ready]", timeout=15_000)
    ready_ms = int(page.evaluate("document.body.dataset.boardReady"))
    page.wait_for_load_state("networkidle")
    return page, ready_ms


def record_timing(page, name: str) -> dict:
    """The first load as the browser measured it (ms from navigation: board drawn, tracks
    drawn, and each API request's end), kept in artifacts/board-load-times.json."""
    timing = page.evaluate(
        "() => ({ready: +document.body.dataset.boardReady,"
        " tracks: +document.body.dataset.tracksReady,"
        " api: Object.fromEntries(performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/v1/') && !e.name.includes('/tiles/'))"
        ".map(e => [e.name.replace(location.origin, ''), Math.round(e.responseEnd)]))})"
    )
    path = ARTIFACTS / "board-load-times.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[name] = timing
    path.write_text(json.dumps(timings, indent=2, ensure_ascii=False))
    print(f"board first load as {name}: {timing['ready']} ms, tracks at {timing['tracks']} ms")
    return timing


def click_case(page, demo: Demo, case_id: int) -> None:
    """Click the case's marker, with the map centred on it (no control in the way)."""
    [(lon, lat)] = demo.sql(
        "SELECT ST_X(geom), ST_Y(geom) FROM incident WHERE id = :id", id=case_id
    )
    page.evaluate(
        "([lat, lon]) => gridopsMap.setView([lat, lon], 17, {animate: false})", [lat, lon]
    )
    page.locator(f"path.case-{case_id}").click()


def queue_case(demo: Demo, note: str) -> int:
    """A verified report: it waits on the dispatchers (in the queue, unassigned)."""
    case_id = demo.report(note)
    demo.step("demo.inspector", case_id, "verify")
    return case_id


@browser_test
def test_the_board_loads_with_map_legend_queue_and_workload(browser, demo):
    note = f"board load {uuid.uuid4().hex[:8]}"
    waiting = queue_case(demo, note)
    expected = demo.open_cases(COMMUNITY)
    page, ready_ms = open_board(browser, demo, "demo.community")
    assert record_timing(page, "demo.community")["ready"] == ready_ms < 3000
    assert "派遣调度台" in page.inner_text("h1") and "朝安东社区" in page.inner_text("h1")
    # Every open case of the community on the map, coloured by its clock; the legend counts.
    markers = page.locator("path.case-marker")
    assert markers.count() == expected == int(page.get_attribute("#board", "data-cases"))
    legend = page.locator(".board-legend li[data-clock]")
    assert legend.count() == 5
    counted = sum(
        int(legend.nth(i).locator(".legend-count").inner_text().strip("()")) for i in range(5)
    )
    assert counted == expected
    assert page.locator(f"path.case-{waiting}.clock-no_deadline").count() == 1
    # Unit grids from vector tiles, the community's outline, today's patrol tracks.
    assert page.locator("#board-map canvas.leaflet-tile").count() > 0
    assert int(page.evaluate("document.body.dataset.areas")) >= 1
    tracks = demo.sql(
        "SELECT count(DISTINCT user_id) FROM patrol_point WHERE recorded_at >= "
        "date_trunc('day', now() AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai' "
        # Inspectors of the community by duty or by their role's grids, as the board sees
        # them (other tests on the shared demo add role-only walkers).
        "AND user_id IN (SELECT gi.user_id FROM grid_inspector gi "
        "WHERE gi.grid_code LIKE :c || '%' UNION SELECT ra.user_id FROM role_assignment ra "
        "CROSS JOIN unnest(ra.grid_codes) AS g WHERE ra.role = 'inspector' AND g LIKE :c || '%') "
        "AND user_id IN (SELECT id FROM app_user WHERE is_active)",
        c=COMMUNITY,
    )[0][0]
    assert tracks >= 1
    assert int(page.get_attribute("#board", "data-tracks")) == tracks
    assert page.locator("path.patrol-track").count() >= tracks
    # The queue, grouped as the API gives it, with the new report among the unassigned.
    item = page.locator(f".group-unassigned .queue-item[data-case-id='{waiting}']")
    assert item.count() == 1
    assert "待派遣" in item.inner_text()
    # Workload: the demo inspector's row with today's track.
    row = page.locator(f"#workload-people tr[data-user-id='{demo.ids['demo.inspector']}']")
    assert "网格员 陈" in row.inner_text() and "公里" in row.inner_text()
    assert page.locator("#workload-departments tr[data-department='CC-CGJ']").count() == 1
    assert "更新于" in page.inner_text("#board-updated")
    assert axe_violations(page) == []
    screenshot(page, "board_community")
    assert page.problems == []
    page.context.close()


@browser_test
def test_the_district_board_holds_the_whole_district(browser, demo):
    expected = demo.open_cases(DISTRICT)
    page, ready_ms = open_board(browser, demo, "demo.district")
    assert record_timing(page, "demo.district")["ready"] == ready_ms < 3000
    assert page.locator("path.case-marker").count() == expected > 100
    assert page.locator(".queue-item").count() >= 1
    assert page.locator("#workload-people tbody tr").count() > 10
    assert axe_violations(page) == []
    screenshot(page, "board_district")
    page.goto(f"{demo.base_url}/board?lang=en")
    page.wait_for_selector("body[data-board-ready]")
    assert "Dispatch board" in page.inner_text("h1")
    assert "Legend" in page.inner_text(".board-legend")
    assert page.problems == []
    page.context.close()


@browser_test
def test_a_dispatcher_assigns_a_case_from_the_queue(browser, demo):
    note = f"assign {uuid.uuid4().hex[:8]}"
    case_id = queue_case(demo, note)
    page, _ = open_board(browser, demo, "demo.community")
    item = page.locator(f".queue-item[data-case-id='{case_id}']")
    item.locator(".queue-head").click()
    assert item.locator(".queue-head").get_attribute("aria-expanded") == "true"
    panel = item.locator(".case-panel")
    assert note in panel.inner_text()  # the report's description
    # The case is focused on the map: its marker is the selected one.
    assert page.locator(f"path.case-{case_id}").get_attribute("stroke-width") == "4"
    inspector = demo.ids["demo.inspector"]
    panel.locator("select[name=assignee]").select_option(str(inspector))
    panel.locator("input[name=note]").fill(note)
    panel.locator("button.assign-submit").click()
    page.wait_for_selector(f"#board-message:has-text('#{case_id}')")
    assert "已指派给" in page.inner_text("#board-message")
    # It no longer waits on the dispatchers: out of the queue, still on the map.
    page.wait_for_selector(f".queue-item[data-case-id='{case_id}']", state="detached")
    assert page.locator(f"path.case-{case_id}").count() == 1
    [(assignee, version)] = demo.sql(
        "SELECT assignee_id, version FROM incident WHERE id = :id", id=case_id
    )
    assert assignee == inspector
    assert [r.note for r in demo.events(case_id, "assign", "demo.community")] == [
        f"assigned to user #{inspector}: {note}"
    ]
    assert version == 3  # reported 1, verified 2, assigned 3
    assert page.problems == []
    page.context.close()


@browser_test
def test_a_dispatcher_closes_a_checked_case_from_the_map(browser, demo):
    note = f"close {uuid.uuid4().hex[:8]}"
    case_id = demo.report(note)
    for who, action in (
        ("demo.inspector", "verify"),
        ("demo.community", "file"),
        ("demo.community", "dispatch"),
        ("demo.handler", "accept"),
        ("demo.handler", "report_handled"),
        ("demo.inspector", "check_pass"),
    ):
        demo.step(who, case_id, action)
    page, _ = open_board(browser, demo, "demo.community")
    click_case(page, demo, case_id)
    popup = page.locator(f".leaflet-popup .case-panel[data-case-id='{case_id}']")
    popup.wait_for()
    assert "核查通过" in popup.locator(".fact-status").inner_text()
    wait_until(page, "getComputedStyle(document.querySelector('.leaflet-popup')).opacity === '1'")
    assert axe_violations(page) == []  # with the popup's form open
    screenshot(page, "board_popup")
    # The queue entry of the case is highlighted beside the map.
    assert "is-selected" in page.get_attribute(f".queue-item[data-case-id='{case_id}']", "class")
    popup.locator("button[data-action=close]").click()
    page.wait_for_selector(f"#board-message:has-text('#{case_id}')")
    assert "结案完成" in page.inner_text("#board-message")
    page.wait_for_selector(f"path.case-{case_id}", state="detached")  # closed: off the board
    page.wait_for_selector(".leaflet-popup", state="detached")  # it fades out
    [(status,)] = demo.sql("SELECT status FROM incident WHERE id = :id", id=case_id)
    assert status == "closed"
    assert len(demo.events(case_id, "close", "demo.community")) == 1
    assert page.problems == []
    page.context.close()


@browser_test
def test_a_stale_version_is_reloaded_with_a_message_and_the_retry_succeeds(browser, demo):
    note = f"stale {uuid.uuid4().hex[:8]}"
    case_id = queue_case(demo, note)
    page, _ = open_board(browser, demo, "demo.community")
    item = page.locator(f".queue-item[data-case-id='{case_id}']")
    item.locator(".queue-head").click()
    panel = item.locator(".case-panel")
    seen = int(panel.get_attribute("data-version"))
    # Behind the board's back, the town manager sends the case to the sanitation centre.
    changed = demo.call(
        "demo.town",
        "POST",
        f"/api/v1/dispatch/cases/{case_id}/assign",
        {"department": "CC-HW"},
        {"If-Match": f'"{seen}"'},
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    inspector = str(demo.ids["demo.inspector"])
    panel.locator("select[name=assignee]").select_option(inspector)
    panel.locator("input[name=note]").fill(note)
    panel.locator("button.assign-submit").click()
    message = item.locator(".panel-message")
    message.wait_for()
    page.wait_for_selector(f".queue-item[data-case-id='{case_id}'] .panel-message.is-warning")
    assert "刚被他人更新" in message.inner_text()
    assert f"第 {seen + 1} 版" in message.inner_text()
    # The case was reloaded: the panel shows the new department and carries the new version.
    panel = item.locator(".case-panel")
    assert int(panel.get_attribute("data-version")) == seen + 1
    assert "环境卫生" in panel.locator(".fact-department").inner_text()
    assert demo.events(case_id, "assign", "demo.community") == []
    assert axe_violations(page) == []  # with the queue's form open
    screenshot(page, "board_stale_version")
    # The dispatcher checks and tries again: it goes through.
    panel.locator("select[name=assignee]").select_option(inspector)
    panel.locator("input[name=note]").fill(note)
    panel.locator("button.assign-submit").click()
    page.wait_for_selector(f"#board-message:has-text('#{case_id}')")
    assert "已指派给" in page.inner_text("#board-message")
    [(assignee,)] = demo.sql("SELECT assignee_id FROM incident WHERE id = :id", id=case_id)
    assert assignee == int(inspector)
    written = demo.events(case_id, "assign", "demo.community")
    assert [r.note for r in written] == [f"assigned to user #{inspector}: {note}"]
    assert len(demo.events(case_id, "assign", "demo.town")) == 1
    # The one refused write is the page working, not a failed request.
    stale = f"412: {demo.base_url}/api/v1/dispatch/cases/{case_id}/assign"
    assert page.problems == [stale]
    page.context.close()


@browser_test
def test_a_new_report_appears_on_the_board_after_a_refresh(browser, demo):
    page, _ = open_board(browser, demo, "demo.community", fake_clock=True)
    before = int(page.get_attribute("#board", "data-refreshes"))
    note = f"fresh {uuid.uuid4().hex[:8]}"
    case_id = demo.report(note)  # an inspector's tablet sends it
    assert page.locator(f"path.case-{case_id}").count() == 0
    started = time.perf_counter()
    page.click("#board-refresh")
    page.wait_for_selector(f"path.case-{case_id}", state="attached")
    assert int(page.get_attribute("#board", "data-refreshes")) == before + 1
    print(f"refresh to the new case: {(time.perf_counter() - started) * 1000:.0f} ms")
    click_case(page, demo, case_id)
    popup = page.locator(f".leaflet-popup .case-panel[data-case-id='{case_id}']")
    assert note in popup.inner_text()
    assert "已上报" in popup.locator(".fact-status").inner_text()
    # While a case is open the board holds still; closed, it refreshes every 30 s by itself.
    later = demo.report(f"fresh later {uuid.uuid4().hex[:8]}")
    page.clock.fast_forward(31_000)
    assert "自动刷新暂停" in page.inner_text("#board-updated")
    assert int(page.get_attribute("#board", "data-refreshes")) == before + 1
    popup.locator("button.panel-close").click()
    page.clock.fast_forward(31_000)
    page.wait_for_selector(f"path.case-{later}", state="attached")
    assert int(page.get_attribute("#board", "data-refreshes")) == before + 2
    assert page.problems == []
    page.context.close()


@browser_test
def test_inspectors_are_sent_to_their_own_page(browser, demo):
    page = open_page(browser)
    sign_in(page, demo.base_url, *demo.users["demo.inspector"])
    response = page.goto(f"{demo.base_url}/board")
    assert response.status == 403
    assert "供管理人员使用" in page.inner_text("main")
    link = page.locator("main a.board-button")
    assert link.get_attribute("href") == "/tablet" and "巡查上报" in link.inner_text()
    assert page.locator("#board-map").count() == 0
    assert page.problems == [f"403: {demo.base_url}/board"]
    page.context.close()

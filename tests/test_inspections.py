"""Inspections: risk and frequency, balanced assignment, daily routes, results that feed back,
and the API (version guard, jurisdiction, bad input that writes nothing)."""

from __future__ import annotations

import itertools
import math
import random
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from gridops.auth import service as auth
from gridops.errors import Conflict, InvalidInput, NotFound
from gridops.incidents.cases import StaleVersion
from gridops.incidents.workcal import local_today
from gridops.incidents.workflow import NotAllowed
from gridops.inspections import assign, risk, routes
from gridops.inspections.results import record_result
from gridops.inspections.tasks import create_due_tasks
from tests import factories as f
from tests.conftest import TEST_PASSWORD
from tests.test_cases import build_world

DAY0 = date(2031, 3, 3)  # plans are made; their first visits fall within one period
DAY = DAY0 + timedelta(days=90)  # every plan made on DAY0 is due
W = "440604001001"
E = "440604001002"


# -- balanced assignment, without a database ------------------------------------------------


def max_matching(tasks: list[assign.Task], inspectors: list[assign.Inspector]) -> int:
    """The most tasks any assignment can place (Kuhn's augmenting paths over capacity slots)."""
    slots = {i.id: i.room for i in inspectors}
    holder: dict[tuple[int, int], int] = {}  # (inspector, slot) -> task index

    def augment(t: int, seen: set[tuple[int, int]]) -> bool:
        for person, _ in tasks[t].candidates:
            for k in range(slots.get(person, 0)):
                slot = (person, k)
                if slot in seen:
                    continue
                seen.add(slot)
                if slot not in holder or augment(holder[slot], seen):
                    holder[slot] = t
                    return True
        return False

    return sum(augment(t, set()) for t in range(len(tasks)))


@st.composite
def assignment_problems(draw) -> tuple[list[assign.Task], list[assign.Inspector]]:
    n_people = draw(st.integers(1, 6))
    coordinate = st.floats(0, 10_000)
    inspectors = []
    for person in range(1, n_people + 1):
        room, load = draw(st.integers(0, 5)), draw(st.integers(0, 3))
        inspectors.append(
            assign.Inspector(person, room, room + load, load, draw(coordinate), draw(coordinate))
        )
    tasks = []
    for task_id in range(1, draw(st.integers(0, 25)) + 1):
        people = draw(st.lists(st.integers(1, n_people), unique=True, max_size=n_people))
        tiers = [draw(st.integers(0, 2)) for _ in people]
        tasks.append(
            assign.Task(
                task_id, draw(coordinate), draw(coordinate), tuple(zip(people, tiers, strict=True))
            )
        )
    return tasks, inspectors


@settings(max_examples=300, deadline=None)
@given(assignment_problems())
def test_balanced_assignment_properties(problem):
    tasks, inspectors = problem
    placed = assign.balance(tasks, inspectors)
    assert set(placed) == {t.id for t in tasks}
    room = {i.id: i.room for i in inspectors}
    taken = {i.id: 0 for i in inspectors}
    for task in tasks:
        person = placed[task.id]
        if person is not None:
            assert person in {p for p, _ in task.candidates}, "only eligible inspectors"
            taken[person] += 1
    assert all(taken[p] <= room[p] for p in room), "nobody over capacity"
    # As many tasks as any assignment can place: all of them when the capacity allows.
    assert sum(p is not None for p in placed.values()) == max_matching(tasks, inspectors)
    for task in tasks:
        person = placed[task.id]
        if person is None:  # left over only when every eligible inspector is full
            assert all(taken[p] == room[p] for p, _ in task.candidates)
            continue
        tier = dict(task.candidates)[person]
        better = [p for p, t in task.candidates if t < tier]
        # The primary first, then the grid's stand-ins, then the community: a better-tier
        # inspector with room left would have taken it.
        assert all(taken[p] == room[p] for p in better), (task, person, taken)


def test_overflow_is_shared_in_proportion_to_capacity():
    primary = assign.Inspector(1, room=2, per_day=2, x=0, y=0)
    big = assign.Inspector(2, room=10, per_day=10, x=500, y=0)
    small = assign.Inspector(3, room=5, per_day=5, x=500, y=0)
    tasks = [assign.Task(t, 0, 0, ((1, assign.TIER_PRIMARY), (2, 1), (3, 1))) for t in range(12)]
    placed = assign.balance(tasks, [primary, big, small])
    loads = [sum(p == person for p in placed.values()) for person in (1, 2, 3)]
    # The primary is full; the 10 left split 7 : 3 (capacities 10 : 5), not 10 : 0.
    assert loads == [2, 7, 3]


def test_nobody_eligible_or_nobody_with_room_leaves_tasks_unassigned():
    full = assign.Inspector(1, room=0, per_day=5, load=5, x=0, y=0)
    tasks = [assign.Task(1, 0, 0, ((1, 0),)), assign.Task(2, 0, 0, ())]
    assert assign.balance(tasks, [full]) == {1: None, 2: None}


# -- routes, without a database ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_route_never_longer_than_nearest_neighbour(seed):
    rng = random.Random(seed)
    n = rng.choice([2, 5, 7, 12, 25, 40])
    stops = [(rng.uniform(0, 3000), rng.uniform(0, 3000)) for _ in range(n)]
    start = (rng.uniform(0, 3000), rng.uniform(0, 3000))
    order = routes.order_stops(start, stops, time_limit_s=0.05)
    assert sorted(order) == list(range(n))
    greedy = routes.nearest_neighbour_order(start, stops)
    solved = routes.route_length(start, stops, order)
    assert solved <= routes.route_length(start, stops, greedy) + 1e-6


def test_route_is_shorter_than_nearest_neighbour_on_most_days():
    shorter = 0
    for seed in range(10):
        rng = random.Random(100 + seed)
        stops = [(rng.uniform(0, 3000), rng.uniform(0, 3000)) for _ in range(30)]
        start = (1500.0, 1500.0)
        greedy = routes.route_length(start, stops, routes.nearest_neighbour_order(start, stops))
        solved = routes.route_length(
            start, stops, routes.order_stops(start, stops, time_limit_s=0.1)
        )
        assert solved <= greedy + 1e-6
        shorter += solved < greedy - 1
    assert shorter >= 5, "the solver should improve on the greedy order on most 30-stop days"


def test_small_days_are_ordered_exactly():
    rng = random.Random(3)
    stops = [(rng.uniform(0, 1000), rng.uniform(0, 1000)) for _ in range(6)]
    best = min(
        itertools.permutations(range(6)),
        key=lambda order: routes.route_length((0.0, 0.0), stops, order),
    )
    order = routes.order_stops((0.0, 0.0), stops)
    assert routes.route_length((0.0, 0.0), stops, order) == pytest.approx(
        routes.route_length((0.0, 0.0), stops, best)
    )


def test_projection_is_metric_around_foshan():
    xy = routes.project([113.10, 113.11], [23.02, 23.02])
    assert math.dist(xy[0], xy[1]) == pytest.approx(1024, rel=0.01)  # 0.01° of lon at 23° N


# -- the world: two communities, three inspectors, enterprises and an outlet ----------------


def add_enterprise(session, serial, lon, lat, industry="批发零售", risk_level=1) -> int:
    return session.execute(
        text(
            "INSERT INTO enterprise (uscc, name, industry, risk_level, geom) VALUES "
            "(:uscc, :name, :industry, :level, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) "
            "RETURNING id"
        ),
        {
            "uscc": f.uscc(serial),
            "name": f"企业{serial}",
            "industry": industry,
            "level": risk_level,
            "lon": lon,
            "lat": lat,
        },
    ).scalar_one()


def add_incidents(session, lon, lat, n, reported_on) -> None:
    for _ in range(n):
        session.execute(
            text(
                "INSERT INTO incident (client_uuid, category_id, geom, reported_at, status) "
                "VALUES (gen_random_uuid(), (SELECT min(id) FROM category), "
                "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :at, 'reported')"
            ),
            {"lon": lon, "lat": lat, "at": f"{reported_on.isoformat()} 10:00+08"},
        )


@pytest.fixture
def world(session, tmp_path):
    base = build_world(session, tmp_path)
    users = {name: actor.user_id for name, actor in base["actors"].items()}
    e_grids = [g["code"] for g in f.strip_grid(f.COMMUNITY_E, E)]
    users["insp.e"] = auth.create_user(session, "insp.e", TEST_PASSWORD)
    auth.assign_role(session, users["insp.e"], "inspector", grid_codes=e_grids)
    # West: insp.w is primary on strips 1-2 and stands in on 3-4; insp.w2 the other way.
    for strip in range(1, 5):
        code = f"{W}{strip:03d}"
        first, second = ("insp.w", "insp.w2") if strip <= 2 else ("insp.w2", "insp.w")
        session.execute(
            text("INSERT INTO grid_inspector VALUES (:g, :u, true), (:g, :v, false)"),
            {"g": code, "u": users[first], "v": users[second]},
        )
    for code in e_grids:
        session.execute(
            text("INSERT INTO grid_inspector VALUES (:g, :u, true)"),
            {"g": code, "u": users["insp.e"]},
        )
    session.execute(
        text(
            "INSERT INTO inspector_profile (user_id, tasks_per_day, home) VALUES "
            "(:a, 40, ST_SetSRID(ST_MakePoint(113.004, 23.010), 4326)), "
            "(:b, 40, ST_SetSRID(ST_MakePoint(113.016, 23.010), 4326))"
        ),
        {"a": users["insp.w"], "b": users["insp.w2"]},
    )
    rng = random.Random(7)
    west = [
        add_enterprise(session, n, rng.uniform(113.0005, 113.0195), rng.uniform(23.001, 23.019))
        for n in range(1, 25)
    ]
    east = [
        add_enterprise(session, n, rng.uniform(113.0205, 113.0395), rng.uniform(23.001, 23.019))
        for n in range(25, 31)
    ]
    session.execute(
        text(
            "INSERT INTO service_outlet (code, outlet_type, name, geom) VALUES "
            "('OUT-W', 'clinic', '西社区卫生站', ST_SetSRID(ST_MakePoint(113.011, 23.012), 4326))"
        )
    )
    session.commit()
    actors = {name: auth.load_actor(session, uid) for name, uid in users.items()}
    return {"users": users, "actors": actors, "west": west, "east": east}


def tasks_snapshot(session) -> list[tuple]:
    return [
        tuple(r)
        for r in session.execute(
            text(
                "SELECT id, plan_id, due_on, assignee_id, route_order, status, result, version "
                "FROM inspection_task ORDER BY id"
            )
        )
    ]


def plans_snapshot(session) -> list[tuple]:
    return [
        tuple(r)
        for r in session.execute(
            text(
                "SELECT id, target_kind, target_id, risk_score, frequency_days, next_due_on, "
                "last_result, last_inspected_at, active FROM inspection_plan ORDER BY id"
            )
        )
    ]


def plan_of(session, kind: str, target: int):
    return session.execute(
        text("SELECT * FROM inspection_plan WHERE target_kind = :k AND target_id = :t"),
        {"k": kind, "t": target},
    ).one()


# -- risk and plans -----------------------------------------------------------------------


def test_risk_follows_industry_grade_incidents_and_result():
    assert risk.industry_base("危险化学品经营") > risk.industry_base("餐饮服务")
    assert risk.industry_base("餐饮服务") > risk.industry_base("科技服务")
    assert risk.industry_base("某某建筑施工") == pytest.approx(0.7)  # by keyword
    assert risk.industry_base(None) == risk.DEFAULT_INDUSTRY_BASE
    hazard = risk.base_risk("enterprise", "危险化学品经营", 4)
    office = risk.base_risk("enterprise", "科技服务", 1)
    scores = risk.score([hazard, office, office, office, office], [0, 0, 6, 0, 0],
                        [None, None, None, "major", "ok"])  # fmt: skip
    assert scores[0] > scores[2] > scores[1]  # hazard > office with incidents > quiet office
    assert scores[4] < scores[1] < scores[3]  # clean visit lowers, major findings raise
    assert all(0 <= s <= 1 for s in scores)
    assert list(risk.frequency_days([0.9, 0.6, 0.5, 0.4, 0.39, 0.0])) == [7, 7, 30, 30, 90, 90]


def test_refresh_plans_once_per_target_and_idempotent(session, world):
    hazard = add_enterprise(session, 90, 113.003, 23.003, "危险化学品经营", 4)
    assert risk.refresh_plans(session, DAY0) == 24 + 6 + 1 + 1
    assert risk.refresh_plans(session, DAY0) == 0
    plans = session.execute(
        text("SELECT count(*), count(DISTINCT (target_kind, target_id)) FROM inspection_plan")
    ).one()
    assert tuple(plans) == (32, 32)
    hazard_plan = plan_of(session, "enterprise", hazard)
    quiet_plan = plan_of(session, "enterprise", world["west"][0])
    assert hazard_plan.frequency_days == 7 and quiet_plan.frequency_days == 90
    # First visits are spread over the first period, not all on day one.
    due = session.execute(text("SELECT DISTINCT next_due_on FROM inspection_plan")).scalars()
    assert all(DAY0 <= d < DAY0 + timedelta(days=90) for d in due)
    assert len(set(session.execute(text("SELECT next_due_on FROM inspection_plan")))) > 5


def test_incidents_around_raise_risk_and_shorten_the_next_due_day(session, world):
    target = world["west"][3]
    lon, lat = session.execute(
        text("SELECT ST_X(geom), ST_Y(geom) FROM enterprise WHERE id = :id"), {"id": target}
    ).one()
    risk.refresh_plans(session, DAY0)
    session.execute(
        text(
            "UPDATE inspection_plan SET next_due_on = :d WHERE target_kind = 'enterprise' "
            "AND target_id = :t"
        ),
        {"d": DAY0 + timedelta(days=80), "t": target},
    )
    before = plan_of(session, "enterprise", target)
    add_incidents(session, lon + 0.0003, lat, 3, DAY0 - timedelta(days=400))  # too old
    add_incidents(session, lon + 0.003, lat, 3, DAY0)  # 300 m away: too far
    assert risk.refresh_plans(session, DAY0) == 0
    add_incidents(session, lon + 0.0003, lat, 8, DAY0 - timedelta(days=10))  # ~30 m, recent
    assert risk.refresh_plans(session, DAY0) == 1
    after = plan_of(session, "enterprise", target)
    assert after.risk_score > before.risk_score
    assert after.frequency_days < before.frequency_days == 90
    assert after.next_due_on == DAY0 + timedelta(days=after.frequency_days)  # never visited


# -- creating, placing and ordering tasks ---------------------------------------------------


def test_create_due_tasks_is_idempotent(session, world):
    risk.refresh_plans(session, DAY0)
    first = create_due_tasks(session, DAY, route_time_limit_s=0.05)
    rows = tasks_snapshot(session)
    plans = plans_snapshot(session)
    assert first["created"] == 31 and first["assigned"] == 31 and first["unassigned"] == 0
    second = create_due_tasks(session, DAY, route_time_limit_s=0.05)
    assert (second["created"], second["assigned"], second["routed_inspectors"]) == (0, 0, 0)
    assert tasks_snapshot(session) == rows
    assert plans_snapshot(session) == plans
    assert {r[2] for r in rows} <= {DAY0 + timedelta(days=n) for n in range(91)}


def test_tasks_go_to_the_grid_primary_and_in_a_short_route(session, world):
    risk.refresh_plans(session, DAY0)
    create_due_tasks(session, DAY, route_time_limit_s=0.05)
    rows = session.execute(
        text(
            """
            SELECT t.assignee_id, t.route_order, g.code AS grid, ST_X(m) AS x, ST_Y(m) AS y
            FROM inspection_task t JOIN inspection_plan p ON p.id = t.plan_id
            LEFT JOIN enterprise e ON p.target_kind = 'enterprise' AND e.id = p.target_id
            LEFT JOIN service_outlet o ON p.target_kind = 'outlet' AND o.id = p.target_id
            JOIN unit_grid g ON g.valid_to IS NULL
                 AND ST_Covers(g.geom, coalesce(e.geom, o.geom))
            CROSS JOIN LATERAL ST_Transform(coalesce(e.geom, o.geom), 4547) AS m
            ORDER BY t.assignee_id, t.route_order
            """
        )
    ).all()
    u = world["users"]
    primary = {1: u["insp.w"], 2: u["insp.w"], 3: u["insp.w2"], 4: u["insp.w2"]}
    for r in rows:
        expected = primary[int(r.grid[-3:])] if r.grid.startswith(W) else u["insp.e"]
        assert r.assignee_id == expected, r
    homes = {
        u["insp.w"]: tuple(routes.project([113.004], [23.010])[0]),
        u["insp.w2"]: tuple(routes.project([113.016], [23.010])[0]),
    }
    for person, home in homes.items():
        mine = [r for r in rows if r.assignee_id == person]
        assert [r.route_order for r in mine] == list(range(1, len(mine) + 1))
        stops = [(r.x, r.y) for r in mine]
        stored = routes.route_length(home, stops, range(len(stops)))
        greedy = routes.route_length(home, stops, routes.nearest_neighbour_order(home, stops))
        assert len(stops) > 6 and stored <= greedy + 1e-6


def test_stand_in_takes_the_grid_when_the_primary_is_absent(session, world):
    u = world["users"]
    risk.refresh_plans(session, DAY0)
    session.execute(
        text("INSERT INTO staff_absence (user_id, starts_on, ends_on) VALUES (:u, :d, :d)"),
        {"u": u["insp.w"], "d": DAY},
    )
    result = create_due_tasks(session, DAY, route_time_limit_s=0.05)
    assert result["unassigned"] == 0
    west = session.execute(
        text(
            """
            SELECT DISTINCT t.assignee_id FROM inspection_task t
            JOIN inspection_plan p ON p.id = t.plan_id
            JOIN enterprise e ON p.target_kind = 'enterprise' AND e.id = p.target_id
            WHERE e.id = ANY(:west)
            """
        ),
        {"west": world["west"]},
    ).scalars()
    assert set(west) == {u["insp.w2"]}
    # Back the next day: the open tasks stay where they are (nothing is taken back).
    again = create_due_tasks(session, DAY + timedelta(days=1), route_time_limit_s=0.05)
    assert again["released"] == 0 and again["assigned"] == 0


def test_an_absent_assignee_releases_the_tasks_to_the_stand_in(session, world):
    u = world["users"]
    risk.refresh_plans(session, DAY0)
    create_due_tasks(session, DAY, route_time_limit_s=0.05)
    mine = session.execute(
        text("SELECT count(*) FROM inspection_task WHERE assignee_id = :u"), {"u": u["insp.w"]}
    ).scalar()
    later = DAY + timedelta(days=1)
    session.execute(
        text("INSERT INTO staff_absence (user_id, starts_on, ends_on) VALUES (:u, :d, :d)"),
        {"u": u["insp.w"], "d": later},
    )
    result = create_due_tasks(session, later, route_time_limit_s=0.05)
    assert result["released"] == mine > 0 and result["assigned"] == mine
    left = session.execute(
        text("SELECT count(*) FROM inspection_task WHERE assignee_id = :u"), {"u": u["insp.w"]}
    ).scalar()
    assert left == 0


def test_capacity_overflow_goes_to_the_community_and_the_rest_stays_unassigned(session, world):
    u = world["users"]
    risk.refresh_plans(session, DAY0)
    session.execute(
        text("UPDATE inspector_profile SET tasks_per_day = 5 WHERE user_id = ANY(:ids)"),
        {"ids": [u["insp.w"], u["insp.w2"]]},
    )
    session.execute(
        text("INSERT INTO inspector_profile (user_id, tasks_per_day) VALUES (:e, 2)"),
        {"e": u["insp.e"]},
    )
    result = create_due_tasks(session, DAY, route_time_limit_s=0.05)
    loads = dict(
        session.execute(
            text(
                "SELECT assignee_id, count(*) FROM inspection_task "
                "WHERE assignee_id IS NOT NULL GROUP BY 1"
            )
        ).all()
    )
    # West: 25 targets, 5 + 5 places; east: 6 targets, 2 places. Nobody over capacity; the
    # rest waits for the dispatcher.
    assert loads == {u["insp.w"]: 5, u["insp.w2"]: 5, u["insp.e"]: 2}
    assert result["assigned"] == 12 and result["unassigned"] == 31 - 12
    unassigned = session.execute(
        text("SELECT id FROM inspection_task WHERE assignee_id IS NULL ORDER BY id")
    ).scalars()
    assert sorted(result["unassigned_ids"]) == list(unassigned)


# -- results ----------------------------------------------------------------------------


@pytest.fixture
def planned(session, world):
    risk.refresh_plans(session, DAY0)
    create_due_tasks(session, DAY, route_time_limit_s=0.05)
    session.commit()
    task = session.execute(
        text(
            "SELECT t.id, t.version, t.plan_id FROM inspection_task t "
            "WHERE t.assignee_id = :u ORDER BY t.route_order LIMIT 1"
        ),
        {"u": world["users"]["insp.w"]},
    ).one()
    return {**world, "task": task}


def test_results_feed_back_into_risk_and_next_due(session, planned):
    insp = planned["actors"]["insp.w"]
    task = planned["task"]
    before = session.execute(
        text("SELECT * FROM inspection_plan WHERE id = :id"), {"id": task.plan_id}
    ).one()
    done = record_result(
        session, task.id, insp, result="major", note="灭火器过期", expected_version=task.version
    )
    assert done["status"] == "done" and done["version"] == task.version + 1
    after = session.execute(
        text("SELECT * FROM inspection_plan WHERE id = :id"), {"id": task.plan_id}
    ).one()
    assert after.last_result == "major" and after.last_inspected_at is not None
    assert after.risk_score > before.risk_score
    assert after.next_due_on == local_today() + timedelta(days=after.frequency_days)
    assert done["plan"]["next_due_on"] == after.next_due_on.isoformat()
    with pytest.raises(Conflict):  # done is done
        record_result(session, task.id, insp, result="ok", expected_version=done["version"])
    # A clean visit on the next round lowers the risk again.
    session.execute(
        text("INSERT INTO inspection_task (plan_id, due_on, assignee_id) VALUES (:p, :d, :u)"),
        {"p": task.plan_id, "d": after.next_due_on, "u": insp.user_id},
    )
    again = session.execute(
        text("SELECT id FROM inspection_task WHERE plan_id = :p AND status = 'open'"),
        {"p": task.plan_id},
    ).scalar_one()
    record_result(session, again, insp, result="ok", expected_version=1)
    clean = session.execute(
        text("SELECT risk_score FROM inspection_plan WHERE id = :id"), {"id": task.plan_id}
    ).scalar_one()
    assert clean < after.risk_score


def test_result_guards_version_roles_and_jurisdiction(session, planned):
    a, task = planned["actors"], planned["task"]
    unchanged = (tasks_snapshot(session), plans_snapshot(session))
    with pytest.raises(StaleVersion) as stale:
        record_result(session, task.id, a["insp.w"], result="ok", expected_version=99)
    assert stale.value.status == 412 and stale.value.headers["ETag"] == f'"{task.version}"'
    with pytest.raises(NotAllowed):  # an inspector of the grid, but not the assignee
        record_result(session, task.id, a["insp.w2"], result="ok", expected_version=task.version)
    for outsider in ("mgr.e", "insp.e", "handler"):  # not their area: not found
        with pytest.raises(NotFound):
            record_result(session, task.id, a[outsider], result="ok", expected_version=1)
    with pytest.raises(InvalidInput) as bad:
        record_result(session, task.id, a["insp.w"], result="fine", note=7, expected_version=1)
    assert {e.field for e in bad.value.errors} == {"result", "note"}
    assert (tasks_snapshot(session), plans_snapshot(session)) == unchanged
    # The manager of the area may record for the inspector.
    done = record_result(
        session, task.id, a["mgr.w"], result="minor", expected_version=task.version
    )
    assert done["result"] == "minor"


# -- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
def clients(app, planned, token_for):
    made = {}
    for name, user_id in planned["users"].items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        made[name] = client
    return made


def test_api_day_in_route_order_and_result_with_if_match(session, planned, clients):
    insp = clients["insp.w"]
    day = insp.get(f"/api/v1/inspections/tasks?day={DAY.isoformat()}")
    assert day.status_code == 200, day.get_json()
    tasks = day.get_json()["tasks"]
    assert [t["route_order"] for t in tasks] == list(range(1, len(tasks) + 1))
    assert {t["assignee_id"] for t in tasks} == {planned["users"]["insp.w"]}
    first = tasks[0]
    assert first["id"] == planned["task"].id and first["status"] == "open"
    assert set(first["target"]) >= {"kind", "id", "name", "lon", "lat"}
    url = f"/api/v1/inspections/tasks/{first['id']}/result"
    assert insp.post(url, json={"result": "ok"}).status_code == 428
    stale = insp.post(url, json={"result": "ok"}, headers={"If-Match": '"9"'})
    assert stale.status_code == 412 and stale.headers["ETag"] == f'"{first["version"]}"'
    done = insp.post(
        url, json={"result": "ok", "note": "合格"}, headers={"If-Match": f'"{first["version"]}"'}
    )
    assert done.status_code == 200, done.get_json()
    assert done.headers["ETag"] == f'"{first["version"] + 1}"'
    assert done.get_json()["plan"]["last_result"] == "ok"
    # Done today: it is in today's list as done, and out of the open list of the old day.
    today = insp.get("/api/v1/inspections/tasks").get_json()["tasks"]
    assert [(t["id"], t["status"]) for t in today if t["id"] == first["id"]] == [
        (first["id"], "done")
    ]


def test_api_bad_input_is_422_and_writes_nothing(session, planned, clients):
    insp, task = clients["insp.w"], planned["task"]
    before = (tasks_snapshot(session), plans_snapshot(session))
    url = f"/api/v1/inspections/tasks/{task.id}/result"
    match = {"If-Match": f'"{task.version}"'}
    for body in ({"result": "great"}, {"result": "ok", "note": ["x"]}, {}, ["ok"]):
        response = insp.post(url, json=body, headers=match)
        assert response.status_code == 422, (body, response.get_json())
        assert response.mimetype == "application/problem+json"
    for query in ("day=tomorrow", "assignee=everyone"):
        assert insp.get(f"/api/v1/inspections/tasks?{query}").status_code == 422
    manager = clients["mgr.w"]
    for query in ("kind=shop", "due_by=soon", "limit=0", "cursor=x"):
        assert manager.get(f"/api/v1/inspections/plans?{query}").status_code == 422
    assert (tasks_snapshot(session), plans_snapshot(session)) == before


def test_api_jurisdiction(session, planned, clients):
    task = planned["task"]
    everyone = f"/api/v1/inspections/tasks?day={DAY.isoformat()}&assignee=any"
    west = {t["id"] for t in clients["mgr.w"].get(everyone).get_json()["tasks"]}
    east = {t["id"] for t in clients["mgr.e"].get(everyone).get_json()["tasks"]}
    all_ids = set(session.execute(text("SELECT id FROM inspection_task")).scalars())
    assert west and east and west | east == all_ids and not west & east
    assert clients["handler"].get(everyone).get_json()["tasks"] == []  # restricted: none
    url = f"/api/v1/inspections/tasks/{task.id}/result"
    foreign = clients["mgr.e"].post(url, json={"result": "ok"}, headers={"If-Match": '"2"'})
    assert foreign.status_code == 404
    assert clients["handler"].post(url, json={"result": "ok"}).status_code == 403  # no verb
    mine = clients["insp.w"].get(everyone).get_json()["tasks"]
    assert {t["id"] for t in mine} == west  # an inspector sees the tasks of their grids
    # Plans: managers and planners of the area, with the factors of the risk.
    plans = clients["mgr.w"].get("/api/v1/inspections/plans?limit=1000").get_json()["plans"]
    targets = {p["target"]["id"] for p in plans if p["target"]["kind"] == "enterprise"}
    assert targets == set(planned["west"])
    assert all(p["risk_factors"]["base"] > 0 for p in plans)
    assert clients["insp.w"].get("/api/v1/inspections/plans").status_code == 403


def test_api_plans_page_with_next_links(session, planned, clients):
    manager = clients["mgr.w"]
    seen, url = [], "/api/v1/inspections/plans?limit=10&kind=enterprise"
    while url:
        body = manager.get(url).get_json()
        seen += [p["id"] for p in body["plans"]]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = nxt[0].replace("http://localhost", "") if nxt else None
    assert len(seen) == len(set(seen)) == len(planned["west"]) and seen == sorted(seen)

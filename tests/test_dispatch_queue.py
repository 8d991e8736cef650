"""The dispatcher's queue, assignment and workload: the queue's order on a world with known
answers, keyset paging, the jurisdiction (foreign cases are never listed, counted or
assignable), the assign route's version guard (two dispatchers racing over HTTP: one wins),
bulk assignment all or nothing, and workload counts."""

from __future__ import annotations

import threading
from datetime import datetime, time, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from gridops import create_app, migrate
from gridops.auth import service as auth
from gridops.db import get_database
from gridops.dispatch import queue
from gridops.dispatch.routing import record_decision
from gridops.grids.locate import assign_grids
from gridops.incidents.workcal import TZ, local_today
from gridops.incidents.workflow import NotAllowed, allowed_actions
from tests.conftest import app_config
from tests.test_case_list import add_case
from tests.test_cases import build_world

# A fixed "now" (10:00 today, Foshan time): every deadline below is relative to it, and the
# service functions are asked at that moment, so the answers do not depend on the clock.
NOW = datetime.combine(local_today(), time(10), TZ)
H = timedelta(hours=1)
D = timedelta(days=1)
# name: status, lon, assignee (a world user or None), deadline (from NOW), received (days ago)
CASES = {
    "a_filed": ("filed", 113.0025, None, None, 3),
    "b_verified": ("verified", 113.0075, None, None, 1),
    "c_reported_nobody": ("reported", 113.0125, None, None, 2),
    "d_reported_inspector": ("reported", 113.0125, "insp.w", None, 4),
    "e_returned_assigned": ("returned", 113.0025, "handler", 30 * D, 5),
    "f_returned_overdue": ("returned", 113.0075, None, -1 * H, 6),
    "g_overdue": ("in_handling", 113.0125, "handler", -2 * H, 7),
    "h_overdue_dispatched": ("dispatched", 113.0175, None, -1 * H, 8),
    "i_due_soon": ("in_handling", 113.0175, "handler", 10 * timedelta(minutes=1), 9),
    "j_in_time": ("in_handling", 113.0025, "handler", 30 * D, 10),
    "k_handled": ("handled", 113.0075, "insp.w2", None, 11),
    "l_checked": ("checked", 113.0125, None, None, 1.5),
    "m_closed": ("closed", 113.0175, None, -3 * H, 12),
    "east_filed": ("filed", 113.03, None, None, 2),
    "east_overdue": ("in_handling", 113.035, "handler", -1 * H, 3),
    "foreign_filed": ("filed", 113.05, None, None, 1),  # district 440605
}
WEST_ORDER = [
    "f_returned_overdue",  # unassigned (returned): the earliest deadline first
    "a_filed",  # unassigned, no deadline: the oldest received first
    "c_reported_nobody",
    "l_checked",
    "b_verified",
    "e_returned_assigned",  # returned, but someone has it
    "g_overdue",  # overdue, earliest deadline first
    "h_overdue_dispatched",
    "i_due_soon",  # less than a fifth of 24 working hours left
]
OF_DEPARTMENT = {"e_returned_assigned", "g_overdue", "h_overdue_dispatched", "i_due_soon",
                 "j_in_time", "east_overdue", "foreign_filed"}  # fmt: skip


@pytest.fixture
def world(session, tmp_path, app, make_user, token_for, monkeypatch):
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    base = build_world(session, tmp_path)
    session.execute(
        text("DELETE FROM incident WHERE id IN (:w, :e)"), {"w": base["west"], "e": base["east"]}
    )
    users = {name: actor.user_id for name, actor in base["actors"].items()}
    east_grids = [f"440604001002{i:03d}" for i in range(1, 5)]
    users["insp.e"], _ = make_user("inspector", "insp.e", grid_codes=east_grids)
    users["town"], _ = make_user("town_manager", "town", area_code="440604001")
    users["admin"], _ = make_user("admin", "root")
    users["planner"], _ = make_user("planner", "plan", area_code="440604")
    cg = session.execute(text("SELECT id FROM department WHERE code = 'CG'")).scalar_one()
    session.execute(
        text("INSERT INTO department (code, name, area_code) VALUES ('NH', '南海城管', '440605')")
    )
    ids = {}
    for name, (status, lon, assignee, deadline, days) in CASES.items():
        ids[name] = add_case(
            session,
            "E0502",
            status,
            lon,
            23.01,
            assignee_id=users[assignee] if assignee else None,
            deadline_at=NOW + deadline if deadline is not None else None,
            received_at=NOW - days * D,
            time_limit_hours=24 if deadline is not None else None,
            department_id=cg if name in OF_DEPARTMENT else None,
        )
    assign_grids(session, "incident")
    # One inspection task of insp.w today (open), one done today, one tomorrow.
    plan = session.execute(
        text(
            "INSERT INTO inspection_plan (target_kind, target_id, frequency_days, next_due_on) "
            "VALUES ('enterprise', 1, 30, :d) RETURNING id"
        ),
        {"d": NOW.date()},
    ).scalar_one()
    for due, status in ((0, "open"), (1, "open")):
        session.execute(
            text(
                "INSERT INTO inspection_task (plan_id, due_on, assignee_id, status) "
                "VALUES (:p, :d, :u, :s)"
            ),
            {"p": plan, "d": NOW.date() + due * D, "u": users["insp.w"], "s": status},
        )
    session.commit()
    clients = {}
    for name, user_id in users.items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    actors = {name: auth.load_actor(session, uid) for name, uid in users.items()}
    return {"ids": ids, "users": users, "actors": actors, "clients": clients}


def names(world, items) -> list[str]:
    by_id = {v: k for k, v in world["ids"].items()}
    return [by_id[item["id"]] for item in items]


def version_of(session, case_id) -> int:
    return session.execute(
        text("SELECT version FROM incident WHERE id = :id"), {"id": case_id}
    ).scalar_one()


# -- the queue -----------------------------------------------------------------------------


def test_the_queue_order(session, world):
    items, cursor = queue.queue_page(session, world["actors"]["mgr.w"], now=NOW)
    assert names(world, items) == WEST_ORDER and cursor is None
    by_name = dict(zip(names(world, items), items, strict=True))
    groups = {n: i["group"] for n, i in by_name.items()}
    assert groups["f_returned_overdue"] == "unassigned"  # the first group that applies …
    assert by_name["f_returned_overdue"]["overdue"] is True  # … and the flags say the rest
    assert groups["e_returned_assigned"] == "returned"
    assert groups["g_overdue"] == groups["h_overdue_dispatched"] == "overdue"
    assert groups["i_due_soon"] == "due_soon" and by_name["i_due_soon"]["warning"] is True
    assert by_name["i_due_soon"]["overdue"] is False
    assert by_name["e_returned_assigned"]["warning"] is False
    assert by_name["g_overdue"]["assignee"]["username"] == "handler"
    assert by_name["g_overdue"]["department"] == {"code": "CG", "name": "城管"}
    assert by_name["a_filed"]["grid_code"] == "440604001001001"
    assert by_name["a_filed"]["version"] == 1 and by_name["a_filed"]["deadline_at"] is None
    # The town manager sees both communities; the admin everything, the foreign case too.
    town, _ = queue.queue_page(session, world["actors"]["town"], now=NOW)
    assert set(names(world, town)) == set(WEST_ORDER) | {"east_filed", "east_overdue"}
    everything, _ = queue.queue_page(session, world["actors"]["admin"], now=NOW)
    assert "foreign_filed" in names(world, everything)
    east, _ = queue.queue_page(session, world["actors"]["mgr.e"], now=NOW)
    assert names(world, east) == ["east_filed", "east_overdue"]


def test_warning_is_in_working_hours(session, world):
    # 4.8 of 24 working hours: a deadline 4 working hours away warns, one 6 away does not,
    # whatever the wall clock says (nights and days off do not count).
    from gridops.incidents.clock import load_calendar

    calendar = load_calendar(session)
    case = world["ids"]["j_in_time"]
    for hours, warned in ((4, True), (6, False)):
        deadline = calendar.add_working_hours(NOW, hours)
        session.execute(
            text("UPDATE incident SET deadline_at = :d WHERE id = :id"), {"d": deadline, "id": case}
        )
        items, _ = queue.queue_page(session, world["actors"]["mgr.w"], now=NOW)
        assert ("j_in_time" in names(world, items)) is warned, hours


def test_queue_items_carry_the_routing_suggestion_and_the_callers_actions(session, world):
    case = world["ids"]["a_filed"]
    cg = session.execute(text("SELECT id FROM department WHERE code = 'CG'")).scalar_one()
    record_decision(
        session, case, kind="route", trigger="file", reason="category E0502 is handled by 城管",
        department_id=cg,
    )  # fmt: skip
    items, _ = queue.queue_page(session, world["actors"]["mgr.w"], now=NOW)
    item = next(i for i in items if i["id"] == case)
    assert item["suggestion"]["department"] == {"code": "CG", "name": "城管"}
    assert "handled by 城管" in item["suggestion"]["reason"]
    assert item["actions"] == allowed_actions("filed", {"community_manager"})
    assert "dispatch" in item["actions"]
    # An admin holds no workflow role: the queue offers no transitions (assigning remains).
    admin_items, _ = queue.queue_page(session, world["actors"]["admin"], now=NOW)
    assert next(i for i in admin_items if i["id"] == case)["actions"] == []
    assert next(i for i in items if i["id"] == world["ids"]["b_verified"])["suggestion"] is None


def test_queue_pages_follow_the_order(session, world):
    seen, cursor = [], None
    while True:
        items, next_cursor = queue.queue_page(
            session, world["actors"]["mgr.w"], limit=2, cursor=cursor, now=NOW
        )
        seen += names(world, items)
        if next_cursor is None:
            break
        cursor = queue.decode_cursor(next_cursor)
    assert seen == WEST_ORDER


def test_queue_route(world):
    clients = world["clients"]
    whole = clients["mgr.w"].get("/api/v1/dispatch/queue")
    assert whole.status_code == 200, whole.get_json()
    order = names(world, whole.get_json()["items"])
    assert set(order) == set(WEST_ORDER)  # the real clock: groups may differ from NOW's
    seen, url = [], "/api/v1/dispatch/queue?limit=4"
    while url:
        page = clients["mgr.w"].get(url)
        assert page.status_code == 200
        seen += names(world, page.get_json()["items"])
        nxt = [link["href"] for link in page.get_json()["links"] if link["rel"] == "next"]
        if nxt:
            assert page.headers["Link"] == f'<{nxt[0]}>; rel="next"'
            parts = urlsplit(nxt[0])
            url = f"{parts.path}?{parts.query}"
            assert parse_qs(parts.query)["limit"] == ["4"]
        else:
            url = None
    assert seen == order
    for who in ("insp.w", "handler"):  # write:cases, but no dispatcher's role
        refused = clients[who].get("/api/v1/dispatch/queue")
        assert refused.status_code == 403 and "manager" in refused.get_json()["detail"]
    assert clients["planner"].get("/api/v1/dispatch/queue").status_code == 403
    for query in ("limit=0", "limit=x", "cursor=zzz", "status=open"):
        bad = clients["mgr.w"].get(f"/api/v1/dispatch/queue?{query}")
        assert bad.status_code == 422, query


def test_only_dispatchers_have_a_queue(session, world):
    with pytest.raises(NotAllowed):
        queue.queue_page(session, world["actors"]["insp.w"])
    with pytest.raises(NotAllowed):
        queue.workload(session, world["actors"]["handler"])


# -- assigning -----------------------------------------------------------------------------


def test_assign_route_version_guard_and_jurisdiction(session, world):
    mgr = world["clients"]["mgr.w"]
    case = world["ids"]["a_filed"]
    url = f"/api/v1/dispatch/cases/{case}/assign"
    body = {"department": "CG", "assignee": world["users"]["handler"], "note": "熟悉该路段"}
    assert mgr.post(url, json=body).status_code == 428
    stale = mgr.post(url, json=body, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.headers["ETag"] == '"1"'
    bad = mgr.post(url, json={**body, "extra": 1, "assignee": "x"}, headers={"If-Match": '"1"'})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"extra", "assignee"}
    nobody = mgr.post(url, json={"note": "?"}, headers={"If-Match": '"1"'})
    assert nobody.status_code == 422
    foreign = world["ids"]["east_filed"]
    missing = mgr.post(
        f"/api/v1/dispatch/cases/{foreign}/assign", json=body, headers={"If-Match": '"1"'}
    )
    assert missing.status_code == 404
    inspector = world["clients"]["insp.w"].post(url, json=body, headers={"If-Match": '"1"'})
    assert inspector.status_code == 403
    assert (version_of(session, case), version_of(session, foreign)) == (1, 1)

    done = mgr.post(url, json=body, headers={"If-Match": 'W/"1"'})
    assert done.status_code == 200, done.get_json()
    assert done.get_json() == {"id": case, "status": "filed", "version": 2}
    assert done.headers["ETag"] == '"2"'
    row = session.execute(
        text(
            "SELECT i.assignee_id, d.code FROM incident i JOIN department d "
            "ON d.id = i.department_id WHERE i.id = :id"
        ),
        {"id": case},
    ).one()
    assert tuple(row) == (world["users"]["handler"], "CG")
    # The queue moves on: the case has an assignee now and leaves the unassigned group.
    items, _ = queue.queue_page(session, world["actors"]["mgr.w"], now=NOW)
    assert "a_filed" not in names(world, items)


def test_two_dispatchers_race_over_http_one_wins(scratch_database, tmp_path):
    migrate.upgrade(scratch_database)
    engine = create_engine(scratch_database)
    with Session(engine) as db:
        base = build_world(db, tmp_path)
        town = auth.create_user(db, "town.race", "Lychee-Bridge-Kiln-47")
        auth.assign_role(db, town, "town_manager", area_code="440604001")
        tokens = [
            auth.create_token(db, base["actors"]["mgr.w"].user_id, "race a")[1],
            auth.create_token(db, town, "race b")[1],
        ]
        assignees = [base["actors"]["insp.w"].user_id, base["actors"]["insp.w2"].user_id]
        db.commit()
    case = base["west"]
    app = create_app(app_config(scratch_database))
    barrier = threading.Barrier(2)
    outcomes: list[int] = []

    def attempt(token: str, assignee: int) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            f"/api/v1/dispatch/cases/{case}/assign",
            json={"assignee": assignee},
            headers={"Authorization": f"Bearer {token}", "If-Match": '"1"'},
        )
        outcomes.append(response.status_code)

    threads = [
        threading.Thread(target=attempt, args=args) for args in zip(tokens, assignees, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with Session(engine) as db:
        events = db.execute(
            text("SELECT count(*) FROM case_event WHERE incident_id = :id AND action = 'assign'"),
            {"id": case},
        ).scalar()
        version, assignee = db.execute(
            text("SELECT version, assignee_id FROM incident WHERE id = :id"), {"id": case}
        ).one()
    get_database(app).dispose()
    engine.dispose()
    assert sorted(outcomes) == [200, 412]
    assert (events, version) == (1, 2)
    assert assignee in assignees


def test_bulk_assign_is_all_or_nothing(session, world):
    mgr = world["clients"]["mgr.w"]
    ids = world["ids"]
    cases = [ids["a_filed"], ids["b_verified"], ids["l_checked"]]

    def assign_events() -> int:
        return session.execute(
            text("SELECT count(*) FROM case_event WHERE action = 'assign'")
        ).scalar_one()

    stale = mgr.post(
        "/api/v1/dispatch/bulk-assign",
        json={
            "items": [{"id": cases[0], "version": 1}, {"id": cases[1], "version": 5},
                      {"id": cases[2], "version": 1}],
            "department": "CG",
        },
    )  # fmt: skip
    assert stale.status_code == 412, stale.get_json()
    problem = stale.get_json()
    assert problem["type"] == "/problems/bulk-rejected"
    assert [(f["index"], f["id"], f["status"]) for f in problem["failures"]] == [(1, cases[1], 412)]
    assert [version_of(session, c) for c in cases] == [1, 1, 1] and assign_events() == 0

    mixed = mgr.post(
        "/api/v1/dispatch/bulk-assign",
        json={
            "items": [{"id": ids["east_filed"], "version": 1}, {"id": cases[0], "version": 1},
                      {"id": cases[1], "version": 9}],
            "department": "CG",
        },
    )  # fmt: skip
    assert mixed.status_code == 422  # a 404 and a 412: no common status
    assert [(f["id"], f["status"]) for f in mixed.get_json()["failures"]] == [
        (ids["east_filed"], 404),
        (cases[1], 412),
    ]
    unknown_user = mgr.post(
        "/api/v1/dispatch/bulk-assign",
        json={"items": [{"id": c, "version": 1} for c in cases], "assignee": 999999},
    )
    assert unknown_user.status_code == 422 and len(unknown_user.get_json()["failures"]) == 3
    assert [version_of(session, c) for c in cases] == [1, 1, 1] and assign_events() == 0

    for body, field in (
        ({"items": [], "department": "CG"}, "items"),
        ({"items": [{"id": cases[0]}], "department": "CG"}, "items[0]"),
        ({"items": [{"id": cases[0], "version": 1}] * 2, "department": "CG"}, "items[1]"),
        ({"items": [{"id": cases[0], "version": 1}]}, "assignee"),
    ):
        bad = mgr.post("/api/v1/dispatch/bulk-assign", json=body)
        assert bad.status_code == 422 and field in {e["field"] for e in bad.get_json()["errors"]}

    done = mgr.post(
        "/api/v1/dispatch/bulk-assign",
        json={
            "items": [{"id": c, "version": 1} for c in reversed(cases)],
            "assignee": world["users"]["insp.w2"],
            "note": "片区集中处理",
        },
    )
    assert done.status_code == 200, done.get_json()
    assert [(d["id"], d["version"]) for d in done.get_json()["items"]] == [
        (c, 2) for c in reversed(cases)
    ]
    assert [version_of(session, c) for c in cases] == [2, 2, 2] and assign_events() == 3
    assignees = session.execute(
        text("SELECT DISTINCT assignee_id FROM incident WHERE id = ANY(:ids)"), {"ids": cases}
    ).scalars()
    assert list(assignees) == [world["users"]["insp.w2"]]
    refused = world["clients"]["insp.w"].post(
        "/api/v1/dispatch/bulk-assign",
        json={"items": [{"id": cases[0], "version": 2}], "department": "CG"},
    )
    assert refused.status_code == 403


# -- workload ------------------------------------------------------------------------------


def counts(rows, key):
    return {r[key]: (r["open"], r["due_today"], r["overdue"]) for r in rows}


def test_workload_counts(session, world):
    load = queue.workload(session, world["actors"]["mgr.w"], now=NOW)
    assert load["day"] == NOW.date().isoformat()
    people = counts(load["people"], "username")
    # handler: e (in time), g (overdue), i (due at 10:10 today), j (in time); not the east one.
    assert people == {
        "insp.w": (1, 0, 0),
        "insp.w2": (1, 0, 0),
        "handler": (4, 1, 1),
    }
    tasks = {p["username"]: p["tasks_today"] for p in load["people"]}
    assert tasks == {"insp.w": 1, "insp.w2": 0, "handler": 0}
    # CG works on g and h (overdue), i (due today) and j; e is back with the dispatcher.
    assert counts(load["departments"], "code") == {"CG": (4, 1, 2)}

    town = queue.workload(session, world["actors"]["town"], now=NOW)
    assert counts(town["people"], "username") == {
        "insp.e": (0, 0, 0),
        "insp.w": (1, 0, 0),
        "insp.w2": (1, 0, 0),
        "handler": (5, 1, 2),
    }
    assert counts(town["departments"], "code") == {"CG": (5, 1, 3)}
    east = queue.workload(session, world["actors"]["mgr.e"], now=NOW)
    assert counts(east["people"], "username") == {"insp.e": (0, 0, 0), "handler": (1, 0, 1)}
    everything = queue.workload(session, world["actors"]["admin"], now=NOW)
    assert counts(everything["departments"], "code") == {"CG": (5, 1, 3), "NH": (0, 0, 0)}

    response = world["clients"]["mgr.w"].get("/api/v1/dispatch/workload")
    assert response.status_code == 200
    body = response.get_json()
    assert {p["username"] for p in body["people"]} == {"insp.w", "insp.w2", "handler"}
    assert [d["code"] for d in body["departments"]] == ["CG"]
    assert "NH" not in response.get_data(as_text=True)
    assert world["clients"]["insp.w"].get("/api/v1/dispatch/workload").status_code == 403

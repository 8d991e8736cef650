"""KPIs of case handling against a hand-built history whose every number is worked out here.

The histories are real workflow sequences (each step checked by ``workflow.next_state`` with
the actor's roles) written with chosen event times, because ``case_event`` is append-only and
``transition`` stamps events with the clock. One test drives a case through ``transition``
itself. All times are local (Asia/Shanghai) unless they say UTC.

The cases (W = west community 440604001001, E = east 440604001002, F = foreign district
440605; grids 1..4 west to east):

    A  W1 E0502 by insp.w   rec Jan 5 09:00  file Jan 5 11:00  dispatch Jan 5 12:00 (CG)
          handled Jan 6 12:00, checked, closed Jan 6 15:00; deadline Jan 8 12:00  (on time)
    B  W2 E0502 by insp.w   rec Jan 10 09:00 file 09:30  dispatch 10:00 (CG); handled Jan 12
          10:00, rework Jan 12 15:00, handled Jan 20 10:00, checked, closed Feb 2 10:00;
          deadline Jan 15 10:00  (late)
    C  E1 C0101 by mgr.e    rec Jan 31 23:30 (15:30 UTC), nothing else
    D  E2 E0502 by mgr.e    rec Feb 1 07:30 (Jan 31 23:30 UTC!)  file 08:30  dispatch 09:00
          (SW); extension approved Feb 3; handled Feb 10 09:00, closed Feb 10 12:00;
          deadline (extended) Feb 12 09:00  (on time)
    E  W3 C0101 by insp.w   rec Feb 5 09:00  handled on the spot 09:10, closed Feb 5 11:00;
          never dispatched, no deadline
    F  W4 E0502 by insp.w   rec Feb 20 09:00 file 10:00  dispatch 11:00 (CG), accepted;
          deadline Mar 5 11:00, still open
    G  E3 E0502 (hotline)   rec Mar 1 09:00  file 10:00  dispatch 11:00 (SW); marked a
          duplicate of D on Mar 2 (void); deadline Mar 10 11:00 (kept)
    H  E4 C0101 (hotline)   rec Mar 10 09:00 file 09:30  dispatch 10:00 (SW), accepted;
          deadline Mar 25 10:00, still open
    X  F1 E0502 (hotline)   rec Jan 7, filed, dispatched (NH), handled, closed Jan 8; outside
          the 440604 jurisdiction: never counted there
    and build_world's two reported cases, moved to June 2025 (outside every range asked).

NOW = Mar 20 12:00.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from shapely.geometry import box
from sqlalchemy import text

from gridops.auth import service as auth
from gridops.errors import InvalidInput
from gridops.importing import run_import
from gridops.incidents.cases import transition
from gridops.incidents.workflow import CaseState, apply, next_state
from gridops.kpi.service import COLUMNS, COUNTS, kpis, parse_query, to_csv
from tests import factories as f
from tests.conftest import TEST_PASSWORD
from tests.test_cases import build_world

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=SH)
TOWN = "440604001"
WEST, EAST, FOREIGN = "440604001001", "440604001002", "440605001001"


def L(stamp: str) -> datetime:
    """A local (Asia/Shanghai) time, e.g. L("2026-01-05 09:00")."""
    return datetime.fromisoformat(stamp).replace(tzinfo=SH)


def grid_point(community: str, n: int) -> tuple[float, float]:
    """The centre of unit grid ``n`` (1..4) of a community of the fixture."""
    x0 = {WEST: 113.00, EAST: 113.02, FOREIGN: 113.04}[community]
    return x0 + 0.005 * (n - 0.5), 23.01


# -- the world -------------------------------------------------------------------------------


def new_case(db, community: str, grid: int, category: str, received: str, by: int | None) -> int:
    lon, lat = grid_point(community, grid)
    return db.execute(
        text(
            "INSERT INTO incident (client_uuid, category_id, geom, reported_at, received_at, "
            "status, reported_by, grid_id) VALUES (gen_random_uuid(), "
            "(SELECT id FROM category WHERE code = :cat), ST_SetSRID(ST_MakePoint(:lon, :lat), "
            "4326), :at, :at, 'reported', :by, (SELECT g.id FROM unit_grid g WHERE "
            "g.valid_to IS NULL AND g.code = :grid)) RETURNING id"
        ),
        {
            "cat": category,
            "lon": lon,
            "lat": lat,
            "at": L(received),
            "by": by,
            "grid": f"{community}{grid:03d}",
        },
    ).scalar_one()


def play(db, case_id: int, steps: list[tuple[str, Any, str]], *, department: str | None = None):
    """Write a case's history with chosen times: each step (action, actor, local time) is
    checked by the workflow with the actor's roles, its event inserted with that time, and
    the case row kept as ``transition`` keeps it."""
    row = db.execute(
        text(
            "SELECT status, version, parked_from, handler_id, rework_count, extensions "
            "FROM incident WHERE id = :id"
        ),
        {"id": case_id},
    ).one()
    case = CaseState(row.status, row.parked_from, row.handler_id, row.rework_count, row.extensions)
    version = row.version
    for action, actor, stamp in steps:
        event = next_state(case, action, actor_id=actor.user_id, roles=actor.roles, note="n")
        case = apply(case, event)
        version += 1
        at = L(stamp)
        db.execute(
            text(
                "INSERT INTO case_event (incident_id, version, at, action, from_state, "
                "to_state, actor_id, note) VALUES (:id, :v, :at, :action, :f, :t, :actor, 'n')"
            ),
            {
                "id": case_id,
                "v": version,
                "at": at,
                "action": action,
                "f": event.from_state,
                "t": event.to_state,
                "actor": actor.user_id,
            },
        )
        if action == "dispatch":
            db.execute(
                text(
                    "UPDATE incident SET dispatched_at = coalesce(dispatched_at, :at), "
                    "department_id = (SELECT id FROM department WHERE code = :dept) "
                    "WHERE id = :id"
                ),
                {"at": at, "dept": department, "id": case_id},
            )
        if event.to_state == "closed":
            db.execute(
                text("UPDATE incident SET closed_at = :at WHERE id = :id"),
                {"at": at, "id": case_id},
            )
    db.execute(
        text(
            "UPDATE incident SET status = :s, version = :v, parked_from = :p, handler_id = :h, "
            "rework_count = :r, extensions = :x WHERE id = :id"
        ),
        {
            "s": case.state,
            "v": version,
            "p": case.parked_from,
            "h": case.handler_id,
            "r": case.rework_count,
            "x": case.extensions,
            "id": case_id,
        },
    )


def deadline(db, case_id: int, stamp: str) -> None:
    db.execute(
        text("UPDATE incident SET deadline_at = :d WHERE id = :id"),
        {"d": L(stamp), "id": case_id},
    )


def build_kpi_world(db, tmp_path) -> dict[str, Any]:
    world = build_world(db, tmp_path)  # W and E communities, insp.w(2), mgr.w, mgr.e, handler
    foreign = box(113.04, 23.00, 113.06, 23.02)
    extra = [
        {"code": "440605001", "name": "桂城街道", "level": "town", "parent_code": "440605",
         "geometry": f.D605},
        {"code": FOREIGN, "name": "平洲社区", "level": "community", "parent_code": "440605001",
         "geometry": foreign},
    ]  # fmt: skip
    run_import(db, "areas", f.write(tmp_path / "more.gpkg", extra))
    run_import(db, "grids", f.write(tmp_path / "fg.gpkg", f.strip_grid(foreign, FOREIGN)))
    db.execute(
        text(
            "INSERT INTO department (code, name, area_code) VALUES "
            "('SW', '水务', '440604'), ('NH', '南海城管', '440605')"
        )
    )
    people = {}
    for name, role, scope in (
        ("mgr.town", "town_manager", {"area_code": TOWN}),
        ("planner", "planner", {"area_code": "440604"}),
        ("mgr.f", "community_manager", {"area_code": FOREIGN}),
        ("handler.f", "department_handler", {"department_code": "NH"}),
        ("boss", "admin", {}),
    ):
        user_id = auth.create_user(db, name, TEST_PASSWORD, display_name=f"{name} 名")
        auth.assign_role(db, user_id, role, **scope)
        people[name] = user_id
    a = {**world["actors"], **{n: auth.load_actor(db, uid) for n, uid in people.items()}}
    # build_world's cases are out of every range asked here.
    db.execute(
        text("UPDATE incident SET received_at = :t WHERE id IN (:w, :e)"),
        {"t": L("2025-06-01 10:00"), "w": world["west"], "e": world["east"]},
    )
    iw, iw2, mw, me, h = (a[n] for n in ("insp.w", "insp.w2", "mgr.w", "mgr.e", "handler"))
    c = {}
    c["A"] = new_case(db, WEST, 1, "E0502", "2026-01-05 09:00", iw.user_id)
    play(db, c["A"], [
        ("verify", iw, "2026-01-05 10:00"), ("file", mw, "2026-01-05 11:00"),
        ("dispatch", mw, "2026-01-05 12:00"), ("accept", h, "2026-01-05 13:00"),
        ("report_handled", h, "2026-01-06 12:00"), ("check_pass", iw2, "2026-01-06 14:00"),
        ("close", mw, "2026-01-06 15:00"),
    ], department="CG")  # fmt: skip
    deadline(db, c["A"], "2026-01-08 12:00")
    c["B"] = new_case(db, WEST, 2, "E0502", "2026-01-10 09:00", iw.user_id)
    play(db, c["B"], [
        ("file", mw, "2026-01-10 09:30"), ("dispatch", mw, "2026-01-10 10:00"),
        ("accept", h, "2026-01-10 11:00"), ("report_handled", h, "2026-01-12 10:00"),
        ("rework", iw2, "2026-01-12 15:00"), ("report_handled", h, "2026-01-20 10:00"),
        ("check_pass", iw, "2026-01-21 09:00"), ("close", mw, "2026-02-02 10:00"),
    ], department="CG")  # fmt: skip
    deadline(db, c["B"], "2026-01-15 10:00")
    c["C"] = new_case(db, EAST, 1, "C0101", "2026-01-31 23:30", me.user_id)
    c["D"] = new_case(db, EAST, 2, "E0502", "2026-02-01 07:30", me.user_id)
    play(db, c["D"], [
        ("file", me, "2026-02-01 08:30"), ("dispatch", me, "2026-02-01 09:00"),
        ("accept", h, "2026-02-01 10:00"), ("request_extension", h, "2026-02-03 10:00"),
        ("approve_extension", me, "2026-02-03 12:00"), ("report_handled", h, "2026-02-10 09:00"),
        ("check_pass", me, "2026-02-10 11:00"), ("close", me, "2026-02-10 12:00"),
    ], department="SW")  # fmt: skip
    deadline(db, c["D"], "2026-02-12 09:00")
    c["E"] = new_case(db, WEST, 3, "C0101", "2026-02-05 09:00", iw.user_id)
    play(db, c["E"], [
        ("handle_on_spot", iw, "2026-02-05 09:10"), ("check_pass", iw2, "2026-02-05 10:00"),
        ("close", mw, "2026-02-05 11:00"),
    ])  # fmt: skip
    c["F"] = new_case(db, WEST, 4, "E0502", "2026-02-20 09:00", iw.user_id)
    play(db, c["F"], [
        ("file", mw, "2026-02-20 10:00"), ("dispatch", mw, "2026-02-20 11:00"),
        ("accept", h, "2026-02-20 12:00"),
    ], department="CG")  # fmt: skip
    deadline(db, c["F"], "2026-03-05 11:00")
    c["G"] = new_case(db, EAST, 3, "E0502", "2026-03-01 09:00", None)
    play(db, c["G"], [
        ("file", me, "2026-03-01 10:00"), ("dispatch", me, "2026-03-01 11:00"),
        ("mark_duplicate", me, "2026-03-02 09:00"),
    ], department="SW")  # fmt: skip
    deadline(db, c["G"], "2026-03-10 11:00")
    db.execute(
        text("UPDATE incident SET duplicate_of = :d WHERE id = :g"), {"d": c["D"], "g": c["G"]}
    )
    c["H"] = new_case(db, EAST, 4, "C0101", "2026-03-10 09:00", None)
    play(db, c["H"], [
        ("file", me, "2026-03-10 09:30"), ("dispatch", me, "2026-03-10 10:00"),
        ("accept", h, "2026-03-10 11:00"),
    ], department="SW")  # fmt: skip
    deadline(db, c["H"], "2026-03-25 10:00")
    mf, hf = a["mgr.f"], a["handler.f"]
    c["X"] = new_case(db, FOREIGN, 1, "E0502", "2026-01-07 09:00", None)
    play(db, c["X"], [
        ("file", mf, "2026-01-07 10:00"), ("dispatch", mf, "2026-01-07 11:00"),
        ("accept", hf, "2026-01-07 12:00"), ("report_handled", hf, "2026-01-08 09:00"),
        ("check_pass", mf, "2026-01-08 10:00"), ("close", mf, "2026-01-08 11:00"),
    ], department="NH")  # fmt: skip
    deadline(db, c["X"], "2026-01-09 12:00")
    db.commit()
    return {"actors": a, "cases": c}


@pytest.fixture
def world(session, tmp_path, monkeypatch):
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    # Cheap hashing: this file tests KPIs, not logins.
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    return build_kpi_world(session, tmp_path)


def scope_of(world, name: str):
    return world["actors"][name].scope()


def run(session, world, who="mgr.town", *, period="month", start="2026-01-01",
        end="2026-04-30", by=None, now=NOW):  # fmt: skip
    return kpis(
        session,
        scope_of(world, who),
        period=period,
        start=date.fromisoformat(start),
        end=date.fromisoformat(end),
        by=by,
        now=now,
    )


ZERO = {
    **dict.fromkeys(COUNTS, 0),
    **dict.fromkeys(("closure_rate", "on_time_rate", "rework_rate", "extension_rate"), None),
    "mean_hours_to_file": None,
    "mean_hours_to_handle": None,
    "top_categories": [],
}


def top(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"code": code, "count": n} for code, n in pairs]


def measures(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in ZERO}


def by_group(rows, bucket: str) -> dict[str | None, dict[str, Any]]:
    return {r["group"]: r for r in rows if r["bucket"] == bucket}


# -- the formulas, month by month --------------------------------------------------------------

JANUARY = {
    **ZERO,
    "reported": 3,  # A, B, C (C at 23:30 on the 31st is still January)
    "filed": 2,  # A, B
    "closed": 1,  # A
    "due": 2,  # closed: A; deadline in January, open at its end: B
    "closed_on_time": 1,  # A: closed Jan 6 15:00 <= deadline Jan 8 12:00
    "closure_rate": 0.5,  # 1 / 2
    "on_time_rate": 0.5,  # 1 / 2
    "handled": 3,  # A handled Jan 6; B handled Jan 12 and again Jan 20
    "rework": 1,  # B on Jan 12
    "rework_rate": 0.3333,  # 1 / 3
    "due_to_handle": 2,  # dispatched with the deadline in January: A, B
    "extended": 0,
    "extension_rate": 0.0,  # 0 / 2: zero, not null (there were cases due)
    "overdue_open": 1,  # at Feb 1 00:00: B (deadline Jan 15, closed only Feb 2)
    "mean_hours_to_file": 1.25,  # A 2 h (09:00 -> 11:00), B 0.5 h: 2.5 / 2
    "mean_hours_to_handle": 36.0,  # A 24 h (Jan 5 12:00 -> Jan 6 12:00), B 48 h: 72 / 2
    "top_categories": top(("E0502", 2), ("C0101", 1)),  # A, B; C
}
FEBRUARY = {
    **ZERO,
    "reported": 3,  # D (07:30 local on Feb 1 = 23:30 UTC on Jan 31), E, F
    "filed": 2,  # D, F
    "closed": 3,  # B (Feb 2), D (Feb 10), E (Feb 5)
    "due": 3,  # closed: B, D, E; no other deadline in February (F's is Mar 5)
    "closed_on_time": 2,  # D (Feb 10 12:00 <= Feb 12 09:00), E (no deadline); B was late
    "closure_rate": 1.0,  # 3 / 3
    "on_time_rate": 0.6667,  # 2 / 3
    "handled": 2,  # D reported handled, E handled on the spot
    "rework": 0,
    "rework_rate": 0.0,  # 0 / 2
    "due_to_handle": 1,  # D (deadline Feb 12); E was never dispatched
    "extended": 1,  # D
    "extension_rate": 1.0,  # 1 / 1
    "overdue_open": 0,  # at Mar 1: B closed Feb 2, F not due before Mar 5
    "mean_hours_to_file": 1.0,  # D 1 h (07:30 -> 08:30), F 1 h
    "mean_hours_to_handle": 216.0,  # D: Feb 1 09:00 -> Feb 10 09:00 (wall clock)
    "top_categories": top(("E0502", 2), ("C0101", 1)),  # D, F; E
}
MARCH = {
    **ZERO,
    "reported": 2,  # G, H
    "filed": 2,  # G, H (G was filed before it was found a duplicate)
    "closed": 0,  # G is void: a duplicate is not a closure
    "due": 2,  # deadline in March and open: F (Mar 5), H (Mar 25); G is void
    "closed_on_time": 0,
    "closure_rate": 0.0,  # 0 / 2
    "on_time_rate": 0.0,  # 0 / 2
    "handled": 0,
    "rework_rate": None,  # 0 / 0: nothing handled in March
    "due_to_handle": 2,  # F, H
    "extension_rate": 0.0,  # 0 / 2
    "overdue_open": 1,  # before min(Apr 1, now = Mar 20 12:00): F; H's is Mar 25; G void
    "mean_hours_to_file": 0.75,  # G 1 h, H 0.5 h
    "top_categories": top(("C0101", 1), ("E0502", 1)),  # H; G (ties by code)
}
APRIL = {
    **ZERO,  # nothing happened: every rate null (0 / 0), no mean
    "overdue_open": 1,  # still F: before min(May 1, now) = now
}


def test_monthly_kpis_worked_by_hand(session, world):
    rows = run(session, world)
    assert [(r["bucket"], r["from"], r["to"], r["group"]) for r in rows] == [
        ("2026-01", "2026-01-01", "2026-01-31", None),
        ("2026-02", "2026-02-01", "2026-02-28", None),
        ("2026-03", "2026-03-01", "2026-03-31", None),
        ("2026-04", "2026-04-01", "2026-04-30", None),  # an empty bucket still has its row
    ]
    for row, expected in zip(rows, (JANUARY, FEBRUARY, MARCH, APRIL), strict=True):
        assert measures(row) == expected, row["bucket"]
    assert list(rows[0]) == list(COLUMNS)


def test_quarter_and_year_count_each_case_once(session, world):
    [q1, q2] = run(session, world, period="quarter", end="2026-06-30")
    assert measures(q1) == {
        "reported": 8,  # A B C D E F G H
        "filed": 6,  # A B D F G H
        "closed": 4,  # A B D E
        "due": 6,  # closed A B D E + open at Apr 1 with a Q1 deadline: F H (B only once)
        "closed_on_time": 3,  # A D E
        "closure_rate": 0.6667,  # 4 / 6
        "on_time_rate": 0.5,  # 3 / 6
        "handled": 5,  # A, B twice, D, E
        "rework": 1,
        "rework_rate": 0.2,  # 1 / 5
        "due_to_handle": 5,  # A B D F H
        "extended": 1,  # D
        "extension_rate": 0.2,  # 1 / 5
        "overdue_open": 1,  # F, before min(Apr 1, now)
        "mean_hours_to_file": 1.0,  # (2 + 0.5 + 1 + 1 + 1 + 0.5) / 6
        "mean_hours_to_handle": 96.0,  # (24 + 48 + 216) / 3
        "top_categories": top(("E0502", 5), ("C0101", 3)),
    }
    assert measures(q2) == {**ZERO, "overdue_open": 1}  # F is still overdue now
    # Clipped buckets: a year asked from Feb 10 counts from Feb 10 only.
    [year] = run(session, world, period="year", start="2026-02-10", end="2026-12-31")
    assert (year["bucket"], year["from"], year["to"]) == ("2026", "2026-02-10", "2026-12-31")
    assert year["reported"] == 3  # F G H; A to E came before Feb 10
    assert year["closed"] == 1  # D (Feb 10); B (Feb 2) and E (Feb 5) are before the range


def test_local_dates_not_utc(session, world):
    """C came at 23:30 local on Jan 31, D at 07:30 local on Feb 1, which is 23:30 UTC on Jan 31:
    bucketed by UTC dates both would be January."""
    d_received = session.execute(
        text("SELECT received_at AT TIME ZONE 'UTC' FROM incident WHERE id = :id"),
        {"id": world["cases"]["D"]},
    ).scalar_one()
    assert d_received == datetime(2026, 1, 31, 23, 30)
    for zone in ("UTC", "America/New_York", "Asia/Shanghai"):  # the session's zone is moot
        session.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
        rows = run(session, world, period="day", start="2026-01-31", end="2026-02-01")
        assert [(r["bucket"], r["reported"], r["filed"]) for r in rows] == [
            ("2026-01-31", 1, 0),  # C
            ("2026-02-01", 1, 1),  # D, filed 08:30 local (00:30 UTC)
        ], zone
        months = run(session, world, start="2026-01-01", end="2026-02-28")
        assert [r["reported"] for r in months] == [3, 3], zone


# -- groups ----------------------------------------------------------------------------------


def test_by_town_and_community(session, world):
    towns = run(session, world, by="town", end="2026-03-31")
    # One town in the jurisdiction: the same numbers as the totals, with its name.
    assert [(r["bucket"], r["group"], r["group_name"]) for r in towns] == [
        ("2026-01", TOWN, "祖庙街道"),
        ("2026-02", TOWN, "祖庙街道"),
        ("2026-03", TOWN, "祖庙街道"),
    ]
    assert [measures(r) for r in towns] == [JANUARY, FEBRUARY, MARCH]

    rows = run(session, world, by="community", end="2026-02-28")
    jan, feb = by_group(rows, "2026-01"), by_group(rows, "2026-02")
    assert set(jan) == set(feb) == {WEST, EAST}
    assert jan[WEST]["group_name"] == "西社区"
    assert measures(jan[WEST]) == {**JANUARY, "reported": 2, "top_categories": top(("E0502", 2))}
    assert measures(jan[EAST]) == {  # only C: every rate 0 / 0
        **ZERO,
        "reported": 1,
        "top_categories": top(("C0101", 1)),
    }
    assert measures(feb[WEST]) == {
        **ZERO,
        "reported": 2,  # E, F
        "filed": 1,  # F
        "closed": 2,  # B, E
        "due": 2,
        "closed_on_time": 1,  # E
        "closure_rate": 1.0,  # 2 / 2
        "on_time_rate": 0.5,  # 1 / 2
        "handled": 1,  # E on the spot
        "rework_rate": 0.0,  # 0 / 1
        "mean_hours_to_file": 1.0,  # F
        "top_categories": top(("C0101", 1), ("E0502", 1)),
    }  # due_to_handle 0 (D is east): extension_rate null
    assert measures(feb[EAST]) == {
        **ZERO,
        "reported": 1,  # D
        "filed": 1,
        "closed": 1,
        "due": 1,
        "closed_on_time": 1,
        "closure_rate": 1.0,
        "on_time_rate": 1.0,
        "handled": 1,
        "rework_rate": 0.0,
        "due_to_handle": 1,
        "extended": 1,
        "extension_rate": 1.0,
        "mean_hours_to_file": 1.0,
        "mean_hours_to_handle": 216.0,
        "top_categories": top(("E0502", 1)),
    }


def test_by_grid(session, world):
    rows = run(session, world, by="grid", end="2026-01-31")
    jan = by_group(rows, "2026-01")
    assert set(jan) == {f"{WEST}001", f"{WEST}002", f"{EAST}001"}  # A, B, C
    assert measures(jan[f"{WEST}002"]) == {  # B alone
        **ZERO,
        "reported": 1,
        "filed": 1,
        "due": 1,  # deadline Jan 15, open at Feb 1
        "closure_rate": 0.0,  # 0 / 1
        "on_time_rate": 0.0,
        "handled": 2,
        "rework": 1,
        "rework_rate": 0.5,  # 1 / 2
        "due_to_handle": 1,
        "extension_rate": 0.0,
        "overdue_open": 1,
        "mean_hours_to_file": 0.5,
        "mean_hours_to_handle": 48.0,
        "top_categories": top(("E0502", 1)),
    }


def test_by_department(session, world):
    rows = run(session, world, by="department", end="2026-03-31")
    jan, feb, mar = (by_group(rows, m) for m in ("2026-01", "2026-02", "2026-03"))
    assert set(jan) == {"CG", None}  # A, B to CG; C never dispatched
    assert measures(jan["CG"]) == {**JANUARY, "reported": 2, "top_categories": top(("E0502", 2))}
    assert jan["CG"]["group_name"] == "城管"
    assert set(feb) == {"CG", "SW", None}
    assert measures(feb["CG"]) == {
        **ZERO,
        "reported": 1,  # F
        "filed": 1,
        "closed": 1,  # B, late
        "due": 1,
        "closure_rate": 1.0,  # 1 / 1
        "on_time_rate": 0.0,  # 0 / 1
        "mean_hours_to_file": 1.0,
        "top_categories": top(("E0502", 1)),
    }
    assert (feb["SW"]["closed"], feb["SW"]["extended"], feb["SW"]["extension_rate"]) == (1, 1, 1.0)
    assert measures(feb[None]) == {  # E: handled on the spot, no department
        **ZERO,
        "reported": 1,
        "closed": 1,
        "due": 1,
        "closed_on_time": 1,
        "closure_rate": 1.0,
        "on_time_rate": 1.0,
        "handled": 1,
        "rework_rate": 0.0,
        "top_categories": top(("C0101", 1)),
    }
    assert measures(mar["SW"]) == {
        **ZERO,
        "reported": 2,  # G (void, still reported), H
        "filed": 2,
        "due": 1,  # H; G is void
        "closure_rate": 0.0,
        "on_time_rate": 0.0,
        "due_to_handle": 1,  # H
        "extension_rate": 0.0,
        "mean_hours_to_file": 0.75,
        "top_categories": top(("C0101", 1), ("E0502", 1)),
    }
    assert (mar["CG"]["due"], mar["CG"]["overdue_open"]) == (1, 1)  # F


def test_by_person_counts_each_step_for_whoever_is_responsible(session, world):
    rows = run(session, world, by="person", end="2026-02-28")
    jan, feb = by_group(rows, "2026-01"), by_group(rows, "2026-02")
    # insp.w2 sent B back for rework in January, but the rework counts against the handler
    # whose report it rejected, so insp.w2 has no January row at all.
    assert set(jan) == {"insp.w", "mgr.e", "mgr.w", "handler"}
    assert measures(jan["insp.w"]) == {**ZERO, "reported": 2, "top_categories": top(("E0502", 2))}
    assert measures(jan["mgr.e"]) == {**ZERO, "reported": 1, "top_categories": top(("C0101", 1))}
    assert measures(jan["mgr.w"]) == {**ZERO, "filed": 2, "mean_hours_to_file": 1.25}
    assert measures(jan["handler"]) == {
        **JANUARY,  # every handling outcome of January is the handler's
        "reported": 0,
        "filed": 0,
        "mean_hours_to_file": None,
        "top_categories": [],
    }
    assert jan["handler"]["group_name"] == "handler"  # build_world's display name
    assert measures(feb["insp.w"]) == {
        **ZERO,
        "reported": 2,  # E, F
        "closed": 1,  # E, which insp.w handled on the spot
        "due": 1,
        "closed_on_time": 1,
        "closure_rate": 1.0,
        "on_time_rate": 1.0,
        "handled": 1,
        "rework_rate": 0.0,
        "top_categories": top(("C0101", 1), ("E0502", 1)),
    }
    assert measures(feb["handler"]) == {
        **ZERO,
        "closed": 2,  # B, D
        "due": 2,
        "closed_on_time": 1,  # D
        "closure_rate": 1.0,
        "on_time_rate": 0.5,
        "handled": 1,  # D
        "rework_rate": 0.0,
        "due_to_handle": 1,  # D
        "extended": 1,
        "extension_rate": 1.0,
        "mean_hours_to_handle": 216.0,
    }
    assert (feb["mgr.e"]["reported"], feb["mgr.e"]["filed"], feb["mgr.w"]["filed"]) == (1, 1, 1)
    # March: G and H came by hotline (no reporter); F and H were accepted, not yet handled,
    # so their due and overdue go to who accepted them.
    mar = by_group(
        run(session, world, by="person", start="2026-03-01", end="2026-03-31"), "2026-03"
    )
    assert mar[None]["reported"] == 2
    assert (mar["handler"]["due"], mar["handler"]["overdue_open"]) == (2, 1)


# -- jurisdiction ------------------------------------------------------------------------------


def test_a_foreign_case_is_never_counted(session, world):
    # The town manager and the district's planner see the same aggregates; X is not in them.
    for who in ("mgr.town", "planner"):
        rows = run(session, world, who, end="2026-01-31", by="district")
        assert [(r["group"], r["reported"], r["closed"]) for r in rows] == [("440604", 3, 1)]
        assert "平洲社区" not in str(rows) and "NH" not in str(rows)
        people = run(session, world, who, end="2026-01-31", by="person")
        assert "handler.f" not in {r["group"] for r in people}
    # The west community's manager sees the west only: A and B.
    [west] = run(session, world, "mgr.w", end="2026-01-31")
    assert measures(west) == {**JANUARY, "reported": 2, "top_categories": top(("E0502", 2))}
    # X is real: an administrator counts it (so the assertions above could fail).
    admin = run(session, world, "boss", end="2026-01-31", by="district")
    assert [(r["group"], r["reported"], r["closed"], r["on_time_rate"]) for r in admin] == [
        ("440604", 3, 1, 0.5),
        ("440605", 1, 1, 1.0),  # X: closed Jan 8 11:00 before its deadline Jan 9 12:00
    ]
    [total] = run(session, world, "boss", end="2026-01-31")
    assert (total["reported"], total["due"], total["handled"]) == (4, 3, 4)


def test_the_kpi_scope_is_the_scope(session, world, make_user):
    """The KPIs' polygon-outer scope filter selects the very cases of Scope.point_visible()."""
    from gridops.kpi.service import _in_scope

    inspector, _ = make_user("inspector", grid_codes=[f"{EAST}002", f"{FOREIGN}001"])
    people = [*world["actors"].values(), auth.load_actor(session, inspector)]
    seen = set()
    for actor in people:
        scope = actor.scope()
        ids = {}
        for condition in (scope.point_visible(), _in_scope(scope)):
            sql = f"SELECT t.id FROM incident t WHERE {condition}"
            ids[condition] = set(session.execute(text(sql), scope.params()).scalars())
        assert len(set(map(frozenset, ids.values()))) == 1, actor.username
        seen.add(frozenset(next(iter(ids.values()))))
    assert len(seen) >= 5  # the scopes differ: the comparison is not between empty sets


# -- what transition writes is what the KPIs read ------------------------------------------


def test_a_case_driven_through_transition_is_counted(session, world):
    a = world["actors"]
    case = new_case(session, WEST, 2, "E0502", "2026-01-01 00:00", a["insp.w"].user_id)
    session.execute(
        text("UPDATE incident SET received_at = now(), reported_at = now() WHERE id = :id"),
        {"id": case},
    )
    steps = [
        ("file", "mgr.w"), ("dispatch", "mgr.w"), ("accept", "handler"),
        ("report_handled", "handler"), ("check_pass", "insp.w2"), ("close", "mgr.w"),
    ]  # fmt: skip
    for version, (action, who) in enumerate(steps, start=1):
        kw = {"department": "SW"} if action == "dispatch" else {}
        transition(session, case, action, a[who], expected_version=version, **kw)
    today = session.execute(text("SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date")).scalar()
    rows = kpis(
        session,
        scope_of(world, "mgr.w"),
        period="day",
        start=today - timedelta(days=1),
        end=today + timedelta(days=1),
        by="department",
    )
    stored = session.execute(
        text("SELECT deadline_at, closed_at FROM incident WHERE id = :id"), {"id": case}
    ).one()
    assert stored.deadline_at is not None and stored.closed_at <= stored.deadline_at
    # F (CG, due Mar 5) is still open: overdue at the end of each of these days.
    assert {(r["bucket"], r["overdue_open"]) for r in rows if r["group"] == "CG"} == {
        ((today + timedelta(days=d)).isoformat(), 1) for d in (-1, 0, 1)
    }
    [row] = [r for r in rows if r["group"] == "SW"]  # the new case alone
    assert row["bucket"] == today.isoformat()
    got = {k: row[k] for k in ("reported", "filed", "closed", "due", "closed_on_time", "handled")}
    assert got == dict.fromkeys(got, 1)
    assert row["on_time_rate"] == 1.0
    # 24 working hours from today end on a later day than tomorrow: not due to handle here.
    assert stored.deadline_at.astimezone(SH).date() > today + timedelta(days=1)
    assert row["due_to_handle"] == 0


# -- parameters --------------------------------------------------------------------------------


def fields(exc: pytest.ExceptionInfo) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_bad_parameters_are_named(session, world):
    scope = scope_of(world, "mgr.town")
    jan1, dec31 = date(2026, 1, 1), date(2026, 12, 31)
    cases = [
        ({"period": "week"}, {"period"}),
        ({"by": "street"}, {"by"}),
        ({"start": jan1, "end": date(2025, 12, 31)}, {"start"}),
        ({"period": "day", "start": date(2025, 1, 1), "end": dec31}, {"end"}),  # 730 buckets
    ]
    for change, named in cases:
        kw = {"period": "month", "start": jan1, "end": dec31, "by": None, **change}
        with pytest.raises(InvalidInput) as exc:
            kpis(session, scope, **kw)
        assert fields(exc) == named, change
    # 400 days is the most a day period may span.
    kpis(session, scope, period="day", start=jan1, end=jan1 + timedelta(days=399))
    with pytest.raises(InvalidInput) as exc:
        parse_query({"period": "fortnight", "by": "street", "start": "2026-13-01", "end": "x"})
    assert fields(exc) == {"period", "by", "start", "end"}
    assert parse_query({}, today=date(2026, 3, 20)) == {
        "period": "month",
        "start": date(2026, 1, 1),
        "end": date(2026, 3, 20),
        "by": None,
    }


# -- over HTTP -------------------------------------------------------------------------------

URL = "/api/v1/kpis?period=month&start=2026-01-01&end=2026-04-30"


def client_for(app, token_for, world, name: str | None):
    client = app.test_client()
    if name:
        token = token_for(world["actors"][name].user_id)
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def parse_csv(body: str) -> list[dict[str, Any]]:
    assert body.startswith("\ufeff"), "no BOM: Excel would read the Chinese names wrong"
    reader = csv.DictReader(io.StringIO(body[1:]))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = []
    for raw in reader:
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if value == "":
                row[key] = [] if key == "top_categories" else None
            elif key in COUNTS:
                row[key] = int(value)
            elif key.endswith("_rate") or key.startswith("mean_"):
                row[key] = float(value)
            elif key == "top_categories":
                pairs = [part.split(":") for part in value.split(";")]
                row[key] = [{"code": c, "count": int(n)} for c, n in pairs]
            else:
                row[key] = value
        rows.append(row)
    return rows


def test_http_json_and_csv_agree(app, world, token_for):
    manager = client_for(app, token_for, world, "mgr.town")
    for by in ("", "&by=community", "&by=person"):
        got = manager.get(URL + by)
        assert got.status_code == 200, got.get_data(as_text=True)
        body = got.get_json()
        assert body["period"] == "month" and body["time_zone"] == "Asia/Shanghai"
        assert {"due", "closure_rate", "overdue_open"} <= set(body["definitions"])
        as_csv = manager.get(URL + by + "&format=csv")
        assert as_csv.status_code == 200
        assert as_csv.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "attachment" in as_csv.headers["Content-Disposition"]
        assert parse_csv(as_csv.get_data(as_text=True)) == body["rows"], by
        accepted = manager.get(URL + by, headers={"Accept": "text/csv"})
        assert accepted.mimetype == "text/csv"
        assert accepted.get_data() == as_csv.get_data()
    jan = manager.get(URL).get_json()["rows"][0]
    assert (jan["reported"], jan["closure_rate"]) == (3, 0.5)
    assert "西社区" in manager.get(URL + "&by=community&format=csv").get_data(as_text=True)
    # A browser's Accept (*/* among others) gets JSON.
    assert manager.get(URL, headers={"Accept": "text/html,*/*;q=0.8"}).is_json


def test_csv_keeps_formulas_out_of_spreadsheets():
    row = {c: None for c in COLUMNS} | {"group": "=HYPERLINK(1)", "top_categories": []}
    body = to_csv([row])
    assert "'=HYPERLINK(1)" in body and body.startswith("\ufeff")


def test_http_bad_parameters_422_naming_the_field(app, world, token_for):
    manager = client_for(app, token_for, world, "mgr.town")
    for query, field in (
        ("period=week", "period"),
        ("by=street", "by"),
        ("start=2026-02-30", "start"),
        ("start=2026-05-01&end=2026-04-30", "start"),
        ("period=day&start=2025-01-01&end=2026-12-31", "end"),
        ("format=xml", "format"),
    ):
        got = manager.get(f"/api/v1/kpis?{query}")
        assert got.status_code == 422, query
        assert got.mimetype == "application/problem+json"
        assert field in {e["field"] for e in got.get_json()["errors"]}, query


def test_http_needs_read_analytics(app, world, token_for):
    assert client_for(app, token_for, world, None).get(URL).status_code == 401
    for name, status in (
        ("insp.w", 403),
        ("handler", 403),
        ("mgr.w", 200),
        ("mgr.town", 200),
        ("planner", 200),
        ("boss", 200),
    ):
        assert client_for(app, token_for, world, name).get(URL).status_code == status, name

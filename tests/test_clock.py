"""The handling clock of a case: starts at dispatch, stops while parked, goes overdue."""

from __future__ import annotations

from sqlalchemy import text

from gridops.incidents.cases import transition
from gridops.incidents.clock import case_clock, load_calendar
from tests.test_cases import build_world


def test_clock_starts_at_dispatch_stops_when_parked_and_goes_overdue(session, tmp_path):
    world = build_world(session, tmp_path)
    case, a = world["west"], world["actors"]
    assert case_clock(session, case)["stage"]["name"] == "verify"  # no handling clock yet
    for version, (action, who) in enumerate(
        [("verify", "insp.w"), ("file", "mgr.w"), ("dispatch", "mgr.w")], start=1
    ):
        transition(session, case, action, a[who], expected_version=version)
    row = session.execute(
        text(
            "SELECT i.dispatched_at, i.time_limit_hours, c.time_limit_hours AS limit_hours "
            "FROM incident i JOIN category c ON c.id = i.category_id WHERE i.id = :id"
        ),
        {"id": case},
    ).one()
    assert row.time_limit_hours == row.limit_hours > 0
    clock = case_clock(session, case)
    calendar = load_calendar(session)
    expected = calendar.deadline(row.dispatched_at, row.time_limit_hours)
    assert clock["deadline"] == expected.isoformat()
    assert not clock["overdue"] and 0 < clock["hours_left"] <= row.time_limit_hours

    transition(session, case, "park", a["mgr.w"], expected_version=4, note="待资金")
    parked = case_clock(session, case)
    assert parked["paused"] and parked["deadline"] is None  # the clock is stopped

    transition(session, case, "resume", a["mgr.w"], expected_version=5)
    session.execute(
        text(
            "UPDATE incident SET dispatched_at = dispatched_at - interval '60 days' WHERE id = :id"
        ),
        {"id": case},
    )
    late = case_clock(session, case)
    assert late["overdue"] and late["hours_left"] < 0 and not late["paused"]


def test_an_admin_day_off_moves_the_deadline(session, tmp_path):
    world = build_world(session, tmp_path)
    case, a = world["west"], world["actors"]
    for version, (action, who) in enumerate(
        [("verify", "insp.w"), ("file", "mgr.w"), ("dispatch", "mgr.w")], start=1
    ):
        transition(session, case, action, a[who], expected_version=version)
    before = case_clock(session, case)["deadline"]
    start = session.execute(text("SELECT dispatched_at FROM incident WHERE id = :id"), {"id": case})
    dispatched = start.scalar_one()
    calendar = load_calendar(session)
    first_day = calendar.next_working_moment(dispatched).date()
    session.execute(
        text("INSERT INTO work_calendar_override (day, kind, note) VALUES (:d, 'off', 'test')"),
        {"d": first_day},
    )
    after = case_clock(session, case)["deadline"]
    assert after > before

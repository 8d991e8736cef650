"""The SLA sweep: a warning once before the deadline, escalation to community, town and
district managers as a case stays overdue, each level exactly once (swept twice, or by two
sessions at once), paused and closed cases left alone, notifications by area."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth import service as auth
from gridops.dispatch.sla import level_for, sweep
from gridops.incidents.workcal import TZ, WorkCalendar
from tests.conftest import TEST_PASSWORD
from tests.test_cases import build_world

# A Tuesday at close of business; the calendar's working day is 7.5 h (08:30-12:00, 13:30-17:30).
DEADLINE = datetime(2026, 12, 1, 17, 30, tzinfo=TZ)
LIMIT_HOURS = 10  # a warning below 2 working hours left


def sla_world(db: Session, tmp_path) -> dict:
    """build_world plus a town and a district manager, the west case in handling with a
    deadline, assigned to an inspector and handled by department CG."""
    world = build_world(db, tmp_path)
    for name, role, area in (
        ("town.mgr", "town_manager", "440604001"),
        ("district.mgr", "district_manager", "440604"),
        ("other.district", "district_manager", "440605"),
    ):
        user_id = auth.create_user(db, name, TEST_PASSWORD)
        auth.assign_role(db, user_id, role, area_code=area)
        world["actors"][name] = auth.load_actor(db, user_id)
    for case in (world["west"], world["east"]):
        in_handling(db, case, world["actors"]["insp.w"].user_id)
    db.commit()
    return world


def in_handling(db: Session, case: int, assignee: int, deadline: datetime | None = DEADLINE):
    db.execute(
        text(
            "UPDATE incident SET status = 'in_handling', dispatched_at = :dispatched, "
            "time_limit_hours = :limit, deadline_at = :deadline, assignee_id = :assignee, "
            "department_id = (SELECT id FROM department WHERE code = 'CG') WHERE id = :id"
        ),
        {
            "dispatched": DEADLINE - timedelta(days=2),
            "limit": LIMIT_HOURS,
            "deadline": deadline,
            "assignee": assignee,
            "id": case,
        },
    )


@pytest.fixture
def world(session, tmp_path):
    return sla_world(session, tmp_path)


def uid(world, name: str) -> int:
    return world["actors"][name].user_id


CALENDAR = WorkCalendar()  # the sweep's calendar: no admin overrides in these tests


def at(working_hours: float) -> datetime:
    """The moment ``working_hours`` after the deadline (negative: before it, the same day)."""
    if working_hours >= 0:
        return CALENDAR.add_working_hours(DEADLINE, working_hours)
    return DEADLINE - timedelta(hours=-working_hours)


def case_row(db, case: int):
    return db.execute(
        text("SELECT warned_at, escalation_level FROM incident WHERE id = :id"), {"id": case}
    ).one()


def decisions(db, case: int) -> list[tuple[str, str, str]]:
    return [
        tuple(r)
        for r in db.execute(
            text(
                "SELECT kind, trigger, reason FROM case_decision WHERE incident_id = :id "
                "ORDER BY id"
            ),
            {"id": case},
        )
    ]


def inbox(db, user: int, case: int | None = None) -> list[tuple[str, int]]:
    return [
        tuple(r)
        for r in db.execute(
            text(
                "SELECT kind, incident_id FROM notification WHERE user_id = :u "
                "AND (CAST(:case AS bigint) IS NULL OR incident_id = :case) ORDER BY id"
            ),
            {"u": user, "case": case},
        )
    ]


def test_levels_by_working_days_overdue():
    day = 7.5
    assert [level_for(h, day) for h in (0, 0.1, 7.5, 7.6, 22.5, 22.6, 400)] == [
        1, 1, 1, 2, 2, 3, 3,
    ]  # fmt: skip


def test_no_warning_while_enough_time_is_left(session, world):
    counts = sweep(session, now=at(-3))  # 3 working hours left of 10: more than a fifth
    assert counts["warned"] == 0 and counts["checked"] == 2
    assert case_row(session, world["west"]).warned_at is None


def test_a_warning_once_to_assignee_and_department(session, world):
    west = world["west"]
    counts = sweep(session, now=at(-1.5))
    assert counts["warned"] == 2  # both cases, same deadline
    assert case_row(session, west).warned_at == at(-1.5)
    for who in ("insp.w", "handler"):
        assert ("warning", west) in inbox(session, uid(world, who), west), who
    assert sweep(session, now=at(-1))["warned"] == 0  # warned once
    assert inbox(session, uid(world, "insp.w"), west) == [("warning", west)]
    assert inbox(session, uid(world, "mgr.w")) == []  # managers hear of it when overdue
    assert decisions(session, west) == []  # a warning is no decision


def test_overdue_escalates_level_by_level_each_once(session, world):
    west, east = world["west"], world["east"]
    steps = [
        (0.5, 1, "mgr.w"),  # community manager
        (8, 2, "town.mgr"),
        (23, 3, "district.mgr"),
    ]
    for hours, level, who in steps:
        counts = sweep(session, now=at(hours))
        assert counts[f"level_{level}"] == 2, (hours, counts)  # the west and the east case
        assert sweep(session, now=at(hours))[f"level_{level}"] == 0  # swept twice: once
        assert case_row(session, west).escalation_level == level
        assert inbox(session, uid(world, who), west) == [("escalation", west)], who
        kinds = [d[0] for d in decisions(session, west)]
        assert kinds == ["escalate"] * level
    reasons = [d[2] for d in decisions(session, west)]
    assert all(d[1] == "sla_sweep" for d in decisions(session, west))
    assert "escalation level 1" in reasons[0] and "overdue by 0.5 working hours" in reasons[0]
    assert "level 2" in reasons[1] and "more than 1 working day" in reasons[1]
    assert "level 3" in reasons[2] and "more than 3 working days" in reasons[2]
    # Notifications by area: the west case's dispatcher, not the east's; the district above
    # both, not the neighbouring district.
    assert inbox(session, uid(world, "mgr.e"), west) == []
    assert inbox(session, uid(world, "mgr.e"), east) == [("escalation", east)]
    assert inbox(session, uid(world, "other.district")) == []
    # The assignee and the department heard once that it is overdue (never warned: the
    # case went overdue between two sweeps).
    for who in ("insp.w", "handler"):
        assert inbox(session, uid(world, who), west) == [("overdue", west)], who
    assert sweep(session, now=at(100))["level_3"] == 0  # nothing above level 3


def test_a_case_found_days_overdue_gets_every_level_at_once(session, world):
    west = world["west"]
    counts = sweep(session, now=at(40))
    assert (counts["level_1"], counts["level_2"], counts["level_3"]) == (2, 2, 2)
    assert [d[2].split(": ")[1].split(",")[0] for d in decisions(session, west)] == [
        "escalation level 1",
        "escalation level 2",
        "escalation level 3",
    ]
    for who in ("mgr.w", "town.mgr", "district.mgr"):
        assert inbox(session, uid(world, who), west) == [("escalation", west)], who


def test_paused_closed_and_undispatched_cases_are_skipped(session, world):
    west, east = world["west"], world["east"]
    session.execute(text("UPDATE incident SET deadline_at = NULL WHERE id = :id"), {"id": west})
    session.execute(text("UPDATE incident SET status = 'closed' WHERE id = :id"), {"id": east})
    counts = sweep(session, now=at(40))
    assert counts["checked"] == 0 and counts["notified"] == 0
    for case in (west, east):
        assert tuple(case_row(session, case)) == (None, 0)
        assert decisions(session, case) == []


def test_two_sweeps_at_once_escalate_exactly_once(scratch_database, tmp_path):
    migrate.upgrade(scratch_database)
    engine = create_engine(scratch_database)
    with Session(engine) as db:
        world = sla_world(db, tmp_path)
        now = at(40)
    barrier = threading.Barrier(2)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with Session(engine) as db:
                barrier.wait()
                results.append(sweep(db, now=now, chunk=1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with Session(engine) as db:
        per_case = db.execute(
            text(
                "SELECT incident_id, count(*) FROM case_decision WHERE kind = 'escalate' "
                "GROUP BY incident_id ORDER BY incident_id"
            )
        ).all()
        duplicates = db.execute(
            text(
                "SELECT count(*) FROM (SELECT user_id, incident_id, kind FROM notification "
                "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
            )
        ).scalar()
        levels = db.execute(text("SELECT DISTINCT escalation_level FROM incident")).scalars()
        levels = set(levels)
    engine.dispose()
    assert errors == []
    assert [tuple(r) for r in per_case] == [(world["west"], 3), (world["east"], 3)]
    assert sum(r[f"level_{n}"] for r in results for n in (1, 2, 3)) == 6
    assert duplicates == 0 and levels == {3}

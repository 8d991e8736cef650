"""What transitions keep on the case row besides its state: the handling department, the stored
deadline, the close time, the duplicate link; and the clock of the stage a case is in."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gridops.errors import InvalidInput
from gridops.incidents.cases import history, transition
from gridops.incidents.clock import case_clock, handling_deadline, load_calendar
from gridops.incidents.workflow import fold
from tests.test_cases import build_world

TO_DISPATCH = [("verify", "insp.w"), ("file", "mgr.w")]


def run(session, case, actors, steps, start=1, **kw):
    for version, (action, who) in enumerate(steps, start=start):
        transition(session, case, action, actors[who], expected_version=version, note="n", **kw)
    return start + len(steps)


def row(session, case):
    return session.execute(
        text(
            "SELECT status, version, department_id, deadline_at, closed_at, duplicate_of "
            "FROM incident WHERE id = :id"
        ),
        {"id": case},
    ).one()


def second_west_case(session) -> int:
    new = session.execute(
        text(
            "INSERT INTO incident (client_uuid, category_id, geom, reported_at, grid_id) "
            "SELECT gen_random_uuid(), category_id, ST_Translate(geom, 0.0001, 0), now(), grid_id "
            "FROM incident WHERE id = (SELECT min(id) FROM incident) RETURNING id"
        )
    ).scalar_one()
    return int(new)


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


def test_dispatch_takes_the_named_department_else_the_categorys(session, world):
    a, west = world["actors"], world["west"]
    cg = session.execute(text("SELECT id FROM department WHERE code = 'CG'")).scalar_one()
    session.execute(
        text("INSERT INTO department (code, name, area_code) VALUES ('SW', '水务', '440604')")
    )
    session.execute(
        text(
            "UPDATE category SET department_id = :cg "
            "WHERE id = (SELECT category_id FROM incident WHERE id = :id)"
        ),
        {"cg": cg, "id": west},
    )
    version = run(session, west, a, TO_DISPATCH)
    with pytest.raises(InvalidInput, match="no department 'XX'"):
        transition(session, west, "dispatch", a["mgr.w"], expected_version=version, department="XX")
    assert row(session, west).version == version  # nothing written
    with pytest.raises(InvalidInput, match="department goes with dispatch"):
        transition(session, west, "verify", a["mgr.w"], expected_version=version, department="SW")
    transition(session, west, "dispatch", a["mgr.w"], expected_version=version)
    assert row(session, west).department_id == cg  # the category's default

    east = world["east"]
    east_manager = a["mgr.e"]
    run(session, east, {"i": a["mgr.e"], "m": east_manager}, [("file", "m")])
    transition(session, east, "dispatch", east_manager, expected_version=2, department="SW")
    sw = session.execute(text("SELECT id FROM department WHERE code = 'SW'")).scalar_one()
    assert row(session, east).department_id == sw


def test_the_stored_deadline_follows_the_clock(session, world):
    a, case = world["actors"], world["west"]
    version = run(session, case, a, [*TO_DISPATCH, ("dispatch", "mgr.w")])
    stored = row(session, case).deadline_at
    assert stored is not None
    assert case_clock(session, case)["deadline"] == stored.isoformat()

    version = run(session, case, a, [("park", "mgr.w")], start=version)
    assert row(session, case).deadline_at is None  # the clock is stopped
    version = run(session, case, a, [("resume", "mgr.w")], start=version)
    resumed = row(session, case).deadline_at
    assert resumed is not None and resumed >= stored  # the parked time is not counted
    assert resumed == handling_deadline(session, case)

    steps = [
        ("accept", "handler"), ("report_handled", "handler"), ("check_pass", "insp.w2"),
        ("close", "mgr.w"),
    ]  # fmt: skip
    run(session, case, a, steps, start=version)
    closed = row(session, case)
    assert closed.status == "closed" and closed.closed_at is not None
    assert closed.deadline_at == resumed  # a closed case keeps the deadline it was judged by


def test_mark_duplicate_voids_the_case_and_writes_an_event_on_both(session, world):
    a, original = world["actors"], world["west"]
    duplicate = second_west_case(session)
    run(session, original, a, [("verify", "insp.w")])
    transition(
        session, duplicate, "mark_duplicate", a["mgr.w"], expected_version=1, duplicate_of=original
    )
    dup, orig = row(session, duplicate), row(session, original)
    assert (dup.status, dup.duplicate_of, dup.version) == ("void", original, 2)
    assert (orig.status, orig.version) == ("verified", 3)
    linked = history(session, original)[-1]
    assert (linked.action, linked.from_state, linked.to_state) == (
        "duplicate_linked",
        "verified",
        "verified",
    )
    assert f"#{duplicate}" in linked.note
    assert fold(history(session, original)).state == "verified"  # the log still folds
    assert fold(history(session, duplicate)).state == "void"


@pytest.mark.parametrize("problem", ["itself", "foreign", "void_original", "missing", "no_link"])
def test_mark_duplicate_refuses_bad_originals_and_writes_nothing(session, world, problem):
    a = world["actors"]
    case = second_west_case(session)
    other = world["west"]
    if problem == "void_original":
        run(session, other, a, [("void", "mgr.w")])
    target = {
        "itself": case,
        "foreign": world["east"],  # outside the west manager's community
        "void_original": other,
        "missing": 10**9,
        "no_link": None,
    }[problem]
    before = (row(session, case), row(session, other))
    with pytest.raises(InvalidInput) as refused:
        transition(
            session, case, "mark_duplicate", a["mgr.w"], expected_version=1, duplicate_of=target
        )
    assert refused.value.errors[0].field == "duplicate_of"
    assert (row(session, case), row(session, other)) == before


def test_the_stage_clock_uses_each_stages_limit(session, world):
    a, case = world["actors"], world["west"]
    limits = session.execute(
        text(
            "SELECT c.verify_limit_hours, c.dispatch_limit_hours, c.check_limit_hours "
            "FROM category c JOIN incident i ON i.category_id = c.id WHERE i.id = :id"
        ),
        {"id": case},
    ).one()
    assert case_clock(session, case)["stage"]["limit_hours"] == limits.verify_limit_hours
    run(session, case, a, [("verify", "insp.w")])
    stage = case_clock(session, case)["stage"]
    assert (stage["name"], stage["limit_hours"]) == ("dispatch", limits.dispatch_limit_hours)
    calendar = load_calendar(session)
    entered = history(session, case)  # the stage starts when the case entered it
    at = session.execute(
        text("SELECT at FROM case_event WHERE incident_id = :id AND version = 2"), {"id": case}
    ).scalar_one()
    assert entered and stage["started_at"] == at.isoformat()
    expected = calendar.deadline(at, limits.dispatch_limit_hours)
    assert stage["deadline"] == expected.isoformat()
    steps = [
        ("file", "mgr.w"), ("dispatch", "mgr.w"), ("accept", "handler"),
        ("report_handled", "handler"),
    ]  # fmt: skip
    run(session, case, a, steps, start=2)
    stage = case_clock(session, case)["stage"]
    assert (stage["name"], stage["limit_hours"]) == ("check", limits.check_limit_hours)

"""Automatic routing and assignment: the department a filed case goes to (component
maintainer, owner, category, territorial unit), the inspector who verifies and checks it (a
stand-in when the primary is absent, never the handler), and dispatchers' manual assignment."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from gridops.errors import InvalidInput, NotFound
from gridops.incidents.cases import StaleVersion, assign, history, transition
from gridops.incidents.intake import intake
from gridops.incidents.workcal import local_today
from gridops.incidents.workflow import IllegalTransition, NotAllowed, fold
from tests.test_cases import build_world
from tests.test_intake import report


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


def case_row(session, case):
    return session.execute(
        text(
            "SELECT i.status, i.version, i.assignee_id, d.code AS department, g.code AS grid "
            "FROM incident i LEFT JOIN department d ON d.id = i.department_id "
            "LEFT JOIN unit_grid g ON g.id = i.grid_id WHERE i.id = :id"
        ),
        {"id": case},
    ).one()


def decisions(session, case):
    return session.execute(
        text("SELECT kind, trigger, reason FROM case_decision WHERE incident_id = :id ORDER BY id"),
        {"id": case},
    ).all()


def department(session, code, *, kind="professional", area="440604", name=None):
    return session.execute(
        text(
            "INSERT INTO department (code, name, area_code, kind) VALUES (:c, :n, :a, :k) "
            "RETURNING id"
        ),
        {"c": code, "n": name or code, "a": area, "k": kind},
    ).scalar_one()


def duty(session, grid, user_id, primary):
    session.execute(
        text("INSERT INTO grid_inspector (grid_code, user_id, is_primary) VALUES (:g, :u, :p)"),
        {"g": grid, "u": user_id, "p": primary},
    )


def file_case(session, world, case):
    a = world["actors"]
    transition(session, case, "verify", a["insp.w"], expected_version=1)
    transition(session, case, "file", a["mgr.w"], expected_version=2)


@pytest.mark.parametrize("responsible", ["maintainer", "owner", "category", "territorial", "none"])
def test_a_filed_case_goes_to_whoever_is_responsible(session, world, responsible):
    case = world["west"]
    maintainer, owner = department(session, "YH"), department(session, "QS")
    department(session, "JD", kind="territorial", area="440604001", name="街道办")
    department(session, "SQ", kind="territorial", area="440604001001", name="社区居委会")
    if responsible in ("maintainer", "owner"):
        component = session.execute(
            text(
                "INSERT INTO component (code, category_id, geom, owner_department_id, "
                "maintainer_department_id) SELECT '4406040101000001', category_id, geom, :o, "
                ":m FROM incident WHERE id = :id RETURNING id"
            ),
            {"o": owner, "m": maintainer if responsible == "maintainer" else None, "id": case},
        ).scalar_one()
        session.execute(
            text("UPDATE incident SET component_id = :c WHERE id = :id"),
            {"c": component, "id": case},
        )
    if responsible != "none":  # the category names CG; a component's units come first
        session.execute(
            text(
                "UPDATE category SET department_id = (SELECT id FROM department WHERE code = 'CG')"
                " WHERE id = (SELECT category_id FROM incident WHERE id = :id)"
            ),
            {"id": case},
        )
    if responsible in ("territorial", "none"):
        session.execute(text("UPDATE category SET department_id = NULL"))
    if responsible == "none":
        session.execute(text("DELETE FROM department WHERE kind = 'territorial'"))
    file_case(session, world, case)
    expected = {
        "maintainer": ("YH", "maintained by YH"),
        "owner": ("QS", "owned by QS"),
        "category": ("CG", "handled by 城管"),
        "territorial": ("SQ", "territorial unit 社区居委会"),  # the smallest area wins
        "none": (None, "the dispatcher decides"),
    }[responsible]
    assert case_row(session, case).department == expected[0]
    [route] = [d for d in decisions(session, case) if d.kind == "route"]
    assert route.trigger == "file" and expected[1] in route.reason
    # Dispatching without naming a department sends it where routing said.
    if expected[0] is not None:
        transition(session, case, "dispatch", world["actors"]["mgr.w"], expected_version=3)
        assert case_row(session, case).department == expected[0]


def test_reports_wait_on_the_grid_inspector_or_a_stand_in(session, world):
    a = world["actors"]
    grid = session.execute(
        text(
            "SELECT g.code FROM unit_grid g WHERE g.valid_to IS NULL AND "
            "ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(113.0075, 23.01), 4326))"
        )
    ).scalar_one()
    duty(session, grid, a["insp.w"].user_id, True)
    duty(session, grid, a["insp.w2"].user_id, False)
    first, _ = intake(session, a["mgr.w"], report(lon=113.0075))
    assert case_row(session, first["id"]).assignee_id == a["insp.w"].user_id
    session.execute(
        text("INSERT INTO staff_absence (user_id, starts_on, ends_on) VALUES (:u, :d, :e)"),
        {"u": a["insp.w"].user_id, "d": local_today(), "e": local_today() + timedelta(days=2)},
    )
    second, _ = intake(session, a["mgr.w"], report(lon=113.0075))
    assert case_row(session, second["id"]).assignee_id == a["insp.w2"].user_id
    [why] = decisions(session, second["id"])
    assert why.kind == "assign_verify" and "stand-in" in why.reason and "absent" in why.reason
    session.execute(text("DELETE FROM grid_inspector"))
    third, _ = intake(session, a["mgr.w"], report(lon=113.0075))
    assert case_row(session, third["id"]).assignee_id is None
    assert "no inspector" in decisions(session, third["id"])[0].reason


def test_the_check_never_goes_to_the_handler_and_each_step_has_its_owner(session, world):
    a, case = world["actors"], world["west"]
    grid = case_row(session, case).grid
    duty(session, grid, a["insp.w"].user_id, True)
    duty(session, grid, a["insp.w2"].user_id, False)
    # The primary inspector handles it on the spot: the check goes to the stand-in.
    transition(session, case, "handle_on_spot", a["insp.w"], expected_version=1)
    assert case_row(session, case).assignee_id == a["insp.w2"].user_id
    assert "insp.w handled it" in decisions(session, case)[-1].reason

    other = world["east"]
    steps = [("file", "mgr.e"), ("dispatch", "mgr.e")]
    for version, (action, who) in enumerate(steps, start=1):
        transition(session, other, action, a[who], expected_version=version)
    assert case_row(session, other).assignee_id is None  # the department's queue
    transition(session, other, "accept", a["handler"], expected_version=3)
    assert case_row(session, other).assignee_id == a["handler"].user_id
    transition(session, other, "return", a["handler"], expected_version=4, note="不属于本部门")
    assert case_row(session, other).assignee_id is None  # back to the dispatcher


def test_a_dispatcher_assigns_with_the_version_guard(session, world):
    a, case = world["actors"], world["west"]
    file_case(session, world, case)
    with pytest.raises(StaleVersion):
        assign(session, case, a["mgr.w"], expected_version=2, assignee_id=a["handler"].user_id)
    with pytest.raises(NotAllowed):  # inspectors do not dispatch
        assign(session, case, a["insp.w"], expected_version=3, assignee_id=a["insp.w2"].user_id)
    with pytest.raises(NotFound):  # outside the manager's community
        assign(session, world["east"], a["mgr.w"], expected_version=1, department="CG")
    with pytest.raises(InvalidInput, match="cannot act on this case"):  # the east manager
        assign(session, case, a["mgr.w"], expected_version=3, assignee_id=a["mgr.e"].user_id)
    with pytest.raises(InvalidInput, match="no department"):
        assign(session, case, a["mgr.w"], expected_version=3, department="XX")
    assert case_row(session, case).version == 3  # nothing written by the refusals

    done = assign(
        session, case, a["mgr.w"], expected_version=3, department="CG",
        assignee_id=a["handler"].user_id, note="熟悉该路段",
    )  # fmt: skip
    row = case_row(session, case)
    assert done["version"] == row.version == 4 and row.status == "filed"
    assert (row.department, row.assignee_id) == ("CG", a["handler"].user_id)
    last = history(session, case)[-1]
    assert last.action == "assign" and "熟悉该路段" in last.note
    assert fold(history(session, case)).state == "filed"

    voided, _ = intake(session, a["mgr.w"], report(lon=113.0075))
    transition(session, voided["id"], "void", a["mgr.w"], expected_version=1, note="误报")
    with pytest.raises(IllegalTransition):
        assign(session, voided["id"], a["mgr.w"], expected_version=2, department="CG")


def test_the_case_shows_its_decisions_to_full_viewers_only(
    app, client, session, world, token_for, make_user
):
    a, case = world["actors"], world["west"]
    file_case(session, world, case)
    session.commit()
    manager = {"Authorization": f"Bearer {token_for(a['mgr.w'].user_id)}"}
    shown = client.get(f"/api/v1/cases/{case}", headers=manager).get_json()
    assert [d["kind"] for d in shown["decisions"]] == ["route"]
    assert "dispatcher decides" in shown["decisions"][0]["reason"]
    planner, _ = make_user("planner", area_code="440604")
    as_planner = {"Authorization": f"Bearer {token_for(planner)}"}
    hidden = client.get(f"/api/v1/cases/{case}", headers=as_planner)
    assert hidden.status_code == 200 and "decisions" not in hidden.get_json()

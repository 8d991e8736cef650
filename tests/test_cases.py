"""Case transitions through the one service function: roles where the case lies, versions,
the event log, and concurrent transitions on one case."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth import service as auth
from gridops.errors import NotFound
from gridops.grids.locate import assign_grids
from gridops.importing import run_import
from gridops.incidents.cases import StaleVersion, history, transition
from gridops.incidents.workflow import IllegalTransition, NotAllowed, fold
from tests import factories as f
from tests.conftest import TEST_PASSWORD


def build_world(db: Session, tmp_path) -> dict:
    run_import(db, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    grids = f.strip_grid(f.COMMUNITY_W, "440604001001") + f.strip_grid(
        f.COMMUNITY_E, "440604001002"
    )
    run_import(db, "grids", f.write(tmp_path / "g.gpkg", grids))
    db.execute(
        text("INSERT INTO department (code, name, area_code) VALUES ('CG', '城管', '440604')")
    )
    people = {}
    for name, role, scope in (
        ("insp.w", "inspector", {"grid_codes": [g["code"] for g in grids[:4]]}),
        ("insp.w2", "inspector", {"grid_codes": [g["code"] for g in grids[:4]]}),
        ("mgr.w", "community_manager", {"area_code": "440604001001"}),
        ("mgr.e", "community_manager", {"area_code": "440604001002"}),
        ("handler", "department_handler", {"department_code": "CG"}),
    ):
        user_id = auth.create_user(db, name, TEST_PASSWORD)
        auth.assign_role(db, user_id, role, **scope)
        people[name] = user_id
    case_ids = []
    for lon in (113.005, 113.03):  # one case in the west community, one in the east
        case_ids.append(
            db.execute(
                text(
                    "INSERT INTO incident (client_uuid, category_id, geom, reported_at, status) "
                    "VALUES (gen_random_uuid(), (SELECT min(id) FROM category "
                    "WHERE time_limit_hours IS NOT NULL), "
                    "ST_SetSRID(ST_MakePoint(:lon, 23.01), 4326), now(), 'reported') "
                    "RETURNING id"
                ),
                {"lon": lon},
            ).scalar_one()
        )
    assign_grids(db, "incident")
    db.commit()
    actors = {name: auth.load_actor(db, uid) for name, uid in people.items()}
    return {"actors": actors, "west": case_ids[0], "east": case_ids[1]}


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


def test_a_case_from_report_to_close(session, world):
    a, case = world["actors"], world["west"]
    steps = [
        ("verify", "insp.w"), ("file", "mgr.w"), ("dispatch", "mgr.w"), ("accept", "handler"),
        ("report_handled", "handler"), ("check_pass", "insp.w2"), ("close", "mgr.w"),
    ]  # fmt: skip
    for version, (action, who) in enumerate(steps, start=1):
        result = transition(session, case, action, a[who], expected_version=version, note="ok")
        assert result["version"] == version + 1
    session.commit()
    assert result["status"] == "closed"
    log = history(session, case)
    assert [e.action for e in log] == [s[0] for s in steps]
    assert (
        fold(log).state
        == session.execute(
            text("SELECT status FROM incident WHERE id = :id"), {"id": case}
        ).scalar()
    )


def test_stale_version_foreign_case_and_wrong_role(session, world):
    a, west, east = world["actors"], world["west"], world["east"]
    with pytest.raises(StaleVersion) as stale:
        transition(session, west, "verify", a["insp.w"], expected_version=7)
    assert stale.value.status == 412 and stale.value.headers["ETag"] == '"1"'
    with pytest.raises(NotFound):  # outside the manager's community: not found, not forbidden
        transition(session, east, "file", a["mgr.w"], expected_version=1)
    with pytest.raises(NotAllowed):  # handling on the spot is the inspector's, not a manager's
        transition(session, west, "handle_on_spot", a["mgr.w"], expected_version=1)
    with pytest.raises(NotAllowed):  # filing is a manager's decision, not an inspector's
        transition(session, west, "file", a["insp.w"], expected_version=1)
    with pytest.raises(
        IllegalTransition, match="allowed: file, handle_on_spot, mark_duplicate, verify, void"
    ):
        transition(session, west, "close", a["mgr.w"], expected_version=1)


def test_the_event_log_refuses_changes(session, world):
    transition(session, world["west"], "verify", world["actors"]["insp.w"], expected_version=1)
    with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
        session.execute(text("UPDATE case_event SET note = 'rewritten'"))


def test_concurrent_transitions_one_wins_one_event(scratch_database, tmp_path):
    migrate.upgrade(scratch_database)
    engine = create_engine(scratch_database)
    with Session(engine) as db:
        world = build_world(db, tmp_path)
    case, inspector = world["west"], world["actors"]["insp.w"]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        with Session(engine) as db:
            barrier.wait()
            try:
                transition(db, case, "verify", inspector, expected_version=1)
                db.commit()
                outcomes.append("won")
            except StaleVersion:
                db.rollback()
                outcomes.append("stale")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with Session(engine) as db:
        events = db.execute(
            text("SELECT count(*) FROM case_event WHERE incident_id = :id"), {"id": case}
        ).scalar()
        version = db.execute(
            text("SELECT version FROM incident WHERE id = :id"), {"id": case}
        ).scalar()
    engine.dispose()
    assert sorted(outcomes) == ["stale", "won"]
    assert (events, version) == (1, 2)

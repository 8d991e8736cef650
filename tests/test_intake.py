"""Incident intake: server-side grid, jurisdiction, idempotent client UUIDs (also when
replayed concurrently), and every bad field named."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth import service as auth
from gridops.errors import Conflict, InvalidInput
from gridops.grids.locate import OutsideJurisdiction
from gridops.importing import run_import
from gridops.incidents.intake import intake
from tests import factories as f
from tests.conftest import TEST_PASSWORD


def report(**changes):
    body = {
        "client_uuid": str(uuid.uuid4()),
        "category": "E0502",
        "lon": 113.005,
        "lat": 23.01,
        "accuracy_m": 8.5,
        "captured_at": datetime.now(UTC).isoformat(),
        "description": "占道经营",
    }
    body.update(changes)
    return body


def build(db: Session, tmp_path):
    run_import(db, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    grids = f.strip_grid(f.COMMUNITY_W, "440604001001") + f.strip_grid(
        f.COMMUNITY_E, "440604001002"
    )
    run_import(db, "grids", f.write(tmp_path / "g.gpkg", grids))
    user_id = auth.create_user(db, "insp.w", TEST_PASSWORD)
    auth.assign_role(db, user_id, "inspector", grid_codes=[g["code"] for g in grids[:4]])
    db.commit()
    return auth.load_actor(db, user_id)


@pytest.fixture
def inspector(session, tmp_path):
    return build(session, tmp_path)


def test_report_is_located_by_the_server_and_replays_return_it(session, inspector):
    body = report()
    first, created = intake(session, inspector, body)
    assert created and first["grid_code"] == "440604001001001"
    assert first["community"]["code"] == "440604001001"
    again, created_again = intake(session, inspector, dict(body))
    assert not created_again and again["id"] == first["id"]
    rows = session.execute(
        text("SELECT count(*), min(status), min(reported_by) FROM incident")
    ).one()
    assert tuple(rows) == (1, "reported", inspector.user_id)


def test_same_uuid_with_a_different_report_is_a_conflict(session, inspector):
    body = report()
    intake(session, inspector, body)
    with pytest.raises(Conflict) as caught:
        intake(session, inspector, {**body, "description": "别的事"})
    assert caught.value.status == 409 and caught.value.errors[0].field == "client_uuid"


def test_every_bad_field_is_named_and_nothing_is_written(session, inspector):
    bad = report(
        client_uuid="42",
        lon="east",
        lat=123,
        accuracy_m=-3,
        captured_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
        source="rumour",
        grid_code="440604001001001",
    )
    with pytest.raises(InvalidInput) as caught:
        intake(session, inspector, bad)
    fields = {e.field for e in caught.value.errors}
    assert fields == {
        "client_uuid", "lon", "lat", "accuracy_m", "captured_at", "source", "grid"
    }  # fmt: skip
    with pytest.raises(InvalidInput, match="no active minor category"):
        intake(session, inspector, report(category="E05"))  # a major class is not a category
    assert session.execute(text("SELECT count(*) FROM incident")).scalar() == 0


@pytest.mark.parametrize(
    "captured_at",
    ["0001-01-01T00:00:00+00:00", "1970-01-01T08:00:00+08:00", "2000-01-01T00:00:00Z"],
)
def test_a_capture_time_from_a_reset_clock_is_refused(session, inspector, captured_at):
    with pytest.raises(InvalidInput) as caught:
        intake(session, inspector, report(captured_at=captured_at))
    assert [e.field for e in caught.value.errors] == ["captured_at"]
    assert "clock" in caught.value.errors[0].message
    assert session.execute(text("SELECT count(*) FROM incident")).scalar() == 0


def test_a_report_held_offline_for_weeks_is_taken(session, inspector):
    weeks_ago = datetime.now(UTC) - timedelta(days=40)
    incident, created = intake(session, inspector, report(captured_at=weeks_ago.isoformat()))
    assert created
    stored = session.execute(
        text("SELECT captured_at FROM incident WHERE id = :id"), {"id": incident["id"]}
    ).scalar_one()
    assert stored == weeks_ago


def test_points_outside_the_reporters_grids_are_refused(session, inspector):
    with pytest.raises(OutsideJurisdiction):
        intake(session, inspector, report(lon=113.03))  # the east community
    with pytest.raises(OutsideJurisdiction):
        intake(session, inspector, report(lon=113.5))  # outside the city


def test_concurrent_replays_make_one_row(scratch_database, tmp_path):
    migrate.upgrade(scratch_database)
    engine = create_engine(scratch_database, pool_size=6)
    with Session(engine) as db:
        actor = build(db, tmp_path)
    body = report()
    barrier = threading.Barrier(4)
    ids: list[int] = []

    def replay() -> None:
        with Session(engine) as db:
            barrier.wait()
            incident, _ = intake(db, actor, body)
            db.commit()
            ids.append(incident["id"])

    threads = [threading.Thread(target=replay) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with Session(engine) as db:
        count = db.execute(text("SELECT count(*) FROM incident")).scalar()
    engine.dispose()
    assert count == 1 and len(ids) == 4 and len(set(ids)) == 1

"""Patrol tracks: idempotent batch upload, each inspector's day, grid coverage."""

from __future__ import annotations

import threading
import time as time_module
from datetime import UTC, date, datetime, time, timedelta

import pytest
from pyproj import Geod
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth import service as auth
from gridops.errors import InvalidInput
from gridops.incidents.workcal import TZ, local_today
from gridops.patrol.service import (
    MAX_BATCH,
    compute_coverage,
    parse_batch,
    store_points,
)
from tests.conftest import TEST_PASSWORD
from tests.test_cases import build_world

WEST = [f"440604001001{i:03d}" for i in range(1, 5)]  # strips 0.005° wide from lon 113.000
EAST = [f"440604001002{i:03d}" for i in range(1, 5)]  # strips 0.005° wide from lon 113.020
LAT = 23.01
DAY = local_today() - timedelta(days=2)


def at(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    """A local (Asia/Shanghai) wall-clock time of ``day``."""
    return datetime.combine(day, time(hh, mm, ss), TZ)


def point(when: datetime, lon: float, lat: float = LAT, accuracy: float = 5.0) -> dict:
    return {"t": when.isoformat(), "lon": lon, "lat": lat, "accuracy_m": accuracy}


@pytest.fixture
def world(session, tmp_path, make_user, token_for, app):
    """build_world's west inspectors and managers, plus an east inspector, a town manager,
    a planner and the grid duties: insp.w is the primary inspector of west 001, 002, 004."""
    built = build_world(session, tmp_path)
    ids = {name: actor.user_id for name, actor in built["actors"].items()}
    ids["insp.e"], _ = make_user("inspector", "insp.e", grid_codes=EAST)
    ids["town"], _ = make_user("town_manager", "town", area_code="440604001")
    ids["planner"], _ = make_user("planner", "planner", area_code="440604")
    for code in (WEST[0], WEST[1], WEST[3]):
        session.execute(
            text(
                "INSERT INTO grid_inspector (grid_code, user_id, is_primary) VALUES (:g, :u, true)"
            ),
            {"g": code, "u": ids["insp.w"]},
        )
    # A stand-in duty does not make a grid the inspector's own.
    session.execute(
        text("INSERT INTO grid_inspector (grid_code, user_id, is_primary) VALUES (:g, :u, false)"),
        {"g": WEST[2], "u": ids["insp.w"]},
    )
    session.commit()
    clients = {}
    for name, user_id in ids.items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    return {"ids": ids, "clients": clients, "actors": built["actors"]}


def rows(session, user_id: int) -> list[tuple]:
    return session.execute(
        text(
            "SELECT recorded_at, ST_X(geom), ST_Y(geom), accuracy_m FROM patrol_point "
            "WHERE user_id = :u ORDER BY recorded_at"
        ),
        {"u": user_id},
    ).all()


def upload(world, who: str, points: list[dict], **extra) -> dict:
    response = world["clients"][who].post("/api/v1/patrol/points", json={"points": points, **extra})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def day_view(world, who: str, day: date = DAY, **args):
    query = "&".join(f"{k}={v}" for k, v in {"date": day.isoformat(), **args}.items())
    return world["clients"][who].get(f"/api/v1/patrol/day?{query}")


def features(response) -> dict[int, dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/geo+json"
    body = response.get_json()
    assert body["type"] == "FeatureCollection"
    return {f["id"]: f for f in body["features"]}


# -- upload ---------------------------------------------------------------------------------


def test_batch_upload_and_retry_add_nothing_twice(session, world):
    me = world["ids"]["insp.w"]
    batch = [point(at(DAY, 9, 0, s), 113.001 + s * 1e-5) for s in range(0, 30, 10)]
    assert upload(world, "insp.w", batch) == {
        "received": 3, "stored": 3, "duplicates": 0, "poor_accuracy": 0,
    }  # fmt: skip
    assert upload(world, "insp.w", batch)["stored"] == 0  # the tablet retried
    # The same instants written with another offset are the same points.
    in_utc = [{**p, "t": datetime.fromisoformat(p["t"]).astimezone(UTC).isoformat()} for p in batch]
    newer = point(at(DAY, 9, 1), 113.002, accuracy=250)
    answer = upload(world, "insp.w", [*in_utc, newer])
    assert answer == {"received": 4, "stored": 1, "duplicates": 3, "poor_accuracy": 1}
    stored = rows(session, me)
    assert len(stored) == 4
    assert stored[0][1:] == (pytest.approx(113.001), pytest.approx(LAT), 5.0)
    assert stored[-1][3] == 250.0  # a poor point is kept, only left out of coverage
    # Another user's retry of the same times is not a duplicate: points are per user.
    assert upload(world, "insp.w2", batch)["stored"] == 3


def test_points_are_always_the_uploaders_own(session, world):
    other = world["ids"]["insp.e"]
    response = world["clients"]["insp.w"].post(
        "/api/v1/patrol/points",
        json={"user_id": other, "points": [point(at(DAY, 9, 0), 113.001)]},
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["user_id"]
    assert rows(session, other) == [] and rows(session, world["ids"]["insp.w"]) == []


def good_point(ago: timedelta = timedelta(hours=1)) -> dict:
    return point(datetime.now(UTC) - ago, 113.001)


# Each bad field, as a change to a good point (times relative to now, taken when the test runs).
BAD_POINTS = {
    "t missing": ({"t": None}, "t"),
    "t not a time": ({"t": "yesterday"}, "t"),
    "t without offset": ({"t": "2026-01-01T09:00:00"}, "t"),
    "t in the future": ({"t": timedelta(minutes=-11)}, "t"),
    "t from a reset clock": ({"t": "1970-01-01T00:00:00+00:00"}, "t"),
    "lon out of range": ({"lon": 181}, "lon"),
    "lon a string": ({"lon": "113.0"}, "lon"),
    "lat out of range": ({"lat": -90.5}, "lat"),
    "lat a boolean": ({"lat": True}, "lat"),
    "accuracy negative": ({"accuracy_m": -1}, "accuracy_m"),
    "accuracy missing": ({"accuracy_m": None}, "accuracy_m"),
    "user inside a point": ({"user_id": 1}, "user_id"),
}


@pytest.mark.parametrize("change, field", BAD_POINTS.values(), ids=BAD_POINTS.keys())
def test_a_bad_point_refuses_the_whole_batch(session, world, change, field):
    if isinstance(change.get("t"), timedelta):
        change = {"t": good_point(change["t"])["t"]}
    bad = {k: v for k, v in {**good_point(), **change}.items() if v is not None}
    batch = [good_point(), good_point(timedelta(minutes=30)), bad]
    response = world["clients"]["insp.w"].post("/api/v1/patrol/points", json={"points": batch})
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in body["errors"]] == [f"points[2].{field}"]
    assert rows(session, world["ids"]["insp.w"]) == []  # the good points were not written either


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "points"),
        ({"points": {"t": "2026-01-01T09:00:00+08:00"}}, "points"),
        ({"points": [good_point(), "not a point"]}, "points[1]"),
        ({"points": [good_point()] * (MAX_BATCH + 1)}, "points"),
    ],
    ids=["no points", "points not a list", "a point not an object", "batch too large"],
)
def test_a_malformed_batch_is_refused(session, world, body, field):
    response = world["clients"]["insp.w"].post("/api/v1/patrol/points", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == [field]
    assert rows(session, world["ids"]["insp.w"]) == []


def test_every_bad_field_is_named_at_once_and_clock_skew_is_allowed():
    now = datetime.now(UTC)
    skewed = point(now + timedelta(minutes=5), 113.0)  # a tablet clock a little ahead: fine
    assert len(parse_batch({"points": [skewed]}, now=now)) == 1
    with pytest.raises(InvalidInput) as refused:
        parse_batch({"points": [skewed, {"t": "x", "lon": 200, "lat": 0, "accuracy_m": -2}]})
    fields = [e.field for e in refused.value.errors]
    assert fields == ["points[1].t", "points[1].lon", "points[1].accuracy_m"]


def test_restricted_roles_may_not_upload_or_read_tracks(world):
    for who in ("planner", "handler"):
        client = world["clients"][who]
        refused = client.post("/api/v1/patrol/points", json={"points": []})
        assert refused.status_code == 403
        assert day_view(world, who).status_code == 403


def test_concurrent_uploads_of_one_batch_store_each_point_once(scratch_database):
    migrate.upgrade(scratch_database)
    engine = create_engine(scratch_database)
    with Session(engine) as db:
        user_id = auth.create_user(db, "racer", TEST_PASSWORD)
        db.commit()
    start = datetime.now(UTC) - timedelta(hours=1)
    batch = parse_batch(
        {"points": [point(start + timedelta(seconds=s), 113.0) for s in range(200)]}
    )
    barrier = threading.Barrier(2)
    answers: list[dict] = []
    failures: list[BaseException] = []

    def send() -> None:
        try:
            with Session(engine) as db:
                barrier.wait()
                answer = store_points(db, user_id, batch)
                time_module.sleep(0.2)  # hold the rows so that the other copy has to wait
                db.commit()
                answers.append(answer)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with Session(engine) as db:
        count = db.execute(
            text(
                "SELECT count(*), count(DISTINCT recorded_at) FROM patrol_point WHERE user_id = :u"
            ),
            {"u": user_id},
        ).one()
    engine.dispose()
    assert failures == []
    assert tuple(count) == (200, 200)
    assert sorted(a["stored"] for a in answers) == [0, 200]
    assert all(a["received"] == 200 and a["stored"] + a["duplicates"] == 200 for a in answers)


# -- the day --------------------------------------------------------------------------------


def test_a_track_crossing_two_of_three_grids_visits_two_thirds(world):
    me = world["ids"]["insp.w"]
    track = [
        point(at(DAY, 9, 0, 0), 113.0040),  # west 001
        point(at(DAY, 9, 0, 30), 113.0045, LAT + 0.001),  # west 001
        # 100 s later in west 003: the segment between crosses west 002 (no point there).
        point(at(DAY, 9, 2, 10), 113.0105, LAT - 0.001),
        # Half an hour later in the east community: the straight line crosses west 004, but
        # a 30-minute gap is no walk along it.
        point(at(DAY, 9, 32, 10), 113.0250, LAT + 0.002),
        # Poor fixes inside west 004 do not count either.
        point(at(DAY, 9, 33), 113.0175, accuracy=150),
        point(at(DAY, 9, 34), 113.0176, accuracy=101),
    ]
    upload(world, "insp.w", track)
    [feature] = features(day_view(world, "insp.w", user=me)).values()
    props = feature["properties"]
    assert props["grids_source"] == "grid_inspector"
    assert props["grids"] == [WEST[0], WEST[1], WEST[3]]  # 003 is only a stand-in duty
    assert props["grids_visited"] == [WEST[0], WEST[1]]
    assert (props["grids_total"], props["visited_count"]) == (3, 2)
    assert props["share_visited"] == pytest.approx(2 / 3, abs=1e-4)
    assert (props["points"], props["points_poor_accuracy"]) == (4, 2)
    assert props["first_at"] == at(DAY, 9, 0).isoformat()
    assert props["last_at"] == at(DAY, 9, 32, 10).isoformat()
    # The track: good points only, in time order, as a GeoJSON LineString.
    assert feature["geometry"]["type"] == "LineString"
    lons = [113.0040, 113.0045, 113.0105, 113.0250]
    lats = [LAT, LAT + 0.001, LAT - 0.001, LAT + 0.002]
    expected = [v for pair in zip(lons, lats, strict=True) for v in pair]
    got = [v for pair in feature["geometry"]["coordinates"] for v in pair]
    assert got == pytest.approx(expected, abs=1e-6)
    # Geodesic length on the ellipsoid.
    walked = Geod(ellps="WGS84").line_length(lons, lats)
    assert props["distance_m"] == pytest.approx(walked, abs=0.5)


def test_poor_accuracy_points_do_not_visit_a_grid(world):
    me = world["ids"]["insp.w"]
    upload(world, "insp.w", [point(at(DAY, 10, 0), 113.0175, accuracy=120)])
    props = features(day_view(world, "insp.w", user=me))[me]["properties"]
    assert props["grids_visited"] == [] and props["share_visited"] == 0
    assert feature_geometry(world, me) is None and props["distance_m"] == 0
    upload(world, "insp.w", [point(at(DAY, 10, 1), 113.0176, accuracy=100)])  # at the limit
    props = features(day_view(world, "insp.w", user=me))[me]["properties"]
    assert props["grids_visited"] == [WEST[3]]
    assert feature_geometry(world, me) == {"type": "Point", "coordinates": [113.0176, LAT]}


def feature_geometry(world, user_id: int):
    return features(day_view(world, "insp.w", user=user_id))[user_id]["geometry"]


def test_days_are_local_days(world):
    me = world["ids"]["insp.w"]
    late = at(DAY, 23, 30)  # 15:30 UTC, still DAY in Foshan
    early = at(DAY + timedelta(days=1), 0, 30)  # 16:30 UTC on DAY, but the next local day
    assert early.astimezone(UTC).date() == DAY
    upload(world, "insp.w", [point(late, 113.001), point(early, 113.006)])
    today = features(day_view(world, "insp.w", user=me))[me]["properties"]
    assert (today["first_at"], today["last_at"]) == (late.isoformat(), late.isoformat())
    assert today["grids_visited"] == [WEST[0]]
    tomorrow = features(day_view(world, "insp.w", DAY + timedelta(days=1), user=me))[me]
    assert tomorrow["properties"]["first_at"] == early.isoformat()
    assert tomorrow["properties"]["grids_visited"] == [WEST[1]]
    before = features(day_view(world, "insp.w", DAY - timedelta(days=1), user=me))[me]
    assert before["properties"]["points"] == 0 and before["geometry"] is None


def test_the_track_is_simplified_but_keeps_its_shape(world):
    me = world["ids"]["insp.w"]
    # 60 points on a straight line every 10 s, then a turn north: 3 vertices are enough.
    walk = [point(at(DAY, 8, 0) + timedelta(seconds=10 * i), 113.001 + i * 1e-4) for i in range(60)]
    turn = point(at(DAY, 8, 10, 10), 113.001 + 59 * 1e-4, LAT + 0.002)
    upload(world, "insp.w", [*walk, turn])
    feature = features(day_view(world, "insp.w", user=me))[me]
    coordinates = feature["geometry"]["coordinates"]
    assert len(coordinates) == 3
    assert coordinates[0] == pytest.approx([113.001, LAT], abs=1e-6)
    assert coordinates[-1] == pytest.approx([113.0069, LAT + 0.002], abs=1e-6)
    assert feature["properties"]["points"] == 61  # the statistics use every point


def test_managers_see_the_inspectors_of_their_area_only(world):
    ids = world["ids"]
    upload(world, "insp.w", [point(at(DAY, 9, 0), 113.001)])
    upload(world, "insp.e", [point(at(DAY, 9, 0), 113.021)])
    west = {ids["insp.w"], ids["insp.w2"]}
    assert set(features(day_view(world, "mgr.w"))) == west
    assert set(features(day_view(world, "mgr.e"))) == {ids["insp.e"]}
    assert set(features(day_view(world, "town"))) == west | {ids["insp.e"]}
    assert set(features(day_view(world, "insp.w"))) == {ids["insp.w"]}  # only themselves
    # Another area's inspector is not found, like one that does not exist.
    for who, other in (("mgr.w", "insp.e"), ("mgr.e", "insp.w"), ("insp.w", "insp.w2")):
        response = day_view(world, who, user=ids[other])
        assert response.status_code == 404, (who, other)
    missing = day_view(world, "mgr.w", user=999999)
    assert missing.status_code == 404
    assert missing.get_json()["detail"].replace("999999", "X") == day_view(
        world, "mgr.w", user=ids["insp.e"]
    ).get_json()["detail"].replace(str(ids["insp.e"]), "X")
    # A manager is not an inspector: no track of theirs is listed.
    assert day_view(world, "mgr.w", user=ids["mgr.w"]).status_code == 404
    east = features(day_view(world, "mgr.e", user=ids["insp.e"]))[ids["insp.e"]]["properties"]
    assert east["grids_source"] == "role" and east["grids"] == EAST  # no grid_inspector rows
    assert east["grids_visited"] == [EAST[0]] and east["share_visited"] == 0.25


def test_bad_day_parameters(world):
    client = world["clients"]["mgr.w"]
    for query, field in (
        ("date=2026-13-01", "date"),
        ("date=20260101", "date"),
        ("user=x", "user"),
    ):
        response = client.get(f"/api/v1/patrol/day?{query}")
        assert response.status_code == 422, query
        assert [e["field"] for e in response.get_json()["errors"]] == [field]
    assert client.get("/api/v1/patrol/day").get_json()["date"] == local_today().isoformat()


# -- coverage -------------------------------------------------------------------------------


def coverage(session, day: date = DAY) -> dict[int, tuple]:
    return {
        r.user_id: (r.grids_total, r.grids_visited, round(r.distance_m))
        for r in session.execute(text("SELECT * FROM patrol_coverage WHERE day = :d"), {"d": day})
    }


def test_coverage_job_is_idempotent_and_agrees_with_the_day_view(session, world):
    ids = world["ids"]
    upload(world, "insp.w", [point(at(DAY, 9, 0), 113.001), point(at(DAY, 9, 1), 113.0065)])
    upload(world, "insp.e", [point(at(DAY, 23, 30), 113.021)])
    assert compute_coverage(session, DAY) == 3  # insp.w, insp.w2 (role grids), insp.e
    first = coverage(session)
    assert set(first) == {ids["insp.w"], ids["insp.w2"], ids["insp.e"]}
    assert first[ids["insp.w"]][:2] == (3, 2)
    assert first[ids["insp.w"]][2] == pytest.approx(564, abs=3)  # 0.0055° of longitude
    assert (first[ids["insp.w2"]], first[ids["insp.e"]]) == ((4, 0, 0), (4, 1, 0))
    assert compute_coverage(session, DAY) == 3
    assert coverage(session) == first
    count = session.execute(text("SELECT count(*) FROM patrol_coverage")).scalar()
    assert count == 3
    # The day view reports the stored figures next to the live ones.
    props = features(day_view(world, "insp.w"))[ids["insp.w"]]["properties"]
    snapshot = props["coverage_snapshot"]
    assert (snapshot["grids_total"], snapshot["grids_visited"]) == (3, 2)
    assert (props["grids_total"], props["visited_count"]) == (3, 2)
    assert snapshot["distance_m"] == pytest.approx(props["distance_m"], abs=0.5)
    # A late upload and a rerun update the row; an absence removes it.
    upload(world, "insp.w", [point(at(DAY, 9, 2), 113.0176)])
    session.execute(
        text("INSERT INTO staff_absence (user_id, starts_on, ends_on) VALUES (:u, :d, :d)"),
        {"u": ids["insp.w2"], "d": DAY},
    )
    assert compute_coverage(session, DAY) == 2
    after = coverage(session)
    assert set(after) == {ids["insp.w"], ids["insp.e"]}
    assert after[ids["insp.w"]][:2] == (3, 3)
    assert coverage(session, DAY + timedelta(days=1)) == {}  # 23:30 local stayed on DAY


def test_coverage_of_a_day_without_points(session, world):
    assert compute_coverage(session, DAY - timedelta(days=5)) == 3
    assert set(coverage(session, DAY - timedelta(days=5)).values()) == {(3, 0, 0), (4, 0, 0)}

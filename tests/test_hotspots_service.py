"""Hotspot runs from PostGIS: filters, the study area, stored runs, the API, the CLI, the
nightly job, repeated-problem spots, and the demo check (the generator's planted hotspots are
found, and nothing where it planted nothing).

The small world is tests/test_cases.build_world (city 440600 = districts 440604 and 440605;
440604 has one town with a west and an east community, each cut into 4 unit grids) with a
planted cluster of E0502 reports in the west community in April-June 2026, a uniform
background over the city in January-June 2026, void and duplicate reports on the cluster
(never counted) and old reports from June 2025.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import h3
import numpy as np
import pytest
import shapely
from h3.api import basic_int as h3int
from shapely.geometry import Point, Polygon
from sqlalchemy import create_engine, pool, text
from sqlalchemy.orm import Session

from gridops.auth import service as auth
from gridops.errors import InvalidInput, NotFound
from gridops.hotspots import analyse_points, repeated, service
from gridops.hotspots.service import EVERYTHING, NO_AREA
from gridops.incidents.workcal import TZ
from gridops.scheduler import jobs
from tests import factories as f
from tests.conftest import TEST_PASSWORD
from tests.test_cases import build_world
from tests.test_demo import demo  # noqa: F401  (module-scoped: the whole demo, loaded)
from tests.test_geodata import load_build

WEST, EAST, TOWN, DISTRICT, FOREIGN = (
    "440604001001",
    "440604001002",
    "440604001",
    "440604",
    "440605",
)
CLUSTER = (113.0125, 23.010)  # in the west community, mid-way along its grid 003
START, END = "2026-01-01", "2026-07-01"
N_CLUSTER = 45
N_BACKGROUND = 160


def metres_to_deg(lat: float) -> tuple[float, float]:
    return 1 / (111_320 * np.cos(np.radians(lat))), 1 / 110_574


def add_incidents(
    session: Session,
    points: list[tuple[float, float]],
    category: str,
    times: list[datetime],
    *,
    source: str = "inspector",
    status: str = "closed",
    duplicate_of: int | None = None,
) -> list[int]:
    ids = []
    for (lon, lat), when in zip(points, times, strict=True):
        ids.append(
            session.execute(
                text(
                    "INSERT INTO incident (client_uuid, category_id, geom, reported_at, "
                    "received_at, source, status, duplicate_of) VALUES (gen_random_uuid(), "
                    "(SELECT id FROM category WHERE code = :c ORDER BY standard_ref DESC "
                    "LIMIT 1), ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :t, :t, :s, "
                    ":status, :dup) RETURNING id"
                ),
                {
                    "c": category,
                    "lon": round(lon, 6),
                    "lat": round(lat, 6),
                    "t": when,
                    "s": source,
                    "status": status,
                    "dup": duplicate_of,
                },
            ).scalar_one()
        )
    return ids


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=TZ)


@pytest.fixture
def world(session, tmp_path, monkeypatch) -> dict[str, Any]:
    # Cheap password hashing: a dozen users per test (hashing is tested on its own).
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    base = build_world(session, tmp_path)
    rng = np.random.default_rng(7)
    dx, dy = metres_to_deg(CLUSTER[1])
    offsets = rng.normal(0, 60, size=(N_CLUSTER, 2))
    cluster = [(CLUSTER[0] + x * dx, CLUSTER[1] + y * dy) for x, y in offsets]
    days = rng.integers(0, 91, size=N_CLUSTER)
    times = [local(2026, 4, 1, 10) + timedelta(days=int(d)) for d in days]
    times[0] = local(2026, 4, 1, 0, 30)  # 31 March 16:30 UTC: April, locally
    cluster_ids = add_incidents(session, cluster, "E0502", times)
    xs = rng.uniform(113.0, 113.08, N_BACKGROUND)
    ys = rng.uniform(23.0, 23.02, N_BACKGROUND)
    bg_days = rng.integers(0, 181, size=N_BACKGROUND)
    background = list(zip(xs, ys, strict=True))
    sources = ["hotline" if i % 3 == 0 else "inspector" for i in range(N_BACKGROUND)]
    codes = ["C0101" if i % 2 else "E0101" for i in range(N_BACKGROUND)]
    for i, point in enumerate(background):
        add_incidents(
            session,
            [point],
            codes[i],
            [local(2026, 1, 1, 9) + timedelta(days=int(bg_days[i]))],
            source=sources[i],
        )
    # Never counted: void reports and duplicates on the cluster, and last year's reports.
    add_incidents(session, cluster[:5], "E0502", times[:5], status="void")
    add_incidents(session, cluster[:5], "E0502", times[:5], duplicate_of=cluster_ids[0])
    add_incidents(session, cluster[:10], "E0502", [local(2025, 6, 10, 9)] * 10)
    from gridops.grids.locate import assign_grids

    assign_grids(session, "incident", where="grid_id IS NULL")
    session.commit()
    people = {}
    for name, role, scope in (
        ("planner.d", "planner", {"area_code": DISTRICT}),
        ("town.m", "town_manager", {"area_code": TOWN}),
        ("foreign.m", "district_manager", {"area_code": FOREIGN}),
        ("boss", "admin", {}),
        ("insp.x", "inspector", {"grid_codes": [f"{WEST}001"]}),
    ):
        user_id = auth.create_user(session, name, TEST_PASSWORD)
        auth.assign_role(session, user_id, role, **scope)
        people[name] = user_id
    session.commit()
    actors = {
        **base["actors"],
        **{name: auth.load_actor(session, uid) for name, uid in people.items()},
    }
    in_west = [p for p in background if shapely.contains_xy(f.COMMUNITY_W, *p)]
    return {
        "actors": actors,
        "ids": people,
        "cluster": cluster,
        "cluster_ids": cluster_ids,
        "background": background,
        "sources": sources,
        "codes": codes,
        "in_west": len(in_west),
        "hotline_west": sum(
            1
            for p, s in zip(background, sources, strict=True)
            if s == "hotline" and shapely.contains_xy(f.COMMUNITY_W, *p)
        ),
    }


def run_count(session: Session) -> tuple[int, int]:
    return session.execute(
        text("SELECT (SELECT count(*) FROM hotspot_run), (SELECT count(*) FROM hotspot_cell)")
    ).one()


def cell_of(lon: float, lat: float, resolution: int = 9) -> int:
    return h3int.latlng_to_cell(lat, lon, resolution)


def stored_cells(session: Session, run_id: int) -> dict[int, Any]:
    rows = session.execute(
        text("SELECT * FROM hotspot_cell WHERE run_id = :id"), {"id": run_id}
    ).all()
    return {int(r.cell): r for r in rows}


# -- aggregation and filters -----------------------------------------------------------------


def test_points_follow_the_filters_and_the_local_clock(session, world):
    def points(**kw: Any) -> service.Points:
        kw = {"start": START, "end": END, "area": WEST, **kw}
        return service.fetch_points(session, service.validate_run(session, EVERYTHING, **kw))

    everything = points()
    assert len(everything) == N_CLUSTER + world["in_west"]  # no void, no duplicate, no 2025
    assert len(points(category="E0502")) == N_CLUSTER
    assert len(points(category="E05")) == N_CLUSTER  # a major code: every minor under it
    assert len(points(category="E0101")) + len(points(category="C0101")) == world["in_west"]
    assert len(points(source="hotline")) == world["hotline_west"]
    assert len(points(start="2025-06-01", end="2025-07-01")) == 10
    assert len(points(start="2026-04-01", end="2026-04-02", category="E0502")) >= 1
    # Times are local wall time: 00:30 on 1 April in Shanghai is still 31 March in UTC.
    assert np.datetime64("2026-04-01T00:30") in points(category="E0502").times
    wide = points(area=DISTRICT)
    assert len(wide) == N_CLUSTER + sum(
        1 for p in world["background"] if shapely.contains_xy(f.D604, *p)
    )


def test_grid_counts_add_up_per_unit_grid(session, world):
    params = service.validate_run(session, EVERYTHING, start=START, end=END, area=DISTRICT)
    counts = service.grid_counts(session, params)
    assert counts["outside_grids"] == 0  # the whole district is cut into grids
    assert sum(g["count"] for g in counts["grids"]) == len(service.fetch_points(session, params))
    assert {g["grid"][:12] for g in counts["grids"]} == {WEST, EAST}
    cluster_grid = f"{WEST}003"
    assert max(counts["grids"], key=lambda g: g["count"])["grid"] == cluster_grid
    foreign = service.validate_run(session, EVERYTHING, start=START, end=END, area=FOREIGN)
    outside = service.grid_counts(session, foreign)
    assert outside["grids"] == [] and outside["outside_grids"] == len(
        service.fetch_points(session, foreign)
    )


# -- runs ------------------------------------------------------------------------------------


def test_a_run_covers_the_whole_area_and_finds_the_cluster(session, world):
    run_id = service.run_hotspots(session, start=START, end=END, area=WEST, resolution=9, k=1)
    run = service.get_run(session, run_id)
    cells = stored_cells(session, run_id)
    area_cells = service.polygon_cells(f.COMMUNITY_W, 9)
    params = service.validate_run(session, EVERYTHING, start=START, end=END, area=WEST)
    pts = service.fetch_points(session, params)
    point_cells = {cell_of(x, y) for x, y in zip(pts.lon, pts.lat, strict=True)}
    # The study area is the community (empty cells count as zeros), not the cells with data.
    assert set(cells) == set(area_cells) | point_cells
    assert run["n_cells"] == len(cells) > len(point_cells)
    assert sum(1 for c in cells.values() if c.count == 0) > len(cells) / 3
    assert sum(c.count for c in cells.values()) == run["n_points"] == len(pts)
    assert cells[cell_of(*CLUSTER)].bin >= 1  # a small area: 45 cells, the cluster over 3
    assert run["kind"] == "gistar" and run["filters"] == {} and run["k"] == 1
    assert run["start"] == "2026-01-01T00:00:00+08:00" and run["area"]["code"] == WEST
    assert run["summary"]["hot_cells"] >= 1 and run["seconds"] > 0
    # The service hands the analysis its data unchanged.
    frame = analyse_points(
        pts.lon, pts.lat, resolution=9, k=run["k"], study_area=np.array(sorted(cells))
    )
    for row in frame.itertuples():
        stored = cells[int(row.cell)]
        assert (stored.count, stored.bin) == (row.count, row.bin)
        assert stored.z == pytest.approx(row.z, abs=1e-12)


def test_an_emerging_run_stores_trends_and_categories(session, world):
    run_id = service.run_hotspots(
        session, kind="emerging", start=START, end=END, area=DISTRICT, k=1, step="month"
    )
    run = service.get_run(session, run_id)
    cells = stored_cells(session, run_id)
    assert run["step"] == "month" and run["k"] == 1
    assert all(c.category is not None and c.trend_p is not None for c in cells.values())
    assert cells[cell_of(*CLUSTER)].trend_z > 0  # appeared in April
    assert sum(run["summary"]["cells_by_category"].values()) == len(cells)
    gistar = stored_cells(session, service.run_hotspots(session, start=START, end=END, area=WEST))
    assert all(c.category is None and c.trend_z is None for c in gistar.values())


BAD_RUNS = [
    ({"resolution": 6}, ["resolution"]),
    ({"resolution": 11}, ["resolution"]),
    ({"resolution": "nine"}, ["resolution"]),
    ({"k": 0}, ["k"]),
    ({"k": 11}, ["k"]),
    ({"end": START}, ["end"]),
    ({"start": END, "end": START}, ["end"]),
    ({"start": "yesterday"}, ["start"]),
    ({"category": "E9999"}, ["category"]),
    ({"category": "XYZ"}, ["category"]),
    ({"area": "440699"}, ["area"]),
    ({"area": "abc"}, ["area"]),
    ({"kind": "kriging"}, ["kind"]),
    ({"source": "fax"}, ["source"]),
    ({"step": "month"}, ["step"]),  # a Gi* run has no steps
    ({"kind": "emerging", "step": "year"}, ["step"]),
    ({"kind": "emerging", "start": "2026-05-01"}, ["step"]),  # 2 months: no trend
    ({"resolution": 6, "k": 0, "category": "E9999"}, ["resolution", "k", "category"]),
    ({"start": "2024-01-01", "end": "2024-02-01"}, ["period"]),  # nothing to analyse
]


@pytest.mark.parametrize(("change", "fields"), BAD_RUNS, ids=lambda v: str(v))
def test_bad_parameters_are_refused_and_nothing_is_written(session, world, change, fields):
    before = run_count(session)
    with pytest.raises(InvalidInput) as refused:
        service.run_hotspots(session, **{"start": START, "end": END, "area": WEST, **change})
    assert sorted(e.field for e in refused.value.errors) == sorted(fields)
    assert run_count(session) == before


def test_too_many_cells_is_refused_before_any_work(session, world, monkeypatch):
    monkeypatch.setattr(service, "MAX_CELLS", 100)  # the city holds ~190 cells at res 9
    before = run_count(session)
    with pytest.raises(InvalidInput) as refused:
        service.run_hotspots(session, start=START, end=END, area="440600", resolution=9)
    assert [e.field for e in refused.value.errors] == ["resolution"]
    assert "more than 100" in refused.value.errors[0].message
    assert run_count(session) == before
    assert service.run_hotspots(session, start=START, end=END, area=WEST, resolution=9)


# -- jurisdiction ----------------------------------------------------------------------------


def test_jurisdiction_limits_what_may_be_analysed_and_read(session, world):
    a = world["actors"]
    west = service.run_hotspots(session, start=START, end=END, actor=a["mgr.w"])
    assert service.get_run(session, west)["area"]["code"] == WEST  # their only area
    district = service.run_hotspots(session, start=START, end=END, actor=a["planner.d"])
    admin_city = service.run_hotspots(session, start=START, end=END, actor=a["boss"])
    assert service.get_run(session, admin_city)["area"]["code"] == "440600"

    def refused_area(actor: str, area: str) -> str:
        with pytest.raises(InvalidInput) as refused:
            service.run_hotspots(session, start=START, end=END, area=area, actor=a[actor])
        [error] = refused.value.errors
        assert error.field == "area"
        return error.message

    assert refused_area("mgr.w", EAST) == NO_AREA  # the sibling community
    assert refused_area("mgr.w", DISTRICT) == NO_AREA  # their own district is more than theirs
    # A foreign area is told apart from a missing one by nobody.
    assert refused_area("foreign.m", DISTRICT) == refused_area("foreign.m", "440605999999")

    def listed(actor: str) -> set[int]:
        return {r["id"] for r in service.list_runs(session, a[actor].scope())}

    assert listed("mgr.w") == {west}
    assert listed("mgr.e") == set()
    assert listed("town.m") == {west}
    assert listed("planner.d") == {west, district}
    assert listed("foreign.m") == set()
    assert {west, district, admin_city} <= listed("boss")
    for actor, run_id in (("foreign.m", west), ("mgr.e", west), ("mgr.w", district)):
        scope = a[actor].scope()
        with pytest.raises(NotFound):
            service.get_run(session, run_id, scope)
        with pytest.raises(NotFound):
            service.run_grid_counts(session, run_id, scope)
        with pytest.raises(NotFound):
            service.compare_runs(session, run_id, run_id, scope)
    assert [r["id"] for r in service.list_runs(session, a["boss"].scope())][:3] == [
        admin_city,
        district,
        west,
    ]  # newest first


def test_compare_runs_says_which_cells_turned_hot(session, world):
    before = service.run_hotspots(session, start=START, end="2026-04-01", area=WEST, k=1)
    after = service.run_hotspots(session, start="2026-04-01", end=END, area=WEST, k=1)
    spot = cell_of(*CLUSTER)
    assert stored_cells(session, before)[spot].bin <= 0  # only the background until April
    forward = service.compare_runs(session, before, after)
    changes = {c["cell"]: c["change"] for c in forward["cells"]}
    assert changes[h3int.int_to_str(spot)] == "new hot"
    assert forward["counts"]["new hot"] >= 1
    assert sum(forward["counts"].values()) == len(forward["cells"])
    backward = service.compare_runs(session, after, before)
    assert {c["cell"]: c["change"] for c in backward["cells"]}[h3int.int_to_str(spot)] == (
        "no longer hot"
    )
    coarse = service.run_hotspots(session, start=START, end=END, area=WEST, resolution=8)
    with pytest.raises(InvalidInput):
        service.compare_runs(session, before, coarse)


# -- hexagons --------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [7, 9, 10])
def test_area_cells_are_h3s_polygon_fill(resolution):
    concave = Polygon(
        [(113.0, 23.0), (113.1, 23.0), (113.05, 23.03), (113.1, 23.08), (113.0, 23.08)]
    )
    holed = Polygon(
        [(113.0, 23.0), (113.1, 23.0), (113.1, 23.1), (113.0, 23.1)],
        [[(113.03, 23.03), (113.07, 23.03), (113.07, 23.07), (113.03, 23.07)]],
    )
    parts = shapely.MultiPolygon([f.COMMUNITY_W, shapely.box(113.05, 23.05, 113.06, 23.07)])
    for shape in (f.COMMUNITY_W, concave, holed, parts):
        fill = h3int.h3shape_to_cells(h3.geo_to_h3shape(shape), resolution)
        assert list(service.polygon_cells(shape, resolution)) == sorted(fill)


def test_hexagons_are_lon_lat_and_a_swap_would_show():
    for lat, lon in ((23.01, 113.01), (22.77, 113.27), (-33.87, 151.21), (64.1, -21.9)):
        cell = cell_of(lon, lat)
        ring = service.hexagon_ring(cell)
        assert ring[0] == ring[-1] and len(ring) >= 7
        centre_lat, centre_lon = h3int.cell_to_latlng(cell)
        assert Polygon(ring).contains(Point(centre_lon, centre_lat))
        swapped = Polygon([(y, x) for x, y in ring])
        assert not swapped.contains(Point(centre_lon, centre_lat))
        assert Polygon(ring).contains(Point(lon, lat))  # the point the cell was made from


# -- the HTTP API ----------------------------------------------------------------------------


def client_for(app, token_for, world, name: str):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(world['ids'][name])}"
    return client


def test_api_runs_create_list_read(app, session, world, token_for, monkeypatch):
    planner = client_for(app, token_for, world, "planner.d")
    made = planner.post("/api/v1/hotspots/runs", json={"start": START, "end": END, "k": 1})
    assert made.status_code == 201, made.get_data(as_text=True)
    run = made.get_json()
    assert made.headers["Location"].endswith(f"/api/v1/hotspots/runs/{run['id']}")
    assert run["area"]["code"] == DISTRICT and run["resolution"] == 9
    assert run["summary"]["hot_cells"] >= 1
    second = planner.post(
        "/api/v1/hotspots/runs",
        json={"start": START, "end": END, "area": WEST, "kind": "emerging", "category": "E05"},
    ).get_json()
    listed = planner.get("/api/v1/hotspots/runs").get_json()["runs"]
    assert [r["id"] for r in listed] == [second["id"], run["id"]]

    full = planner.get(f"/api/v1/hotspots/runs/{run['id']}")
    assert full.status_code == 200 and full.mimetype == "application/geo+json"
    body = full.get_json()
    assert body["type"] == "FeatureCollection" and body["run"]["id"] == run["id"]
    assert len(body["features"]) == body["numberReturned"] == run["n_cells"]
    feature = next(ft for ft in body["features"] if ft["properties"]["count"])
    assert set(feature["properties"]) == {"cell", "count", "z", "p", "bin"}
    assert feature["geometry"]["type"] == "Polygon"
    lon, lat = feature["geometry"]["coordinates"][0][0]
    assert 112 < lon < 114 and 22 < lat < 24  # [lon, lat], not h3's (lat, lng)
    centre_lat, centre_lon = h3.cell_to_latlng(feature["id"])
    ring = feature["geometry"]["coordinates"][0]
    assert Polygon(ring).contains(Point(centre_lon, centre_lat))

    significant = planner.get(f"/api/v1/hotspots/runs/{run['id']}?min_bin=1").get_json()
    bins = [ft["properties"]["bin"] for ft in significant["features"]]
    assert bins and all(abs(b) >= 1 for b in bins) and len(bins) < run["n_cells"]
    assert h3.latlng_to_cell(CLUSTER[1], CLUSTER[0], 9) in {
        ft["id"] for ft in significant["features"]
    }
    west_box = ",".join(str(v) for v in f.COMMUNITY_W.bounds)
    boxed = planner.get(f"/api/v1/hotspots/runs/{run['id']}?bbox={west_box}").get_json()
    assert 0 < boxed["numberReturned"] < run["n_cells"]
    for ft in boxed["features"]:
        assert Polygon(ft["geometry"]["coordinates"][0]).intersects(f.COMMUNITY_W)

    with monkeypatch.context() as patched:  # an answer too large is refused, not cut short
        patched.setattr(service, "MAX_FEATURES", 5)
        too_many = planner.get(f"/api/v1/hotspots/runs/{run['id']}")
        assert too_many.status_code == 422 and "bbox" in too_many.get_data(as_text=True)

    emerging = planner.get(f"/api/v1/hotspots/runs/{second['id']}").get_json()
    assert {"trend_z", "trend_p", "category"} <= set(emerging["features"][0]["properties"])

    grids = planner.get(f"/api/v1/hotspots/runs/{run['id']}/grids").get_json()
    assert sum(g["count"] for g in grids["grids"]) == run["n_points"]
    compared = planner.get(f"/api/v1/hotspots/runs/{run['id']}/compare?with={second['id']}")
    assert compared.status_code == 200 and compared.get_json()["a"]["id"] == run["id"]


BAD_BODIES = [
    ({"resolution": 11}, "resolution"),
    ({"resolution": 6}, "resolution"),
    ({"k": 0}, "k"),
    ({"k": 11}, "k"),
    ({"end": START}, "end"),
    ({"category": "E0999"}, "category"),
    ({"area": "440698"}, "area"),
    ({"area": FOREIGN}, "area"),  # outside the planner's district
    ({"colour": "red"}, "colour"),
]


def test_api_bad_runs_are_422_and_write_nothing(app, session, world, token_for, monkeypatch):
    planner = client_for(app, token_for, world, "planner.d")
    before = run_count(session)
    for change, field in BAD_BODIES:
        response = planner.post(
            "/api/v1/hotspots/runs", json={"start": START, "end": END, **change}
        )
        assert response.status_code == 422, (change, response.get_data(as_text=True))
        assert response.mimetype == "application/problem+json"
        assert field in [e["field"] for e in response.get_json()["errors"]], change
    assert planner.post("/api/v1/hotspots/runs", data="[1]").status_code == 422
    monkeypatch.setattr(service, "MAX_CELLS", 50)
    big = planner.post("/api/v1/hotspots/runs", json={"start": START, "end": END})
    assert big.status_code == 422 and big.get_json()["errors"][0]["field"] == "resolution"
    assert run_count(session) == before
    assert planner.get("/api/v1/hotspots/runs/1?min_bin=4").status_code == 422
    assert planner.get("/api/v1/hotspots/runs/1?bbox=1,2,3").status_code == 422


def test_api_foreign_runs_are_not_found(app, session, world, token_for):
    west = service.run_hotspots(session, start=START, end=END, area=WEST)
    session.commit()
    foreign = client_for(app, token_for, world, "foreign.m")
    for url in (
        f"/api/v1/hotspots/runs/{west}",
        f"/api/v1/hotspots/runs/{west}/grids",
        f"/api/v1/hotspots/runs/{west}/compare?with={west}",
        "/api/v1/hotspots/runs/999999",
    ):
        response = foreign.get(url)
        assert response.status_code == 404, url
    assert foreign.get("/api/v1/hotspots/runs").get_json()["runs"] == []
    refused = foreign.post("/api/v1/hotspots/runs", json={"start": START, "end": END, "area": WEST})
    assert refused.status_code == 422
    town = client_for(app, token_for, world, "town.m")
    assert town.get(f"/api/v1/hotspots/runs/{west}").status_code == 200
    inspector = client_for(app, token_for, world, "insp.x")
    assert inspector.get("/api/v1/hotspots/runs").status_code == 403


# -- repeated-problem spots ------------------------------------------------------------------


@pytest.fixture
def repeats(session, world) -> dict[str, Any]:
    """Repeated reports in the last weeks: 6 of C0102 at one lamp post in the west, 4 of
    E0101 at one spot in the east, 2 of C0102 elsewhere (too few), 3 of different
    categories together (not one problem), and void ones at the lamp post."""
    now = session.execute(text("SELECT now()")).scalar_one()
    dx, dy = metres_to_deg(23.01)

    def around(lon: float, lat: float, n: int) -> list[tuple[float, float]]:
        return [(lon + (i % 3 - 1) * 4 * dx, lat + (i // 3 - 1) * 4 * dy) for i in range(n)]

    days = [now - timedelta(days=d) for d in (40, 30, 20, 10, 5, 1)]
    lamp = add_incidents(session, around(113.0151, 23.0151, 6), "C0102", days)
    east = add_incidents(session, around(113.0351, 23.0051, 4), "E0101", days[:4])
    add_incidents(session, around(113.0051, 23.0181, 2), "C0102", days[:2])
    for code, point in zip(("C0101", "C0103", "E0102"), around(113.0081, 23.0021, 3), strict=True):
        add_incidents(session, [point], code, days[:1])
    add_incidents(session, around(113.0151, 23.0151, 3), "C0102", days[:3], status="void")
    session.commit()
    return {"now": now, "lamp": lamp, "east": east}


def test_repeated_spots_are_found_and_ranked(session, world, repeats):
    found = repeated.repeated_spots(session, days=90, now=repeats["now"])
    spots = found["spots"]
    assert [(s["category"], s["count"]) for s in spots] == [("C0102", 6), ("E0101", 4)]
    lamp = spots[0]
    assert lamp["rank"] == 1 and lamp["exact"] is True
    assert lamp["case_ids"] == repeats["lamp"]  # oldest first; the void ones left out
    assert abs(lamp["lon"] - 113.0151) < 1e-4 and abs(lamp["lat"] - 23.0151) < 1e-4
    assert lamp["spread_m"] < 10
    assert lamp["first_seen"] < lamp["last_seen"]
    only = repeated.repeated_spots(session, days=90, now=repeats["now"], min_count=5)
    assert [s["category"] for s in only["spots"]] == ["C0102"]
    recent = repeated.repeated_spots(session, days=15, now=repeats["now"], min_count=2)
    assert [(s["category"], s["count"]) for s in recent["spots"]] == [("C0102", 3)]
    tight = repeated.repeated_spots(session, days=90, now=repeats["now"], radius_m=2)
    assert tight["spots"] == []  # the reports are 4 m apart


def test_repeated_spots_by_scope_and_parameters(session, world, repeats):
    a = world["actors"]
    query = repeated.parse_query(session, a["mgr.w"].scope(), {"category": "C01"})
    assert query["days"] == 90 and query["radius_m"] == 30 and query["min_count"] == 3
    west = repeated.repeated_spots(session, a["mgr.w"].scope(), **query)
    assert [s["case_ids"] for s in west["spots"]] == [repeats["lamp"]]
    assert repeated.repeated_spots(session, a["foreign.m"].scope())["spots"] == []
    planner = repeated.repeated_spots(session, a["planner.d"].scope())["spots"]
    assert [s["count"] for s in planner] == [6, 4]
    for spot in planner:  # a count and the centre of its H3 cell, not the cases or the point
        assert spot["exact"] is False and "case_ids" not in spot and "spread_m" not in spot
        centre = h3.cell_to_latlng(spot["h3_cell"])
        assert (spot["lat"], spot["lon"]) == pytest.approx(centre, abs=1e-6)
        assert h3.get_resolution(spot["h3_cell"]) == 9
    for bad, field in (
        ({"days": "0"}, "days"),
        ({"radius_m": "501"}, "radius_m"),
        ({"min_count": "x"}, "min_count"),
        ({"category": "ZZ"}, "category"),
        ({"area": FOREIGN}, "area"),
        ({"near": "1"}, "near"),
    ):
        with pytest.raises(InvalidInput) as refused:
            repeated.parse_query(session, a["mgr.w"].scope(), bad)
        assert [e.field for e in refused.value.errors] == [field]


def test_repeated_spots_api(app, session, world, repeats, token_for):
    manager = client_for(app, token_for, world, "town.m")
    body = manager.get("/api/v1/hotspots/repeated?radius_m=30&days=90").get_json()
    assert [s["count"] for s in body["spots"]] == [6, 4]
    assert body["spots"][0]["case_ids"] == repeats["lamp"]
    planner = client_for(app, token_for, world, "planner.d")
    raw = planner.get("/api/v1/hotspots/repeated?category=C0102").get_data(as_text=True)
    assert "case_ids" not in raw and '"exact":false' in raw.replace(" ", "")
    assert planner.get("/api/v1/hotspots/repeated?days=-1").status_code == 422


# -- the CLI and the nightly job -------------------------------------------------------------


def test_cli_run_list_show(runner, session, world):
    made = runner.invoke(
        args=["hotspots", "run", "--start", START, "--end", END, "--area", WEST, "--k", "1"]
    )
    assert made.exit_code == 0, made.output
    run_id = int(made.output.split()[1].rstrip(":"))
    assert "hot" in made.output and f"cells of {WEST}" in made.output
    listed = runner.invoke(args=["hotspots", "list"])
    assert listed.exit_code == 0 and listed.output.startswith(f"{run_id}\tgistar")
    shown = runner.invoke(args=["hotspots", "show", str(run_id)])
    assert shown.exit_code == 0 and '"kind": "gistar"' in shown.output
    assert h3.latlng_to_cell(CLUSTER[1], CLUSTER[0], 9) in shown.output
    geo = runner.invoke(args=["hotspots", "show", str(run_id), "--geojson", "--min-bin", "0"])
    assert json.loads(geo.output)["numberReturned"] == service.get_run(session, run_id)["n_cells"]
    before = run_count(session)
    bad = runner.invoke(
        args=["hotspots", "run", "--start", START, "--end", END, "--resolution", "11"]
    )
    assert bad.exit_code == 1 and "resolution" in bad.output
    assert run_count(session) == before
    missing = runner.invoke(args=["hotspots", "show", "999999"])
    assert missing.exit_code == 1 and "no hotspot run" in missing.output


def test_nightly_job_analyses_last_month_once(session, world):
    assert jobs.JOBS["hotspot_run"].cron == {"hour": 2, "minute": 0}
    first = jobs._hotspot_run(session, datetime(2026, 7, 1, 2, 0, tzinfo=TZ))
    assert first["month"] == "2026-06" and len(first["runs"]) == 2, first
    runs = [service.get_run(session, r) for r in first["runs"]]
    assert [(r["kind"], r["start"][:10], r["end"][:10], r["area"]["code"]) for r in runs] == [
        ("gistar", "2026-06-01", "2026-07-01", "440600"),
        ("emerging", "2025-07-01", "2026-07-01", "440600"),
    ]
    assert runs[0]["resolution"] == runs[1]["resolution"] == 9 and runs[1]["step"] == "month"
    before = run_count(session)
    again = jobs._hotspot_run(session, datetime(2026, 7, 15, 2, 0, tzinfo=TZ))
    assert again["runs"] == [] and len(again["skipped"]) == 2
    assert run_count(session) == before  # the same month is never analysed twice
    empty = jobs._hotspot_run(session, datetime(2025, 3, 1, 2, 0, tzinfo=TZ))
    assert empty["runs"] == [] and all("no incidents" in s for s in empty["skipped"])
    assert run_count(session) == before


# -- the demo: the planted hotspots are found, and nothing where nothing was planted -----------

DEMO_START, DEMO_END = "2025-12-01", "2026-12-01"  # the generator's year
RURAL_DENSITY = 0.1  # the generator's urban density below which it plants no town core
FAR_M = 1000.0  # and this far beyond the edge of every planted spot


@pytest.fixture(scope="module")
def demo_db(demo):  # noqa: F811
    """A session on the loaded demo, in a transaction rolled back at the end."""
    engine = create_engine(demo[0], poolclass=pool.NullPool)
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    planted = json.loads((demo[1] / "planted.json").read_text(encoding="utf-8"))
    try:
        yield session, planted
    finally:
        session.close()
        outer.rollback()
        connection.close()
        engine.dispose()


def centres(frame_cells: dict[int, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cells = np.array(sorted(frame_cells), dtype=np.int64)
    latlng = np.array([h3int.cell_to_latlng(int(c)) for c in cells])
    return cells, latlng[:, 1], latlng[:, 0]


def metres(lon0: float, lat0: float, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    dx, dy = metres_to_deg(lat0)
    return np.hypot((lon - lon0) / dx, (lat - lat0) / dy)


def nothing_planted(planted: dict[str, Any], lon: np.ndarray, lat: np.ndarray, category=None):
    """Cells where the generator planted nothing: outside its town cores (the urban density
    it draws the background from is below RURAL_DENSITY; its rural floor is 0.004) and more
    than FAR_M beyond every planted hotspot and repeated spot (of ``category``, if given)."""
    density = load_build().urban_density(lon, lat)
    spots = [
        (s["lon"], s["lat"], s["radius_m"])
        for s in (*planted["hotspots"], *planted["repeated_spots"])
        if category is None or s["category_code"] == category
    ]
    beyond = np.min([metres(x, y, lon, lat) - r for x, y, r in spots], axis=0)
    return (density < RURAL_DENSITY) & (beyond > FAR_M)


def test_demo_gistar_finds_the_planted_hotspots_and_none_elsewhere(demo_db):
    """Gi* over the year at resolution 9 on the whole city (k: the documented default).

    Every planted hotspot's own cell is hot at 95 % or more. Where the generator planted
    nothing (outside its town cores and away from every planted spot: well over half the
    city) no cell is significantly hot. Inside the town cores, cells away from planted spots
    are hot too, and rightly: the background follows the urban density, which is itself a
    clustering the generator draws. Then, per planted category, the planted spot is the
    strongest structure of its category (its cell's z within 10 % of the run's maximum)."""
    session, planted = demo_db
    run_id = service.run_hotspots(session, start=DEMO_START, end=DEMO_END, resolution=9)
    run = service.get_run(session, run_id)
    assert run["n_points"] == 50_000 - count_void(session) and run["area"]["code"] == "440600"
    cells = stored_cells(session, run_id)
    ids, lon, lat = centres(cells)
    bins = np.array([cells[int(c)].bin for c in ids])
    for spot in planted["hotspots"]:
        assert cells[cell_of(spot["lon"], spot["lat"])].bin >= 2, spot["id"]
    quiet = nothing_planted(planted, lon, lat)
    assert quiet.sum() > len(ids) / 2
    assert (bins[quiet] >= 1).sum() == 0
    assert (bins < 0).sum() == 0  # no cold spots: a cell cannot be significantly below ~1

    for spot in planted["hotspots"]:
        code = spot["category_code"]
        run_id = service.run_hotspots(
            session, start=DEMO_START, end=DEMO_END, resolution=9, category=code
        )
        cells = stored_cells(session, run_id)
        ids, lon, lat = centres(cells)
        z = np.array([cells[int(c)].z for c in ids])
        bins = np.array([cells[int(c)].bin for c in ids])
        own = cells[cell_of(spot["lon"], spot["lat"])]
        assert own.bin >= 2 and own.z >= 0.9 * z.max(), (spot["id"], own.z, z.max())
        assert (bins[nothing_planted(planted, lon, lat, code)] >= 1).sum() == 0, spot["id"]


def count_void(session: Session) -> int:
    return session.execute(
        text("SELECT count(*) FROM incident WHERE status = 'void' OR duplicate_of IS NOT NULL")
    ).scalar_one()


def expected_pattern(session: Session, spot: dict[str, Any]) -> set[str]:
    """The emerging category a planted spot must get (docs/hotspots.md), from what was
    planted: steady -> persistent; growing -> intensifying; fading -> diminishing, or
    historical once it has died out (no report in the last month); new -> consecutive hot
    spot (hot in the final steps, never before) - unless the background put a report of the
    category into the spot's neighbourhood (k = 1) in a month before it began: at the city's
    scale one report in an otherwise empty month is significant, and the spot is then, by
    the definitions, sporadic."""
    pattern = spot["pattern"]
    if pattern == "persistent":
        return {"persistent hot spot"}
    if pattern == "growing":
        return {"intensifying hot spot"}
    if pattern == "fading":
        return {
            "historical hot spot" if spot["monthly_counts"][-1] == 0 else "diminishing hot spot"
        }
    assert pattern == "new", pattern
    disk = [int(c) for c in h3int.grid_disk(cell_of(spot["lon"], spot["lat"]), 1)]
    stray = session.execute(
        text(
            "SELECT count(*) FROM incident t JOIN category c ON c.id = t.category_id "
            "WHERE c.code = :code AND t.reported_at >= :start AND t.reported_at < :first "
            "AND t.status <> 'void' AND t.duplicate_of IS NULL AND ST_Intersects(t.geom, "
            "ST_GeomFromGeoJSON(:cells))"
        ),
        {
            "code": spot["category_code"],
            "start": service.parse_moment(DEMO_START),
            "first": service.parse_moment(spot["months"][0] + "-01"),
            "cells": json.dumps(
                {
                    "type": "MultiPolygon",
                    "coordinates": [[service.hexagon_ring(c)] for c in disk],
                }
            ),
        },
    ).scalar_one()
    return {"sporadic hot spot"} if stray else {"consecutive hot spot", "new hot spot"}


def test_demo_emerging_classifies_the_planted_patterns(demo_db):
    """An emerging run by month per planted category (whole city, resolution 9, k = 1, the
    generator's 12 months): each planted spot's cell gets the category of its pattern."""
    session, planted = demo_db
    got, wanted = {}, {}
    for spot in planted["hotspots"]:
        run_id = service.run_hotspots(
            session,
            kind="emerging",
            start=DEMO_START,
            end=DEMO_END,
            step="month",
            resolution=9,
            k=1,
            category=spot["category_code"],
        )
        cell = stored_cells(session, run_id)[cell_of(spot["lon"], spot["lat"])]
        got[spot["id"]] = cell.category
        wanted[spot["id"]] = expected_pattern(session, spot)
    wrong = {k: (got[k], wanted[k]) for k in got if got[k] not in wanted[k]}
    assert not wrong, wrong
    # Each pattern the generator plants is met by its own name at least once.
    assert {"persistent hot spot", "intensifying hot spot", "consecutive hot spot"} <= set(
        got.values()
    )
    assert {"diminishing hot spot", "historical hot spot"} <= set(got.values())


def test_demo_repeated_spots_are_the_planted_ones(demo_db):
    """Every planted repeated spot is found (its category, its centroid within its radius, all
    its reports); every spot with as many reports as the smallest planted one is planted:
    a repeated spot, or the core of a planted hotspot (a pedestrian street with 250 vendor
    reports is a repeated problem too)."""
    session, planted = demo_db
    found = repeated.repeated_spots(
        session, days=366, now=service.parse_moment(DEMO_END), limit=1000
    )["spots"]

    def planted_at(spot: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        return [
            p
            for p in planted[kind]
            if p["category_code"] == spot["category"]
            and metres(p["lon"], p["lat"], np.array([spot["lon"]]), np.array([spot["lat"]]))[0]
            < p["radius_m"]
        ]

    matched = []
    smallest = min(p["count"] for p in planted["repeated_spots"])
    for spot in found:
        repeats = planted_at(spot, "repeated_spots")
        if repeats:
            [planted_spot] = repeats
            assert spot["count"] >= planted_spot["count"], spot
            matched.append((planted_spot["lon"], planted_spot["lat"]))
        elif spot["count"] >= smallest:
            assert planted_at(spot, "hotspots"), spot
    assert sorted(matched) == sorted((p["lon"], p["lat"]) for p in planted["repeated_spots"])

"""The Foshan demo end to end: built, loaded into PostGIS, topologically clean, idempotent.

Loaded once per run into a database of its own; these tests only read it (or reload it).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, make_url, pool, text
from sqlalchemy.orm import Session

from gridops import create_app, migrate
from gridops.auth.service import authenticate
from gridops.cli import main
from gridops.demo import load_demo
from gridops.grids.topology import check_stored
from gridops.incidents.workflow import Event, fold
from tests.conftest import app_config


@pytest.fixture(scope="module")
def demo(database_url, demo_data):
    """(url, data folder, first load summary) of a database holding the loaded demo."""
    name = f"gridops_demo_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        migrate.upgrade(url)
        data = demo_data
        with Session(engine) as session:
            summary = load_demo(session, data, log=lambda _: None)
        yield url, data, summary
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def demo_session(demo):
    engine = create_engine(demo[0], poolclass=pool.NullPool)
    with Session(engine) as session:
        yield session
    engine.dispose()


def test_demo_hierarchy_counts(demo_session):
    levels = dict(
        demo_session.execute(text("SELECT level, count(*) FROM admin_area GROUP BY level")).all()
    )
    assert levels["city"] == 1 and levels["district"] == 5 and levels["town"] == 32
    assert levels["community"] > 500
    chancheng = demo_session.execute(
        text(
            "SELECT count(*), sum(area_m2) FROM unit_grid "
            "WHERE valid_to IS NULL AND code LIKE '440604%'"
        )
    ).one()
    district_m2 = demo_session.execute(
        text("SELECT ST_Area(geom::geography) FROM admin_area WHERE code = '440604'")
    ).scalar()
    assert chancheng[0] > 10_000  # ~154 km² at ~10,000 m² a grid
    assert chancheng[1] == pytest.approx(district_m2, rel=1e-4)


def test_demo_topology_is_clean(demo_session):
    assert check_stored(demo_session) == []


def test_demo_overlays_and_incidents(demo_session):
    counts = demo_session.execute(
        text(
            "SELECT (SELECT count(*) FROM enterprise), (SELECT count(*) FROM service_outlet), "
            "(SELECT count(*) FROM incident), "
            "(SELECT count(*) FROM incident i JOIN admin_area d ON d.code = '440604' "
            " AND ST_Covers(d.geom, i.geom)), (SELECT count(grid_id) FROM incident)"
        )
    ).one()
    enterprises, outlets, incidents, in_chancheng, with_grid = counts
    assert enterprises >= 5000 and outlets >= 300 and incidents == 50_000
    # Every incident in the gridded district has its grid, and only those have one.
    assert with_grid == in_chancheng > 5000
    wrong = demo_session.execute(
        text(
            "SELECT count(*) FROM incident i JOIN unit_grid g ON g.id = i.grid_id "
            "WHERE NOT ST_Covers(g.geom, i.geom)"
        )
    ).scalar()
    assert wrong == 0


def test_demo_reload_changes_nothing(demo):
    url, data, first = demo
    engine = create_engine(url, poolclass=pool.NullPool)
    with Session(engine) as session:
        again = load_demo(session, data, log=lambda _: None)
    engine.dispose()
    assert first["areas"]["inserted"] > 600
    assert again["areas"]["inserted"] == again["areas"]["updated"] == 0
    assert again["grids_created"] == 0
    assert again["enterprises"]["inserted"] == again["enterprises"]["updated"] == 0
    assert again["incidents"] == {"inserted": 0, "located": 0}


def test_demo_grids_check_command_passes(demo, monkeypatch):
    monkeypatch.setenv("GRIDOPS_DATABASE_URL", demo[0])
    result = CliRunner().invoke(main, ["grids", "check"])
    assert result.exit_code == 0, result.output
    assert "0 problem(s)" in result.output


def test_demo_users_then_the_api_as_each_of_them(demo, monkeypatch):
    monkeypatch.setenv("GRIDOPS_DATABASE_URL", demo[0])
    first = CliRunner().invoke(main, ["demo", "users"])
    again = CliRunner().invoke(main, ["demo", "users"])  # idempotent
    assert first.exit_code == again.exit_code == 0, first.output + again.output
    assert first.output == again.output and "demo.inspector" in first.output
    client = create_app(app_config(demo[0])).test_client()
    tokens = {}
    engine = create_engine(demo[0], poolclass=pool.NullPool)
    for line in first.output.splitlines()[1:]:
        username, password = line.split()[:2]
        with Session(engine) as db:  # the printed password is the one that works
            assert authenticate(db, username, password, "127.0.0.1") > 0
            db.commit()
        token = CliRunner().invoke(main, ["users", "token", username, "test"]).output.strip()
        tokens[username] = {"Authorization": f"Bearer {token}"}
    # The inspector sees only the grids of the demo community; the planner no reporter data.
    grids = client.get("/api/v1/grids?limit=1000", headers=tokens["demo.inspector"]).get_json()
    assert grids["features"] and all(f["id"].startswith("440604012001") for f in grids["features"])
    nanhai = client.get("/api/v1/areas/440605", headers=tokens["demo.inspector"])
    assert nanhai.status_code == 404
    incidents = client.get("/api/v1/incidents?limit=50", headers=tokens["demo.planner"]).get_json()
    assert incidents["features"] and all(
        f["geometry"] is None and "reporter_phone" not in f["properties"]
        for f in incidents["features"]
    )
    admin = client.get("/api/v1/admin/users", headers=tokens["demo.admin"]).get_json()
    assert {u["username"] for u in admin["users"]} >= {"demo.admin", "demo.planner"}


def test_demo_through_the_api(demo, monkeypatch):
    monkeypatch.setenv("GRIDOPS_DATABASE_URL", demo[0])
    CliRunner().invoke(main, ["demo", "users"])
    token = CliRunner().invoke(main, ["users", "token", "demo.admin", "api"]).output.strip()
    client = create_app(app_config(demo[0])).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    districts = client.get("/collections/districts/items").get_json()
    assert {f["properties"]["name"] for f in districts["features"]} == {
        "禅城区",
        "南海区",
        "顺德区",
        "三水区",
        "高明区",
    }
    where = client.get("/api/v1/locate?lon=113.1095&lat=23.0326").get_json()  # 祖庙
    assert where["district"]["name"] == "禅城区" and where["grid"]["code"].startswith("440604")
    assert client.get("/api/v1/locate?lon=114.3&lat=22.6").status_code == 422  # Shenzhen


def test_demo_history_folds_and_looks_like_a_year_of_work(demo, monkeypatch):
    monkeypatch.setenv("GRIDOPS_DATABASE_URL", demo[0])
    assert CliRunner().invoke(main, ["demo", "users"]).exit_code == 0
    played = CliRunner().invoke(main, ["demo", "history"])
    assert played.exit_code == 0, played.output
    engine = create_engine(demo[0], poolclass=pool.NullPool)
    with Session(engine) as db:
        events = db.execute(
            text(
                "SELECT incident_id, action, from_state, to_state, actor_id, note "
                "FROM case_event ORDER BY incident_id, version"
            )
        ).all()
        cases = dict(db.execute(text("SELECT id, status FROM incident")).all())
        figures = db.execute(
            text(
                "SELECT count(*) FILTER (WHERE status = 'closed') AS closed, "
                "count(*) FILTER (WHERE status = 'closed' AND (deadline_at IS NULL "
                "OR closed_at IS NULL OR department_id IS NULL)) AS incomplete, "
                "count(*) FILTER (WHERE status NOT IN ('closed', 'void')) AS open, "
                "count(*) FILTER (WHERE received_at <> reported_at) AS unreceived, "
                "avg((closed_at > deadline_at)::int) FILTER (WHERE status = 'closed') AS late "
                "FROM incident"
            )
        ).one()
    again = CliRunner().invoke(main, ["demo", "history"])  # idempotent: nothing played twice
    with Session(engine) as db:
        assert db.execute(text("SELECT count(*) FROM case_event")).scalar() == len(events)
    engine.dispose()
    assert again.exit_code == 0
    by_case: dict[int, list] = {}
    for e in events:
        by_case.setdefault(e.incident_id, []).append(Event(*e[1:]))
    # Every stored history is one the workflow allows, and folds to the case's state.
    assert all(fold(log).state == cases[case] for case, log in by_case.items())
    assert figures.closed > 40_000 and figures.incomplete == 0 and figures.unreceived == 0
    assert figures.open > 100  # recent reports are still being worked on
    assert 0.05 < figures.late < 0.3  # most, not all, closed in time


def test_demo_roster_gives_every_unit_grid_one_primary_inspector(demo, monkeypatch):
    monkeypatch.setenv("GRIDOPS_DATABASE_URL", demo[0])
    assert CliRunner().invoke(main, ["demo", "users"]).exit_code == 0
    for _ in range(2):  # idempotent
        result = CliRunner().invoke(main, ["demo", "roster"])
        assert result.exit_code == 0, result.output
    engine = create_engine(demo[0], poolclass=pool.NullPool)
    with Session(engine) as db:
        grids = db.execute(
            text(
                "SELECT g.code, count(*) FILTER (WHERE gi.is_primary) AS primaries, "
                "count(gi.user_id) AS inspectors FROM unit_grid g LEFT JOIN grid_inspector gi "
                "ON gi.grid_code = g.code WHERE g.valid_to IS NULL GROUP BY g.code"
            )
        ).all()
        own = db.execute(
            text(
                "SELECT count(*) FILTER (WHERE gi.is_primary), max(cardinality(r.grid_codes)) "
                "FROM grid_inspector gi JOIN app_user u ON u.id = gi.user_id "
                "JOIN role_assignment r ON r.user_id = u.id AND r.role = 'inspector' "
                "WHERE u.username = 'demo.inspector'"
            )
        ).one()
    engine.dispose()
    assert grids and all(g.primaries == 1 and g.inspectors >= 2 for g in grids)
    assert own[0] == own[1] > 0  # the demo inspector keeps the grids it signs in with


def test_demo_hotspots_equal_esda_and_pymannkendall(demo):
    """Gi* and the trend on the demo's own incidents agree with PySAL esda (binary weights,
    star) and pymannkendall to 1e-9, as on the hand-made fixtures."""
    import pandas as pd
    import pymannkendall

    from gridops.hotspots import analyse_points
    from tests.test_hotspots_stats import esda_gi

    points = pd.read_csv(demo[1] / "incidents.csv", parse_dates=["reported_at"])
    chancheng = points[(points.lon > 113.0) & (points.lon < 113.2)]  # a district's worth
    frame = analyse_points(
        chancheng.lon.to_numpy(),
        chancheng.lat.to_numpy(),
        resolution=9,
        k=2,
        times=chancheng.reported_at.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None),
        step="month",
    )
    cells = frame.cell.to_numpy()
    gi = esda_gi(frame["count"].to_numpy(), cells, 2, with_self=False)
    assert np.allclose(frame.z, gi.Zs, rtol=0, atol=1e-9)
    assert np.allclose(frame.p, 2 * gi.p_norm, rtol=0, atol=1e-9)
    assert (frame.bin > 0).sum() > 10  # the planted clusters are there to find

    # The trend of each cell's monthly z, against pymannkendall on the busiest cells, with
    # the per-month z from esda itself.
    from gridops.hotspots import points_to_cells, time_steps

    monthly = frame.attrs["steps"]
    assert len(monthly) == 12
    local = chancheng.reported_at.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
    step_of, _ = time_steps(local, "month")
    point_cells = points_to_cells(chancheng.lon.to_numpy(), chancheng.lat.to_numpy(), 9)
    cube = np.zeros((cells.size, len(monthly)))
    np.add.at(cube, (np.searchsorted(cells, point_cells), step_of), 1)
    z_steps = np.column_stack(
        [esda_gi(cube[:, s], cells, 2, with_self=False).Zs for s in range(len(monthly))]
    )
    busiest = frame.nlargest(25, "count")
    for index in busiest.index:
        expected = pymannkendall.original_test(z_steps[index])
        assert abs(frame.trend_z[index] - expected.z) < 1e-9
        assert abs(frame.trend_p[index] - expected.p) < 1e-9

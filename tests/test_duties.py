"""Responsibility data: inspectors per unit grid (API, bulk CSV), absences (and how they move
routing to a stand-in), inspector profiles, components (import and map), department kinds.
Bad input gets a 422 naming the field and writes nothing; managers act in their own area."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from shapely.geometry import Point
from sqlalchemy import text

from gridops.dispatch import duties
from gridops.errors import InvalidInput, NotFound
from gridops.importing import ImportRejected, run_import
from gridops.incidents.intake import intake
from gridops.incidents.workcal import local_today
from tests import factories as f
from tests.test_cases import build_world
from tests.test_intake import report

WEST_GRID = "440604001001002"  # holds (113.0075, 23.01)
EAST_GRID = "440604001002001"


@pytest.fixture
def world(session, tmp_path, app, make_user, token_for, monkeypatch):
    from argon2 import PasswordHasher

    from gridops.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    base = build_world(session, tmp_path)
    users = {name: actor.user_id for name, actor in base["actors"].items()}
    east_grids = [f"440604001002{i:03d}" for i in range(1, 5)]
    users["insp.e"], _ = make_user("inspector", "insp.e", grid_codes=east_grids)
    users["admin"], _ = make_user("admin", "root")
    clients = {}
    for name, user_id in users.items():
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(user_id)}"
        clients[name] = client
    return {**base, "users": users, "clients": clients}


def duty_rows(session) -> list[tuple]:
    return [
        tuple(r)
        for r in session.execute(
            text(
                "SELECT gi.grid_code, u.username, gi.is_primary FROM grid_inspector gi "
                "JOIN app_user u ON u.id = gi.user_id ORDER BY 1, 3 DESC, 2"
            )
        )
    ]


def fields(response) -> set[str]:
    return {e["field"] for e in response.get_json()["errors"]}


# -- inspectors per unit grid ------------------------------------------------------------


def test_grid_inspectors_are_replaced_at_once(session, world):
    admin, u = world["clients"]["admin"], world["users"]
    url = f"/api/v1/admin/grids/{WEST_GRID}/inspectors"
    empty = admin.get(url)
    assert empty.status_code == 200
    assert empty.get_json() == {"grid_code": WEST_GRID, "primary": None, "stand_ins": []}
    first = admin.put(url, json={"primary": u["insp.w"], "stand_ins": [u["insp.w2"]]})
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["primary"]["username"] == "insp.w"
    assert [p["username"] for p in first.get_json()["stand_ins"]] == ["insp.w2"]
    # The second replaces the first as a whole: the roles swap, nothing is left over.
    swapped = admin.put(url, json={"primary": u["insp.w2"], "stand_ins": [u["insp.w"]]})
    assert swapped.status_code == 200
    assert duty_rows(session) == [(WEST_GRID, "insp.w2", True), (WEST_GRID, "insp.w", False)]
    assert admin.get(url).get_json() == swapped.get_json()
    only_stand_in = admin.put(url, json={"primary": None, "stand_ins": [u["insp.w"]]})
    assert only_stand_in.status_code == 200
    assert duty_rows(session) == [(WEST_GRID, "insp.w", False)]


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        ({"primary": "insp.e"}, {"primary"}),  # the east inspector: not of this grid
        ({"primary": "insp.w", "stand_ins": ["insp.w"]}, {"stand_ins[0]"}),  # twice
        ({"primary": "insp.w", "stand_ins": ["mgr.w"]}, {"stand_ins[0]"}),  # not an inspector
        ({"primary": "insp.w", "stand_ins": [999999]}, {"stand_ins[0]"}),  # nobody
        ({"stand_ins": ["insp.w2"]}, {"primary"}),  # primary is required (null for none)
        ({"primary": "insp.w", "stand_ins": "insp.w2"}, {"stand_ins"}),
        ({"primary": True}, {"primary"}),
        ({"primary": "insp.w", "backup": ["insp.w2"]}, {"backup"}),
    ],
)
def test_bad_grid_inspectors_are_refused_and_nothing_changes(session, world, body, bad):
    admin, u = world["clients"]["admin"], world["users"]
    url = f"/api/v1/admin/grids/{WEST_GRID}/inspectors"
    assert admin.put(url, json={"primary": u["insp.w2"]}).status_code == 200
    before = duty_rows(session)

    def resolve(value):
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return u.get(value, value) if isinstance(value, str) else value

    response = admin.put(url, json={k: resolve(v) for k, v in body.items()})
    assert response.status_code == 422, response.get_json()
    assert fields(response) == bad
    assert duty_rows(session) == before


def test_managers_manage_the_grids_of_their_area_only(session, world):
    u, clients = world["users"], world["clients"]
    west = f"/api/v1/admin/grids/{WEST_GRID}/inspectors"
    east = f"/api/v1/admin/grids/{EAST_GRID}/inspectors"
    assert clients["mgr.w"].put(west, json={"primary": u["insp.w"]}).status_code == 200
    assert clients["mgr.w"].get(east).status_code == 404
    assert clients["mgr.w"].put(east, json={"primary": u["insp.e"]}).status_code == 404
    assert clients["mgr.e"].put(east, json={"primary": u["insp.e"]}).status_code == 200
    for who in ("insp.w", "handler"):
        assert clients[who].get(west).status_code == 403
    assert clients["admin"].get("/api/v1/admin/grids/440604001001999/inspectors").status_code == 404
    assert clients["admin"].get("/api/v1/admin/grids/not-a-grid/inspectors").status_code == 404
    assert duty_rows(session) == [(WEST_GRID, "insp.w", True), (EAST_GRID, "insp.e", True)]


def test_inspectors_from_a_csv_file(runner, session, world, tmp_path):
    good = tmp_path / "duties.csv"
    good.write_text(
        "grid_code,username,primary\n"
        f"{WEST_GRID},insp.w,yes\n"
        f"{WEST_GRID},insp.w2,\n"
        f"{EAST_GRID},insp.e,1\n",
        encoding="utf-8",
    )
    done = runner.invoke(args=["duties", "inspectors", str(good)])
    assert done.exit_code == 0, done.output
    assert "2 unit grids: 3 inspectors" in done.output
    expected = [
        (WEST_GRID, "insp.w", True),
        (WEST_GRID, "insp.w2", False),
        (EAST_GRID, "insp.e", True),
    ]
    assert duty_rows(session) == sorted(expected, key=lambda r: (r[0], not r[2], r[1]))

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "grid_code,username,primary\n"
        f"{WEST_GRID},insp.w2,yes\n"  # fine alone, but the file fails: nothing changes
        f"{WEST_GRID},insp.w,yes\n"  # a second primary
        f"{EAST_GRID},insp.w,no\n"  # not an inspector of the east grid
        "440604001001999,insp.w,no\n"  # no such grid
        f"{WEST_GRID},nobody,no\n"  # no such user
        f"{WEST_GRID},insp.w2,maybe\n",  # not yes/no
        encoding="utf-8",
    )
    refused = runner.invoke(args=["duties", "inspectors", str(bad)])
    assert refused.exit_code == 1
    for line in ("line 3", "line 4", "line 5", "line 6", "line 7"):
        assert line in refused.output, refused.output
    assert "a primary inspector already" in refused.output and "'maybe'" in refused.output
    assert "line 2:" not in refused.output
    assert duty_rows(session) == sorted(expected, key=lambda r: (r[0], not r[2], r[1]))

    header = tmp_path / "header.csv"
    header.write_text("grid,user\n1,2\n", encoding="utf-8")
    wrong = runner.invoke(args=["duties", "inspectors", str(header)])
    assert wrong.exit_code == 1 and "header" in wrong.output


# -- absences ------------------------------------------------------------------------------


def test_an_absence_sends_reports_to_the_stand_in(session, world):
    u, admin = world["users"], world["clients"]["admin"]
    put = admin.put(
        f"/api/v1/admin/grids/{WEST_GRID}/inspectors",
        json={"primary": u["insp.w"], "stand_ins": [u["insp.w2"]]},
    )
    assert put.status_code == 200
    mgr = world["actors"]["mgr.w"]

    def assignee_of_a_new_report() -> int:
        made, _ = intake(session, mgr, report(lon=113.0075))
        return session.execute(
            text("SELECT assignee_id FROM incident WHERE id = :id"), {"id": made["id"]}
        ).scalar_one()

    assert assignee_of_a_new_report() == u["insp.w"]
    today = local_today()
    absent = admin.post(
        "/api/v1/admin/absences",
        json={
            "user": u["insp.w"],
            "starts_on": today.isoformat(),
            "ends_on": (today + timedelta(days=2)).isoformat(),
            "note": "年假",
        },
    )
    assert absent.status_code == 201, absent.get_json()
    record = absent.get_json()
    assert record["user"]["username"] == "insp.w" and record["note"] == "年假"
    assert assignee_of_a_new_report() == u["insp.w2"]
    listed = admin.get(f"/api/v1/admin/absences?user={u['insp.w']}").get_json()["absences"]
    assert [a["id"] for a in listed] == [record["id"]]
    assert admin.delete(f"/api/v1/admin/absences/{record['id']}").status_code == 204
    assert admin.delete(f"/api/v1/admin/absences/{record['id']}").status_code == 404
    assert assignee_of_a_new_report() == u["insp.w"]


def test_bad_absences_are_refused(session, world):
    u, clients = world["users"], world["clients"]
    today = local_today().isoformat()
    later = (local_today() + timedelta(days=3)).isoformat()
    ok = {"user": u["insp.w"], "starts_on": today, "ends_on": later}
    for body, bad in (
        ({**ok, "ends_on": "2020-01-01"}, {"ends_on"}),
        ({**ok, "starts_on": "2026-02-30"}, {"starts_on"}),
        ({**ok, "user": 999999}, {"user"}),
        ({**ok, "user": "insp.w"}, {"user"}),
        ({**ok, "note": 5, "why": "x"}, {"note", "why"}),
        ({"user": u["insp.w"]}, {"starts_on", "ends_on"}),
    ):
        response = clients["admin"].post("/api/v1/admin/absences", json=body)
        assert response.status_code == 422, (body, response.get_json())
        assert fields(response) == bad, body
    assert session.execute(text("SELECT count(*) FROM staff_absence")).scalar() == 0
    assert clients["admin"].post("/api/v1/admin/absences", json=ok).status_code == 201
    overlap = clients["admin"].post("/api/v1/admin/absences", json={**ok, "ends_on": today})
    assert overlap.status_code == 409 and "absent" in overlap.get_json()["detail"]
    # Managers: the inspectors of their area only (the east manager does not see insp.w).
    east = clients["mgr.e"].post(
        "/api/v1/admin/absences",
        json={**ok, "starts_on": "2099-01-01", "ends_on": "2099-01-02"},
    )
    assert east.status_code == 422 and fields(east) == {"user"}
    [stored] = clients["admin"].get("/api/v1/admin/absences").get_json()["absences"]
    assert clients["mgr.e"].get("/api/v1/admin/absences").get_json()["absences"] == []
    assert clients["mgr.e"].delete(f"/api/v1/admin/absences/{stored['id']}").status_code == 404
    assert clients["mgr.w"].get("/api/v1/admin/absences").get_json()["absences"] == [stored]
    assert clients["insp.w"].get("/api/v1/admin/absences").status_code == 403
    assert session.execute(text("SELECT count(*) FROM staff_absence")).scalar() == 1


def test_absence_commands(runner, session, world):
    made = runner.invoke(
        args=["duties", "absent", "insp.w", "2099-03-01", "2099-03-05", "--note", "培训"]
    )
    assert made.exit_code == 0, made.output
    assert "insp.w absent 2099-03-01 – 2099-03-05" in made.output
    listed = runner.invoke(args=["duties", "absences", "--user", "insp.w"])
    assert "2099-03-01" in listed.output and "培训" in listed.output
    backwards = runner.invoke(args=["duties", "absent", "insp.w", "2099-04-05", "2099-04-01"])
    assert backwards.exit_code == 1 and "ends_on" in backwards.output
    nobody = runner.invoke(args=["duties", "absent", "nobody", "2099-04-01", "2099-04-05"])
    assert nobody.exit_code == 1 and "no user" in nobody.output
    absence = session.execute(text("SELECT id FROM staff_absence")).scalar_one()
    back = runner.invoke(args=["duties", "present", str(absence)])
    assert back.exit_code == 0, back.output
    assert session.execute(text("SELECT count(*) FROM staff_absence")).scalar() == 0


# -- inspector profiles --------------------------------------------------------------------


def test_inspector_profiles(session, world):
    u, admin = world["users"], world["clients"]["admin"]
    url = f"/api/v1/admin/inspectors/{u['insp.w']}/profile"
    default = admin.get(url).get_json()
    assert (default["tasks_per_day"], default["travel_mode"], default["stored"]) == (
        12,
        "walk",
        False,
    )
    made = admin.put(url, json={"tasks_per_day": 8, "home": {"lon": 113.01, "lat": 23.01}})
    assert made.status_code == 200, made.get_json()
    body = made.get_json()
    assert (body["tasks_per_day"], body["travel_mode"], body["home"]) == (
        8, "walk", {"lon": 113.01, "lat": 23.01},
    )  # fmt: skip
    changed = admin.put(url, json={"travel_mode": "bike"}).get_json()  # the rest is kept
    assert (changed["tasks_per_day"], changed["travel_mode"]) == (8, "bike")
    assert changed["home"] == {"lon": 113.01, "lat": 23.01}
    for bad_body, bad in (
        ({"tasks_per_day": 500}, {"tasks_per_day"}),
        ({"tasks_per_day": 3.5, "travel_mode": "fly"}, {"tasks_per_day", "travel_mode"}),
        ({"home": {"lon": 23.01, "lat": 113.01}}, {"home.lat"}),  # swapped
        ({"home": [113.0, 23.0]}, {"home"}),
        ({"speed": 3}, {"speed"}),
        ({}, {"body"}),
    ):
        response = admin.put(url, json=bad_body)
        assert response.status_code == 422 and fields(response) == bad, bad_body
    assert admin.get(url).get_json() == {**changed, "stored": True}
    assert admin.put(url, json={"home": None}).get_json()["home"] is None
    # Not an inspector, or not one of the manager's area: not found.
    assert admin.get(f"/api/v1/admin/inspectors/{u['mgr.w']}/profile").status_code == 404
    assert world["clients"]["mgr.e"].put(url, json={"tasks_per_day": 1}).status_code == 404
    assert world["clients"]["mgr.w"].put(url, json={"tasks_per_day": 10}).status_code == 200
    stored = session.execute(
        text("SELECT tasks_per_day, travel_mode FROM inspector_profile WHERE user_id = :u"),
        {"u": u["insp.w"]},
    ).one()
    assert tuple(stored) == (10, "bike")


def test_service_functions_work_without_flask(session, world):
    u = world["users"]
    with pytest.raises(NotFound):
        duties.grid_inspectors(session, duties.DutyScope(areas=("440604001002",)), WEST_GRID)
    before, after = duties.replace_grid_inspectors(
        session, duties.EVERYWHERE, WEST_GRID, {"primary": u["insp.w"]}
    )
    assert before["primary"] is None and after["primary"]["id"] == u["insp.w"]
    with pytest.raises(InvalidInput):
        duties.add_absence(session, duties.DutyScope(areas=("440604001002",)), {})
    scope = duties.duty_scope(world["actors"]["mgr.w"])
    assert scope == duties.DutyScope(areas=("440604001001",))


# -- components ----------------------------------------------------------------------------


def component_rows():
    return [
        {"code": "4406040101000001", "category": "C0101", "name": "上水井盖 1",
         "owner": "CG", "maintainer": "SW", "geometry": Point(113.005, 23.01)},
        {"code": "4406040102000001", "category": None, "name": "污水井盖 1",
         "owner": None, "maintainer": "SW", "geometry": Point(113.035, 23.01)},
        {"code": "4406040101000002", "category": "C0101", "name": "上水井盖 2",
         "owner": "CG", "maintainer": None, "geometry": Point(113.006, 23.01)},
    ]  # fmt: skip


@pytest.fixture
def water(session, world):
    session.execute(
        text("INSERT INTO department (code, name, area_code) VALUES ('SW', '水务', '440604')")
    )
    session.commit()


def test_components_import_and_map(session, world, water, tmp_path):
    path = f.write(tmp_path / "components.geojson", component_rows(), driver="GeoJSON")
    done = run_import(session, "components", path)
    assert (done.inserted, done.updated, done.rejects) == (3, 0, [])
    stored = session.execute(
        text(
            "SELECT k.code, c.code, k.name, od.code, md.code FROM component k "
            "JOIN category c ON c.id = k.category_id "
            "LEFT JOIN department od ON od.id = k.owner_department_id "
            "LEFT JOIN department md ON md.id = k.maintainer_department_id ORDER BY k.code"
        )
    ).all()
    assert [tuple(r) for r in stored] == [
        ("4406040101000001", "C0101", "上水井盖 1", "CG", "SW"),
        ("4406040101000002", "C0101", "上水井盖 2", "CG", None),
        ("4406040102000001", "C0102", "污水井盖 1", None, "SW"),  # class from the code
    ]
    again = run_import(session, "components", path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)

    # The map: components in the reader's jurisdiction, with owner and maintainer.
    west = world["clients"]["mgr.w"].get("/api/v1/components?bbox=113.0,23.0,113.04,23.02")
    assert west.status_code == 200
    assert west.mimetype == "application/geo+json"
    features = west.get_json()["features"]
    assert [ft["properties"]["code"] for ft in features] == [
        "4406040101000001",
        "4406040101000002",
    ]
    first = features[0]
    assert first["geometry"]["coordinates"] == [113.005, 23.01]
    assert (first["properties"]["owner"], first["properties"]["maintainer"]) == ("CG", "SW")
    boxed = world["clients"]["admin"].get("/api/v1/components?bbox=113.03,23.0,113.04,23.02")
    assert [ft["properties"]["code"] for ft in boxed.get_json()["features"]] == ["4406040102000001"]
    filtered = world["clients"]["admin"].get("/api/v1/components?category=C0102")
    assert len(filtered.get_json()["features"]) == 1
    assert world["clients"]["admin"].get("/api/v1/components?bbox=1,2").status_code == 422


def test_bad_component_rows_are_rejected_and_nothing_is_written(session, world, water, tmp_path):
    rows = [
        *component_rows(),
        {"code": "44060401010001", "category": "C0101", "name": "short", "owner": None,
         "maintainer": None, "geometry": Point(113.01, 23.01)},  # 14 digits
        {"code": "4406040101000003", "category": "C0102", "name": "wrong class",
         "owner": None, "maintainer": None, "geometry": Point(113.01, 23.01)},
        {"code": "4406040199000001", "category": None, "name": "no such class",
         "owner": None, "maintainer": None, "geometry": Point(113.01, 23.01)},
        {"code": "4406040101000004", "category": "C0101", "name": "unknown owner",
         "owner": "XX", "maintainer": "YY", "geometry": Point(113.01, 23.01)},
        {"code": "4406040101000005", "category": "C0101", "name": "outside",
         "owner": None, "maintainer": None, "geometry": Point(114.5, 23.5)},
        {"code": "4406050101000001", "category": "C0101", "name": "wrong county",
         "owner": None, "maintainer": None, "geometry": Point(113.01, 23.01)},
        {"code": "4406040101000001", "category": "C0101", "name": "duplicate",
         "owner": None, "maintainer": None, "geometry": Point(113.01, 23.01)},
        {"code": "4406060101000001", "category": "E0101", "name": "an event class",
         "owner": None, "maintainer": None, "geometry": Point(113.01, 23.01)},
    ]  # fmt: skip
    path = f.write(tmp_path / "bad.gpkg", rows)
    with pytest.raises(ImportRejected) as rejected:
        run_import(session, "components", path)
    reasons: dict[int, str] = {}
    for r in rejected.value.report.rejects:
        reasons[r.row] = f"{reasons.get(r.row, '')}|{r.reason}"
    assert set(reasons) == {4, 5, 6, 7, 8, 9, 10, 11}, reasons
    assert "not 16 digits" in reasons[4]
    assert "names class C0101 (digits 7-10), not its category C0102" in reasons[5]
    assert "no component class C0199" in reasons[6]
    assert (
        "no department XX (owner)" in reasons[7] and "no department YY (maintainer)" in reasons[7]
    )
    assert "outside the jurisdiction" in reasons[8]
    assert "county 440605 but the point lies in district 440604" in reasons[9]
    assert "duplicate of row 1" in reasons[10]
    assert "names class C0101 (digits 7-10), not its category E0101" in reasons[11]
    assert session.execute(text("SELECT count(*) FROM component")).scalar() == 0


def test_components_from_csv_through_the_command(runner, session, world, water, tmp_path):
    good = tmp_path / "components.csv"
    good.write_text(
        "code,category,name,owner,maintainer,lon,lat\n"
        "4406040101000001,C0101,上水井盖,CG,SW,113.005,23.01\n"
        "4406040101000002,,上水井盖 2,,SW,113.006,23.01\n",
        encoding="utf-8",
    )
    done = runner.invoke(args=["import", "components", str(good)])
    assert done.exit_code == 0, done.output
    assert "inserted 2" in done.output
    assert session.execute(text("SELECT count(*) FROM component")).scalar() == 2
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "code,category,name,owner,maintainer,lon,lat\n"
        "4406040101000009,C0101,x,CG,,113.005,23.01\n"
        "4406040101000010,C0101,no point,CG,,,\n",
        encoding="utf-8",
    )
    refused = runner.invoke(
        args=["import", "components", str(bad), "--rejects-csv", str(tmp_path / "r.csv")]
    )
    assert refused.exit_code == 1 and "no geometry" in refused.output
    assert session.execute(text("SELECT count(*) FROM component")).scalar() == 2


# -- departments: professional or territorial ------------------------------------------------


def test_department_kind(session, world, runner):
    admin = world["clients"]["admin"]
    made = admin.post(
        "/api/v1/admin/departments",
        json={
            "code": "JD-001",
            "name": "祖庙街道办",
            "area_code": "440604001",
            "kind": "territorial",
        },
    )
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["kind"] == "territorial"
    bad = admin.post(
        "/api/v1/admin/departments",
        json={"code": "JD-002", "name": "x", "area_code": "440604001", "kind": "local"},
    )
    assert bad.status_code == 422 and fields(bad) == {"kind"}
    kinds = {
        d["code"]: d["kind"]
        for d in admin.get("/api/v1/admin/departments").get_json()["departments"]
    }
    assert kinds == {"CG": "professional", "JD-001": "territorial"}
    cli = runner.invoke(
        args=["departments", "add", "SQ-001", "西社区居委会", "--area", "440604001001",
              "--kind", "territorial"]
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    listed = runner.invoke(args=["departments", "list"])
    assert "territorial" in listed.output
    # A case nobody else is responsible for now goes to the smallest territorial unit.
    from gridops.dispatch.routing import route_department

    session.execute(text("UPDATE category SET department_id = NULL"))
    department, reason = route_department(session, world["west"])
    code = session.execute(
        text("SELECT code FROM department WHERE id = :id"), {"id": department}
    ).scalar()
    assert code == "SQ-001" and "属地" in reason


def test_audit_of_duties_changes(world, engine):
    admin, u = world["clients"]["admin"], world["users"]
    response = admin.put(
        f"/api/v1/admin/grids/{WEST_GRID}/inspectors", json={"primary": u["insp.w"]}
    )
    assert response.status_code == 200
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT detail FROM audit_event WHERE event = 'grid_inspectors_replaced' "
                "AND request_id = :r"
            ),
            {"r": response.headers["X-Request-ID"]},
        ).one()
    detail = row.detail if isinstance(row.detail, dict) else json.loads(row.detail)
    assert detail["grid_code"] == WEST_GRID
    assert detail["after"]["primary"]["username"] == "insp.w"

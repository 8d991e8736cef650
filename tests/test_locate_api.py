"""Point location (single and batch agree, borders, outside) and the read APIs."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from gridops.grids.locate import NO_GRID, GridIndex, OutsideJurisdiction, assign_grids, locate
from gridops.grids.topology import check_stored
from gridops.importing import run_import
from tests import factories as f


@pytest.fixture
def hierarchy(session, tmp_path):
    run_import(session, "areas", f.write(tmp_path / "a.gpkg", f.area_rows()))
    rows = f.strip_grid(f.COMMUNITY_W, "440604001001") + f.strip_grid(f.COMMUNITY_E, "440604001002")
    # Grids are checked per community; import each community's set.
    run_import(session, "grids", f.write(tmp_path / "g.gpkg", rows))
    return session


def test_locate_gives_grid_and_its_ancestors(hierarchy):
    where = locate(hierarchy, 113.001, 23.01)
    assert where.grid_code == "440604001001001"
    assert where.areas["community"]["code"] == "440604001001"
    assert where.areas["town"]["name"] == "祖庙街道"
    assert where.areas["district"]["code"] == "440604"
    assert where.areas["city"]["code"] == "440600"


def test_point_on_a_border_goes_to_the_smaller_code_in_both_paths(hierarchy):
    # x = 113.02 is the border of the two communities (and of grids ...004 and ...001).
    assert locate(hierarchy, 113.02, 23.01).grid_code == "440604001001004"
    assert locate(hierarchy, 113.02, 23.01).areas["community"]["code"] == "440604001001"
    index = GridIndex.load(hierarchy)
    [grid_id] = index.locate(np.array([113.02]), np.array([23.01]))
    assert grid_id == locate(hierarchy, 113.02, 23.01).grid_id


def test_point_in_an_area_without_grids_has_no_grid(hierarchy):
    where = locate(hierarchy, 113.06, 23.01)  # district 440605 has no towns or grids
    assert where.grid_code is None and where.areas["district"]["code"] == "440605"


def test_point_outside_the_city_is_outside_the_jurisdiction(hierarchy):
    with pytest.raises(OutsideJurisdiction):
        locate(hierarchy, 113.5, 23.01)
    index = GridIndex.load(hierarchy)
    assert index.locate(np.array([113.5]), np.array([23.01]))[0] == NO_GRID


def test_batch_and_single_agree_on_random_points(hierarchy):
    rng = np.random.default_rng(7)
    lons = rng.uniform(112.99, 113.05, 300)
    lats = rng.uniform(22.995, 23.025, 300)
    lons[:20] = np.round(lons[:20], 3)  # many on grid borders (every 0.005°)
    batch = GridIndex.load(hierarchy).locate(lons, lats)
    for lon, lat, grid_id in zip(lons, lats, batch, strict=True):
        try:
            single = locate(hierarchy, float(lon), float(lat)).grid_id
        except OutsideJurisdiction:
            single = None
        assert (single or NO_GRID) == grid_id, (lon, lat)


def test_assign_grids_stores_each_points_grid(hierarchy):
    hierarchy.execute(
        text(
            "INSERT INTO incident (client_uuid, category_id, geom, reported_at) "
            "SELECT gen_random_uuid(), (SELECT min(id) FROM category), "
            "ST_SetSRID(ST_MakePoint(113.001 + i * 0.0003, 23.01), 4326), now() "
            "FROM generate_series(0, 99) AS i"
        )
    )
    changed = assign_grids(hierarchy, "incident")
    assert changed == 100  # all inside the grid cover
    wrong = hierarchy.execute(
        text(
            "SELECT count(*) FROM incident i JOIN unit_grid g ON g.id = i.grid_id "
            "WHERE NOT ST_Covers(g.geom, i.geom)"
        )
    ).scalar()
    assert wrong == 0
    assert assign_grids(hierarchy, "incident") == 0  # idempotent


def test_stored_topology_is_clean_then_flags_an_overlap(hierarchy):
    assert check_stored(hierarchy) == []
    hierarchy.execute(
        text(
            "INSERT INTO unit_grid (code, community_code, geom) "
            "SELECT '440604001001005', '440604001001', geom FROM unit_grid "
            "WHERE code = '440604001001001'"
        )
    )
    problems = check_stored(hierarchy)
    assert {p.check for p in problems} == {"grid_overlap"}


# -- HTTP ----------------------------------------------------------------------------------


def test_locate_endpoint(admin_client, hierarchy):
    response = admin_client.get("/api/v1/locate?lon=113.001&lat=23.01")
    assert response.status_code == 200
    body = response.get_json()
    assert body["grid"]["code"] == "440604001001001"
    assert body["district"] == {"code": "440604", "name": "禅城区"}


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("lon=113.5&lat=23.01", 422, "lon,lat"),
        ("lon=abc&lat=23", 422, "lon"),
        ("lat=23", 422, "lon"),
        ("lon=23.01&lat=113.001", 422, "lat"),
    ],
)
def test_locate_endpoint_rejects_bad_points(admin_client, hierarchy, query, status, field):
    response = admin_client.get(f"/api/v1/locate?{query}")
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert field in [e["field"] for e in response.get_json()["errors"]]


def test_grids_bbox_and_keyset_paging(admin_client, hierarchy):
    response = admin_client.get("/api/v1/grids?bbox=113.0,23.0,113.011,23.02&limit=2")
    assert response.status_code == 200
    assert response.mimetype == "application/geo+json"
    page = response.get_json()
    assert [ft["id"] for ft in page["features"]] == ["440604001001001", "440604001001002"]
    assert page["features"][0]["geometry"]["type"] == "MultiPolygon"
    lon, lat = page["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 112 < lon < 114 and 22 < lat < 24  # RFC 7946: lon, lat
    seen = [ft["id"] for ft in page["features"]]
    next_link = [link for link in page["links"] if link["rel"] == "next"]
    assert next_link and 'rel="next"' in response.headers["Link"]
    follow = admin_client.get(next_link[0]["href"].replace("http://localhost", ""))
    seen += [ft["id"] for ft in follow.get_json()["features"]]
    assert seen == [f"440604001001{i:03d}" for i in (1, 2, 3)]
    assert not [link for link in follow.get_json()["links"] if link["rel"] == "next"]


@pytest.mark.parametrize(
    "query",
    [
        "bbox=1,2,3",
        "bbox=a,b,c,d",
        "bbox=113.1,23,113.0,23.1",
        "bbox=23,113,23.1,113.1",
        "limit=0",
        "limit=5000",
        "limit=x",
    ],
)
def test_bad_list_parameters_are_422_naming_the_field(admin_client, hierarchy, query):
    response = admin_client.get(f"/api/v1/grids?{query}")
    assert response.status_code == 422
    field = query.split("=")[0]
    assert response.get_json()["errors"][0]["field"] == field


def test_areas_by_level_and_parent_and_one_area(admin_client, hierarchy):
    body = admin_client.get("/api/v1/areas?level=community&parent=440604001").get_json()
    assert [ft["id"] for ft in body["features"]] == ["440604001001", "440604001002"]
    one = admin_client.get("/api/v1/areas/440604001").get_json()
    assert one["properties"]["name"] == "祖庙街道"
    assert [c["code"] for c in one["properties"]["children"]] == ["440604001001", "440604001002"]
    assert admin_client.get("/api/v1/areas/999999").status_code == 404
    assert admin_client.get("/api/v1/areas?level=planet").status_code == 422
    tree = admin_client.get("/api/v1/areas/tree").get_json()["areas"]
    assert tree[0]["code"] == "440600"
    assert tree[0]["children"][0]["children"][0]["children"][0]["grids"] == 4


def test_enterprises_and_outlets_layers(admin_client, hierarchy, tmp_path):
    rows = [f.enterprise(113.001, 23.01)]
    run_import(hierarchy, "enterprises", f.write(tmp_path / "e.gpkg", rows))
    body = admin_client.get("/api/v1/enterprises?bbox=113,23,113.01,23.02").get_json()
    assert [ft["properties"]["name"] for ft in body["features"]] == ["甲公司"]
    assert (
        admin_client.get("/api/v1/enterprises?bbox=113.03,23,113.04,23.02").get_json()["features"]
        == []
    )
    fid = body["features"][0]["id"]
    assert (
        admin_client.get(f"/api/v1/enterprises/{fid}").get_json()["properties"]["name"] == "甲公司"
    )
    assert admin_client.get("/api/v1/enterprises/nope").status_code == 404


def test_ogc_api_features_for_qgis(admin_client, hierarchy):
    landing = admin_client.get("/", headers={"Accept": "application/json"})
    assert landing.mimetype == "application/json"
    rels = {link["rel"] for link in landing.get_json()["links"]}
    assert {"conformance", "data"} <= rels
    conformance = admin_client.get("/conformance").get_json()["conformsTo"]
    assert any(c.endswith("/conf/geojson") for c in conformance)
    collections = admin_client.get("/collections").get_json()["collections"]
    ids = {c["id"] for c in collections}
    assert {"districts", "towns", "communities", "grids", "enterprises", "outlets"} <= ids
    grids = next(c for c in collections if c["id"] == "grids")
    assert grids["extent"]["spatial"]["bbox"][0] == pytest.approx([113.0, 23.0, 113.04, 23.02])
    items = admin_client.get("/collections/grids/items?limit=3")
    assert items.mimetype == "application/geo+json"
    body = items.get_json()
    assert body["type"] == "FeatureCollection" and body["numberReturned"] == 3
    one = admin_client.get("/collections/grids/items/440604001002004").get_json()
    assert one["properties"]["community_code"] == "440604001002"
    assert admin_client.get("/collections/rivers/items").status_code == 404
    big = admin_client.get("/collections/grids/items?limit=100000")  # QGIS asks for large pages
    assert big.status_code == 200 and big.get_json()["numberReturned"] == 8
    assert admin_client.get("/collections/grids/items?limit=0").status_code == 422
    assert admin_client.get("/").mimetype == "text/html"

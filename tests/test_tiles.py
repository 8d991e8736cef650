"""Vector tiles: jurisdiction, tile addressing, caching headers."""

from __future__ import annotations

import pytest

from gridops.tiles import CACHE_CONTROL, MVT, etag_of, render_tile, tile_features
from tests.test_cases import build_world

TILE = (10, 833, 444)  # covers both fixture communities (113.00..113.04 E, 23.00..23.02 N)
URL = "/api/v1/tiles/{layer}/{z}/{x}/{y}.pbf"
WEST_GRID, EAST_GRID = "440604001001001", "440604001002001"


@pytest.fixture
def world(session, tmp_path):
    return build_world(session, tmp_path)


@pytest.fixture
def bearer(world, token_for):
    def headers(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(world['actors'][name].user_id)}"}

    return headers


def url(layer: str, z: int, x: int, y: int) -> str:
    return URL.format(layer=layer, z=z, x=x, y=y)


def test_grid_tile_holds_own_grids_and_not_foreign_ones(client, session, world, bearer):
    response = client.get(url("grids", *TILE), headers=bearer("mgr.w"))
    assert response.status_code == 200
    assert response.mimetype == MVT
    assert response.headers["Cache-Control"] == CACHE_CONTROL
    data = response.get_data()
    assert response.headers["ETag"] == etag_of(data)
    assert WEST_GRID.encode() in data
    assert EAST_GRID.encode() not in data  # the other community's grids stay out
    scope = world["actors"]["mgr.w"].scope()
    features = tile_features(session, "grids", *TILE, scope)
    assert sorted(f["code"] for f in features) == [f"440604001001{i:03d}" for i in range(1, 5)]
    assert data == render_tile(session, "grids", *TILE, scope)


def test_if_none_match_gives_304_and_empty_tile_204(client, world, bearer):
    headers = bearer("mgr.w")
    first = client.get(url("grids", *TILE), headers=headers)
    etag = first.headers["ETag"]
    again = client.get(url("grids", *TILE), headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == etag and again.headers["Cache-Control"] == CACHE_CONTROL
    other = client.get(url("grids", *TILE), headers={**headers, "If-None-Match": '"nope"'})
    assert other.status_code == 200
    empty = client.get(url("grids", 10, 0, 0), headers=headers)  # mid-Pacific, far north
    assert empty.status_code == 204 and empty.get_data() == b""
    assert empty.headers["Cache-Control"] == CACHE_CONTROL


@pytest.mark.parametrize(
    "path",
    [
        url("grids", 23, 0, 0),
        url("grids", 1, 2, 0),
        url("grids", 1, 0, 2),
        url("grids", 0, 1, 0),
        url("rivers", *TILE),
        "/api/v1/tiles/grids/-1/0/0.pbf",
    ],
)
def test_bad_tiles_are_not_found(client, world, bearer, path):
    response = client.get(path, headers=bearer("mgr.w"))
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_anonymous_gets_401(client, world):
    response = client.get(url("grids", *TILE))
    assert response.status_code == 401
    assert response.get_json()["type"] == "/problems/unauthorized"


def test_incident_tile_full_for_managers_snapped_for_handlers(client, session, world, bearer):
    z, x, y = 13, 6667, 3557  # the west case at 113.005 E, 23.01 N and its snapped point
    actors = world["actors"]
    exact = tile_features(session, "incidents", z, x, y, actors["mgr.w"].scope())
    assert [f["id"] for f in exact] == [world["west"]]
    snapped = tile_features(session, "incidents", z, x, y, actors["handler"].scope())
    assert len(snapped) == 1 and snapped[0]["id"] is None
    assert snapped[0]["grid"] == exact[0]["grid"]
    assert snapped[0]["wkt"] != exact[0]["wkt"]  # moved to the ~200 m grid
    response = client.get(url("incidents", z, x, y), headers=bearer("handler"))
    assert response.status_code == 200 and response.mimetype == MVT
    east = client.get(url("incidents", *TILE), headers=bearer("mgr.w")).get_data()
    assert b"440604001001001" in east and b"440604001002001" not in east

"""Large map layers as Mapbox vector tiles built by PostGIS (``ST_AsMVT``).

Tiles follow the reader's jurisdiction exactly as the GeoJSON layers in gridops/features.py do
(``Layer.scope_condition``), so they are cached privately only. Restricted readers (planners,
department handlers) get incidents outside their full jurisdiction snapped to the same ~200 m
grid that features.py uses for their bbox filter, and only category, status and unit grid: no
id, no reporter, no exact point.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.api import actor_scope
from gridops.auth.actor import Scope
from gridops.auth.web import requires
from gridops.db import get_session
from gridops.errors import NotFound
from gridops.features import EVERYTHING, LAYERS, RESTRICTED_SNAP_DEG, Layer

bp = Blueprint("tiles", __name__)

MVT = "application/vnd.mapbox-vector-tile"
MAX_ZOOM = 22
EXTENT = 4096
BUFFER = 64
CACHE_CONTROL = "private, max-age=300"  # tiles depend on who asks: never a shared cache


@dataclass(frozen=True)
class TileLayer:
    layer: Layer
    properties: tuple[str, ...]  # SQL expressions over ``t`` AS property names, kept small
    restricted_properties: tuple[str, ...] | None = None  # incidents for restricted readers


TILE_LAYERS: dict[str, TileLayer] = {
    "grids": TileLayer(LAYERS["grids"], ("t.code AS code", "t.community_code AS community")),
    "enterprises": TileLayer(
        LAYERS["enterprises"],
        (
            "t.uscc AS code",
            "t.name AS name",
            "t.industry AS category",
            "t.risk_level AS status",
        ),
    ),
    "outlets": TileLayer(
        LAYERS["outlets"],
        ("t.code AS code", "t.name AS name", "t.outlet_type AS category"),
    ),
    "incidents": TileLayer(
        LAYERS["incidents"],
        (
            "t.id AS id",
            "t.category_code AS category",
            "t.status AS status",
            "t.grid_code AS grid",
        ),
        restricted_properties=(
            "t.category_code AS category",
            "t.status AS status",
            "t.grid_code AS grid",
        ),
    ),
}


def get_tile_layer(layer_id: str) -> TileLayer:
    try:
        return TILE_LAYERS[layer_id]
    except KeyError:
        raise NotFound(f"no tile layer {layer_id!r}") from None


def check_tile(z: int, x: int, y: int) -> None:
    """A tile outside the pyramid does not exist: NotFound, like an unknown layer."""
    if not 0 <= z <= MAX_ZOOM:
        raise NotFound(f"zoom {z} is outside 0..{MAX_ZOOM}")
    top = 2**z - 1
    if not (0 <= x <= top and 0 <= y <= top):
        raise NotFound(f"tile {z}/{x}/{y} does not exist: x and y run 0..{top} at zoom {z}")


def _rows_sql(tile_layer: TileLayer, scope: Scope) -> str:
    """Per feature: its properties and its geometry in tile coordinates (NULL: not in tile)."""
    layer = tile_layer.layer
    source = layer.from_sql or layer.table
    envelope = "ST_TileEnvelope(:z, :x, :y)"
    mvt = f"ST_AsMVTGeom(ST_Transform(%s, 3857), {envelope}, {EXTENT}, {BUFFER}, true)"
    where = f"{layer.where} AND {layer.scope_condition(scope)}"
    if tile_layer.restricted_properties is None or scope.everything:
        return (
            f"SELECT {', '.join(tile_layer.properties)}, {mvt % 't.geom'} AS geom "
            f"FROM {source} AS t WHERE {where} "
            f"AND t.geom && ST_Transform({envelope}, 4326)"
        )
    # Readers without full access to a point get it snapped, and fewer properties; the filter
    # widens by the snap so that a snapped point just across the tile edge is not lost.
    full = scope.point_in_full("t.geom")
    snapped = f"ST_SnapToGrid(t.geom, {RESTRICTED_SNAP_DEG})"
    wide = f"ST_Expand(ST_Transform({envelope}, 4326), {RESTRICTED_SNAP_DEG})"
    return (
        f"SELECT {', '.join(tile_layer.properties)}, {mvt % 't.geom'} AS geom "
        f"FROM {source} AS t WHERE {where} AND {full} "
        f"AND t.geom && ST_Transform({envelope}, 4326) "
        f"UNION ALL SELECT NULL AS id, {', '.join(tile_layer.restricted_properties)}, "
        f"{mvt % snapped} AS geom FROM {source} AS t WHERE {where} AND NOT {full} "
        f"AND t.geom && {wide}"
    )


def tile_features(
    session: Session, layer_id: str, z: int, x: int, y: int, scope: Scope = EVERYTHING
) -> list[dict[str, Any]]:
    """The features a tile encodes, as dicts with the geometry in tile coordinates as WKT."""
    tile_layer = get_tile_layer(layer_id)
    check_tile(z, x, y)
    rows = session.execute(
        text(
            f"SELECT r.*, ST_AsText(r.geom) AS wkt FROM ({_rows_sql(tile_layer, scope)}) r "
            "WHERE r.geom IS NOT NULL"
        ),
        {"z": z, "x": x, "y": y, **scope.params()},
    ).mappings()
    return [{k: v for k, v in row.items() if k != "geom"} for row in rows]


def render_tile(
    session: Session, layer_id: str, z: int, x: int, y: int, scope: Scope = EVERYTHING
) -> bytes:
    """The tile's MVT bytes (one layer named ``layer_id``); empty when no feature is in it."""
    tile_layer = get_tile_layer(layer_id)
    check_tile(z, x, y)
    data = session.execute(
        text(
            f"SELECT ST_AsMVT(r, :name, {EXTENT}, 'geom') FROM "
            f"({_rows_sql(tile_layer, scope)}) r WHERE r.geom IS NOT NULL"
        ),
        {"z": z, "x": x, "y": y, "name": layer_id, **scope.params()},
    ).scalar_one()
    return bytes(data or b"")


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def tile_response(layer_id: str, z: int, x: int, y: int) -> Response:
    data = render_tile(get_session(), layer_id, z, x, y, actor_scope())
    headers = {"Cache-Control": CACHE_CONTROL, "Vary": "Authorization, Cookie"}
    if not data:
        return Response(status=204, headers=headers)
    etag = etag_of(data)
    headers["ETag"] = etag
    if _matches(request.headers.get("If-None-Match", ""), etag):
        return Response(status=304, headers=headers)
    return Response(data, 200, mimetype=MVT, headers=headers)


# The static segment wins over <layer> in werkzeug's routing, so incidents need read:incidents.
@bp.get("/api/v1/tiles/incidents/<int:z>/<int:x>/<int:y>.pbf")
@requires("read:incidents")
def incident_tile(z: int, x: int, y: int) -> Response:
    return tile_response("incidents", z, x, y)


@bp.get("/api/v1/tiles/<layer>/<int:z>/<int:x>/<int:y>.pbf")
@requires("read:map")
def tile(layer: str, z: int, x: int, y: int) -> Response:
    if layer == "incidents":  # pragma: no cover - routed to incident_tile
        raise NotFound("no tile layer 'incidents' here")
    return tile_response(layer, z, x, y)

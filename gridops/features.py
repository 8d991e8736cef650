"""Map layers as RFC 7946 GeoJSON pages: bbox filtering and keyset paging, built in SQL.

The same layers back ``/api/v1/...`` and the OGC API - Features collections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h3
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Scope
from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.parsing import is_digits

EVERYTHING = Scope(everything=True)
PLANNER_H3_RESOLUTION = 9  # about 0.1 km²: where, without saying at which door
# Restricted readers filter by a point snapped to this grid (degrees, about 200 m), so that a
# tiny bbox cannot find the exact point that their H3 cell hides.
RESTRICTED_SNAP_DEG = 0.002

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class Layer:
    id: str
    title: str
    description: str
    table: str
    key: str  # unique, ordered: the feature id and the paging key
    properties: tuple[str, ...]
    geometry_type: str
    where: str = "true"
    key_is_int: bool = False
    filters: Mapping[str, str] = field(default_factory=dict)  # query parameter -> column
    scope_kind: str = "point"  # area | grid | point: how the actor's scope applies
    # Properties a restricted (planner) reader gets instead; None: the same as everyone.
    restricted_properties: tuple[str, ...] | None = None
    from_sql: str = ""  # FROM clause when the layer is not a plain table
    permission: str = "read:map"

    def scope_condition(self, scope: Scope) -> str:
        if self.scope_kind == "area":
            return scope.area_visible("t.code")
        if self.scope_kind == "grid":
            return scope.grid_visible("t.code")
        return scope.point_visible("t.geom")


LAYERS: dict[str, Layer] = {
    layer.id: layer
    for layer in (
        Layer(
            "cities",
            "市 City",
            "The prefecture-level city.",
            "admin_area",
            "code",
            ("code", "name", "name_en", "level", "parent_code"),
            "MultiPolygon",
            "level = 'city'",
            scope_kind="area",
        ),
        Layer(
            "districts",
            "区 Districts",
            "County-level districts (GB/T 2260 codes).",
            "admin_area",
            "code",
            ("code", "name", "name_en", "level", "parent_code"),
            "MultiPolygon",
            "level = 'district'",
            filters={"parent": "parent_code"},
            scope_kind="area",
        ),
        Layer(
            "towns",
            "镇街 Towns and streets",
            "Towns (镇) and street offices (街道), 9-digit codes.",
            "admin_area",
            "code",
            ("code", "name", "name_en", "level", "parent_code"),
            "MultiPolygon",
            "level = 'town'",
            filters={"parent": "parent_code"},
            scope_kind="area",
        ),
        Layer(
            "communities",
            "社区/村 Communities and villages",
            "Communities (社区) and villages (村), 12-digit codes.",
            "admin_area",
            "code",
            ("code", "name", "name_en", "level", "parent_code"),
            "MultiPolygon",
            "level = 'community'",
            filters={"parent": "parent_code"},
            scope_kind="area",
        ),
        Layer(
            "grids",
            "单元网格 Unit grids",
            "Current unit grids (GB/T 30428), 15-digit codes.",
            "unit_grid",
            "code",
            ("code", "community_code", "standard_ref", "area_m2", "valid_from"),
            "MultiPolygon",
            "valid_to IS NULL",
            filters={"community": "community_code"},
            scope_kind="grid",
        ),
        Layer(
            "enterprises",
            "企业 Enterprises",
            "Market subjects with their unified social credit code and risk level.",
            "enterprise",
            "id",
            ("uscc", "name", "industry", "risk_level", "address", "grid_id"),
            "Point",
            key_is_int=True,
            filters={"industry": "industry", "risk_level": "risk_level"},
        ),
        Layer(
            "outlets",
            "服务网点 Service outlets",
            "Government service outlets: service centres, police stations, clinics …",
            "service_outlet",
            "id",
            ("code", "outlet_type", "name", "opening_hours", "address", "phone", "grid_id"),
            "Point",
            key_is_int=True,
            filters={"type": "outlet_type"},
        ),
        Layer(
            "incidents",
            "事件 Incidents",
            "Reported incidents. Planners get the unit grid and H3 cell, not the point or the "
            "reporter.",
            "incident",
            "id",
            (
                "category_code",
                "category_name",
                "reported_at",
                "source",
                "grid_code",
                "status",
                "version",
                "reporter_name",
                "reporter_phone",
                "device_id",
            ),
            "Point",
            key_is_int=True,
            filters={"category": "category_code", "source": "source"},
            restricted_properties=(
                "category_code",
                "category_name",
                "reported_at",
                "source",
                "grid_code",
                "status",
                "version",
            ),
            from_sql=(
                "(SELECT i.*, c.code AS category_code, c.name_zh AS category_name, "
                "g.code AS grid_code FROM incident i JOIN category c ON c.id = i.category_id "
                "LEFT JOIN unit_grid g ON g.id = i.grid_id)"
            ),
            permission="read:incidents",
        ),
    )
}


def get_layer(layer_id: str) -> Layer:
    try:
        return LAYERS[layer_id]
    except KeyError:
        raise NotFound(f"no collection {layer_id!r}") from None


def parse_bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    """``minLon,minLat,maxLon,maxLat`` (RFC 7946 / OGC order); InvalidInput naming ``bbox``."""
    if raw is None or raw == "":
        return None

    def bad(message: str) -> InvalidInput:
        return InvalidInput(f"bbox: {message}", [FieldError("bbox", message)])

    parts = raw.split(",")
    if len(parts) != 4:
        raise bad("give four numbers: minLon,minLat,maxLon,maxLat")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise bad(f"{raw!r} has a part that is not a number") from None
    if not all(math.isfinite(v) for v in values):
        raise bad("numbers must be finite")
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise bad("longitudes must be within -180..180")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise bad("latitudes must be within -90..90 (lon/lat swapped?)")
    if min_lon > max_lon or min_lat > max_lat:
        raise bad("the minimum must not exceed the maximum")
    return min_lon, min_lat, max_lon, max_lat


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(
            "limit must be a whole number", [FieldError("limit", f"{raw!r} is not a number")]
        ) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(
            f"limit must be between 1 and {MAX_LIMIT}",
            [FieldError("limit", f"{limit} is out of range 1..{MAX_LIMIT}")],
        )
    return limit


def _parse_cursor(layer: Layer, raw: str | None) -> Any:
    if raw is None or raw == "":
        return None
    if layer.key_is_int:
        try:
            return int(raw)
        except ValueError:
            raise InvalidInput(
                "cursor is not valid", [FieldError("cursor", "use the next link as given")]
            ) from None
    return raw


def _feature_sql(layer: Layer, properties: tuple[str, ...], geometry: bool = True) -> str:
    props = ", ".join(f"'{p}', t.{p}" for p in properties)
    geom = "ST_AsGeoJSON(t.geom, 7)::json" if geometry else "NULL::json"
    return (
        f"json_build_object('type', 'Feature', 'id', t.{layer.key}, 'geometry', {geom}, "
        f"'properties', json_build_object({props}))"
    )


def feature_select(layer: Layer, scope: Scope) -> str:
    """The SELECT list and FROM of a layer: the feature as each kind of reader may see it."""
    source = layer.from_sql or layer.table
    full = _feature_sql(layer, layer.properties)
    if layer.restricted_properties is None:
        restricted = "NULL::json"
        full_ok = "true"
    else:
        restricted = _feature_sql(layer, layer.restricted_properties, geometry=False)
        full_ok = scope.point_in_full("t.geom")
    return (
        f"SELECT t.{layer.key} AS key, {full_ok} AS full_ok, {full} AS feature, "
        f"{restricted} AS restricted, ST_X(ST_PointOnSurface(t.geom)) AS lon, "
        f"ST_Y(ST_PointOnSurface(t.geom)) AS lat FROM {source} AS t"
    )


def feature_as_seen(row: Any) -> dict[str, Any]:
    """Restricted readers get the feature without personal data, located by its H3 cell."""
    if row.full_ok:
        return row.feature
    feature = row.restricted
    feature["properties"]["h3_cell"] = h3.latlng_to_cell(row.lat, row.lon, PLANNER_H3_RESOLUTION)
    return feature


def feature_page(
    session: Session,
    layer: Layer,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    filters: Mapping[str, str] | None = None,
    scope: Scope = EVERYTHING,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the features ``scope`` may see after ``cursor``, and the next cursor."""
    clauses = [layer.where, layer.scope_condition(scope)]
    params: dict[str, Any] = {"limit": limit + 1, **scope.params()}
    if bbox is not None:
        envelope = "ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"
        if layer.restricted_properties is None or scope.everything:
            clauses.append(f"t.geom && {envelope} AND ST_Intersects(t.geom, {envelope})")
        else:
            snapped = f"ST_SnapToGrid(t.geom, {RESTRICTED_SNAP_DEG})"
            clauses.append(
                f"t.geom && ST_Expand({envelope}, {RESTRICTED_SNAP_DEG}) AND CASE WHEN "
                f"{scope.point_in_full('t.geom')} THEN ST_Intersects(t.geom, {envelope}) "
                f"ELSE ST_Intersects({snapped}, {envelope}) END"
            )
        params.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3])
    after = _parse_cursor(layer, cursor)
    if after is not None:
        clauses.append(f"t.{layer.key} > :after")
        params["after"] = after
    for name, value in (filters or {}).items():
        column = layer.filters.get(name)
        if column is None:
            continue
        clauses.append(f"t.{column}::text = :f_{name}")
        params[f"f_{name}"] = value
    rows = session.execute(
        text(
            f"{feature_select(layer, scope)} WHERE {' AND '.join(clauses)} "
            f"ORDER BY t.{layer.key} LIMIT :limit"
        ),
        params,
    ).all()
    next_cursor = str(rows[limit - 1].key) if len(rows) > limit else None
    return [feature_as_seen(r) for r in rows[:limit]], next_cursor


def get_feature(
    session: Session, layer: Layer, feature_id: str, scope: Scope = EVERYTHING
) -> dict[str, Any]:
    """One feature by id; NotFound when it does not exist or lies outside ``scope``."""
    if layer.key_is_int and not is_digits(feature_id):
        raise NotFound(f"no feature {feature_id!r} in {layer.id}")
    key = int(feature_id) if layer.key_is_int else feature_id
    row = session.execute(
        text(
            f"{feature_select(layer, scope)} WHERE {layer.where} "
            f"AND {layer.scope_condition(scope)} AND t.{layer.key} = :key"
        ),
        {"key": key, **scope.params()},
    ).first()
    if row is None:
        raise NotFound(f"no feature {feature_id!r} in {layer.id}")
    return feature_as_seen(row)


def layer_extent(session: Session, layer: Layer, scope: Scope = EVERYTHING) -> list[float] | None:
    """The layer's bounding box as this scope sees it. Where points are hidden from the reader
    (planners and incidents), the box is that of the areas they may look at instead."""
    if layer.restricted_properties is not None and not scope.everything:
        box = session.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                "ST_Extent(geom) AS e FROM (SELECT geom FROM admin_area "
                "WHERE code = ANY(:scope_all_areas) UNION ALL SELECT geom FROM unit_grid "
                "WHERE valid_to IS NULL AND code = ANY(:scope_full_grids)) AS a) s"
            ),
            scope.params(),
        ).one()
        return None if box[0] is None else [float(v) for v in box]
    box = session.execute(
        text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            f"(SELECT ST_Extent(t.geom) AS e FROM {layer.from_sql or layer.table} AS t "
            f"WHERE {layer.where} AND {layer.scope_condition(scope)}) s"
        ),
        scope.params(),
    ).one()
    return None if box[0] is None else [float(v) for v in box]

"""Which unit grid, community, town and district holds a point.

One point: one indexed query. Points stored in PostGIS (``assign_grids``): one polygon-outer
LATERAL update, which keeps each grid prepared across its points. Points in memory
(``GridIndex``): the grids are loaded once and each, prepared by GEOS, queries an STRtree of
the points. ``bench/locate.py`` measures both against geopandas.

A point on a border shared by several grids goes to the one with the smallest code, in both
paths; its community, town and district are then that grid's ancestors, never picked apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely import STRtree
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Scope
from gridops.errors import FieldError, InvalidInput

NO_GRID = -1


@dataclass
class OutsideJurisdiction(InvalidInput):
    status: int = 422
    title: str = "Outside the jurisdiction"
    type_slug: str = "outside-jurisdiction"


@dataclass
class Location:
    lon: float
    lat: float
    grid_id: int | None
    grid_code: str | None
    areas: dict[str, dict[str, str]] = field(default_factory=dict)  # level -> {code, name}

    def as_dict(self) -> dict[str, Any]:
        return {
            "lon": self.lon,
            "lat": self.lat,
            "grid": {"id": self.grid_id, "code": self.grid_code} if self.grid_code else None,
            **{level: self.areas.get(level) for level in ("community", "town", "district", "city")},
        }


def check_lonlat(lon: float, lat: float) -> None:
    errors = []
    if not np.isfinite(lon) or not -180 <= lon <= 180:
        errors.append(FieldError("lon", f"longitude {lon} is not within -180..180"))
    if not np.isfinite(lat) or not -90 <= lat <= 90:
        errors.append(FieldError("lat", f"latitude {lat} is not within -90..90"))
    if errors:
        raise InvalidInput("the point is not a lon/lat position", errors)


LOCATE_SQL = text(
    """
    WITH RECURSIVE pt AS (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS g),
    grid AS (
        SELECT g.id, g.code, g.community_code FROM unit_grid g, pt
        WHERE g.valid_to IS NULL AND ST_Covers(g.geom, pt.g)
        ORDER BY g.code LIMIT 1),
    leaf AS (
        SELECT coalesce(
            (SELECT community_code FROM grid),
            (SELECT a.code FROM admin_area a, pt WHERE ST_Covers(a.geom, pt.g)
             ORDER BY array_position(ARRAY['city', 'district', 'town', 'community'], a.level::text)
                      DESC, a.code
             LIMIT 1)) AS code),
    chain AS (
        SELECT a.code, a.name, a.level, a.parent_code FROM admin_area a
        WHERE a.code = (SELECT code FROM leaf)
        UNION ALL
        SELECT p.code, p.name, p.level, p.parent_code
        FROM admin_area p JOIN chain c ON p.code = c.parent_code)
    SELECT (SELECT id FROM grid) AS grid_id, (SELECT code FROM grid) AS grid_code,
           chain.code, chain.name, chain.level
    FROM (SELECT 1) AS one LEFT JOIN chain ON true
    """
)


def locate(session: Session, lon: float, lat: float, scope: Scope | None = None) -> Location:
    """The unit grid and areas of a point; raises OutsideJurisdiction outside every area, or
    outside ``scope`` (an actor's jurisdiction) when one is given."""
    check_lonlat(lon, lat)
    if scope is not None and not scope.everything:
        inside = session.execute(
            text("SELECT " + scope.point_visible("ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)")),
            {"lon": lon, "lat": lat, **scope.params()},
        ).scalar()
        if not inside:
            raise OutsideJurisdiction(
                f"the point {lon}, {lat} is outside your jurisdiction",
                [FieldError("lon,lat", "outside the areas and grids you are responsible for")],
            )
    rows = session.execute(LOCATE_SQL, {"lon": lon, "lat": lat}).all()
    areas = {r.level: {"code": r.code, "name": r.name} for r in rows if r.code is not None}
    if not areas:
        raise OutsideJurisdiction(
            f"the point {lon}, {lat} is outside the jurisdiction",
            [FieldError("lon,lat", "no administrative area holds this point")],
        )
    return Location(lon, lat, rows[0].grid_id, rows[0].grid_code, areas)


# -- many points ---------------------------------------------------------------------------


@dataclass
class GridIndex:
    """The current unit grids, ordered by code (their position is the border tie-break)."""

    ids: np.ndarray
    codes: np.ndarray
    geoms: np.ndarray

    @classmethod
    def load(cls, session: Session) -> GridIndex:
        rows = session.execute(
            text(
                "SELECT id, code, ST_AsBinary(geom) AS wkb FROM unit_grid "
                "WHERE valid_to IS NULL ORDER BY code"
            )
        ).all()
        return cls(
            ids=np.array([r.id for r in rows], dtype=np.int64),
            codes=np.array([r.code for r in rows], dtype=object),
            geoms=shapely.from_wkb([bytes(r.wkb) for r in rows]),
        )

    def locate(self, lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
        """Grid id per point (``NO_GRID`` where none holds it)."""
        points = shapely.points(np.asarray(lons, float), np.asarray(lats, float))
        result = np.full(len(points), NO_GRID, dtype=np.int64)
        if len(points) == 0 or len(self.ids) == 0:
            return result
        # Each polygon is prepared once and finds the points it covers (border included).
        poly_idx, point_idx = STRtree(points).query(self.geoms, predicate="covers")
        if len(point_idx) == 0:
            return result
        order = np.lexsort((poly_idx, point_idx))  # per point, smallest code first
        point_sorted, poly_sorted = point_idx[order], poly_idx[order]
        first = np.r_[True, point_sorted[1:] != point_sorted[:-1]]
        result[point_sorted[first]] = self.ids[poly_sorted[first]]
        return result


def assign_grids(session: Session, table: str, *, where: str = "true") -> int:
    """Store the unit grid of every point of ``table`` (id, geom, grid_id) matching ``where``.

    Polygon-outer: each current grid probes the points' GiST index once and PostGIS keeps the
    grid prepared across its points, about 8x faster here than reading the points out,
    locating them in process and writing them back (``bench/locate.py``). A point on a shared
    border takes the smallest code; points outside every grid are left as they are. Returns
    the number of rows whose grid changed.
    """
    changed = session.execute(
        text(
            f"""
            UPDATE {table} p SET grid_id = m.grid_id
            FROM (
                SELECT DISTINCT ON (pt.id) pt.id, g.id AS grid_id
                FROM unit_grid g
                CROSS JOIN LATERAL (
                    SELECT q.id FROM {table} q WHERE ({where}) AND ST_Covers(g.geom, q.geom)
                ) pt
                WHERE g.valid_to IS NULL
                ORDER BY pt.id, g.code
            ) m
            WHERE p.id = m.id AND p.grid_id IS DISTINCT FROM m.grid_id
            """
        )
    )
    return changed.rowcount

"""Which unit grid, community, town and district holds a point.

One point: one indexed query. Many points: the current unit grids are loaded once and each
grid polygon (prepared by GEOS) queries an STRtree of the points; that is several times faster
than PostGIS's point-in-polygon join, whose polygon changes on every row and is never prepared
(see ``bench/locate.py``).

A point on a border shared by several grids goes to the one with the smallest code, in both
paths; its community, town and district are then that grid's ancestors, never picked apart.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely import STRtree
from sqlalchemy import text
from sqlalchemy.orm import Session

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


def locate(session: Session, lon: float, lat: float) -> Location:
    """The unit grid and areas of a point; raises OutsideJurisdiction outside every area."""
    check_lonlat(lon, lat)
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


def assign_grids(
    session: Session, table: str, *, where: str = "true", index: GridIndex | None = None
) -> int:
    """Store the unit grid of every point of ``table`` (id, geom, grid_id) matching ``where``.

    Points are read and written with COPY; returns the number of rows whose grid changed.
    """
    index = index or GridIndex.load(session)
    raw = session.connection().connection.driver_connection
    buffer = io.BytesIO()
    with raw.cursor() as cursor:
        with cursor.copy(
            f"COPY (SELECT id, ST_X(geom), ST_Y(geom) FROM {table} WHERE {where}) TO STDOUT"
        ) as copy:
            for chunk in copy:
                buffer.write(chunk)
        buffer.seek(0)
        points = pd.read_csv(
            buffer, sep="\t", header=None, names=["id", "lon", "lat"], dtype={"id": np.int64}
        )
        grids = index.locate(points["lon"].to_numpy(), points["lat"].to_numpy())
        out = pd.DataFrame({"id": points["id"], "grid_id": pd.array(grids, dtype="Int64")})
        out.loc[out["grid_id"] == NO_GRID, "grid_id"] = pd.NA
        cursor.execute("DROP TABLE IF EXISTS located")
        cursor.execute("CREATE TEMP TABLE located (id bigint, grid_id bigint) ON COMMIT DROP")
        payload = out.to_csv(sep="\t", header=False, index=False, na_rep="\\N").encode()
        with cursor.copy("COPY located (id, grid_id) FROM STDIN") as copy:
            copy.write(payload)
    changed = session.execute(
        text(
            f"UPDATE {table} t SET grid_id = l.grid_id FROM located l "
            "WHERE t.id = l.id AND t.grid_id IS DISTINCT FROM l.grid_id"
        )
    )
    session.execute(text("DROP TABLE located"))
    return changed.rowcount

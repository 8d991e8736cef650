"""Repeated-problem spots: the same minor category reported again and again within a few
metres (a manhole cover that keeps breaking, a bin that keeps overflowing), ranked.

Found in PostGIS with ``ST_ClusterDBSCAN`` on the points in a metric CRS (EPSG:4547,
CGCS2000 / 3-degree Gauss-Kruger CM 114E, metres), partitioned by category: a spot is a
DBSCAN cluster with ``eps`` = the radius and ``minpoints`` = the minimum count, so its reports
are chained within the radius of one another (a spot can be longer than the radius when the
reports line up; ``spread_m`` says how far its farthest report lies from its centroid).
Ranked by count, then by the latest report. Void cases and duplicates of another case are
left out (a duplicate is the same report twice, not the problem coming back).

Who sees what: those who see the incidents in full get the centroid and the case ids;
restricted readers (planners) get the count, the dates and the centroid snapped to the centre
of its H3 cell at resolution 9 (about 0.1 km²), never the cases or an exact point.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import h3
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Scope
from gridops.errors import FieldError, InvalidInput
from gridops.features import PLANNER_H3_RESOLUTION
from gridops.hotspots.service import (
    COUNTED_SQL,
    EVERYTHING,
    category_ids,
    resolve_area,
    whole_number,
)
from gridops.incidents.workcal import TZ

METRIC_SRID = 4547
DEFAULTS = {"days": 90, "radius_m": 30, "min_count": 3, "limit": 100}
LIMITS = {"days": (1, 3660), "radius_m": (1, 500), "min_count": (1, 1000), "limit": (1, 1000)}
PARAMETERS = frozenset({"category", "area", *DEFAULTS})


def parse_query(session: Session, scope: Scope, args: Mapping[str, Any]) -> dict[str, Any]:
    """``category``, ``area``, ``days``, ``radius_m``, ``min_count``, ``limit`` from a query
    string; every bad one named in one InvalidInput (422)."""
    errors = [FieldError(name, "unknown parameter") for name in sorted(set(args) - PARAMETERS)]
    query: dict[str, Any] = {}
    for name, default in DEFAULTS.items():
        raw = args.get(name)
        query[name] = (
            default if raw in (None, "") else whole_number(name, raw, *LIMITS[name], errors)
        )
    raw_category = args.get("category")
    query["category_ids"] = (
        None if raw_category in (None, "") else category_ids(session, raw_category, errors)
    )
    # Without an area: the whole jurisdiction; with one, it must lie inside it.
    area = args.get("area") or None
    found = None if area is None else resolve_area(session, scope, area, errors)
    query["area"] = found[0] if found else None
    if errors:
        raise InvalidInput("bad repeated-spot parameters", errors)
    return query


def _in_scope(scope: Scope, area: str | None) -> str:
    """Polygon-outer, as the KPIs do: each area of the scope probes the incidents' GiST index
    once, instead of each incident testing the scope's polygons."""
    clauses = []
    if area is not None:
        clauses.append(
            "t.id IN (SELECT i.id FROM admin_area s JOIN incident i ON ST_Covers(s.geom, i.geom) "
            "WHERE s.code = :area)"
        )
    if not scope.everything:
        clauses.append(
            "t.id IN (SELECT i.id FROM admin_area s JOIN incident i ON ST_Covers(s.geom, i.geom) "
            "WHERE s.code = ANY(:scope_all_areas) "
            "UNION SELECT i.id FROM unit_grid sg JOIN incident i ON ST_Covers(sg.geom, i.geom) "
            "WHERE sg.valid_to IS NULL AND sg.code = ANY(:scope_full_grids))"
        )
    return " AND ".join(clauses) or "true"


def repeated_spots(
    session: Session,
    scope: Scope = EVERYTHING,
    *,
    days: int = 90,
    radius_m: float = 30,
    min_count: int = 3,
    category_ids: tuple[int, ...] | None = None,
    area: str | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The repeated-problem spots of the last ``days`` days (up to ``now``) in the scope
    (and ``area``), most reports first; see the module docstring."""
    now = now or session.execute(text("SELECT now()")).scalar_one()
    since = now - timedelta(days=days)
    params: dict[str, Any] = {
        **scope.params(),
        "since": since,
        "now": now,
        "radius": float(radius_m),
        "min_count": int(min_count),
        "limit": int(limit),
        "area": area,
    }
    category_sql = "true"
    if category_ids is not None:
        category_sql = "t.category_id = ANY(:category_ids)"
        params["category_ids"] = list(category_ids)
    rows = session.execute(
        text(
            f"""
            WITH pts AS (
                SELECT t.id, t.category_id, t.reported_at,
                       ST_Transform(t.geom, {METRIC_SRID}) AS xy
                FROM incident t
                WHERE t.reported_at >= :since AND t.reported_at <= :now AND {COUNTED_SQL}
                  AND {category_sql} AND {_in_scope(scope, area)}
            ), clustered AS (
                SELECT pts.*, ST_ClusterDBSCAN(xy, eps => :radius, minpoints => :min_count)
                    OVER (PARTITION BY category_id) AS cid
                FROM pts
            ), spots AS (
                SELECT category_id, cid, count(*) AS n, min(reported_at) AS first_seen,
                       max(reported_at) AS last_seen, ST_Centroid(ST_Collect(xy)) AS c,
                       ST_Collect(xy) AS pts, array_agg(id ORDER BY reported_at, id) AS ids
                FROM clustered WHERE cid IS NOT NULL
                GROUP BY category_id, cid
            ), ranked AS (
                SELECT s.*, ST_Transform(s.c, 4326) AS ll FROM spots s
                ORDER BY s.n DESC, s.last_seen DESC, s.category_id, s.cid LIMIT :limit
            )
            SELECT c.code AS category, c.name_zh AS category_name, r.n, r.first_seen,
                   r.last_seen, ST_X(r.ll) AS lon, ST_Y(r.ll) AS lat, r.ids,
                   ST_MaxDistance(r.c, r.pts) AS spread_m,
                   {scope.point_in_full("r.ll")} AS full_ok
            FROM ranked r JOIN category c ON c.id = r.category_id
            ORDER BY r.n DESC, r.last_seen DESC, c.code, r.cid
            """
        ),
        params,
    ).all()
    spots = []
    for rank, row in enumerate(rows, start=1):
        cell = h3.latlng_to_cell(row.lat, row.lon, PLANNER_H3_RESOLUTION)
        spot: dict[str, Any] = {
            "rank": rank,
            "category": row.category,
            "category_name": row.category_name,
            "count": int(row.n),
            "first_seen": row.first_seen.astimezone(TZ).isoformat(),
            "last_seen": row.last_seen.astimezone(TZ).isoformat(),
            "h3_cell": cell,
        }
        if row.full_ok:
            spot.update(
                lon=round(row.lon, 6),
                lat=round(row.lat, 6),
                spread_m=round(float(row.spread_m), 1),
                case_ids=[int(i) for i in row.ids],
                exact=True,
            )
        else:  # restricted: where, without saying at which door
            lat, lon = h3.cell_to_latlng(cell)
            spot.update(lon=round(lon, 6), lat=round(lat, 6), exact=False)
        spots.append(spot)
    return {
        "since": since.astimezone(TZ).isoformat(),
        "until": now.astimezone(TZ).isoformat(),
        "radius_m": radius_m,
        "min_count": min_count,
        "spots": spots,
    }


__all__ = ["parse_query", "repeated_spots"]

"""Today's patrol tracks for the demo community's inspectors, so that the dispatcher's board
has walks to draw.

The community's unit grids are numbered west to east, then north to south; they are split
into as many bands of rows as there are inspectors, and each inspector walks their band row
by row (east along one row, west along the next) and back again, at walking speed, their
tablet recording a point every minute. The position is a function of the time of day alone,
so the points of a minute are always the same: running the command again
adds nothing for minutes already stored (``store_points`` ignores a known (user, time)) and
only continues the walk up to the new "now". Points never lie in the future: the window ends
now (at the latest 11:30 local) and starts at 08:00, or half an hour before its end if that
is earlier (a run before breakfast still has a short walk to show).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from itertools import pairwise

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.commands import DEMO_COMMUNITY
from gridops.incidents.workcal import TZ
from gridops.patrol.service import PatrolPoint, store_points

WALK_M_PER_S = 1.1  # a patrol on foot, with stops
STEP = timedelta(minutes=1)
STARTS = time(8, 0)
ENDS = time(11, 30)
SHORTEST = timedelta(minutes=30)
METRES_PER_DEGREE = 111_320.0


def demo_inspectors(session: Session, community: str = DEMO_COMMUNITY) -> list[tuple[int, str]]:
    """(id, username) of the active inspectors on duty in the community's grids."""
    rows = session.execute(
        text(
            "SELECT DISTINCT u.id, u.username FROM grid_inspector gi "
            "JOIN app_user u ON u.id = gi.user_id AND u.is_active "
            "JOIN unit_grid g ON g.code = gi.grid_code AND g.valid_to IS NULL "
            "WHERE g.community_code = :c ORDER BY u.username"
        ),
        {"c": community},
    ).all()
    return [(int(r.id), str(r.username)) for r in rows]


def _waypoints(session: Session, community: str) -> list[tuple[float, float]]:
    rows = session.execute(
        text(
            "SELECT ST_X(p) AS lon, ST_Y(p) AS lat FROM (SELECT code, ST_PointOnSurface(geom) AS p "
            "FROM unit_grid WHERE community_code = :c AND valid_to IS NULL) g ORDER BY code"
        ),
        {"c": community},
    ).all()
    return [(float(r.lon), float(r.lat)) for r in rows]


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    scale = math.cos(math.radians((a[1] + b[1]) / 2))
    return math.hypot((b[0] - a[0]) * scale, b[1] - a[1]) * METRES_PER_DEGREE


def rows_of(waypoints: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The grids' points (in code order) cut into rows: a row ends where the next point lies
    west of the last one."""
    rows: list[list[tuple[float, float]]] = []
    for point in waypoints:
        if not rows or point[0] < rows[-1][-1][0]:
            rows.append([])
        rows[-1].append(point)
    return rows


def routes(
    waypoints: Sequence[tuple[float, float]], walkers: int
) -> list[list[tuple[float, float]]]:
    """One route per walker: a band of consecutive rows, walked back and forth across."""
    rows = rows_of(waypoints)
    out = []
    for n in range(walkers):
        band = rows[n * len(rows) // walkers : (n + 1) * len(rows) // walkers] or rows[-1:]
        route = [p for i, row in enumerate(band) for p in (row if i % 2 == 0 else row[::-1])]
        out.append(route)
    return out


def position(route: Sequence[tuple[float, float]], distance_m: float) -> tuple[float, float]:
    """The point ``distance_m`` along the route walked to its end and back, over and over
    (any distance, negative too)."""
    legs = list(pairwise(route))
    lengths = [_metres(a, b) for a, b in legs]
    total = sum(lengths)
    if total == 0:
        return route[0]
    left = distance_m % (2 * total)
    if left > total:  # on the way back
        left = 2 * total - left
    for (a, b), length in zip(legs, lengths, strict=True):
        if left <= length and length > 0:
            share = left / length
            return a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share
        left -= length
    return route[-1]


def window(now: datetime) -> tuple[datetime, datetime]:
    """The local minutes [start, end] of today's demo walk, as of ``now`` (never ahead)."""
    local = now.astimezone(TZ)
    day_start = datetime.combine(local.date(), time(), TZ)
    end = min(local.replace(second=0, microsecond=0), datetime.combine(local.date(), ENDS, TZ))
    start = min(datetime.combine(local.date(), STARTS, TZ), end - SHORTEST)
    return max(start, day_start), end


def write_demo_patrols(
    session: Session, *, now: datetime | None = None, community: str = DEMO_COMMUNITY
) -> dict[str, int]:
    """Store today's walk of each of the community's inspectors; the caller commits.

    Returns the inspectors walked and the points received and newly stored.
    """
    now = now or session.execute(text("SELECT now()")).scalar_one()
    waypoints = _waypoints(session, community)
    inspectors = demo_inspectors(session, community)
    if not waypoints or not inspectors:
        raise ValueError(
            f"community {community} has no unit grids or no inspectors: "
            "run `gridops demo load`, `demo users` and `demo roster` first"
        )
    start, end = window(now)
    walk_start = datetime.combine(start.date(), STARTS, TZ)
    minutes = int((end - start) / STEP) + 1
    totals = {"inspectors": len(inspectors), "received": 0, "stored": 0}
    for (user_id, _), route in zip(inspectors, routes(waypoints, len(inspectors)), strict=True):
        points = []
        for i in range(minutes):
            at = start + i * STEP
            lon, lat = position(route, (at - walk_start).total_seconds() * WALK_M_PER_S)
            minute = int((at - walk_start) / STEP)
            points.append(PatrolPoint(at, round(lon, 6), round(lat, 6), 4.0 + minute % 9))
        counts = store_points(session, user_id, points)
        totals["received"] += counts["received"]
        totals["stored"] += counts["stored"]
    return totals


__all__ = ["demo_inspectors", "position", "routes", "rows_of", "window", "write_demo_patrols"]

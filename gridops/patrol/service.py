"""Patrol tracks: GPS points uploaded by tablets, each inspector's day, and grid coverage.

Upload. A tablet sends its trace in batches; a point is identified by (user, recorded_at), so
a retried batch, or two copies of it racing, adds nothing (``ON CONFLICT DO NOTHING`` on the
primary key decides, never a "does it exist?" check). The points are always the signed-in
user's own. A batch is checked whole before anything is written: one bad point refuses it.
Points outside the user's grids are stored (GPS drifts, a patrol crosses boundaries); only
the user's own grids count for coverage.

Accuracy. Points reported with ``accuracy_m`` above ``POOR_ACCURACY_M`` are stored but left out
of the track, the distance and the coverage (a 300 m circle says nothing about which 100 m
grid the inspector stood in).

Whose grids. An inspector's unit grids are those ``grid_inspector`` names them the primary
inspector of; a user with no ``grid_inspector`` row at all (responsibilities not set up yet)
falls back to the ``grid_codes`` of their inspector role. A user who only stands in for
others has no grids of their own. Only current unit grids count (``valid_to IS NULL``).

Visited. A grid is visited on a day when a good point lies in it, or the track passes through
it: the straight segment between two consecutive good points at most ``MAX_SEGMENT_GAP`` apart
crosses it. A longer gap (tablet off, no signal) is not taken as a walk in a straight line.

Days are local dates in Asia/Shanghai: a point at 23:30 local belongs to that day even though
it is 15:30 UTC. Coverage rows are recomputed with today's responsibilities (grid_inspector
keeps no history); inspectors absent that day (staff_absence) get no row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor, area_prefix
from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.incidents.workcal import TZ

MAX_BATCH = 2000
# A time further ahead than this is a wrong tablet clock, not a point from the future.
CLOCK_SKEW = timedelta(minutes=10)
# Older than this is a reset tablet clock (1970, 2000) rather than a late outbox.
MAX_AGE = timedelta(days=31)
# No position fix is vaguer than the Earth's circumference (and the column is a 4-byte real).
MAX_ACCURACY_M = 40_000_000
POOR_ACCURACY_M = 100.0
MAX_SEGMENT_GAP = timedelta(minutes=2)
SIMPLIFY_M = 5.0  # track simplification tolerance, metres in EPSG:4547
METRIC_SRID = 4547  # CGCS2000 / 3-degree Gauss-Kruger CM 114E (Foshan)
MAX_LISTED_ERRORS = 100
REFUSED_KEYS = ("user_id", "user")  # points are always the signed-in user's own


@dataclass(frozen=True)
class PatrolPoint:
    recorded_at: datetime
    lon: float
    lat: float
    accuracy_m: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a double's range
        return None
    return number if math.isfinite(number) else None


def parse_batch(body: Mapping[str, Any], *, now: datetime | None = None) -> list[PatrolPoint]:
    """The batch's points, or InvalidInput naming every bad field (``points[i].field``)."""
    now = now or datetime.now(UTC)
    errors: list[FieldError] = [
        FieldError(key, "points are always the signed-in user's own; do not send a user")
        for key in REFUSED_KEYS
        if key in body
    ]
    raw = body.get("points")
    if not isinstance(raw, list):
        raise InvalidInput(
            'send {"points": [...]}', [*errors, FieldError("points", "a list of points")]
        )
    if len(raw) > MAX_BATCH:
        raise InvalidInput(
            f"{len(raw)} points in one batch",
            [*errors, FieldError("points", f"at most {MAX_BATCH} points per batch")],
        )
    points: list[PatrolPoint] = []
    for i, item in enumerate(raw):
        where = f"points[{i}]"
        if not isinstance(item, dict):
            errors.append(FieldError(where, "an object with t, lon, lat and accuracy_m"))
            continue
        errors += [
            FieldError(f"{where}.{key}", "points are always the signed-in user's own")
            for key in REFUSED_KEYS
            if key in item
        ]
        bad = len(errors)
        raw_t = item.get("t")
        try:
            when = datetime.fromisoformat(raw_t) if isinstance(raw_t, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            errors.append(FieldError(f"{where}.t", "ISO 8601 time with its UTC offset"))
        elif when > now + CLOCK_SKEW:
            errors.append(FieldError(f"{where}.t", "lies in the future (check the clock)"))
        elif when < now - MAX_AGE:
            errors.append(FieldError(f"{where}.t", f"older than {MAX_AGE.days} days"))
        coordinates = {}
        for name, low, high in (("lon", -180, 180), ("lat", -90, 90)):
            value = _number(item.get(name))
            if value is None or not low <= value <= high:
                errors.append(FieldError(f"{where}.{name}", f"a number between {low} and {high}"))
            coordinates[name] = value
        accuracy = _number(item.get("accuracy_m"))
        if accuracy is None or not 0 <= accuracy <= MAX_ACCURACY_M:
            errors.append(
                FieldError(f"{where}.accuracy_m", f"metres, a number from 0 to {MAX_ACCURACY_M:,}")
            )
        if len(errors) == bad and when is not None and accuracy is not None:
            # To the millimetre: the real column holds no finer, and refuses 5e-324 (underflow).
            accuracy = round(accuracy, 3)
            points.append(PatrolPoint(when, coordinates["lon"], coordinates["lat"], accuracy))
    if errors:
        listed = errors[:MAX_LISTED_ERRORS]
        more = (
            f"; the first {len(listed)} of {len(errors)} are listed"
            if errors[len(listed) :]
            else ""
        )
        raise InvalidInput(f"the batch is not valid, nothing was stored{more}", listed)
    return points


def store_points(session: Session, user_id: int, points: Sequence[PatrolPoint]) -> dict[str, int]:
    """Insert the points (one statement for the batch) as ``user_id``'s; the caller commits.

    Rows go in time order, so that two copies of a batch racing lock its keys in the same
    order and the later one waits and then finds them there (no deadlock, no duplicate).
    """
    stored = 0
    if points:
        ordered = sorted(points, key=lambda p: p.recorded_at)
        stored = session.execute(
            text(
                """
                INSERT INTO patrol_point (user_id, recorded_at, geom, accuracy_m)
                SELECT :user, b.t, ST_SetSRID(ST_MakePoint(b.lon, b.lat), 4326), b.acc
                FROM unnest(CAST(:ts AS timestamptz[]), CAST(:lons AS float8[]),
                            CAST(:lats AS float8[]), CAST(:accs AS float8[]))
                     WITH ORDINALITY AS b (t, lon, lat, acc, n)
                ORDER BY b.n
                ON CONFLICT (user_id, recorded_at) DO NOTHING
                """
            ),
            {
                "user": user_id,
                "ts": [p.recorded_at for p in ordered],
                "lons": [p.lon for p in ordered],
                "lats": [p.lat for p in ordered],
                "accs": [p.accuracy_m for p in ordered],
            },
        ).rowcount
    return {
        "received": len(points),
        "stored": stored,
        "duplicates": len(points) - stored,
        "poor_accuracy": sum(p.accuracy_m > POOR_ACCURACY_M for p in points),
    }


def upload(session: Session, actor: Actor, body: Mapping[str, Any]) -> dict[str, int]:
    """Check and store a batch of the actor's own points; the caller commits."""
    return store_points(session, actor.user_id, parse_batch(body))


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The local day [00:00, next 00:00) in Asia/Shanghai as aware datetimes."""
    start = datetime.combine(day, time(), TZ)
    return start, datetime.combine(day + timedelta(days=1), time(), TZ)


def _day_ctes(who_filter: str) -> str:
    """CTEs ``who`` (the users with their grids), ``track`` and ``per_user`` for one day.

    ``who_filter`` is a condition over ``who``'s columns (user_id, role_grids, duty_grids,
    own_grids, absent). Parameters: start, end, day, max_acc, max_gap.
    """
    return f"""
    WITH inspectors AS (
        SELECT u.id AS user_id, u.username, u.display_name, d.duty_grids, d.primary_grids,
               r.role_grids,
               EXISTS (SELECT 1 FROM staff_absence a WHERE a.user_id = u.id
                       AND CAST(:day AS date) BETWEEN a.starts_on AND a.ends_on) AS absent
        FROM app_user u
        CROSS JOIN LATERAL (
            SELECT CAST(array_agg(gi.grid_code ORDER BY gi.grid_code) AS text[]) AS duty_grids,
                   CAST(array_agg(gi.grid_code ORDER BY gi.grid_code)
                       FILTER (WHERE gi.is_primary) AS text[]) AS primary_grids
            FROM grid_inspector gi WHERE gi.user_id = u.id) d
        CROSS JOIN LATERAL (
            SELECT CAST(array_agg(DISTINCT c ORDER BY c) AS text[]) AS role_grids
            FROM role_assignment ra CROSS JOIN unnest(ra.grid_codes) AS c
            WHERE ra.user_id = u.id AND ra.role = 'inspector') r
        WHERE u.is_active AND (d.duty_grids IS NOT NULL OR r.role_grids IS NOT NULL)
    ),
    who AS (
        SELECT * FROM (
            SELECT i.*,
                   CASE WHEN i.duty_grids IS NOT NULL THEN 'grid_inspector' ELSE 'role' END
                       AS grids_source,
                   COALESCE(CASE WHEN i.duty_grids IS NOT NULL THEN i.primary_grids
                            ELSE i.role_grids END, CAST('{{}}' AS text[])) AS own_grids
            FROM inspectors i) w
        WHERE {who_filter}
    ),
    good AS (
        SELECT p.user_id, p.recorded_at, p.geom,
               p.recorded_at - lag(p.recorded_at) OVER w AS gap,
               lag(p.geom) OVER w AS prev_geom
        FROM patrol_point p JOIN who ON who.user_id = p.user_id
        WHERE p.recorded_at >= :start AND p.recorded_at < :end AND p.accuracy_m <= :max_acc
        WINDOW w AS (PARTITION BY p.user_id ORDER BY p.recorded_at)
    ),
    track AS (
        SELECT user_id, count(*) AS points, min(recorded_at) AS first_at,
               max(recorded_at) AS last_at,
               ST_MakeLine(geom ORDER BY recorded_at) AS line,
               ST_Collect(geom) AS multipoint,
               ST_Collect(ST_MakeLine(prev_geom, geom))
                   FILTER (WHERE gap <= :max_gap AND NOT ST_Equals(prev_geom, geom)) AS segments
        FROM good GROUP BY user_id
    ),
    grid AS (
        SELECT who.user_id, g.code,
               COALESCE(ST_Intersects(g.geom, t.multipoint)
                        OR COALESCE(ST_Intersects(g.geom, t.segments), false), false) AS visited
        FROM who
        JOIN unit_grid g ON g.valid_to IS NULL AND g.code = ANY(who.own_grids)
        LEFT JOIN track t ON t.user_id = who.user_id
    ),
    per_user AS (
        SELECT user_id, array_agg(code ORDER BY code) AS grids,
               array_agg(code ORDER BY code) FILTER (WHERE visited) AS visited_grids,
               count(*) AS grids_total, count(*) FILTER (WHERE visited) AS grids_visited
        FROM grid GROUP BY user_id
    )
    """


def _day_params(day: date) -> dict[str, Any]:
    start, end = day_bounds(day)
    return {
        "start": start,
        "end": end,
        "day": day,
        "max_acc": POOR_ACCURACY_M,
        "max_gap": MAX_SEGMENT_GAP,
    }


def compute_coverage(session: Session, day: date) -> int:
    """Write ``patrol_coverage`` for the local ``day``: one row per active inspector with
    grids who was not absent that day; rows of others for that day are removed. Idempotent
    (``ON CONFLICT DO UPDATE``), set-based; returns the number of rows written. The caller
    commits."""
    params = _day_params(day)
    written = (
        session.execute(
            text(
                _day_ctes("cardinality(own_grids) > 0 AND NOT absent")
                + """
            INSERT INTO patrol_coverage
                (user_id, day, grids_total, grids_visited, distance_m, computed_at)
            SELECT who.user_id, :day, COALESCE(pu.grids_total, 0),
                   COALESCE(pu.grids_visited, 0),
                   COALESCE(ST_Length(CAST(t.line AS geography)), 0), now()
            FROM who
            JOIN per_user pu ON pu.user_id = who.user_id
            LEFT JOIN track t ON t.user_id = who.user_id
            ON CONFLICT (user_id, day) DO UPDATE SET
                grids_total = EXCLUDED.grids_total,
                grids_visited = EXCLUDED.grids_visited,
                distance_m = EXCLUDED.distance_m,
                computed_at = EXCLUDED.computed_at
            RETURNING user_id
            """
            ),
            params,
        )
        .scalars()
        .all()
    )
    # Someone who lost their grids, left, or was marked absent since the last run.
    session.execute(
        text("DELETE FROM patrol_coverage WHERE day = :day AND NOT (user_id = ANY(:kept))"),
        {"day": day, "kept": list(written)},
    )
    return len(written)


def _visibility(actor: Actor) -> tuple[str, dict[str, Any]]:
    """Which inspectors' tracks ``actor`` sees: their own, and (managers) those with a grid
    inside a full-access area of theirs; admins everyone. Restricted areas never count."""
    scope = actor.scope()
    if scope.everything:
        return "true", {}
    prefixes = [area_prefix(code) + "%" for code in scope.full_areas]
    condition = (
        "(user_id = :me OR EXISTS (SELECT 1 FROM unnest(COALESCE(role_grids, '{}') "
        "|| COALESCE(duty_grids, '{}')) AS c WHERE c LIKE ANY(CAST(:area_prefixes AS text[]))))"
    )
    return condition, {"me": actor.user_id, "area_prefixes": prefixes}


def patrol_day(
    session: Session, actor: Actor, day: date, *, user_id: int | None = None
) -> dict[str, Any]:
    """Each visible inspector's track of the local ``day`` as a GeoJSON FeatureCollection.

    ``user_id`` narrows it to one inspector; one the actor does not see (or who does not
    exist, or is no inspector) is NotFound, so nobody learns who patrols elsewhere.
    """
    condition, params = _visibility(actor)
    if user_id is not None:
        condition += " AND user_id = :only"
        params["only"] = user_id
    rows = session.execute(
        text(
            _day_ctes(condition)
            + f"""
            SELECT who.user_id, who.username, who.display_name, who.grids_source, who.absent,
                   COALESCE(t.points, 0) AS points,
                   (SELECT count(*) FROM patrol_point p WHERE p.user_id = who.user_id
                    AND p.recorded_at >= :start AND p.recorded_at < :end
                    AND (p.accuracy_m IS NULL OR p.accuracy_m > :max_acc)) AS points_poor,
                   t.first_at, t.last_at,
                   COALESCE(ST_Length(CAST(t.line AS geography)), 0) AS distance_m,
                   CASE WHEN t.points >= 2 THEN ST_AsGeoJSON(ST_Transform(ST_Simplify(
                            ST_Transform(t.line, {METRIC_SRID}), :tolerance, true), 4326), 6)
                        WHEN t.points = 1 THEN ST_AsGeoJSON(ST_GeometryN(t.multipoint, 1), 6)
                   END AS track,
                   COALESCE(pu.grids, '{{}}') AS grids,
                   COALESCE(pu.visited_grids, '{{}}') AS visited_grids,
                   COALESCE(pu.grids_total, 0) AS grids_total,
                   COALESCE(pu.grids_visited, 0) AS grids_visited,
                   pc.grids_total AS snap_total, pc.grids_visited AS snap_visited,
                   pc.distance_m AS snap_distance, pc.computed_at AS snap_at
            FROM who
            LEFT JOIN track t ON t.user_id = who.user_id
            LEFT JOIN per_user pu ON pu.user_id = who.user_id
            LEFT JOIN patrol_coverage pc ON pc.user_id = who.user_id AND pc.day = :day
            ORDER BY who.username
            """
        ),
        {**_day_params(day), **params, "tolerance": SIMPLIFY_M},
    ).mappings()
    features = [_feature(row) for row in rows]
    if user_id is not None and not features:
        raise NotFound(f"no inspector {user_id} in your jurisdiction")
    return {
        "type": "FeatureCollection",
        "date": day.isoformat(),
        "time_zone": "Asia/Shanghai",
        "poor_accuracy_m": POOR_ACCURACY_M,
        "features": features,
    }


def _local(when: datetime | None) -> str | None:
    return when.astimezone(TZ).isoformat() if when is not None else None


def _feature(row: Mapping[str, Any]) -> dict[str, Any]:
    total, visited = int(row["grids_total"]), int(row["grids_visited"])
    snapshot = None
    if row["snap_at"] is not None:
        snapshot = {
            "grids_total": row["snap_total"],
            "grids_visited": row["snap_visited"],
            "distance_m": round(float(row["snap_distance"]), 1),
            "computed_at": _local(row["snap_at"]),
        }
    return {
        "type": "Feature",
        "id": row["user_id"],
        "geometry": json.loads(row["track"]) if row["track"] else None,
        "properties": {
            "user_id": row["user_id"],
            "username": row["username"],
            "display_name": row["display_name"],
            "absent": row["absent"],
            "points": int(row["points"]),
            "points_poor_accuracy": int(row["points_poor"]),
            "first_at": _local(row["first_at"]),
            "last_at": _local(row["last_at"]),
            "distance_m": round(float(row["distance_m"]), 1),
            "grids_source": row["grids_source"],
            "grids": list(row["grids"]),
            "grids_visited": list(row["visited_grids"]),
            "grids_total": total,
            "visited_count": visited,
            "share_visited": round(visited / total, 4) if total else None,
            "coverage_snapshot": snapshot,
        },
    }

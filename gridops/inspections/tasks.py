"""Inspection tasks as they fall due: created once, placed with the inspectors of the area by
their capacity, and put in a walking order for the day.

``create_due_tasks(session, day)`` is the planner job (the scheduler runs it daily). It is
idempotent: plans are refreshed in place, a task is created once per (plan, due day) by the
table's unique constraint, tasks already placed stay where they are, and only inspectors whose
list changed get a new route. A second run on the same day writes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.inspections import assign, routes
from gridops.inspections.risk import refresh_plans

DEFAULT_TASKS_PER_DAY = 12  # inspector_profile's default, for inspectors without a profile
LOCK_KEY = "gridops.inspections.create_due_tasks"
REPORTED_IDS = 200  # unassigned task ids listed in the result (the count is always there)

# The target of a plan (``p``): its name, address and point, whichever table it is in.
TARGET_SQL = """
    LEFT JOIN enterprise te ON p.target_kind = 'enterprise' AND te.id = p.target_id
    LEFT JOIN service_outlet tou ON p.target_kind = 'outlet' AND tou.id = p.target_id
    CROSS JOIN LATERAL (
        SELECT coalesce(te.geom, tou.geom) AS geom, coalesce(te.name, tou.name) AS name,
               coalesce(te.address, tou.address) AS address,
               coalesce(te.industry, tou.outlet_type) AS label
    ) tg
"""
ABSENT_SQL = (
    "EXISTS (SELECT 1 FROM staff_absence a WHERE a.user_id = {user} "
    "AND CAST(:day AS date) BETWEEN a.starts_on AND a.ends_on)"
)


def create_due_tasks(
    session: Session, day: date, *, route_time_limit_s: float = routes.DEFAULT_TIME_LIMIT_S
) -> dict[str, Any]:
    """Refresh the plans, create the tasks due on or before ``day``, place them, order each
    changed day. The caller commits. Returns counts and the ids of tasks nobody could take."""
    # One planner at a time (a manual run beside the scheduled one waits, then finds the work
    # done); the lock ends with the transaction.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": LOCK_KEY})
    plans_changed = refresh_plans(session, day)
    released = session.execute(
        text(
            f"""
            UPDATE inspection_task t SET assignee_id = NULL, route_order = NULL,
                   version = t.version + 1
            WHERE t.status = 'open' AND t.assignee_id IS NOT NULL
              AND ({ABSENT_SQL.format(user="t.assignee_id")}
                   OR NOT EXISTS (SELECT 1 FROM app_user u WHERE u.id = t.assignee_id
                                  AND u.is_active))
            """
        ),
        {"day": day},
    ).rowcount
    created = session.execute(
        text(
            """
            INSERT INTO inspection_task (plan_id, due_on)
            SELECT p.id, p.next_due_on FROM inspection_plan p
            WHERE p.active AND p.next_due_on <= :day
              AND NOT EXISTS (SELECT 1 FROM inspection_task t
                              WHERE t.plan_id = p.id AND t.status = 'open')
            ON CONFLICT (plan_id, due_on) DO NOTHING
            """
        ),
        {"day": day},
    ).rowcount
    placed, unplaced = place_tasks(session, day)
    routed = route_days(session, day, time_limit_s=route_time_limit_s)
    return {
        "day": day.isoformat(),
        "plans_changed": plans_changed,
        "released": int(released),
        "created": int(created),
        "assigned": placed,
        "unassigned": len(unplaced),
        "unassigned_ids": unplaced[:REPORTED_IDS],
        "routed_inspectors": routed,
    }


def place_tasks(session: Session, day: date) -> tuple[int, list[int]]:
    """Assign the open, unassigned tasks due by ``day``; (number placed, ids left over)."""
    rows = session.execute(
        text(
            f"""
            SELECT t.id, ST_X(m.xy) AS x, ST_Y(m.xy) AS y, g.code AS grid_code,
                   g.community_code
            FROM inspection_task t JOIN inspection_plan p ON p.id = t.plan_id
            {TARGET_SQL}
            CROSS JOIN LATERAL (SELECT ST_Transform(tg.geom, 4547) AS xy) m
            LEFT JOIN LATERAL (
                SELECT ug.code, ug.community_code FROM unit_grid ug
                WHERE ug.valid_to IS NULL AND ST_Covers(ug.geom, tg.geom)
                ORDER BY ug.code LIMIT 1
            ) g ON true
            WHERE t.status = 'open' AND t.assignee_id IS NULL AND t.due_on <= :day
            ORDER BY t.due_on, t.id
            FOR UPDATE OF t
            """
        ),
        {"day": day},
    ).all()
    if not rows:
        return 0, []
    communities = sorted({r.community_code for r in rows if r.community_code})
    duties = session.execute(
        text(
            f"""
            SELECT gi.grid_code, gi.user_id, gi.is_primary FROM grid_inspector gi
            JOIN app_user u ON u.id = gi.user_id AND u.is_active
            WHERE left(gi.grid_code, 12) = ANY(:communities)
              AND NOT {ABSENT_SQL.format(user="gi.user_id")}
            ORDER BY gi.grid_code, gi.user_id
            """
        ),
        {"communities": communities, "day": day},
    ).all()
    by_grid: dict[str, list[tuple[int, int]]] = defaultdict(list)
    by_community: dict[str, set[int]] = defaultdict(set)
    for d in duties:
        tier = assign.TIER_PRIMARY if d.is_primary else assign.TIER_STAND_IN
        by_grid[d.grid_code].append((d.user_id, tier))
        by_community[d.grid_code[:12]].add(d.user_id)
    tasks = []
    for r in rows:
        if r.x is None or r.community_code is None:
            continue  # the target is gone, or lies in no unit grid: for the dispatcher
        grid = by_grid.get(r.grid_code, [])
        on_grid = {person for person, _ in grid}
        others = sorted(by_community.get(r.community_code, set()) - on_grid)
        candidates = (*grid, *((p, assign.TIER_COMMUNITY) for p in others))
        tasks.append(assign.Task(r.id, r.x, r.y, candidates))
    people = sorted({p for t in tasks for p, _ in t.candidates})
    placed = assign.balance(tasks, inspector_states(session, people, day))
    chosen = {task: person for task, person in placed.items() if person is not None}
    if chosen:
        session.execute(
            text(
                "UPDATE inspection_task t SET assignee_id = u.person, route_order = NULL, "
                "version = t.version + 1 "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:people AS bigint[])) AS u(id, person) "
                "WHERE t.id = u.id"
            ),
            {"ids": list(chosen), "people": list(chosen.values())},
        )
    return len(chosen), [r.id for r in rows if r.id not in chosen]


def inspector_states(session: Session, people: list[int], day: date) -> list[assign.Inspector]:
    """Capacity, open load and anchor (metric) of each inspector."""
    rows = session.execute(
        text(
            """
            SELECT u.id, coalesce(ip.tasks_per_day, :default) AS per_day,
                   (SELECT count(*) FROM inspection_task t WHERE t.assignee_id = u.id
                    AND t.status = 'open' AND t.due_on <= :day) AS load,
                   ST_X(a.xy) AS x, ST_Y(a.xy) AS y
            FROM app_user u LEFT JOIN inspector_profile ip ON ip.user_id = u.id
            CROSS JOIN LATERAL (SELECT ST_Transform(coalesce(ip.home, (
                SELECT ST_Centroid(ST_Collect(g.geom)) FROM grid_inspector gi
                JOIN unit_grid g ON g.code = gi.grid_code AND g.valid_to IS NULL
                WHERE gi.user_id = u.id)), 4547) AS xy) a
            WHERE u.id = ANY(:people)
            """
        ),
        {"people": people, "day": day, "default": DEFAULT_TASKS_PER_DAY},
    ).all()
    return [
        assign.Inspector(r.id, max(r.per_day - r.load, 0), r.per_day, r.load, r.x, r.y)
        for r in rows
    ]


def route_days(session: Session, day: date, *, time_limit_s: float) -> int:
    """Order the open tasks of every inspector whose list changed; how many were ordered."""
    rows = session.execute(
        text(
            f"""
            SELECT t.assignee_id, t.id, ST_X(m.xy) AS x, ST_Y(m.xy) AS y
            FROM inspection_task t JOIN inspection_plan p ON p.id = t.plan_id
            {TARGET_SQL}
            CROSS JOIN LATERAL (SELECT ST_Transform(tg.geom, 4547) AS xy) m
            WHERE t.status = 'open' AND t.due_on <= :day AND t.assignee_id IN (
                SELECT c.assignee_id FROM inspection_task c WHERE c.status = 'open'
                AND c.route_order IS NULL AND c.assignee_id IS NOT NULL AND c.due_on <= :day)
            ORDER BY t.assignee_id, t.id
            """
        ),
        {"day": day},
    ).all()
    if not rows:
        return 0
    stops: dict[int, list[tuple[int, tuple[float, float]]]] = defaultdict(list)
    pointless: dict[int, list[int]] = defaultdict(list)  # targets gone: last in the day
    for r in rows:
        if r.x is None:
            pointless[r.assignee_id].append(r.id)
        else:
            stops[r.assignee_id].append((r.id, (r.x, r.y)))
    anchors = {i.id: i for i in inspector_states(session, sorted(stops), day)}
    ids: list[int] = []
    orders: list[int] = []
    for person, day_stops in stops.items():
        points = [xy for _, xy in day_stops]
        anchor = anchors.get(person)
        if anchor is not None and anchor.x is not None and anchor.y is not None:
            start = (anchor.x, anchor.y)
        else:  # nowhere to start from: the middle of the day's stops
            start = (
                sum(x for x, _ in points) / len(points),
                sum(y for _, y in points) / len(points),
            )
        order = routes.order_stops(start, points, time_limit_s=time_limit_s)
        in_order = [day_stops[i][0] for i in order] + pointless.pop(person, [])
        ids.extend(in_order)
        orders.extend(range(1, len(in_order) + 1))
    for rest in pointless.values():
        ids.extend(rest)
        orders.extend(range(1, len(rest) + 1))
    session.execute(
        text(
            "UPDATE inspection_task t SET route_order = u.pos "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:orders AS integer[])) AS u(id, pos) "
            "WHERE t.id = u.id"
        ),
        {"ids": ids, "orders": orders},
    )
    return len(stops) + len(pointless)


__all__ = ["TARGET_SQL", "create_due_tasks", "inspector_states", "place_tasks", "route_days"]

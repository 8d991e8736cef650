"""Assign 10,000 open inspection tasks over 300 inspectors and plan their days: the project's
path against a greedy nearest-inspector baseline, same process, same data.

    .venv/bin/python bench/dispatch.py [--tasks 10000] [--inspectors 300] [--capacity 40]
                                       [--route-seconds 0.2] [--seed 6]

The data is synthetic but shaped like Chancheng (禅城区, Foshan): inspectors' posts follow the
density of its street centres plus a uniform background over the district's extent; each
patrols a beat (the unit grids nearest their post) drawn to carry a similar workload (±20 %),
so beats are small in the centre and large outside; the tasks lie in the beats; homes are near
the posts; communities of about six inspectors are neighbouring posts (k-means), and the
nearest colleague in the community stands in. 3 % of inspectors are absent.

- project: ``gridops.inspections.assign.balance`` (min-cost flow: primary first, then stand-in,
  then the community, capacity-balanced) and ``routes.order_stops`` (OR-Tools routing with the
  project's time limit per day) — what ``create_due_tasks`` runs after its SQL reads.
- descent: the same with routes stopped at their first local optimum (no time limit used).
- baseline: each task (in id order) to the nearest inspector with room, whatever their beat;
  each day ordered by nearest neighbour.

Distances are metres on EPSG:4547; the tasks the project leaves to the dispatcher (every
inspector of their community full) are not walked, so metres per placed task are printed too.
Spread is the busiest inspector's tasks over the mean of the
inspectors on duty. No database: the SQL around the solver is the same for both and is not
what is compared. Last line: JSON (peak_mb is the process's peak resident memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import defaultdict
from typing import Any

import numpy as np

from gridops.inspections import assign, routes

# Chancheng's extent and its street centres (lon, lat, sigma km, weight).
EXTENT = (113.02, 22.95, 113.16, 23.08)
CENTRES = (
    (113.115, 23.030, 1.6, 0.32),  # 祖庙
    (113.090, 23.000, 1.5, 0.22),  # 石湾
    (113.085, 23.055, 1.8, 0.18),  # 张槎
    (113.030, 22.995, 2.0, 0.13),  # 南庄
)
BACKGROUND = 0.15
ABSENT_SHARE = 0.03
COMMUNITY_SIZE = 6


def sample_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` lon/lat points inside the extent: street-centre clusters and a background."""
    x0, y0, x1, y1 = EXTENT
    out = np.empty((0, 2))
    while len(out) < n:
        k = n - len(out)
        pick = rng.choice(len(CENTRES) + 1, size=k, p=[c[3] for c in CENTRES] + [BACKGROUND])
        pts = np.column_stack([rng.uniform(x0, x1, k), rng.uniform(y0, y1, k)])
        for i, (lon, lat, sigma_km, _) in enumerate(CENTRES):
            m = pick == i
            pts[m, 0] = lon + rng.normal(size=m.sum()) * sigma_km / 102.4
            pts[m, 1] = lat + rng.normal(size=m.sum()) * sigma_km / 110.6
        inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        out = np.concatenate([out, pts[inside]])
    return out[:n]


def nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return d.argmin(axis=1)


def kmeans(rng: np.random.Generator, points: np.ndarray, k: int, rounds: int = 15) -> np.ndarray:
    centres = points[rng.choice(len(points), size=k, replace=False)]
    for _ in range(rounds):
        label = nearest(points, centres)
        for j in range(k):
            members = points[label == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return centres


def make_world(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    # Posts follow the density of the district; beats are drawn to carry similar work, so
    # each post gets a similar number of tasks spread over its beat (small in the centre).
    posts = routes.project(*sample_points(rng, args.inspectors).T)
    gap = np.sqrt(((posts[:, None, :] - posts[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(gap, np.inf)
    radius = gap.min(axis=1) / 2
    weight = rng.uniform(0.8, 1.2, args.inspectors)
    per_post = rng.multinomial(args.tasks, weight / weight.sum())
    owner = np.repeat(np.arange(args.inspectors), per_post)
    xy = posts[owner] + rng.normal(size=(args.tasks, 2)) * radius[owner, None]
    xy = xy[rng.permutation(args.tasks)]  # tasks come in no spatial order
    homes = posts + rng.normal(size=posts.shape) * 200.0
    beat = nearest(xy, posts)  # the primary of each task's grid
    community = nearest(posts, kmeans(rng, posts, max(1, args.inspectors // COMMUNITY_SIZE)))
    members: dict[int, list[int]] = defaultdict(list)
    for person, c in enumerate(community):
        members[int(c)].append(person)
    stand_in = {}
    for person in range(args.inspectors):
        colleagues = [p for p in members[int(community[person])] if p != person]
        if colleagues:
            d = np.hypot(*(posts[colleagues] - posts[person]).T)
            stand_in[person] = colleagues[int(d.argmin())]
    absent = set(
        rng.choice(args.inspectors, size=round(args.inspectors * ABSENT_SHARE), replace=False)
    )
    return {
        "xy": xy,
        "homes": homes,
        "beat": beat,
        "community": community,
        "members": members,
        "stand_in": stand_in,
        "absent": {int(a) for a in absent},
    }


def candidates(world: dict[str, Any], task: int) -> tuple[tuple[int, int], ...]:
    """As ``create_due_tasks`` builds them: the grid's primary and stand-in, then the rest of
    the community (absent inspectors are not candidates)."""
    primary = int(world["beat"][task])
    listed = [(primary, assign.TIER_PRIMARY)]
    if primary in world["stand_in"]:
        listed.append((world["stand_in"][primary], assign.TIER_STAND_IN))
    on_grid = {p for p, _ in listed}
    for person in world["members"][int(world["community"][primary])]:
        if person not in on_grid:
            listed.append((person, assign.TIER_COMMUNITY))
    return tuple((p, t) for p, t in listed if p not in world["absent"])


def plan_days(
    world: dict[str, Any], placed: dict[int, int | None], order: Any
) -> tuple[float, dict[int, int]]:
    """Order each inspector's day with ``order(start, stops)``; (total km, tasks per person)."""
    days: dict[int, list[int]] = defaultdict(list)
    for task, person in placed.items():
        if person is not None:
            days[person].append(task)
    total = 0.0
    for person, day in days.items():
        start = tuple(world["homes"][person])
        stops = [tuple(world["xy"][t]) for t in day]
        total += routes.route_length(start, stops, order(start, stops))
    return total / 1000, {p: len(d) for p, d in days.items()}


def project_path(world: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    present = [p for p in range(args.inspectors) if p not in world["absent"]]
    inspectors = [
        assign.Inspector(p, args.capacity, args.capacity, 0, *world["homes"][p]) for p in present
    ]
    tasks = [assign.Task(t, *world["xy"][t], candidates(world, t)) for t in range(len(world["xy"]))]
    placed = assign.balance(tasks, inspectors)
    assigned = time.perf_counter()
    km, loads = plan_days(
        world,
        placed,
        lambda start, stops: routes.order_stops(start, stops, time_limit_s=args.route_seconds),
    )
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "assign_s": assigned - started,
        "route_s": done - assigned,
        "km": km,
        "loads": loads,
        "unassigned": sum(p is None for p in placed.values()),
    }


def baseline_path(world: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    present = np.array([p for p in range(args.inspectors) if p not in world["absent"]])
    homes = world["homes"][present]
    room = dict.fromkeys(present.tolist(), args.capacity)
    placed: dict[int, int | None] = {}
    for task, point in enumerate(world["xy"]):
        by_distance = present[np.argsort(np.hypot(*(homes - point).T), kind="stable")]
        placed[task] = None
        for person in by_distance.tolist():
            if room[person]:
                room[person] -= 1
                placed[task] = person
                break
    assigned = time.perf_counter()
    km, loads = plan_days(world, placed, routes.nearest_neighbour_order)
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "assign_s": assigned - started,
        "route_s": done - assigned,
        "km": km,
        "loads": loads,
        "unassigned": sum(p is None for p in placed.values()),
    }


def spread(loads: dict[int, int], on_duty: int) -> tuple[float, float]:
    """(max / mean, coefficient of variation) of tasks per inspector on duty."""
    counts = np.zeros(on_duty)
    counts[: len(loads)] = list(loads.values())
    mean = counts.mean()
    return float(counts.max() / mean), float(counts.std() / mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--inspectors", type=int, default=300)
    parser.add_argument("--capacity", type=int, default=40)
    parser.add_argument("--route-seconds", type=float, default=routes.DEFAULT_TIME_LIMIT_S)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    world = make_world(args)
    on_duty = args.inspectors - len(world["absent"])
    print(
        f"{args.tasks} tasks, {args.inspectors} inspectors ({on_duty} on duty, capacity "
        f"{args.capacity}), {len(world['members'])} communities"
    )
    descent = argparse.Namespace(**{**vars(args), "route_seconds": 0.0})
    results = {}
    for name, run in (
        ("project", lambda w: project_path(w, args)),
        ("descent", lambda w: project_path(w, descent)),  # routes: first local optimum only
        ("baseline", lambda w: baseline_path(w, args)),
    ):
        r = run(world)
        r["spread"], r["cv"] = spread(r["loads"], on_duty)
        results[name] = r
        print(
            f"{name:9s} {r['seconds']:7.2f} s (assign {r['assign_s']:.2f} s, routes "
            f"{r['route_s']:.2f} s)  {r['km']:9.1f} km  spread max/mean {r['spread']:.2f} "
            f"cv {r['cv']:.2f}  unassigned {r['unassigned']}"
        )
    project, baseline = results["project"], results["baseline"]
    quick = results["descent"]
    figures = {
        "bench": "dispatch",
        "tasks": args.tasks,
        "inspectors": args.inspectors,
        "project_s": round(project["seconds"], 3),
        "baseline_s": round(baseline["seconds"], 3),
        "ratio": round(baseline["seconds"] / project["seconds"], 3),
        "project_km": round(project["km"], 1),
        "baseline_km": round(baseline["km"], 1),
        "project_m_per_task": round(1000 * project["km"] / (args.tasks - project["unassigned"])),
        "baseline_m_per_task": round(1000 * baseline["km"] / (args.tasks - baseline["unassigned"])),
        "project_spread": round(project["spread"], 3),
        "baseline_spread": round(baseline["spread"], 3),
        "project_cv": round(project["cv"], 3),
        "baseline_cv": round(baseline["cv"], 3),
        "project_unassigned": project["unassigned"],
        "baseline_unassigned": baseline["unassigned"],
        "project_assign_s": round(project["assign_s"], 3),
        "project_route_s": round(project["route_s"], 3),
        "route_seconds_limit": args.route_seconds,
        "descent_s": round(quick["seconds"], 3),
        "descent_km": round(quick["km"], 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The order of an inspector's day: a short open route from their start over the day's stops.

Distances are straight lines in metres on EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E,
the house CRS for Foshan), the same for walking, cycling and driving: the order is what is
stored, and a street network would change lengths more than it changes the best order.

``order_stops`` asks OR-Tools' routing solver for a path (the inspector does not come back:
the route ends at the last stop), first solution by cheapest arc (the nearest-neighbour tour),
then guided local search within a time limit. The nearest-neighbour order is kept whenever it
is not longer, so the result is never worse than that baseline. Up to ``EXACT_UP_TO`` stops,
every order is tried instead.

No database, no Flask: ``tasks.create_due_tasks`` and ``bench/dispatch.py`` both call it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
from ortools.constraint_solver import pywrapcp, routing_enums_pb2
from pyproj import Transformer

METRIC_CRS = "EPSG:4547"
EXACT_UP_TO = 6  # 720 orders: cheaper than starting the solver
DEFAULT_TIME_LIMIT_S = 0.2
SECONDS_PER_STOP = 0.005  # small days need less search: 40 stops get the whole 0.2 s

Point = tuple[float, float]


@cache
def _to_metric() -> Transformer:
    return Transformer.from_crs("EPSG:4326", METRIC_CRS, always_xy=True)


def project(lon: Sequence[float] | np.ndarray, lat: Sequence[float] | np.ndarray) -> np.ndarray:
    """Lon/lat (EPSG:4326) → an (n, 2) array of metres on EPSG:4547."""
    x, y = _to_metric().transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    return np.column_stack([np.atleast_1d(x), np.atleast_1d(y)])


def route_length(start: Point, stops: Sequence[Point], order: Sequence[int]) -> float:
    """Metres from ``start`` through ``stops`` in ``order`` (an open path)."""
    total, here = 0.0, start
    for i in order:
        total += math.dist(here, stops[i])
        here = stops[i]
    return total


def nearest_neighbour_order(start: Point, stops: Sequence[Point]) -> list[int]:
    """Always on to the closest stop not yet visited (ties: the lower index)."""
    if not stops:
        return []
    xy = np.asarray(stops, dtype=float)
    left = np.ones(len(stops), dtype=bool)
    order: list[int] = []
    here = np.asarray(start, dtype=float)
    for _ in range(len(stops)):
        d = np.hypot(xy[:, 0] - here[0], xy[:, 1] - here[1])
        d[~left] = np.inf
        nxt = int(np.argmin(d))
        order.append(nxt)
        left[nxt] = False
        here = xy[nxt]
    return order


def _exact(start: Point, stops: Sequence[Point]) -> list[int]:
    best = min(
        itertools.permutations(range(len(stops))),
        key=lambda order: route_length(start, stops, order),
    )
    return list(best)


def _solver(start: Point, stops: Sequence[Point], time_limit_s: float) -> list[int] | None:
    n = len(stops)
    xy = np.asarray([start, *stops], dtype=float)
    metres = np.rint(np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)))
    # Node 0 is the start, 1..n the stops, n + 1 a free end: reaching it costs nothing.
    matrix = np.zeros((n + 2, n + 2), dtype=np.int64)
    matrix[: n + 1, : n + 1] = metres
    manager = pywrapcp.RoutingIndexManager(n + 2, 1, [0], [n + 1])
    routing = pywrapcp.RoutingModel(manager)
    transit = routing.RegisterTransitMatrix(matrix.tolist())
    routing.SetArcCostEvaluatorOfAllVehicles(transit)
    heuristics = routing_enums_pb2.LocalSearchMetaheuristic
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    if time_limit_s > 0:
        params.local_search_metaheuristic = heuristics.GUIDED_LOCAL_SEARCH
        params.time_limit.FromMilliseconds(max(1, round(time_limit_s * 1000)))
    else:  # a local optimum (2-opt, or-opt, …) and stop: fast and deterministic
        params.local_search_metaheuristic = heuristics.GREEDY_DESCENT
    solution = routing.SolveWithParameters(params)
    if solution is None:  # pragma: no cover - a single open path always has a solution
        return None
    order: list[int] = []
    index = routing.Start(0)
    while not routing.IsEnd(index):
        node = manager.IndexToNode(index)
        if node:
            order.append(node - 1)
        index = solution.Value(routing.NextVar(index))
    return order


def order_stops(
    start: Point, stops: Sequence[Point], *, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> list[int]:
    """The indices of ``stops`` in visiting order, starting from ``start`` (metric points).

    ``time_limit_s`` bounds the guided local search (at most SECONDS_PER_STOP per stop; 0:
    stop at the first local optimum). Never longer than the nearest-neighbour order.
    """
    if len(stops) <= 1:
        return list(range(len(stops)))
    if len(stops) <= EXACT_UP_TO:
        return _exact(start, stops)
    greedy = nearest_neighbour_order(start, stops)
    solved = _solver(start, stops, min(time_limit_s, SECONDS_PER_STOP * len(stops)))
    if solved is None or sorted(solved) != list(range(len(stops))):
        return greedy
    if route_length(start, stops, solved) <= route_length(start, stops, greedy):
        return solved
    return greedy


__all__ = [
    "METRIC_CRS",
    "nearest_neighbour_order",
    "order_stops",
    "project",
    "route_length",
]

"""Balanced assignment of inspection tasks to inspectors: a min-cost flow.

Each task goes to at most one of its eligible inspectors, and nobody gets more than the room
they have left today. Among all assignments that place the most tasks (a maximum flow), the
one of least cost is chosen, where the cost of a task at an inspector is

    tier × TIER_COST_M  +  distance from the inspector's anchor (home or grid centroid)

and each inspector's k-th task of the day adds LOAD_COST_M × k / tasks_per_day on top. The
tier cost outweighs any distance inside a community, so the primary inspector of the grid is
used first, then the grid's stand-ins, then the other inspectors of the community; the convex
load term spreads the overflow in proportion to capacity instead of filling the nearest
inspector to the brim.

Why a flow: one task → one inspector under capacities with separable convex costs is a
transportation problem, whose constraint matrix is totally unimodular, so OR-Tools'
``SimpleMinCostFlow`` (cost scaling, exact, integral) gives the optimum in well under a second
for 10,000 tasks. CP-SAT would only be needed for constraints a flow cannot say (skills, time
windows); it would be slower and stop at a time limit instead of the proven optimum.

No database, no Flask: ``tasks.create_due_tasks`` and ``bench/dispatch.py`` both call it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ortools.graph.python import min_cost_flow

TIER_PRIMARY = 0  # the grid's primary inspector (not absent)
TIER_STAND_IN = 1  # another inspector of the grid
TIER_COMMUNITY = 2  # another inspector of the same community
TIER_COST_M = 100_000  # metres a tier is worth: more than any distance inside a community
# The marginal cost of an inspector's last task of the day (the first costs 1/tasks_per_day of
# it): a task rather goes up to 1.5 km further to an idle inspector than to a full one.
LOAD_COST_M = 1_500


@dataclass(frozen=True)
class Inspector:
    id: int
    room: int  # tasks they can still take today
    per_day: int  # tasks_per_day
    load: int = 0  # open tasks already on their plate
    x: float | None = None  # anchor, metric (EPSG:4547); None: distance is not counted
    y: float | None = None


@dataclass(frozen=True)
class Task:
    id: int
    x: float
    y: float
    candidates: tuple[tuple[int, int], ...]  # (inspector id, tier), tier 0 best


def _cost(task: Task, inspector: Inspector, tier: int) -> int:
    distance = 0.0
    if inspector.x is not None and inspector.y is not None:
        distance = math.hypot(task.x - inspector.x, task.y - inspector.y)
    return tier * TIER_COST_M + round(distance)


def balance(tasks: Sequence[Task], inspectors: Iterable[Inspector]) -> dict[int, int | None]:
    """Task id → inspector id, or None where every eligible inspector is full (or none is).

    The number of tasks placed is the largest possible; among such assignments the cost
    described in the module docstring is minimal. Deterministic for the same input.
    """
    by_id: Mapping[int, Inspector] = {i.id: i for i in inspectors if i.room > 0}
    result: dict[int, int | None] = {t.id: None for t in tasks}
    placeable = [t for t in tasks if any(c in by_id for c, _ in t.candidates)]
    if not placeable:
        return result
    people = sorted({c for t in placeable for c, _ in t.candidates if c in by_id})
    source, sink = 0, 1
    task_node = {t.id: 2 + n for n, t in enumerate(placeable)}
    person_node = {p: 2 + len(placeable) + n for n, p in enumerate(people)}

    tails: list[int] = []
    heads: list[int] = []
    caps: list[int] = []
    costs: list[int] = []

    def arc(tail: int, head: int, capacity: int, cost: int) -> None:
        tails.append(tail)
        heads.append(head)
        caps.append(capacity)
        costs.append(cost)

    for task in placeable:
        arc(source, task_node[task.id], 1, 0)
    first_choice = len(tails)
    choices: list[tuple[int, int]] = []  # (task id, inspector id) per choice arc
    for task in placeable:
        best: dict[int, int] = {}  # an inspector listed twice counts at their best tier
        for person, tier in task.candidates:
            if person in by_id and tier < best.get(person, 1 << 30):
                best[person] = tier
        for person, tier in sorted(best.items()):
            arc(task_node[task.id], person_node[person], 1, _cost(task, by_id[person], tier))
            choices.append((task.id, person))
    for person in people:
        inspector = by_id[person]
        per_day = max(inspector.per_day, 1)
        for k in range(inspector.load + 1, inspector.load + inspector.room + 1):
            arc(person_node[person], sink, 1, round(LOAD_COST_M * k / per_day))

    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(
        np.array(tails, dtype=np.int32),
        np.array(heads, dtype=np.int32),
        np.array(caps, dtype=np.int64),
        np.array(costs, dtype=np.int64),
    )
    flow.set_node_supply(source, len(placeable))
    flow.set_node_supply(sink, -len(placeable))
    status = flow.solve_max_flow_with_min_cost()
    if status != flow.OPTIMAL:  # pragma: no cover - the network is always feasible
        raise RuntimeError(f"min-cost flow failed with status {status}")
    flows = flow.flows(np.arange(first_choice, first_choice + len(choices), dtype=np.int32))
    for (task_id, person), used in zip(choices, flows, strict=True):
        if used:
            result[task_id] = person
    return result


__all__ = [
    "LOAD_COST_M",
    "TIER_COMMUNITY",
    "TIER_COST_M",
    "TIER_PRIMARY",
    "TIER_STAND_IN",
    "Inspector",
    "Task",
    "balance",
]

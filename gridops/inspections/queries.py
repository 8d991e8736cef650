"""What the inspection API reads: an inspector's day in route order, and the plans of an area."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor, Scope
from gridops.incidents.workcal import TZ
from gridops.inspections import risk
from gridops.inspections.results import task_visibility
from gridops.inspections.tasks import TARGET_SQL


def _target(row: Any) -> dict[str, Any]:
    return {
        "kind": row.target_kind,
        "id": row.target_id,
        "name": row.name,
        "address": row.address,
        "label": row.label,
        "lon": row.lon,
        "lat": row.lat,
    }


def list_tasks(
    session: Session, actor: Actor, *, day: date, assignee: int | str = "me"
) -> list[dict[str, Any]]:
    """The tasks of ``day`` (open ones due by then, and those done that day) that the actor
    sees, by assignee and route order. ``assignee``: 'me', 'any', 'none' or a user id."""
    visible, params = task_visibility(actor)
    who = {
        "me": "t.assignee_id = :me",
        "any": "true",
        "none": "t.assignee_id IS NULL",
    }.get(str(assignee), "t.assignee_id = :assignee")
    rows = session.execute(
        text(
            f"""
            SELECT t.id, t.plan_id, t.due_on, t.status, t.result, t.note, t.done_at,
                   t.version, t.route_order, t.assignee_id, p.target_kind, p.target_id,
                   p.risk_score, p.frequency_days, tg.name, tg.address, tg.label,
                   ST_X(tg.geom) AS lon, ST_Y(tg.geom) AS lat
            FROM inspection_task t JOIN inspection_plan p ON p.id = t.plan_id
            {TARGET_SQL}
            WHERE {visible} AND {who}
              AND ((t.status = 'open' AND t.due_on <= :day)
                   OR (t.status = 'done' AND (t.done_at AT TIME ZONE :zone)::date = :day))
            ORDER BY t.assignee_id NULLS LAST, t.route_order NULLS LAST, t.due_on, t.id
            """
        ),
        {
            **params,
            "day": day,
            "zone": str(TZ),
            "assignee": assignee if isinstance(assignee, int) else None,
        },
    ).all()
    return [
        {
            "id": r.id,
            "plan_id": r.plan_id,
            "due_on": r.due_on.isoformat(),
            "status": r.status,
            "result": r.result,
            "note": r.note,
            "done_at": r.done_at.isoformat() if r.done_at else None,
            "version": r.version,
            "route_order": r.route_order,
            "assignee_id": r.assignee_id,
            "risk_score": round(float(r.risk_score), 4),
            "frequency_days": r.frequency_days,
            "target": _target(r),
        }
        for r in rows
    ]


def list_plans(
    session: Session,
    scope: Scope,
    *,
    today: date,
    limit: int,
    after: int | None = None,
    kind: str | None = None,
    due_by: date | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the active plans whose target the actor sees, by id, with the factors of
    their risk as of ``today``; (plans, the cursor of the next page or None)."""
    conditions = ["p.active", scope.point_visible("tg.geom")]
    params: dict[str, Any] = {**scope.params(), "limit": limit + 1}
    if after is not None:
        conditions.append("p.id > :after")
        params["after"] = after
    if kind is not None:
        conditions.append("p.target_kind = :kind")
        params["kind"] = kind
    if due_by is not None:
        conditions.append("p.next_due_on <= :due_by")
        params["due_by"] = due_by
    rows = session.execute(
        text(
            f"""
            SELECT p.id, p.target_kind, p.target_id, p.risk_score, p.frequency_days,
                   p.next_due_on, p.last_result, p.last_inspected_at, tg.name, tg.address,
                   tg.label, ST_X(tg.geom) AS lon, ST_Y(tg.geom) AS lat,
                   (SELECT o.id FROM inspection_task o WHERE o.plan_id = p.id
                    AND o.status = 'open' ORDER BY o.id LIMIT 1) AS open_task_id
            FROM inspection_plan p {TARGET_SQL}
            WHERE {" AND ".join(conditions)}
            ORDER BY p.id LIMIT :limit
            """
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    found = risk.factors(
        session, today, where="p.id = ANY(:plans)", params={"plans": [r.id for r in rows]}
    )
    _, _, bases = risk.scored(found)
    why = {f.plan_id: risk.explain(f, b) for f, b in zip(found, bases, strict=True)}
    plans = [
        {
            "id": r.id,
            "target": _target(r),
            "risk_score": round(float(r.risk_score), 4),
            "risk_factors": why.get(r.id),
            "frequency_days": r.frequency_days,
            "next_due_on": r.next_due_on.isoformat(),
            "last_result": r.last_result,
            "last_inspected_at": r.last_inspected_at.isoformat() if r.last_inspected_at else None,
            "open_task_id": r.open_task_id,
        }
        for r in rows
    ]
    return plans, (rows[-1].id if more else None)


__all__ = ["list_plans", "list_tasks"]

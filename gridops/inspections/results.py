"""Recording what an inspection found, and feeding it back into the plan.

The task's version guards against a stale view (a reassignment or another recording since the
caller read it: 412). Only the assignee, a manager whose area holds the target, or an admin may
record; a task outside the actor's sight is not found (404), as everywhere.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import MANAGER_ROLES, Actor
from gridops.errors import Conflict, FieldError, InvalidInput, NotFound, check_version
from gridops.incidents.workcal import TZ
from gridops.incidents.workflow import NotAllowed
from gridops.inspections.risk import rescore_plan
from gridops.inspections.tasks import TARGET_SQL

RESULTS = ("ok", "minor", "major")
MAX_NOTE = 2000


def task_visibility(actor: Actor) -> tuple[str, dict[str, Any]]:
    """SQL (over ``t`` and ``tg``) for the tasks an actor sees, and its parameters: their own,
    and those whose target lies where they see records in full."""
    scope = actor.scope()
    return (
        f"(t.assignee_id = :me OR {scope.point_in_full('tg.geom')})",
        {"me": actor.user_id, **scope.params()},
    )


def record_result(
    session: Session,
    task_id: int,
    actor: Actor,
    *,
    result: Any,
    note: Any = "",
    expected_version: int,
) -> dict[str, Any]:
    """Mark the task done with ``result`` ('ok' | 'minor' | 'major') and ``note``; update the
    plan (last result and visit, risk re-scored, next due = the visit's day + frequency).

    InvalidInput (422) before anything is read, NotFound (404) outside the actor's sight,
    StaleVersion (412), NotAllowed (403) for someone neither assignee nor manager of the area,
    Conflict (409) when the task is no longer open. The caller commits.
    """
    errors = []
    if result not in RESULTS:
        errors.append(FieldError("result", "one of ok, minor, major"))
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        errors.append(FieldError("note", f"text of at most {MAX_NOTE} characters"))
    if errors:
        raise InvalidInput("the inspection result is not valid", errors)
    visible, params = task_visibility(actor)
    row = session.execute(
        text(
            f"""
            SELECT t.id, t.status, t.version, t.assignee_id, t.plan_id,
                   EXISTS (SELECT 1 FROM admin_area a WHERE a.code = ANY(:managed)
                           AND ST_Covers(a.geom, tg.geom)) AS manages
            FROM inspection_task t JOIN inspection_plan p ON p.id = t.plan_id
            {TARGET_SQL}
            WHERE t.id = :id AND {visible}
            FOR UPDATE OF t
            """
        ),
        {
            **params,
            "id": task_id,
            "managed": [
                area for a in actor.assignments if a.role in MANAGER_ROLES for area in a.areas
            ],
        },
    ).first()
    if row is None:
        raise NotFound(f"no inspection task {task_id}")
    check_version(f"task {task_id}", row.version, expected_version)
    if not (actor.is_admin or row.assignee_id == actor.user_id or row.manages):
        raise NotAllowed("only the assigned inspector or a manager of the area records this")
    if row.status != "open":
        raise Conflict(f"task {task_id} is {row.status}; only open tasks take a result")
    done_at: datetime = session.execute(
        text(
            "UPDATE inspection_task SET status = 'done', result = :result, note = :note, "
            "done_at = clock_timestamp(), version = version + 1 WHERE id = :id "
            "RETURNING done_at"
        ),
        {"result": result, "note": note, "id": task_id},
    ).scalar_one()
    done_on: date = done_at.astimezone(TZ).date()
    session.execute(
        text(
            "UPDATE inspection_plan SET last_result = :result, last_inspected_at = :at, "
            "updated_at = now() WHERE id = :plan"
        ),
        {"result": result, "at": done_at, "plan": row.plan_id},
    )
    risk, every = rescore_plan(session, row.plan_id, done_on)
    next_due = session.execute(
        text(
            "UPDATE inspection_plan SET next_due_on = CAST(:on AS date) + frequency_days "
            "WHERE id = :plan RETURNING next_due_on"
        ),
        {"on": done_on, "plan": row.plan_id},
    ).scalar_one()
    return {
        "id": task_id,
        "status": "done",
        "result": result,
        "note": note,
        "done_at": done_at.isoformat(),
        "version": row.version + 1,
        "plan": {
            "id": row.plan_id,
            "risk_score": risk,
            "frequency_days": every,
            "last_result": result,
            "next_due_on": next_due.isoformat(),
        },
    }


__all__ = ["RESULTS", "record_result", "task_visibility"]

"""The one way in for every change of a case's state.

``transition`` locks the case, checks the version the caller saw, the action against the
workflow, the actor's roles *where the case lies* and the four-eyes rule, then writes the case
row and its event in the caller's transaction. No other code updates ``incident.status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor, Assignment
from gridops.errors import FieldError, GridopsError, InvalidInput, NotFound
from gridops.incidents.clock import CLOCK_ACTIONS, store_deadline
from gridops.incidents.workflow import (
    FINAL_STATES,
    CaseState,
    Event,
    apply,
    linked_event,
    next_state,
)


@dataclass
class StaleVersion(GridopsError):
    """412: the case changed since the caller read it; reload and decide again."""

    status: int = 412
    title: str = "Precondition failed"
    type_slug: str = "stale-version"


def _roles_here(session: Session, actor: Actor, case_id: int) -> set[str]:
    """The actor's roles whose scope covers this case (an inspector of grid A who manages
    community B acts as a manager only in B)."""
    roles: set[str] = set()
    for assignment in actor.assignments:
        if assignment.role == "admin" or _covers(session, assignment, case_id):
            roles.add(assignment.role)
    return roles


def _covers(session: Session, assignment: Assignment, case_id: int) -> bool:
    if assignment.role == "inspector":
        sql = (
            "SELECT EXISTS (SELECT 1 FROM incident i JOIN unit_grid g ON g.valid_to IS NULL "
            "AND g.code = ANY(:grids) AND ST_Covers(g.geom, i.geom) WHERE i.id = :id)"
        )
        params: dict[str, Any] = {"grids": list(assignment.grid_codes)}
    else:
        sql = (
            "SELECT EXISTS (SELECT 1 FROM incident i JOIN admin_area a ON a.code = ANY(:areas) "
            "AND ST_Covers(a.geom, i.geom) WHERE i.id = :id)"
        )
        params = {"areas": list(assignment.areas)}
    return bool(session.execute(text(sql), {**params, "id": case_id}).scalar())


def transition(
    session: Session,
    case_id: int,
    action: str,
    actor: Actor,
    *,
    expected_version: int,
    note: str = "",
    duplicate_of: int | None = None,
    department: str | None = None,
) -> dict[str, Any]:
    """Apply ``action`` to case ``case_id``; returns the new state and version.

    ``department`` (a department code) may go with ``dispatch``; without it the category's
    default department handles the case. ``duplicate_of`` goes with ``mark_duplicate``: the
    original case, which gets an event of its own.

    NotFound outside the actor's jurisdiction, StaleVersion (412) when ``expected_version`` is
    not the current one, IllegalTransition (409) / NotAllowed (403) from the workflow,
    InvalidInput (422) for a missing or unknown department or original. The caller commits
    (or rolls back): case row, events and stored deadline are one unit.
    """
    scope = actor.scope()
    if (duplicate_of is not None) != (action == "mark_duplicate"):
        raise InvalidInput(
            "duplicate_of goes with mark_duplicate, and only with it",
            [FieldError("duplicate_of", "the id of the original case, for mark_duplicate")],
        )
    if department is not None and action != "dispatch":
        raise InvalidInput(
            "department goes with dispatch only", [FieldError("department", "only on dispatch")]
        )
    row = _lock_case(session, case_id, scope)
    if row is None:
        raise NotFound(f"no case {case_id}")
    if row.version != expected_version:
        raise StaleVersion(
            f"case {case_id} is at version {row.version}, not {expected_version}: reload it",
            [FieldError("If-Match", f"current version is {row.version}")],
            headers={"ETag": f'"{row.version}"'},
        )
    case = CaseState(
        state=row.status,
        parked_from=row.parked_from,
        handler_id=row.handler_id,
        rework_count=row.rework_count,
        extensions=row.extensions,
    )
    roles = _roles_here(session, actor, case_id)
    event: Event = next_state(case, action, actor_id=actor.user_id, roles=roles, note=note)
    after = apply(case, event)
    version = row.version + 1
    department_id = _department_for(session, case_id, department) if action == "dispatch" else None
    if duplicate_of is not None:
        _link_original(session, actor, case_id, duplicate_of)
    session.execute(
        text(
            "UPDATE incident SET status = :state, version = :version, parked_from = :parked, "
            "handler_id = :handler, rework_count = :rework, extensions = :ext, "
            "updated_at = clock_timestamp(), "
            "closed_at = CASE WHEN :closing THEN clock_timestamp() ELSE closed_at END, "
            "duplicate_of = coalesce(:duplicate_of, duplicate_of), "
            "department_id = coalesce(:department_id, department_id) "
            "WHERE id = :id AND version = :expected"
        ),
        {
            "state": after.state,
            "version": version,
            "parked": after.parked_from,
            "handler": after.handler_id,
            "rework": after.rework_count,
            "ext": after.extensions,
            "id": case_id,
            "expected": expected_version,
            "closing": after.state == "closed",
            "duplicate_of": duplicate_of,
            "department_id": department_id,
        },
    )
    if event.action == "dispatch":
        # The handling clock starts at the first dispatch, with the category's time limit.
        session.execute(
            text(
                "UPDATE incident i SET dispatched_at = coalesce(i.dispatched_at, "
                "clock_timestamp()), time_limit_hours = coalesce(i.time_limit_hours, "
                "c.time_limit_hours) FROM category c WHERE c.id = i.category_id AND i.id = :id"
            ),
            {"id": case_id},
        )
    _write_event(session, case_id, version, event)
    if event.action in CLOCK_ACTIONS and after.state not in FINAL_STATES:
        store_deadline(session, case_id)
    return {"id": case_id, "status": after.state, "version": version}


def _lock_case(session: Session, case_id: int, scope: Any) -> Any:
    return session.execute(
        text(
            "SELECT t.status, t.version, t.parked_from, t.handler_id, t.rework_count, "
            f"t.extensions FROM incident t WHERE t.id = :id AND {scope.point_visible()} "
            "FOR UPDATE OF t"
        ),
        {"id": case_id, **scope.params()},
    ).first()


def _write_event(session: Session, case_id: int, version: int, event: Event) -> None:
    session.execute(
        text(
            "INSERT INTO case_event (incident_id, version, action, from_state, to_state, "
            "actor_id, note) VALUES (:id, :version, :action, :from_state, :to_state, :actor, "
            ":note)"
        ),
        {
            "id": case_id,
            "version": version,
            "action": event.action,
            "from_state": event.from_state,
            "to_state": event.to_state,
            "actor": event.actor_id,
            "note": event.note,
        },
    )


def _department_for(session: Session, case_id: int, code: str | None) -> int | None:
    """The department a dispatch sends the case to: the one named, else the category's."""
    if code is None:
        return session.execute(
            text(
                "SELECT c.department_id FROM incident i JOIN category c ON c.id = i.category_id "
                "WHERE i.id = :id"
            ),
            {"id": case_id},
        ).scalar()
    found = session.execute(
        text("SELECT id FROM department WHERE code = :code"), {"code": code}
    ).scalar()
    if found is None:
        raise InvalidInput(
            f"no department {code!r}", [FieldError("department", "a known department code")]
        )
    return int(found)


def _link_original(session: Session, actor: Actor, case_id: int, original_id: int) -> None:
    """Write the ``duplicate_linked`` event on the original (locked, in the actor's scope)."""
    problem = None
    if original_id == case_id:
        problem = "a case cannot duplicate itself"
    else:
        original = _lock_case(session, original_id, actor.scope())
        if original is None:
            problem = f"no case {original_id} in your jurisdiction"
        elif original.status == "void":
            problem = f"case {original_id} is void; link to the case it duplicates instead"
    if problem is not None:
        raise InvalidInput(problem, [FieldError("duplicate_of", problem)])
    state = CaseState(state=original.status)
    event = linked_event(state, actor_id=actor.user_id, duplicate_id=case_id)
    version = original.version + 1
    session.execute(
        text(
            "UPDATE incident SET version = :version, updated_at = clock_timestamp() WHERE id = :id"
        ),
        {"version": version, "id": original_id},
    )
    _write_event(session, original_id, version, event)


def history(session: Session, case_id: int) -> list[Event]:
    rows = session.execute(
        text(
            "SELECT action, from_state, to_state, actor_id, note FROM case_event "
            "WHERE incident_id = :id ORDER BY version"
        ),
        {"id": case_id},
    ).all()
    return [Event(r.action, r.from_state, r.to_state, r.actor_id, r.note) for r in rows]


__all__ = ["StaleVersion", "history", "transition"]

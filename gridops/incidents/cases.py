"""The one way in for every change of a case's state.

``transition`` locks the case, checks the version the caller saw, the action against the
workflow, the actor's roles *where the case lies* and the four-eyes rule, then writes the case
row and its event in the caller's transaction. No other code updates ``incident.status``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor, Assignment
from gridops.dispatch.routing import grid_inspector_for, record_decision, route_department
from gridops.errors import (
    FieldError,
    GridopsError,
    InvalidInput,
    NotFound,
    StaleVersion,
    check_version,
)
from gridops.incidents.clock import CLOCK_ACTIONS, store_deadline
from gridops.incidents.workcal import local_today
from gridops.incidents.workflow import (
    ASSIGN,
    DISPATCH,
    FINAL_STATES,
    CaseState,
    Event,
    IllegalTransition,
    NotAllowed,
    apply,
    linked_event,
    next_state,
)
from gridops.notifications.service import notify_case_change


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
    check_version(f"case {case_id}", row.version, expected_version)
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
    department_id = _named_department(session, department) if department is not None else None
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
    _route_and_assign(session, case_id, event, after, actor)
    if event.action in CLOCK_ACTIONS and after.state not in FINAL_STATES:
        store_deadline(session, case_id)
    notify_case_change(session, case_id, event.action, actor.user_id)
    return {"id": case_id, "status": after.state, "version": version}


def assign(
    session: Session,
    case_id: int,
    actor: Actor,
    *,
    expected_version: int,
    assignee_id: int | None = None,
    department: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    """A dispatcher gives an open case to a person and/or a department (assign, reassign).

    The case keeps its state; an ``assign`` event records who did it and to whom, under the
    same version guard as transitions. The assignee must be an active user who can act on the
    case where it lies (an inspector of its grid, a manager of its area, a handler of its
    department). NotFound outside the jurisdiction, StaleVersion (412), NotAllowed (403) for
    non-dispatchers, IllegalTransition (409) on a final case, InvalidInput (422) otherwise.
    """
    if assignee_id is None and department is None:
        raise InvalidInput(
            "name an assignee, a department or both",
            [FieldError("assignee", "a user id"), FieldError("department", "a department code")],
        )
    row = _lock_case(session, case_id, actor.scope())
    if row is None:
        raise NotFound(f"no case {case_id}")
    check_version(f"case {case_id}", row.version, expected_version)
    if not _roles_here(session, actor, case_id) & (DISPATCH | {"admin"}):
        raise NotAllowed("assigning cases needs a dispatcher's role where the case lies")
    if row.status in FINAL_STATES:
        raise IllegalTransition(
            f"case {case_id} is {row.status}: nothing to assign",
            [FieldError("action", "the case is final")],
        )
    department_id = _named_department(session, department) if department is not None else None
    if assignee_id is not None:
        _check_assignee(session, case_id, assignee_id, department_id)
    version = row.version + 1
    session.execute(
        text(
            "UPDATE incident SET version = :version, updated_at = clock_timestamp(), "
            "assignee_id = coalesce(:assignee, assignee_id), "
            "assigned_at = CASE WHEN :assigned THEN clock_timestamp() ELSE assigned_at END, "
            "department_id = coalesce(:department, department_id) WHERE id = :id"
        ),
        {
            "version": version,
            "assignee": assignee_id,
            "assigned": assignee_id is not None,
            "department": department_id,
            "id": case_id,
        },
    )
    parts = []
    if department is not None:
        parts.append(f"department {department}")
    if assignee_id is not None:
        parts.append(f"user #{assignee_id}")
    text_note = f"assigned to {' and '.join(parts)}" + (f": {note}" if note.strip() else "")
    _write_event(
        session, case_id, version, Event(ASSIGN, row.status, row.status, actor.user_id, text_note)
    )
    notify_case_change(session, case_id, ASSIGN, actor.user_id)
    return {"id": case_id, "status": row.status, "version": version}


def _check_assignee(
    session: Session, case_id: int, assignee_id: int, department_id: int | None
) -> None:
    from gridops.auth import service as auth

    problem = None
    try:
        assignee = auth.load_actor(session, assignee_id)
    except GridopsError:
        assignee = None
    if assignee is None or not assignee.assignments:
        problem = f"user {assignee_id} has no role"
    else:
        case_department = (
            department_id
            or session.execute(
                text("SELECT department_id FROM incident WHERE id = :id"), {"id": case_id}
            ).scalar()
        )
        handles_it = any(
            a.role == "department_handler" and a.department_id == case_department
            for a in assignee.assignments
        )
        if not handles_it and not _roles_here(session, assignee, case_id) - {"admin", "planner"}:
            problem = f"user {assignee_id} cannot act on this case where it lies"
    if problem is not None:
        raise InvalidInput(problem, [FieldError("assignee", problem)])


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


def _named_department(session: Session, code: str) -> int:
    found = session.execute(
        text("SELECT id FROM department WHERE code = :code"), {"code": code}
    ).scalar()
    if found is None:
        raise InvalidInput(
            f"no department {code!r}", [FieldError("department", "a known department code")]
        )
    return int(found)


# Who a case waits on after each action: KEEP leaves the assignee as it is, None hands it to
# the dispatchers' queue; the others are decided in _route_and_assign.
KEEP = "keep"
WAITS_ON = {
    "verify": None, "file": None, "void": None, "dispatch": None, "accept": "actor",
    "return": None, "request_extension": KEEP, "approve_extension": KEEP,
    "refuse_extension": KEEP, "report_handled": "checker", "handle_on_spot": "checker",
    "check_pass": None, "rework": "handler", "close": None, "park": KEEP, "resume": KEEP,
    "mark_duplicate": None,
}  # fmt: skip


def _route_and_assign(
    session: Session, case_id: int, event: Event, after: CaseState, actor: Actor
) -> None:
    """The automatic part of a transition: the department when a case is filed (or dispatched
    without one), and who the case waits on now; each decision recorded with its reason."""
    action = event.action
    if action in ("file", "dispatch"):
        current = session.execute(
            text("SELECT department_id FROM incident WHERE id = :id"), {"id": case_id}
        ).scalar()
        if action == "file" or current is None:
            department_id, reason = route_department(session, case_id)
            session.execute(
                text("UPDATE incident SET department_id = :d WHERE id = :id"),
                {"d": department_id, "id": case_id},
            )
            record_decision(
                session, case_id, kind="route", trigger=action, reason=reason,
                department_id=department_id,
            )  # fmt: skip
    rule = WAITS_ON.get(action, KEEP)
    if rule == KEEP:
        return
    assignee: int | None = None
    if rule == "actor":
        assignee = actor.user_id
    elif rule == "handler":
        assignee = after.handler_id
    elif rule == "checker":
        grid = session.execute(
            text(
                "SELECT g.code FROM incident i JOIN unit_grid g ON g.id = i.grid_id "
                "WHERE i.id = :id"
            ),
            {"id": case_id},
        ).scalar()
        exclude = {after.handler_id} if after.handler_id is not None else set()
        assignee, reason = grid_inspector_for(session, grid, on=local_today(), exclude=exclude)
        record_decision(
            session, case_id, kind="assign_check", trigger=action, reason=reason,
            assignee_id=assignee,
        )  # fmt: skip
    session.execute(
        text(
            "UPDATE incident SET assignee_id = :a, "
            "assigned_at = CASE WHEN :assigned THEN clock_timestamp() END WHERE id = :id"
        ),
        {"a": assignee, "assigned": assignee is not None, "id": case_id},
    )


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


__all__ = ["StaleVersion", "assign", "history", "transition"]

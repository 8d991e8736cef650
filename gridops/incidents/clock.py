"""The handling clock of a case: deadline, time left, warning and overdue, in working hours.

The clock starts when the case is dispatched, runs for its category's time limit on the
working calendar, and stops while the case is parked or waits on an extension request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.incidents.workcal import WorkCalendar
from gridops.incidents.workflow import FINAL_STATES, PAUSED_STATES

WARN_SHARE = 0.2  # warn when less than a fifth of the time limit is left
# Actions after which the stored handling deadline (incident.deadline_at) must be recomputed.
CLOCK_ACTIONS = frozenset(
    {"dispatch", "park", "resume", "request_extension", "approve_extension", "refuse_extension"}
)
# The stage a case is in, by state, and the category column holding that stage's time limit.
STAGES = {
    "reported": ("verify", "verify_limit_hours"),
    "verified": ("dispatch", "dispatch_limit_hours"),
    "filed": ("dispatch", "dispatch_limit_hours"),
    "returned": ("dispatch", "dispatch_limit_hours"),
    "dispatched": ("handle", "time_limit_hours"),
    "in_handling": ("handle", "time_limit_hours"),
    "extension_requested": ("handle", "time_limit_hours"),
    "handled": ("check", "check_limit_hours"),
}


def load_calendar(session: Session) -> WorkCalendar:
    overrides = session.execute(
        text("SELECT day, kind, note FROM work_calendar_override ORDER BY day")
    ).all()
    years = session.execute(text("SELECT year FROM work_calendar_year")).scalars().all()
    return WorkCalendar.from_rows([tuple(r) for r in overrides], confirmed_years=years)


def pauses(session: Session, case_id: int) -> list[tuple[datetime, datetime | None]]:
    """The intervals the case spent in a paused state (the last may still be open)."""
    rows = session.execute(
        text("SELECT at, to_state FROM case_event WHERE incident_id = :id ORDER BY version"),
        {"id": case_id},
    ).all()
    out: list[tuple[datetime, datetime | None]] = []
    started: datetime | None = None
    for at, state in rows:
        if state in PAUSED_STATES and started is None:
            started = at
        elif state not in PAUSED_STATES and started is not None:
            out.append((started, at))
            started = None
    if started is not None:
        out.append((started, None))
    return out


def handling_deadline(
    session: Session, case_id: int, *, calendar: WorkCalendar | None = None
) -> datetime | None:
    """The handling deadline now: None before dispatch and while the clock is stopped."""
    row = session.execute(
        text("SELECT dispatched_at, time_limit_hours FROM incident WHERE id = :id"),
        {"id": case_id},
    ).one()
    if row.dispatched_at is None or row.time_limit_hours is None:
        return None
    calendar = calendar or load_calendar(session)
    return calendar.deadline(row.dispatched_at, row.time_limit_hours, pauses(session, case_id))


def store_deadline(
    session: Session, case_id: int, *, calendar: WorkCalendar | None = None
) -> datetime | None:
    """Keep ``incident.deadline_at`` equal to the handling deadline (lists, KPIs, sweeps and
    Open311 read it there instead of replaying every case's history)."""
    deadline = handling_deadline(session, case_id, calendar=calendar)
    # A deadline that moves later (resumed, extended, a day off added) starts the SLA sweep's
    # warnings and escalations afresh for the new deadline.
    session.execute(
        text(
            "UPDATE incident SET deadline_at = CAST(:deadline AS timestamptz), "
            "warned_at = CASE WHEN CAST(:deadline AS timestamptz) > deadline_at THEN NULL "
            "ELSE warned_at END, "
            "escalation_level = CASE WHEN CAST(:deadline AS timestamptz) > deadline_at THEN 0 "
            "ELSE escalation_level END WHERE id = :id"
        ),
        {"deadline": deadline, "id": case_id},
    )
    return deadline


def refresh_deadlines(session: Session) -> int:
    """Recompute the stored deadline of every open dispatched case (after the working calendar
    changed); returns how many changed. Closed cases keep the deadline they were judged by."""
    calendar = load_calendar(session)
    ids = (
        session.execute(
            text(
                "SELECT id FROM incident WHERE dispatched_at IS NOT NULL "
                "AND status NOT IN ('closed', 'void') ORDER BY id"
            )
        )
        .scalars()
        .all()
    )
    changed = 0
    for case_id in ids:
        before = session.execute(
            text("SELECT deadline_at FROM incident WHERE id = :id"), {"id": case_id}
        ).scalar()
        if store_deadline(session, case_id, calendar=calendar) != before:
            changed += 1
    return changed


def stage_clock(
    session: Session, case_id: int, *, now: datetime, calendar: WorkCalendar
) -> dict[str, Any] | None:
    """The deadline of the stage the case is in now (verify, dispatch, handle or check), each
    with its category's limit; None when no stage clock runs (parked, closed, void)."""
    row = session.execute(
        text(
            "SELECT i.status, i.received_at, i.dispatched_at, i.time_limit_hours AS handle_limit, "
            "c.verify_limit_hours, c.dispatch_limit_hours, c.time_limit_hours, "
            "c.check_limit_hours, (SELECT max(e.at) FROM case_event e WHERE e.incident_id = i.id "
            "AND e.to_state = i.status AND e.from_state <> e.to_state) AS entered "
            "FROM incident i JOIN category c ON c.id = i.category_id WHERE i.id = :id"
        ),
        {"id": case_id},
    ).one()
    if row.status not in STAGES:
        return None
    name, column = STAGES[row.status]
    if name == "handle":
        started, limit = row.dispatched_at, row.handle_limit
        paused = pauses(session, case_id)
    else:
        started, limit = row.entered or row.received_at, getattr(row, column)
        paused = []
    if started is None or limit is None:
        return None
    deadline = calendar.deadline(started, limit, paused)
    left = calendar.time_left(started, limit, now, paused)
    return {
        "name": name,
        "started_at": started.isoformat(),
        "limit_hours": limit,
        "deadline": deadline.isoformat() if deadline else None,
        "hours_left": round(left, 2),
        "warning": 0 <= left < WARN_SHARE * limit,
        "overdue": left < 0,
    }


def case_clock(
    session: Session,
    case_id: int,
    *,
    now: datetime | None = None,
    calendar: WorkCalendar | None = None,
) -> dict[str, Any] | None:
    """The handling clock of a case (None before dispatch), with the current stage's clock.

    Before dispatch only the stage clock runs (verify, or file and dispatch): the result is
    then ``{"stage": ...}`` alone.
    """
    row = session.execute(
        text(
            "SELECT status, dispatched_at, time_limit_hours, clock_timestamp() AS now "
            "FROM incident WHERE id = :id"
        ),
        {"id": case_id},
    ).one()
    calendar = calendar or load_calendar(session)
    now = now or row.now
    stage = stage_clock(session, case_id, now=now, calendar=calendar)
    if row.dispatched_at is None or row.time_limit_hours is None:
        return {"stage": stage} if stage else None
    paused = pauses(session, case_id)
    deadline = calendar.deadline(row.dispatched_at, row.time_limit_hours, paused)
    left = calendar.time_left(row.dispatched_at, row.time_limit_hours, now, paused)
    running = row.status not in FINAL_STATES
    return {
        "dispatched_at": row.dispatched_at.isoformat(),
        "time_limit_hours": row.time_limit_hours,
        "deadline": deadline.isoformat() if deadline else None,  # None: the clock is stopped
        "paused": bool(paused and paused[-1][1] is None),
        "hours_left": round(left, 2),
        "warning": running and 0 <= left < WARN_SHARE * row.time_limit_hours,
        "overdue": running and left < 0,
        "calendar_warnings": calendar.warnings(
            span=(row.dispatched_at, deadline) if deadline else None
        ),
        "stage": stage,
    }

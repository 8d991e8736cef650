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


def case_clock(
    session: Session,
    case_id: int,
    *,
    now: datetime | None = None,
    calendar: WorkCalendar | None = None,
) -> dict[str, Any] | None:
    """The clock of a dispatched case, or None before dispatch."""
    row = session.execute(
        text(
            "SELECT status, dispatched_at, time_limit_hours, clock_timestamp() AS now "
            "FROM incident WHERE id = :id"
        ),
        {"id": case_id},
    ).one()
    if row.dispatched_at is None or row.time_limit_hours is None:
        return None
    calendar = calendar or load_calendar(session)
    now = now or row.now
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
    }

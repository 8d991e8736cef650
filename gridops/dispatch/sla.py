"""The SLA sweep: warn before a handling deadline, escalate after it, each exactly once.

The deadlines live in the domain table (``incident.deadline_at``, kept by the workflow; NULL
while the clock is paused), so a sweep that did not run loses nothing: the next one finds every
case as it stands. For each open case (not closed or void) with a deadline:

- **warning**: less than ``WARN_SHARE`` (a fifth) of its handling time limit is left, in
  working hours on the working calendar: ``warned_at`` is set and the assignee and the handlers
  of its department are told. (A case found already overdue gets ``warned_at`` silently: the
  overdue notice says more.)
- **escalation**: overdue at all (``deadline_at < now``) is level 1 (the community managers of
  the case's area are told, and the assignee and department get an ``overdue`` notice); more
  than one working day overdue is level 2 (town managers); more than three, level 3 (district
  managers). A working day is the calendar's (7.5 working hours by default) and "overdue by"
  counts working hours, so a weekend does not escalate a case. A case that skips levels (the
  sweep did not run for days) gets every level it passed, each with its decision.

Every level change writes a ``case_decision`` (kind ``escalate``, trigger ``sla_sweep``, the
level and the working hours overdue in the reason) and the notifications, in the transaction of
its chunk of cases.

Exactly once, also with two sweeps at once: each chunk locks its cases with ``FOR UPDATE SKIP
LOCKED`` (a case another sweep, or a transition, holds right now is left to the next sweep),
and every write is guarded (``WHERE warned_at IS NULL``, ``WHERE escalation_level < :level``),
so a repeated sweep finds nothing left to do; the notifications' dedupe keys are a last guard.
The keys include the deadline (``escalate:{case}:{level}:{deadline}``) so that, should the
workflow ever reset the warning or the level on a new deadline, the new deadline is announced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.dispatch.routing import record_decision
from gridops.incidents.clock import WARN_SHARE, load_calendar
from gridops.incidents.workcal import TZ, WorkCalendar
from gridops.notifications.service import (
    case_area,
    department_handlers,
    managers_covering,
    notify_users,
)

CHUNK = 200
# Escalation level -> (more than this many working days overdue, who is told).
LEVELS = {
    1: (0, "community_manager"),
    2: (1, "town_manager"),
    3: (3, "district_manager"),
}
# A case can only need a warning when its deadline is within this many days (wall clock) plus
# its warning share of the limit: a cheap filter before the working-hours arithmetic. Generous,
# since holidays stretch working hours over more calendar days (Spring Festival: 9 days off).
_WARN_HORIZON_DAYS = 31


def level_for(overdue_hours: float, day_hours: float) -> int:
    """The escalation level of a case overdue by ``overdue_hours`` working hours (>= 0)."""
    level = 1
    for candidate, (days, _) in LEVELS.items():
        if overdue_hours > days * day_hours:
            level = max(level, candidate)
    return level


def _candidates(session: Session, now: datetime) -> list[int]:
    return list(
        session.execute(
            text(
                "SELECT id FROM incident WHERE status NOT IN ('closed', 'void') "
                "AND deadline_at IS NOT NULL AND ("
                "  (warned_at IS NULL AND deadline_at < CAST(:now AS timestamptz) "
                "   + make_interval(days => :horizon) "
                "   + interval '1 hour' * coalesce(time_limit_hours, 0))"
                "  OR (deadline_at < :now AND escalation_level < :top)) "
                "ORDER BY id"
            ),
            {"now": now, "horizon": _WARN_HORIZON_DAYS, "top": max(LEVELS)},
        ).scalars()
    )


def sweep(session: Session, now: datetime | None = None, *, chunk: int = CHUNK) -> dict[str, int]:
    """Warn and escalate every open case that is due for it at ``now`` (default: the
    database's clock); commits chunk by chunk and returns the counts."""
    if now is None:
        now = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    calendar = load_calendar(session)
    counts = {"checked": 0, "busy": 0, "warned": 0, "notified": 0}
    counts.update({f"level_{level}": 0 for level in LEVELS})
    ids = _candidates(session, now)
    session.commit()
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        rows = session.execute(
            text(
                "SELECT i.id, i.deadline_at, i.time_limit_hours, i.warned_at, "
                "i.escalation_level, i.assignee_id, i.department_id, "
                "c.code AS category, c.name_zh AS category_name "
                "FROM incident i JOIN category c ON c.id = i.category_id "
                "WHERE i.id = ANY(:ids) AND i.status NOT IN ('closed', 'void') "
                "AND i.deadline_at IS NOT NULL ORDER BY i.id FOR UPDATE OF i SKIP LOCKED"
            ),
            {"ids": part},
        ).all()
        counts["busy"] += len(part) - len(rows)  # locked elsewhere, or closed or paused since
        for row in rows:
            counts["checked"] += 1
            _sweep_case(session, row, now, calendar, counts)
        session.commit()
    return counts


def _sweep_case(
    session: Session, row: Any, now: datetime, calendar: WorkCalendar, counts: dict[str, int]
) -> None:
    deadline: datetime = row.deadline_at
    overdue = deadline < now
    stamp = deadline.astimezone(TZ).strftime("%Y%m%dT%H%M")
    what = f"{row.category} {row.category_name}"
    people = [row.assignee_id, *department_handlers(session, row.department_id)]
    people = [p for p in people if p is not None]
    if row.warned_at is None:
        limit = row.time_limit_hours
        due_soon = (
            limit is not None and calendar.working_hours_between(now, deadline) < WARN_SHARE * limit
        )
        if overdue or due_soon:
            marked = session.execute(
                text(
                    "UPDATE incident SET warned_at = :now WHERE id = :id AND warned_at IS NULL "
                    "RETURNING id"
                ),
                {"now": now, "id": row.id},
            ).first()
            if marked and not overdue:
                counts["warned"] += 1
                local = deadline.astimezone(TZ).strftime("%Y-%m-%d %H:%M")
                counts["notified"] += notify_users(
                    session,
                    people,
                    kind="warning",
                    title=f"Case {row.id} is due soon (by {local})",
                    body=what,
                    incident_id=row.id,
                    dedupe_key=f"warning:{row.id}:{stamp}",
                )
    if not overdue:
        return
    hours = max(calendar.working_hours_between(deadline, now), 0.0)
    level = level_for(hours, calendar.hours_per_day)
    if level <= row.escalation_level:
        return
    raised = session.execute(
        text(
            "UPDATE incident SET escalation_level = :level "
            "WHERE id = :id AND escalation_level < :level RETURNING id"
        ),
        {"level": level, "id": row.id},
    ).first()
    if raised is None:  # another sweep got there first
        return
    area = case_area(session, row.id)
    local = deadline.astimezone(TZ).strftime("%Y-%m-%d %H:%M")
    for passed in range(row.escalation_level + 1, level + 1):
        days, role = LEVELS[passed]
        managers = managers_covering(session, area, role)
        beyond = f", more than {days} working day{'s' if days > 1 else ''}" if days else ""
        record_decision(
            session,
            row.id,
            kind="escalate",
            trigger="sla_sweep",
            reason=(
                f"overdue by {hours:.1f} working hours{beyond} (deadline {local}): "
                f"escalation level {passed}, {len(managers)} {role.replace('_', ' ')}(s) of "
                f"{area or 'an unknown area'} told"
            ),
        )
        counts[f"level_{passed}"] += 1
        counts["notified"] += notify_users(
            session,
            managers,
            kind="escalation",
            title=f"Case {row.id} is overdue: escalated to you (level {passed})",
            body=f"{what}; deadline {local}, {hours:.1f} working hours overdue",
            incident_id=row.id,
            dedupe_key=f"escalate:{row.id}:{passed}:{stamp}",
        )
        if passed == 1:
            counts["notified"] += notify_users(
                session,
                people,
                kind="overdue",
                title=f"Case {row.id} is overdue (deadline {local})",
                body=what,
                incident_id=row.id,
                dedupe_key=f"overdue:{row.id}:{stamp}",
            )


__all__ = ["CHUNK", "LEVELS", "level_for", "sweep"]

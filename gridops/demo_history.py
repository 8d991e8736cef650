"""Case histories for the demo's historical incidents, so that KPIs, clocks and boards have a
year of realistic work to show.

The demo file holds only what was reported where and when. This module plays each report
through the workflow with plausible delays, seeded by the incident's id (the same database
always gets the same histories): most are verified, filed, dispatched to the department the
category names, handled (some late, some after an extension or a rework), checked on site and
closed; a few are void; recent ones are left open wherever "now" finds them. Events are written as
the workflow would write them (``next_state``/``apply``), so every log folds to its case.
Idempotent: only incidents without any event are touched.
"""

from __future__ import annotations

import io
import random
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth import service as auth
from gridops.incidents.clock import load_calendar
from gridops.incidents.workcal import WorkCalendar
from gridops.incidents.workflow import CaseState, Event, apply, next_state

# code, name, English name; handling departments of Chancheng, and the classes they handle.
DEPARTMENTS = (
    ("CC-CGJ", "禅城区城市管理和综合执法局", "Chancheng Urban Management Bureau"),
    ("CC-SZ", "禅城区市政设施管理中心", "Chancheng Municipal Facilities Centre"),
    ("CC-HW", "禅城区环境卫生管理中心", "Chancheng Sanitation Centre"),
    ("CC-YL", "禅城区园林绿化中心", "Chancheng Parks and Greening Centre"),
    ("CC-JT", "禅城交警大队", "Chancheng Traffic Police"),
    ("CC-ZJ", "禅城区住房城乡建设和水利局", "Chancheng Housing and Water Bureau"),
)
DEPARTMENT_OF_CLASS = {
    "C01": "CC-SZ", "C02": "CC-JT", "C03": "CC-HW", "C04": "CC-YL", "C05": "CC-ZJ",
    "C06": "CC-CGJ", "E01": "CC-CGJ", "E02": "CC-CGJ", "E03": "CC-ZJ", "E04": "CC-ZJ",
    "E05": "CC-CGJ", "E06": "CC-CGJ",
}  # fmt: skip


def _ensure_departments(session: Session) -> dict[str, int]:
    for code, name, name_en in DEPARTMENTS:
        session.execute(
            text(
                "INSERT INTO department (code, name, name_en, area_code) "
                "VALUES (:c, :n, :e, '440604') ON CONFLICT (code) DO NOTHING"
            ),
            {"c": code, "n": name, "e": name_en},
        )
    ids = dict(session.execute(text("SELECT code, id FROM department")).all())
    # Admin choices win: only categories without a default department get one.
    for major, code in DEPARTMENT_OF_CLASS.items():
        session.execute(
            text(
                "UPDATE category SET department_id = :d WHERE department_id IS NULL "
                "AND minor_code IS NOT NULL AND left(code, 3) = :major"
            ),
            {"d": ids[code], "major": major},
        )
    return ids


def _staff(session: Session, departments: dict[str, int]) -> dict[str, int]:
    """One handler per department who did the past work (no usable password: history only)."""
    staff: dict[str, int] = {}
    for code, _, _ in DEPARTMENTS:
        username = f"staff.{code.lower()}"
        user_id = session.execute(
            text("SELECT id FROM app_user WHERE username = :u"), {"u": username}
        ).scalar()
        if user_id is None:
            user_id = auth.create_user(
                session, username, secrets.token_urlsafe(24), display_name=f"{code} 处置人员"
            )
            auth.assign_role(session, user_id, "department_handler", department_code=code)
        staff[code] = int(user_id)
    return staff


def _people(session: Session) -> dict[str, int]:
    rows = session.execute(
        text(
            "SELECT username, id FROM app_user WHERE username IN "
            "('demo.inspector', 'demo.community', 'demo.handler')"
        )
    )
    found = {username: int(user_id) for username, user_id in rows}
    if len(found) < 3:
        raise ValueError("run `gridops demo users` first: the history needs the demo people")
    return found


def _play(
    rng: random.Random,
    calendar: WorkCalendar,
    received: datetime,
    limit: float,
    now: datetime,
    who: dict[str, int],
) -> tuple[list[tuple[Event, datetime]], dict[str, Any]]:
    """One case's events with their times, and the case columns they leave behind."""
    case = CaseState()
    t = received
    events: list[tuple[Event, datetime]] = []
    extra: dict[str, Any] = {"dispatched_at": None, "closed_at": None, "pauses": []}
    roles = {
        "inspector": {"inspector"},
        "manager": {"community_manager"},
        "handler": {"department_handler"},
    }

    def step(action: str, role: str, hours: float, note: str = "") -> bool:
        nonlocal case, t
        moment = calendar.add_working_hours(t, hours)
        if moment > now:
            return False
        actor = who[role]
        event = next_state(case, action, actor_id=actor, roles=roles[role], note=note)
        case, t = apply(case, event), moment
        events.append((event, moment))
        return True

    def run() -> None:
        if not step("verify", "inspector", rng.uniform(0.1, 1.5)):
            return
        if rng.random() < 0.04:
            step("void", "manager", rng.uniform(0.1, 1), "经核实不属于受理范围")
            return
        if not (
            step("file", "manager", rng.uniform(0.1, 1.0))
            and step("dispatch", "manager", rng.uniform(0.1, 1.0))
        ):
            return
        extra["dispatched_at"] = t
        if not step("accept", "handler", rng.uniform(0.1, 2)):
            return
        share = rng.betavariate(2.0, 5.0) * 1.2  # about one in six closed late
        if rng.random() < 0.06:
            if not step("request_extension", "handler", limit * 0.5, "需协调产权单位"):
                return
            asked = t
            if not step("approve_extension", "manager", rng.uniform(0.2, 4)):
                extra["pauses"].append((asked, None))
                return
            extra["pauses"].append((asked, t))  # the clock stood still while it was asked
        if not step("report_handled", "handler", max(0.2, limit * share)):
            return
        if rng.random() < 0.08:
            if not step("rework", "inspector", rng.uniform(0.5, 3), "现场核查未整改到位"):
                return
            if not step("report_handled", "handler", rng.uniform(1, max(2.0, limit / 2))):
                return
        if not step("check_pass", "inspector", rng.uniform(0.2, 2)):
            return
        if step("close", "manager", rng.uniform(0.1, 1)):
            extra["closed_at"] = t

    run()
    extra.update(
        status=case.state,
        version=len(events) + 1,
        handler_id=case.handler_id,
        rework_count=case.rework_count,
        extensions=case.extensions,
        updated_at=t,
    )
    return events, extra


def build_roster(session: Session) -> int:
    """Two inspectors per gridded community of the demo, each the primary of half its unit
    grids and the stand-in of the other half (``demo.inspector`` keeps its own grids in the
    demo community); they are history-only accounts that cannot sign in. Idempotent; returns
    how many duties were written."""
    communities = session.execute(
        text(
            "SELECT community_code, array_agg(code ORDER BY code) AS grids FROM unit_grid "
            "WHERE valid_to IS NULL GROUP BY community_code ORDER BY community_code"
        )
    ).all()
    demo_inspector = session.execute(
        text(
            "SELECT u.id, r.grid_codes FROM app_user u JOIN role_assignment r ON r.user_id = u.id "
            "AND r.role = 'inspector' WHERE u.username = 'demo.inspector'"
        )
    ).first()
    duties: list[dict[str, Any]] = []
    for community, grids in communities:
        pair = []
        for suffix in ("a", "b"):
            username = f"insp.{community}.{suffix}"
            user_id = session.execute(
                text("SELECT id FROM app_user WHERE username = :u"), {"u": username}
            ).scalar()
            if user_id is None:
                # Like the system account, these have no password that could ever match.
                user_id = session.execute(
                    text(
                        "INSERT INTO app_user (username, display_name, password_hash) "
                        "VALUES (:u, :d, '!') RETURNING id"
                    ),
                    {"u": username, "d": f"网格员 {community[-3:]}{suffix.upper()}"},
                ).scalar_one()
                auth.assign_role(session, user_id, "inspector", grid_codes=list(grids))
            pair.append(int(user_id))
        half = len(grids) // 2
        for index, grid in enumerate(grids):
            primary, stand_in = pair if index < half else pair[::-1]
            duties.append({"g": grid, "u": primary, "p": True})
            duties.append({"g": grid, "u": stand_in, "p": False})
    if demo_inspector is not None:
        own = set(demo_inspector.grid_codes)
        for duty in duties:
            if duty["g"] in own and duty["p"]:
                duty["p"] = False  # the demo inspector is the primary of its own grids
        duties += [{"g": g, "u": demo_inspector.id, "p": True} for g in sorted(own)]
    session.execute(
        text(
            "DELETE FROM grid_inspector WHERE user_id IN (SELECT id FROM app_user "
            "WHERE username LIKE 'insp.%' OR username = 'demo.inspector')"
        )
    )
    session.execute(
        text(
            "INSERT INTO grid_inspector (grid_code, user_id, is_primary) VALUES (:g, :u, :p) "
            "ON CONFLICT (grid_code, user_id) DO UPDATE SET is_primary = EXCLUDED.is_primary"
        ),
        duties,
    )
    # Start points for the day's routes: the middle of each inspector's grids.
    session.execute(
        text(
            "INSERT INTO inspector_profile (user_id, tasks_per_day, home) "
            "SELECT gi.user_id, 12, ST_PointOnSurface(ST_Union(g.geom)) FROM grid_inspector gi "
            "JOIN unit_grid g ON g.code = gi.grid_code AND g.valid_to IS NULL "
            "WHERE gi.is_primary GROUP BY gi.user_id "
            "ON CONFLICT (user_id) DO UPDATE SET home = EXCLUDED.home"
        )
    )
    return len(duties)


def synthesise_history(session: Session, *, seed: int = 30428) -> int:
    """Give every incident without events a played-through history; returns how many."""
    departments = _ensure_departments(session)
    staff = _staff(session, departments)
    people = _people(session)
    calendar = load_calendar(session)
    now = session.execute(text("SELECT now()")).scalar_one()
    rows = session.execute(
        text(
            "SELECT i.id, i.reported_at, c.time_limit_hours, c.department_id, d.code AS dept "
            "FROM incident i JOIN category c ON c.id = i.category_id "
            "LEFT JOIN department d ON d.id = c.department_id "
            "WHERE NOT EXISTS (SELECT 1 FROM case_event e WHERE e.incident_id = i.id) "
            "AND i.reported_by IS NULL AND i.intake_sha256 IS NULL ORDER BY i.id"
        )
    ).all()
    events_csv = io.StringIO()
    cases_csv = io.StringIO()
    for row in rows:
        rng = random.Random(seed * 1_000_003 + row.id)
        limit = float(row.time_limit_hours or 72)
        handler = staff.get(row.dept or "CC-CGJ", staff["CC-CGJ"])
        if row.dept == "CC-CGJ":
            handler = people["demo.handler"]
        who = {
            "inspector": people["demo.inspector"],
            "manager": people["demo.community"],
            "handler": handler,
        }
        # Old reports are finished; recent ones stop wherever "now" finds them.
        events, case = _play(rng, calendar, row.reported_at, limit, now, who)
        for version, (event, at) in enumerate(events, start=1):
            events_csv.write(
                f"{row.id}\t{version}\t{at.isoformat()}\t{event.action}\t{event.from_state}\t"
                f"{event.to_state}\t{event.actor_id}\t{event.note}\n"
            )
        dispatched = case["dispatched_at"]
        deadline = calendar.deadline(dispatched, limit, case["pauses"]) if dispatched else None
        cases_csv.write(
            "\t".join(
                "\\N" if v is None else str(v)
                for v in (
                    row.id,
                    case["status"],
                    case["version"],
                    case["handler_id"],
                    case["rework_count"],
                    case["extensions"],
                    case["updated_at"].isoformat(),
                    dispatched.isoformat() if dispatched else None,
                    limit if dispatched else None,
                    row.department_id if dispatched else None,
                    deadline.isoformat() if deadline else None,
                    case["closed_at"].isoformat() if case["closed_at"] else None,
                )
            )
            + "\n"
        )
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE case_stage (id bigint, status text, version int, handler_id bigint,"
            " rework_count int, extensions int, updated_at timestamptz, dispatched_at timestamptz,"
            " time_limit_hours real, department_id int, deadline_at timestamptz,"
            " closed_at timestamptz) ON COMMIT DROP"
        )
        with cursor.copy("COPY case_stage FROM STDIN") as copy:
            copy.write(cases_csv.getvalue())
        with cursor.copy(
            "COPY case_event (incident_id, version, at, action, from_state, to_state, actor_id, "
            "note) FROM STDIN"
        ) as copy:
            copy.write(events_csv.getvalue())
        # A historical report was received when it was reported.
        cursor.execute(
            "UPDATE incident i SET status = s.status, version = s.version, "
            "handler_id = s.handler_id, rework_count = s.rework_count, "
            "extensions = s.extensions, updated_at = s.updated_at, received_at = i.reported_at, "
            "dispatched_at = s.dispatched_at, time_limit_hours = s.time_limit_hours, "
            "department_id = s.department_id, deadline_at = s.deadline_at, "
            "closed_at = s.closed_at FROM case_stage s WHERE s.id = i.id"
        )
        cursor.execute("DROP TABLE case_stage")
    return len(rows)

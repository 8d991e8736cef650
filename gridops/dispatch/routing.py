"""Automatic routing: who a case goes to, and why.

* A filed case goes to the owner or maintainer of its component (权属/养护单位: the maintainer
  first, since it does the work), else to the department its category names, else to the
  territorial unit (属地兜底) of the smallest area around it (community, town, district).
* Verification and the on-site check go to the inspector of the case's unit grid: the primary
  one, or a stand-in when the primary is absent that day. The check never goes to whoever
  reported the case handled (the four-eyes rule).

Every decision is written to ``case_decision`` with its reason, in the transaction of the
change that triggered it (so it does not move the case's version).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from sqlalchemy import text
from sqlalchemy.orm import Session

SYSTEM_USER = "gridops.system"


def system_user_id(session: Session) -> int:
    """The account automatic decisions act as (made by migration 0008)."""
    return int(
        session.execute(
            text("SELECT id FROM app_user WHERE username = :u"), {"u": SYSTEM_USER}
        ).scalar_one()
    )


def record_decision(
    session: Session,
    case_id: int,
    *,
    kind: str,
    trigger: str,
    reason: str,
    assignee_id: int | None = None,
    department_id: int | None = None,
) -> None:
    session.execute(
        text(
            "INSERT INTO case_decision (incident_id, kind, trigger, assignee_id, department_id, "
            "reason) VALUES (:id, :kind, :trigger, :assignee, :department, :reason)"
        ),
        {
            "id": case_id,
            "kind": kind,
            "trigger": trigger,
            "assignee": assignee_id,
            "department": department_id,
            "reason": reason,
        },
    )


def decisions(session: Session, case_id: int) -> list[dict[str, object]]:
    """The automatic decisions on a case, oldest first, each with its reason."""
    rows = session.execute(
        text(
            "SELECT d.at, d.kind, d.trigger, d.reason, d.assignee_id, u.display_name AS assignee, "
            "dep.code AS department FROM case_decision d "
            "LEFT JOIN app_user u ON u.id = d.assignee_id "
            "LEFT JOIN department dep ON dep.id = d.department_id "
            "WHERE d.incident_id = :id ORDER BY d.id"
        ),
        {"id": case_id},
    ).all()
    return [
        {
            "at": r.at.isoformat(),
            "kind": r.kind,
            "trigger": r.trigger,
            "reason": r.reason,
            "assignee_id": r.assignee_id,
            "assignee": r.assignee,
            "department": r.department,
        }
        for r in rows
    ]


def grid_inspector_for(
    session: Session, grid_code: str | None, *, on: date, exclude: Collection[int] = ()
) -> tuple[int | None, str]:
    """The inspector on duty for ``grid_code`` on ``on``: the primary unless absent (or
    excluded), else the stand-in with the fewest open cases; (None, why) when nobody is."""
    if grid_code is None:
        return None, "the case lies in no unit grid"
    rows = session.execute(
        text(
            """
            SELECT gi.user_id, gi.is_primary, u.username,
                   EXISTS (SELECT 1 FROM staff_absence a WHERE a.user_id = gi.user_id
                           AND :on BETWEEN a.starts_on AND a.ends_on) AS absent,
                   (SELECT count(*) FROM incident i WHERE i.assignee_id = gi.user_id
                    AND i.status NOT IN ('closed', 'void')) AS load
            FROM grid_inspector gi JOIN app_user u ON u.id = gi.user_id AND u.is_active
            WHERE gi.grid_code = :grid
            ORDER BY gi.is_primary DESC, load, gi.user_id
            """
        ),
        {"grid": grid_code, "on": on},
    ).all()
    if not rows:
        return None, f"no inspector is responsible for unit grid {grid_code}"
    skipped: list[str] = []
    for row in rows:
        if row.user_id in exclude:
            skipped.append(f"{row.username} handled it")
        elif row.absent:
            skipped.append(f"{row.username} is absent")
        else:
            role = "primary inspector" if row.is_primary else "stand-in inspector"
            why = f"{role} of unit grid {grid_code}"
            return row.user_id, why + (f" ({'; '.join(skipped)})" if skipped else "")
    return None, f"nobody on duty for unit grid {grid_code}: {'; '.join(skipped)}"


def route_department(session: Session, case_id: int) -> tuple[int | None, str]:
    """The department a filed case goes to, with the reason."""
    row = session.execute(
        text(
            """
            SELECT c.code AS category, c.department_id AS category_department,
                   cd.name AS category_department_name,
                   k.code AS component, k.maintainer_department_id, md.name AS maintainer,
                   k.owner_department_id, od.name AS owner, g.code AS grid_code,
                   ST_X(i.geom) AS lon, ST_Y(i.geom) AS lat
            FROM incident i
            JOIN category c ON c.id = i.category_id
            LEFT JOIN department cd ON cd.id = c.department_id
            LEFT JOIN component k ON k.id = i.component_id
            LEFT JOIN department md ON md.id = k.maintainer_department_id
            LEFT JOIN department od ON od.id = k.owner_department_id
            LEFT JOIN unit_grid g ON g.id = i.grid_id
            WHERE i.id = :id
            """
        ),
        {"id": case_id},
    ).one()
    if row.maintainer_department_id is not None:
        return row.maintainer_department_id, (
            f"component {row.component} is maintained by {row.maintainer}"
        )
    if row.owner_department_id is not None:
        return row.owner_department_id, f"component {row.component} is owned by {row.owner}"
    if row.category_department is not None:
        return row.category_department, (
            f"category {row.category} is handled by {row.category_department_name}"
        )
    territorial = session.execute(
        text(
            """
            SELECT d.id, d.name, a.code FROM admin_area a
            JOIN department d ON d.area_code = a.code AND d.kind = 'territorial'
            WHERE a.level IN ('community', 'town', 'district')
              AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))
            ORDER BY length(a.code) DESC, d.id LIMIT 1
            """
        ),
        {"lon": row.lon, "lat": row.lat},
    ).first()
    if territorial is not None:
        return territorial.id, (
            f"nobody else is responsible for {row.category}: territorial unit "
            f"{territorial.name} of {territorial.code} (属地)"
        )
    return None, f"no department is responsible for {row.category} here: the dispatcher decides"


__all__ = [
    "SYSTEM_USER",
    "decisions",
    "grid_inspector_for",
    "record_decision",
    "route_department",
    "system_user_id",
]

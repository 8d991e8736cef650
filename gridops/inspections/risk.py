"""Risk of each enterprise and service outlet, and how often it is inspected.

The score is a weighted sum of three factors, each in [0, 1], so that it can be explained
line by line ("chemicals 0.95, grade 4; 2 incidents within 100 m in 90 days; last visit:
major findings"):

    score = W_BASE × base  +  W_INCIDENTS × incidents  +  W_RESULT × result

* base: for an enterprise, (1 − GRADE_SHARE) × the industry's base risk (INDUSTRY_BASE: fire,
  explosion and toxic hazards highest, crowds and food next, offices lowest; unknown labels
  by keyword, else DEFAULT_INDUSTRY_BASE) + GRADE_SHARE × its registered risk grade
  (risk_level 1..4 → 0..1). For a service outlet, OUTLET_BASE by outlet type.
* incidents: incidents (not void) reported within INCIDENT_RADIUS_M in the last
  INCIDENT_DAYS days, saturating: 1 − exp(−n / INCIDENT_SCALE) (1 → 0.28, 3 → 0.63, 6 → 0.86).
* result: the last inspection's result, RESULT_FACTOR: major findings 1, minor 0.6, never
  inspected 0.5, no findings 0 — a bad visit raises the score, a clean one lowers it.

The frequency follows the score band (FREQUENCY_BANDS: 7, 30 or 90 days). Outlets go through
the same bands; their type sets their base.

The arithmetic is in ``score`` (numpy, one place); SQL gathers the factors (the incident
count is one GiST-backed lateral count per target) and writes the plans in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.incidents.workcal import TZ

W_BASE, W_INCIDENTS, W_RESULT = 0.55, 0.25, 0.20
GRADE_SHARE = 0.4
INCIDENT_RADIUS_M = 100.0
INCIDENT_DAYS = 90
INCIDENT_SCALE = 3.0
RESULT_FACTOR: dict[str | None, float] = {"major": 1.0, "minor": 0.6, None: 0.5, "ok": 0.0}
# (lowest score, days between inspections), highest band first.
FREQUENCY_BANDS: tuple[tuple[float, int], ...] = ((0.60, 7), (0.40, 30), (0.0, 90))

# Industry labels as the enterprise register (and the demo) writes them.
INDUSTRY_BASE: dict[str, float] = {
    "危险化学品经营": 0.95,  # hazardous chemicals trade
    "烟花爆竹零售": 0.95,  # fireworks retail
    "燃气经营（瓶装液化气）": 0.90,  # bottled LPG
    "成品油零售（加油站）": 0.85,  # petrol stations
    "化工新材料制造": 0.80,  # chemical manufacturing
    "小作坊加工": 0.75,  # small workshops (三小场所: fire load, unlicensed)
    "建筑施工": 0.70,  # construction
    "餐饮服务": 0.60,  # catering: gas, cooking oil, food safety, crowds
    "家具制造": 0.55,  # wood dust, solvents
    "塑料制品": 0.55,
    "铝型材加工": 0.55,
    "印刷包装": 0.50,  # solvents, paper fire load
    "陶瓷建材": 0.50,
    "五金机械": 0.50,
    "纺织服装": 0.45,  # fire load, crowded workshops
    "住宿服务": 0.45,
    "食品饮料制造": 0.45,
    "物流仓储": 0.40,
    "汽车零部件制造": 0.40,
    "家用电器制造": 0.40,
    "家具批发零售": 0.30,
    "批发零售": 0.25,
    "花卉园艺": 0.20,
    "物业管理": 0.20,
    "科技服务": 0.10,  # offices
}
# For labels not in the table: the first keyword found decides.
INDUSTRY_KEYWORDS: tuple[tuple[str, float], ...] = (
    ("危险", 0.95), ("化学", 0.85), ("烟花", 0.95), ("爆", 0.9), ("燃气", 0.9), ("油", 0.8),
    ("化工", 0.8), ("建筑", 0.7), ("施工", 0.7), ("作坊", 0.75), ("餐饮", 0.6), ("食品", 0.45),
    ("制造", 0.45), ("加工", 0.5), ("仓储", 0.4), ("住宿", 0.45), ("批发", 0.25),
    ("零售", 0.25), ("科技", 0.1), ("软件", 0.1), ("咨询", 0.1), ("办公", 0.1),
)  # fmt: skip
DEFAULT_INDUSTRY_BASE = 0.35
OUTLET_BASE: dict[str, float] = {
    "clinic": 0.50,  # medical waste, infection control, crowds
    "admin_service_centre": 0.40,  # crowds
    "social_security": 0.30,
    "police_station": 0.20,
    "community_service_station": 0.20,
}
DEFAULT_OUTLET_BASE = 0.30

TARGETS_SQL = """
    SELECT 'enterprise' AS kind, e.id, e.industry AS label, e.risk_level, e.geom
    FROM enterprise e
    UNION ALL
    SELECT 'outlet', o.id, o.outlet_type, NULL::smallint, o.geom FROM service_outlet o
"""


def industry_base(label: str | None) -> float:
    """The base risk of an industry label (table, then keywords, then the default)."""
    if label is None:
        return DEFAULT_INDUSTRY_BASE
    if label in INDUSTRY_BASE:
        return INDUSTRY_BASE[label]
    for keyword, value in INDUSTRY_KEYWORDS:
        if keyword in label:
            return value
    return DEFAULT_INDUSTRY_BASE


def base_risk(kind: str, label: str | None, risk_level: int | None) -> float:
    if kind == "outlet":
        return OUTLET_BASE.get(label or "", DEFAULT_OUTLET_BASE)
    grade = (min(max(risk_level or 1, 1), 4) - 1) / 3
    return (1 - GRADE_SHARE) * industry_base(label) + GRADE_SHARE * grade


def score(
    base: Sequence[float] | np.ndarray,
    incidents: Sequence[int] | np.ndarray,
    last_result: Sequence[str | None],
) -> np.ndarray:
    """The risk scores (rounded to 4 places, in [0, 1]) of targets with these factors."""
    b = np.asarray(base, dtype=float)
    n = np.asarray(incidents, dtype=float)
    r = np.array([RESULT_FACTOR[x] for x in last_result], dtype=float)
    s = W_BASE * b + W_INCIDENTS * (1 - np.exp(-n / INCIDENT_SCALE)) + W_RESULT * r
    return np.round(np.clip(s, 0.0, 1.0), 4)


def frequency_days(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    days = np.full(s.shape, FREQUENCY_BANDS[-1][1], dtype=int)
    for floor, every in reversed(FREQUENCY_BANDS[:-1]):
        days[s >= floor] = every
    return days


def incident_window(today: date) -> tuple[datetime, datetime]:
    """[start, end) of the incidents that count on ``today`` (local days)."""
    end = datetime.combine(today + timedelta(days=1), time(), TZ)
    return end - timedelta(days=INCIDENT_DAYS), end


def factors(
    session: Session, today: date, *, where: str = "true", params: dict[str, Any] | None = None
) -> list[Any]:
    """kind, id, label, risk_level, last_result, incidents, plan_id of the targets matching
    ``where`` (over ``t``, the target, and ``p``, its plan if any)."""
    since, until = incident_window(today)
    return list(
        session.execute(
            text(
                f"""
                SELECT t.kind, t.id, t.label, t.risk_level, p.last_result, p.id AS plan_id,
                       n.incidents
                FROM ({TARGETS_SQL}) t
                LEFT JOIN inspection_plan p ON p.target_kind = t.kind AND p.target_id = t.id
                CROSS JOIN LATERAL (
                    SELECT count(*) AS incidents FROM incident i
                    WHERE i.geom && ST_Expand(t.geom,
                              :radius * 1.01 / (111320 * cos(radians(ST_Y(t.geom)))),
                              :radius * 1.01 / 110574)
                      AND i.status <> 'void'
                      AND i.reported_at >= :since AND i.reported_at < :until
                      AND ST_DWithin(i.geom::geography, t.geom::geography, :radius)
                ) n
                WHERE {where}
                """
            ),
            {"radius": INCIDENT_RADIUS_M, "since": since, "until": until, **(params or {})},
        ).all()
    )


def scored(rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(scores, frequencies, bases) of ``factors`` rows."""
    bases = [base_risk(r.kind, r.label, r.risk_level) for r in rows]
    scores = score(bases, [r.incidents for r in rows], [r.last_result for r in rows])
    return scores, frequency_days(scores), bases


def explain(row: Any, base: float) -> dict[str, Any]:
    """The factors of one target's score, as the plan list shows them."""
    return {
        "base": round(base, 4),
        "label": row.label,
        "risk_level": row.risk_level,
        "incidents": int(row.incidents),
        "incident_radius_m": INCIDENT_RADIUS_M,
        "incident_days": INCIDENT_DAYS,
        "last_result": row.last_result,
        "weights": {"base": W_BASE, "incidents": W_INCIDENTS, "result": W_RESULT},
    }


def refresh_plans(session: Session, today: date) -> int:
    """Create or update the plan of every enterprise and outlet; the number of plans changed.

    A new plan's first visit is spread over its first period (by id), so that the first day
    does not hold every target. An existing plan keeps its next due day unless its frequency
    got shorter; then it is due no later than one new period after the last visit (or today).
    Plans whose target is gone are deactivated. Idempotent: a second call changes nothing.
    """
    rows = factors(session, today)
    scores, days, _ = scored(rows)
    changed = session.execute(
        text(
            """
            INSERT INTO inspection_plan (target_kind, target_id, risk_score, frequency_days,
                                         next_due_on)
            SELECT u.kind, u.id, u.score, u.days, CAST(:today AS date) + (u.id % u.days)::int
            FROM unnest(CAST(:kinds AS text[]), CAST(:ids AS bigint[]),
                        CAST(:scores AS real[]), CAST(:days AS integer[]))
                 AS u(kind, id, score, days)
            ON CONFLICT (target_kind, target_id) DO UPDATE SET
                risk_score = EXCLUDED.risk_score,
                frequency_days = EXCLUDED.frequency_days,
                next_due_on = CASE
                    WHEN EXCLUDED.frequency_days < inspection_plan.frequency_days THEN LEAST(
                        inspection_plan.next_due_on,
                        coalesce((inspection_plan.last_inspected_at AT TIME ZONE :zone)::date,
                                 CAST(:today AS date)) + EXCLUDED.frequency_days)
                    ELSE inspection_plan.next_due_on END,
                active = true,
                updated_at = now()
            WHERE (inspection_plan.risk_score, inspection_plan.frequency_days,
                   inspection_plan.active)
                  IS DISTINCT FROM (EXCLUDED.risk_score, EXCLUDED.frequency_days, true)
            """
        ),
        {
            "today": today,
            "zone": str(TZ),
            "kinds": [r.kind for r in rows],
            "ids": [int(r.id) for r in rows],
            "scores": [float(s) for s in scores],
            "days": [int(d) for d in days],
        },
    ).rowcount
    gone = session.execute(
        text(
            """
            UPDATE inspection_plan p SET active = false, updated_at = now()
            WHERE p.active AND NOT (
                (p.target_kind = 'enterprise'
                 AND EXISTS (SELECT 1 FROM enterprise e WHERE e.id = p.target_id))
                OR (p.target_kind = 'outlet'
                    AND EXISTS (SELECT 1 FROM service_outlet o WHERE o.id = p.target_id)))
            """
        )
    ).rowcount
    return int(changed) + int(gone)


def rescore_plan(session: Session, plan_id: int, today: date) -> tuple[float, int]:
    """Score one plan's target again (after a visit); (score, frequency) stored on the plan."""
    rows = factors(session, today, where="p.id = :plan", params={"plan": plan_id})
    scores, days, _ = scored(rows)
    session.execute(
        text("UPDATE inspection_plan SET risk_score = :s, frequency_days = :d WHERE id = :id"),
        {"s": float(scores[0]), "d": int(days[0]), "id": plan_id},
    )
    return float(scores[0]), int(days[0])


__all__ = [
    "FREQUENCY_BANDS",
    "INDUSTRY_BASE",
    "OUTLET_BASE",
    "base_risk",
    "explain",
    "factors",
    "frequency_days",
    "industry_base",
    "refresh_plans",
    "rescore_plan",
    "score",
]

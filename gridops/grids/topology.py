"""Topology rules of the hierarchy, asked of PostGIS: children inside their parent, siblings
not overlapping, unit grids covering their community without gaps.

The same SQL checks a file being imported (rows in the ``import_stage`` temp table, checked
together with what is stored) and what is stored (``gridops grids check``). The containment
tolerance is a buffer in EPSG:4547 metres (CGCS2000 / 3-degree Gauss-Kruger CM 114E, which fits
Foshan); overlap and gap areas are measured on the spheroid (``geography``), because a thin
sliver between two lon/lat edges, projected vertex by vertex, gains chord-versus-arc area that
is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.staging import Reject, reject_staged

METRIC_SRID = 4547


@dataclass(frozen=True)
class TopologyLimits:
    """What digitising noise is forgiven: metres for containment, m² for overlaps and gaps."""

    within_m: float = 1.0
    overlap_m2: float = 1.0
    gap_m2: float = 1.0


PARENT_LEVEL = (
    "CASE {level} WHEN 'district' THEN 'city' WHEN 'town' THEN 'district' "
    "WHEN 'community' THEN 'town' END"
)


def _within_parent(children: str, parents: str, limits: TopologyLimits) -> str:
    """Rows (row_no, code, reason) of children not covered by their parent (+ tolerance)."""
    return f"""
        WITH kids AS ({children}),
        parent AS MATERIALIZED (
            SELECT p.code, p.name, p.geom,
                   ST_Buffer(ST_Transform(p.geom, {METRIC_SRID}), {limits.within_m}) AS buf
            FROM ({parents}) p WHERE p.code IN (SELECT parent FROM kids))
        SELECT k.row_no, k.code,
               'not within its parent ' || p.code || ' (' || p.name || '): '
               || round(ST_Area(ST_Difference(k.geom, p.geom)::geography)::numeric, 1)
               || ' m² lie outside it, beyond the {limits.within_m:g} m tolerance' AS reason
        FROM kids k JOIN parent p ON p.code = k.parent
        WHERE NOT ST_CoveredBy(ST_Transform(k.geom, {METRIC_SRID}), p.buf)
        ORDER BY k.row_no, k.code
    """


def _overlaps(candidates: str, others: str, limits: TopologyLimits) -> str:
    """Rows (row_no, code, reason) of candidates whose interior overlaps a sibling's."""
    return f"""
        WITH a AS ({candidates}), b AS ({others}),
        pairs AS (
            SELECT a.row_no, a.code, b.code AS other,
                   ST_Area(ST_Intersection(a.geom, b.geom)::geography) AS m2
            FROM a JOIN b ON a.parent = b.parent AND a.code <> b.code AND a.geom && b.geom
            WHERE ST_Relate(a.geom, b.geom, '2********'))
        SELECT row_no, code,
               'overlaps its sibling ' || other || ' by ' || round(m2::numeric, 1)
               || ' m² (tolerance {limits.overlap_m2:g} m²)' AS reason
        FROM pairs WHERE m2 > {limits.overlap_m2}
        ORDER BY row_no, code, other
    """


def _gaps(cover: str, limits: TopologyLimits) -> str:
    """Rows (row_no NULL, community code, reason) where the grids leave part uncovered."""
    return f"""
        WITH cover AS ({cover}),
        per_community AS (
            SELECT parent, ST_Union(geom) AS u FROM cover GROUP BY parent),
        gaps AS (
            SELECT c.code, c.name,
                   ST_Area(ST_Difference(c.geom, p.u)::geography) AS m2
            FROM per_community p JOIN admin_area c ON c.code = p.parent)
        SELECT NULL::int AS row_no, code,
               'unit grids leave ' || round(m2::numeric, 1) || ' m² of community ' || code
               || ' (' || name || ') uncovered (tolerance {limits.gap_m2:g} m²)' AS reason
        FROM gaps WHERE m2 > {limits.gap_m2}
        ORDER BY code
    """


# -- a file being imported -----------------------------------------------------------------

STAGED = "SELECT row_no, code, parent, geom FROM import_stage WHERE ok"


def check_staged_topology(session: Session, kind: str, limits: TopologyLimits) -> list[Reject]:
    """Check the ok rows of ``import_stage`` (areas or grids) against each other and the DB."""
    rejects: list[Reject] = []
    if kind == "areas":
        parents = (
            "SELECT code, attrs->>'name' AS name, level, geom FROM import_stage WHERE ok "
            "UNION ALL SELECT code, name, level, geom FROM admin_area "
            "WHERE code NOT IN (SELECT code FROM import_stage WHERE ok)"
        )
        rejects += reject_staged(
            session,
            f"""
            SELECT s.row_no, s.code, CASE
                WHEN rejected.code IS NOT NULL THEN 'its parent ' || s.parent || ' was rejected'
                WHEN p.code IS NULL
                    THEN 'its parent ' || s.parent || ' is neither in the file nor stored'
                ELSE 'its parent ' || s.parent || ' is a ' || p.level || ', not a '
                     || {PARENT_LEVEL.format(level="s.level")} END AS reason
            FROM import_stage s
            LEFT JOIN ({parents}) p ON p.code = s.parent
            LEFT JOIN import_stage rejected ON rejected.code = s.parent AND NOT rejected.ok
            WHERE s.ok AND s.parent IS NOT NULL
              AND (p.code IS NULL OR rejected.code IS NOT NULL
                   OR p.level <> {PARENT_LEVEL.format(level="s.level")})
            ORDER BY s.row_no
            """,
        )
        siblings = (
            f"{STAGED} UNION ALL SELECT NULL, code, parent_code, geom FROM admin_area "
            "WHERE code NOT IN (SELECT code FROM import_stage)"
        )
    else:
        parents = "SELECT code, name, level, geom FROM admin_area WHERE level = 'community'"
        rejects += reject_staged(
            session,
            f"""
            SELECT s.row_no, s.code,
                   'its community ' || s.parent || ' is not stored (import the areas first)'
                   AS reason
            FROM import_stage s LEFT JOIN ({parents}) c ON c.code = s.parent
            WHERE s.ok AND c.code IS NULL ORDER BY s.row_no
            """,
        )
        siblings = (
            f"{STAGED} UNION ALL SELECT NULL, code, community_code, geom FROM unit_grid "
            "WHERE valid_to IS NULL AND community_code IN (SELECT parent FROM import_stage) "
            "AND code NOT IN (SELECT code FROM import_stage)"
        )
    rejects += reject_staged(session, _within_parent(STAGED, parents, limits))
    rejects += reject_staged(session, _overlaps(STAGED, siblings, limits))
    if kind == "grids":
        rejects += reject_staged(session, _gaps(siblings, limits))
    return rejects


# -- what is stored ------------------------------------------------------------------------

STORED_AREAS = "SELECT NULL::int AS row_no, code, parent_code AS parent, geom FROM admin_area"
STORED_GRIDS = (
    "SELECT NULL::int AS row_no, code, community_code AS parent, geom FROM unit_grid "
    "WHERE valid_to IS NULL"
)
AREA_PARENTS = "SELECT code, name, level, geom FROM admin_area"


@dataclass
class TopologyProblem:
    check: str
    code: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "code": self.code, "reason": self.reason}


def check_stored(session: Session, limits: TopologyLimits | None = None) -> list[TopologyProblem]:
    """Every topology problem of the stored hierarchy and current unit grids."""
    limits = limits or TopologyLimits()
    checks = {
        "valid": """
            SELECT NULL::int AS row_no, code, 'invalid geometry: ' || ST_IsValidReason(geom)
                   AS reason FROM admin_area WHERE NOT ST_IsValid(geom)
            UNION ALL SELECT NULL, code, 'invalid geometry: ' || ST_IsValidReason(geom)
                   FROM unit_grid WHERE valid_to IS NULL AND NOT ST_IsValid(geom)""",
        "area_within_parent": _within_parent(STORED_AREAS, AREA_PARENTS, limits),
        "area_overlap": _overlaps(STORED_AREAS, STORED_AREAS, limits),
        "grid_within_community": _within_parent(STORED_GRIDS, AREA_PARENTS, limits),
        "grid_overlap": _overlaps(STORED_GRIDS, STORED_GRIDS, limits),
        "grid_gap": _gaps(STORED_GRIDS, limits),
    }
    problems: list[TopologyProblem] = []
    for name, sql in checks.items():
        for row in session.execute(text(sql)):
            problems.append(TopologyProblem(name, row.code, row.reason))
    return problems

"""``gridops import``: areas, unit grids, enterprises, service outlets and components (部件)
from GIS files (a CSV with ``lon`` and ``lat`` columns is a point file too).

The file is read into lon/lat (``geofiles``), checked row by row in Python (fields, codes,
check characters), then copied into a temporary staging table where PostGIS checks the
geometry (``ST_IsValidReason``) and the topology against what is stored (parents, siblings,
gaps). Nothing is written unless every row passes, or ``allow_rejects`` says to write the good
rows. Re-running the same file changes nothing (upsert on the code).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session
from tqdm import tqdm

from gridops.errors import FieldError, InvalidInput
from gridops.geofiles import read_lonlat
from gridops.grids import codes
from gridops.grids.topology import TopologyLimits, check_staged_topology
from gridops.overlays.uscc import uscc_error
from gridops.staging import Reject, reject_staged

KINDS = ("areas", "grids", "enterprises", "outlets", "components")
POLYGONAL = {"areas", "grids"}
REQUIRED = {
    "areas": ("code", "name"),
    "grids": ("code",),
    "enterprises": ("uscc", "name"),
    "outlets": ("code", "outlet_type", "name"),
    "components": ("code",),
}
OPTIONAL = {
    "areas": ("name_en", "level", "parent_code"),
    "grids": ("community_code", "standard_ref"),
    "enterprises": ("industry", "risk_level", "address"),
    "outlets": ("opening_hours", "address", "phone"),
    # category: C + major + minor (C0101); when absent it is read from the code's digits 7-10.
    # owner, maintainer: department codes (权属单位, 养护单位).
    "components": ("category", "name", "owner", "maintainer"),
}


@dataclass
class ImportReport:
    kind: str
    file: str
    total: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    dry_run: bool = False
    written: bool = False

    def summary(self) -> str:
        verb = "would insert" if self.dry_run else "inserted"
        head = (
            f"{self.kind} from {self.file}: {self.total} features; {verb} {self.inserted}, "
            f"updated {self.updated}, unchanged {self.unchanged}, rejected {len(self.rejects)}"
        )
        lines = [head]
        for r in self.rejects:
            where = f"row {r.row}" if r.row is not None else "file"
            lines.append(f"  {where} ({r.code or 'no code'}): {r.reason}")
        if self.rejects and not self.written:
            lines.append("nothing was written")
        return "\n".join(lines)

    def write_rejects_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "code", "reason"])
            for r in self.rejects:
                writer.writerow(
                    [r.row if r.row is not None else "", _csv_text(r.code or ""),
                     _csv_text(r.reason)]
                )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "total": self.total,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [r.__dict__ for r in self.rejects],
            "dry_run": self.dry_run,
            "written": self.written,
        }


def _csv_text(value: str) -> str:
    """Codes and reasons quote the imported file: a spreadsheet must not run one as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class ImportRejected(InvalidInput):
    """Some rows were rejected and nothing was written; ``report`` lists them."""

    report: ImportReport

    def __init__(self, report: ImportReport) -> None:
        super().__init__(
            f"{len(report.rejects)} of {report.total} features rejected; nothing was written",
            [
                FieldError(f"row {r.row}" if r.row is not None else "file", r.reason)
                for r in report.rejects[:100]
            ],
            type_slug="import-rejected",
        )
        self.report = report


@dataclass
class ImportOptions:
    layer: str | None = None
    field_map: dict[str, str] = field(default_factory=dict)
    src_crs: str | None = None
    offset: str | None = None  # gcj02 | bd09
    dry_run: bool = False
    allow_rejects: bool = False
    limits: TopologyLimits = field(default_factory=TopologyLimits)
    chunk_size: int = 5000
    progress: bool | None = None  # None: only on a terminal


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    out = str(value).strip()
    return out or None


# -- row checks in Python ------------------------------------------------------------------


def _check_area(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    code = row["code"]
    reasons: list[str] = []
    implied = codes.level_of(code)
    level = row.get("level") or implied
    if implied is None:
        reasons.append(f"code {code!r} is not a 6, 9 or 12 digit administrative code")
    elif level not in codes.LEVELS:
        reasons.append(f"level {level!r} is not one of {', '.join(codes.LEVELS)}")
    elif codes.CODE_LENGTH[level] != len(code) or (level == "city") != (implied == "city"):
        reasons.append(f"code {code!r} does not have the form of a {level} code")
    parent = row.get("parent_code") or (codes.parent_of(code) if implied else None)
    if level == "city":
        parent = None
    elif parent and implied and not codes.code_matches_parent(code, parent):
        reasons.append(f"code {code!r} does not begin with its parent's code {parent!r}")
    return {**row, "level": level, "parent": parent}, reasons


def _check_grid(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    code = row["code"]
    standard = row.get("standard_ref") or codes.DEFAULT_GRID_STANDARD
    reasons: list[str] = []
    problem = codes.grid_code_error(code, standard)
    if problem:
        reasons.append(problem)
    community = row.get("community_code") or code[:12]
    if not code.startswith(community):
        reasons.append(f"code {code!r} does not begin with its community's code {community!r}")
    return {**row, "standard_ref": standard, "parent": community, "level": None}, reasons


def _check_enterprise(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    reasons: list[str] = []
    code = row["uscc"].upper()
    problem = uscc_error(code)
    if problem:
        reasons.append(problem)
    risk = row.get("risk_level")
    if risk is None:
        risk = "1"
    try:
        risk_level = int(float(risk))
        if not 1 <= risk_level <= 4 or float(risk) != risk_level:
            raise ValueError
    except ValueError:
        reasons.append(f"risk_level {risk!r} must be a whole number from 1 to 4")
        risk_level = 1
    return {**row, "code": code, "risk_level": risk_level, "parent": None, "level": None}, reasons


def _check_outlet(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    reasons = []
    if len(row["code"]) > 40:
        reasons.append("code is longer than 40 characters")
    if len(row["outlet_type"]) > 40:
        reasons.append("outlet_type is longer than 40 characters")
    return {**row, "parent": None, "level": None}, reasons


def _check_component(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A component ID is 16 digits: 6 county + 2 major + 2 minor + 6 serial (GB/T 30428.3)."""
    code = row["code"]
    reasons: list[str] = []
    category = (row.get("category") or "").upper() or None
    if not re.fullmatch(r"[0-9]{16}", code):
        reasons.append(f"code {code!r} is not 16 digits (county, major, minor, serial)")
    elif category is None:
        category = f"C{code[6:10]}"
    elif category != f"C{code[6:10]}":
        reasons.append(
            f"code {code} names class C{code[6:10]} (digits 7-10), not its category {category}"
        )
    if len(row.get("name") or "") > 200:
        reasons.append("name is longer than 200 characters")
    return {**row, "category": category, "parent": None, "level": None}, reasons


ROW_CHECKS: dict[str, Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]]] = {
    "areas": _check_area,
    "grids": _check_grid,
    "enterprises": _check_enterprise,
    "outlets": _check_outlet,
    "components": _check_component,
}


def _prepare_rows(
    kind: str, frame: gpd.GeoDataFrame
) -> tuple[list[dict[str, Any]], list[Reject], int]:
    """Our fields per row (1-based ``row_no``), the rejects, and the count of features."""
    missing = [name for name in REQUIRED[kind] if name not in frame.columns]
    if missing:
        columns = ", ".join(c for c in frame.columns if c != "geometry")
        raise InvalidInput(
            f"the file has no {', '.join(missing)} column (it has: {columns}); "
            "map yours with --field-map ours=theirs",
            [FieldError(name, "column missing") for name in missing],
        )
    key = "uscc" if kind == "enterprises" else "code"
    wanted = [c for c in (*REQUIRED[kind], *OPTIONAL[kind]) if c in frame.columns]
    records = frame[wanted].to_dict("records")
    geoms = frame.geometry.values
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    first_seen: dict[str, int] = {}
    for i, (record, geom) in enumerate(zip(records, geoms, strict=True), start=1):
        row = {name: _text(value) for name, value in record.items()}
        absent = [name for name in REQUIRED[kind] if not row.get(name)]
        if absent:
            rejects.append(Reject(i, row.get(key), f"empty {', '.join(absent)}"))
            continue
        if kind == "enterprises":
            row["code"] = row["uscc"]
        row, reasons = ROW_CHECKS[kind](row)
        if geom is None:
            reasons.append("no geometry (or one that cannot be read)")
        if row["code"] in first_seen:
            reasons.append(f"duplicate of row {first_seen[row['code']]} ({key} {row['code']})")
        else:
            first_seen[row["code"]] = i
        if reasons:
            rejects.extend(Reject(i, row["code"], reason) for reason in reasons)
            continue
        row["row_no"] = i
        row["geom"] = geom
        rows.append(row)
    return rows, rejects, len(records)


# -- staging in PostGIS --------------------------------------------------------------------


def _stage(session: Session, rows: list[dict[str, Any]], options: ImportOptions) -> None:
    session.execute(text("DROP TABLE IF EXISTS import_stage"))
    session.execute(
        text(
            "CREATE TEMP TABLE import_stage ("
            " row_no int PRIMARY KEY, code text NOT NULL, parent text, level text,"
            " attrs jsonb NOT NULL, geom geometry NOT NULL, ok boolean NOT NULL DEFAULT true"
            ") ON COMMIT DROP"
        )
    )
    if not rows:
        return
    geoms = shapely.set_srid(shapely.from_wkb(shapely.to_wkb([r["geom"] for r in rows])), 4326)
    ewkb = shapely.to_wkb(geoms, hex=True, include_srid=True)
    raw = session.connection().connection.driver_connection
    show = options.progress if options.progress is not None else sys.stderr.isatty()
    with (
        raw.cursor() as cursor,
        cursor.copy(
            "COPY import_stage (row_no, code, parent, level, attrs, geom) FROM STDIN"
        ) as copy,
        tqdm(total=len(rows), disable=not show, unit="features", desc="staging") as bar,
    ):
        for start in range(0, len(rows), options.chunk_size):
            chunk = rows[start : start + options.chunk_size]
            for row, wkb in zip(chunk, ewkb[start : start + options.chunk_size], strict=True):
                attrs = {
                    k: v for k, v in row.items() if k not in {"geom", "row_no", "parent", "level"}
                }
                copy.write_row(
                    (
                        row["row_no"],
                        row["code"],
                        row["parent"],
                        row["level"],
                        json.dumps(attrs),
                        wkb,
                    )
                )
            bar.update(len(chunk))
    session.execute(text("CREATE INDEX ON import_stage USING gist (geom)"))
    session.execute(text("ANALYZE import_stage"))


def _check_staged_geometry(session: Session, kind: str) -> list[Reject]:
    wanted = "('POLYGON', 'MULTIPOLYGON')" if kind in POLYGONAL else "('POINT')"
    what = "a polygon" if kind in POLYGONAL else "a point"
    return reject_staged(
        session,
        f"""
        SELECT row_no, code, CASE
            WHEN ST_IsEmpty(geom) THEN 'empty geometry'
            WHEN GeometryType(geom) NOT IN {wanted}
                THEN 'geometry is a ' || GeometryType(geom) || ', expected {what}'
            WHEN NOT ST_IsValid(geom) THEN 'invalid geometry: ' || ST_IsValidReason(geom)
            WHEN ST_XMin(geom) < -180 OR ST_XMax(geom) > 180
                 OR ST_YMin(geom) < -90 OR ST_YMax(geom) > 90
                THEN 'coordinates are outside lon/lat range (wrong --src-crs, or lat/lon swapped?)'
            END AS reason
        FROM import_stage
        WHERE ST_IsEmpty(geom) OR GeometryType(geom) NOT IN {wanted} OR NOT ST_IsValid(geom)
           OR ST_XMin(geom) < -180 OR ST_XMax(geom) > 180
           OR ST_YMin(geom) < -90 OR ST_YMax(geom) > 90
        ORDER BY row_no
        """,
    )


def _check_inside_jurisdiction(session: Session) -> list[Reject]:
    return reject_staged(
        session,
        """
        SELECT s.row_no, s.code, CASE
            WHEN NOT EXISTS (SELECT 1 FROM admin_area WHERE parent_code IS NULL)
                THEN 'no administrative areas are loaded yet: import the areas first'
            ELSE 'point ' || round(ST_X(s.geom)::numeric, 6) || ' '
                 || round(ST_Y(s.geom)::numeric, 6) || ' is outside the jurisdiction' END AS reason
        FROM import_stage s
        WHERE s.ok AND NOT EXISTS (
            SELECT 1 FROM admin_area a WHERE a.parent_code IS NULL AND ST_Covers(a.geom, s.geom))
        ORDER BY s.row_no
        """,
    )


def _check_staged_components(session: Session) -> list[Reject]:
    """The category and departments a component names exist, and its county digits are those
    of the district its point lies in."""
    rejects = reject_staged(
        session,
        """
        SELECT s.row_no, s.code, 'no component class ' || (s.attrs->>'category')
               || ' in the catalogue' AS reason
        FROM import_stage s
        WHERE NOT EXISTS (SELECT 1 FROM category c WHERE c.code = s.attrs->>'category'
                          AND c.kind = 'component' AND c.minor_code IS NOT NULL)
        UNION ALL
        SELECT s.row_no, s.code, 'no department ' || (s.attrs->>r.role) || ' (' || r.role || ')'
        FROM import_stage s, (VALUES ('owner'), ('maintainer')) AS r (role)
        WHERE s.attrs->>r.role IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM department d WHERE d.code = s.attrs->>r.role)
        UNION ALL
        SELECT s.row_no, s.code, 'code begins with county ' || left(s.code, 6)
               || ' but the point lies in district ' || min(a.code)
        FROM import_stage s JOIN admin_area a ON a.level = 'district'
             AND ST_Covers(a.geom, s.geom)
        WHERE GeometryType(s.geom) = 'POINT'
        GROUP BY s.row_no, s.code HAVING bool_and(a.code <> left(s.code, 6))
        ORDER BY 1, 3
        """,
    )
    return rejects


# -- writing -------------------------------------------------------------------------------


def _upsert_areas(session: Session) -> tuple[int, int]:
    inserted = updated = 0
    for level in codes.LEVELS:  # parents first, for the foreign key
        result = session.execute(
            text(
                """
                INSERT INTO admin_area AS a (code, name, name_en, level, parent_code, geom)
                SELECT code, attrs->>'name', attrs->>'name_en', level, parent, ST_Multi(geom)
                FROM import_stage WHERE ok AND level = :level ORDER BY code
                ON CONFLICT (code) DO UPDATE SET
                    name = EXCLUDED.name, name_en = EXCLUDED.name_en, level = EXCLUDED.level,
                    parent_code = EXCLUDED.parent_code, geom = EXCLUDED.geom, updated_at = now()
                WHERE (a.name, a.name_en, a.level, a.parent_code)
                      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.name_en, EXCLUDED.level,
                                        EXCLUDED.parent_code)
                   OR NOT ST_OrderingEquals(a.geom, EXCLUDED.geom)
                RETURNING (xmax = 0) AS inserted
                """
            ),
            {"level": level},
        )
        flags = [r.inserted for r in result]
        inserted += sum(flags)
        updated += len(flags) - sum(flags)
    return inserted, updated


def _upsert_grids(session: Session) -> tuple[int, int]:
    """New codes are inserted; a changed grid closes its current version and adds a new one."""
    at = version_instant(session)
    changed = session.execute(
        text(
            """
            UPDATE unit_grid g SET valid_to = :at
            FROM import_stage s
            WHERE s.ok AND g.code = s.code AND g.valid_to IS NULL
              AND (NOT ST_OrderingEquals(g.geom, ST_Multi(s.geom))
                   OR g.standard_ref IS DISTINCT FROM s.attrs->>'standard_ref')
            RETURNING g.code
            """
        ),
        {"at": at},
    ).scalars()
    updated = len(list(changed))
    result = session.execute(
        text(
            """
            INSERT INTO unit_grid (code, community_code, standard_ref, geom, valid_from)
            SELECT s.code, s.parent, s.attrs->>'standard_ref', ST_Multi(s.geom), :at
            FROM import_stage s
            WHERE s.ok AND NOT EXISTS (
                SELECT 1 FROM unit_grid g WHERE g.code = s.code AND g.valid_to IS NULL)
            ORDER BY s.code
            """
        ),
        {"at": at},
    )
    communities = session.execute(
        text("SELECT DISTINCT parent FROM import_stage WHERE ok")
    ).scalars()
    relocate_overlays(session, list(communities))
    return result.rowcount - updated, updated


def version_instant(session: Session) -> datetime:
    """When a grid version ends and its successor starts: the wall clock, not the transaction
    start, so that two changes in one transaction still give increasing versions."""
    return session.execute(text("SELECT clock_timestamp()")).scalar_one()


GRID_OF_POINT = """(
    SELECT g.id FROM unit_grid g
    WHERE g.valid_to IS NULL AND ST_Covers(g.geom, {point})
    ORDER BY g.code LIMIT 1)"""


def _upsert_points(session: Session, kind: str) -> tuple[int, int]:
    if kind == "enterprises":
        table, key = "enterprise", "uscc"
        columns = ("name", "industry", "risk_level", "address")
        values = (
            "attrs->>'name', attrs->>'industry', (attrs->>'risk_level')::smallint, "
            "attrs->>'address'"
        )
    else:
        table, key = "service_outlet", "code"
        columns = ("outlet_type", "name", "opening_hours", "address", "phone")
        values = (
            "attrs->>'outlet_type', attrs->>'name', attrs->>'opening_hours', "
            "attrs->>'address', attrs->>'phone'"
        )
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*columns, "geom", "grid_id"))
    old = ", ".join(f"t.{c}" for c in columns)
    new = ", ".join(f"EXCLUDED.{c}" for c in columns)
    result = session.execute(
        text(
            f"""
            INSERT INTO {table} AS t ({key}, {", ".join(columns)}, geom, grid_id)
            SELECT code, {values}, geom, {GRID_OF_POINT.format(point="s.geom")}
            FROM import_stage s WHERE ok ORDER BY code
            ON CONFLICT ({key}) DO UPDATE SET {assignments}
            WHERE ({old}) IS DISTINCT FROM ({new})
               OR NOT ST_OrderingEquals(t.geom, EXCLUDED.geom)
               OR t.grid_id IS DISTINCT FROM EXCLUDED.grid_id
            RETURNING (xmax = 0) AS inserted
            """
        )
    )
    flags = [r.inserted for r in result]
    return sum(flags), len(flags) - sum(flags)


def _upsert_components(session: Session) -> tuple[int, int]:
    columns = ("category_id", "name", "owner_department_id", "maintainer_department_id")
    old = ", ".join(f"t.{c}" for c in columns)
    new = ", ".join(f"EXCLUDED.{c}" for c in columns)
    result = session.execute(
        text(
            f"""
            INSERT INTO component AS t (code, {", ".join(columns)}, geom)
            SELECT s.code,
                   (SELECT c.id FROM category c WHERE c.code = s.attrs->>'category'
                    AND c.kind = 'component' AND c.minor_code IS NOT NULL
                    ORDER BY c.standard_ref DESC LIMIT 1),
                   coalesce(s.attrs->>'name', ''), od.id, md.id, s.geom
            FROM import_stage s
            LEFT JOIN department od ON od.code = s.attrs->>'owner'
            LEFT JOIN department md ON md.code = s.attrs->>'maintainer'
            WHERE s.ok ORDER BY s.code
            ON CONFLICT (code) DO UPDATE SET
                {", ".join(f"{c} = EXCLUDED.{c}" for c in (*columns, "geom"))}
            WHERE ({old}) IS DISTINCT FROM ({new})
               OR NOT ST_OrderingEquals(t.geom, EXCLUDED.geom)
            RETURNING (xmax = 0) AS inserted
            """
        )
    )
    flags = [r.inserted for r in result]
    return sum(flags), len(flags) - sum(flags)


def relocate_overlays(session: Session, community_codes: Iterable[str]) -> None:
    """Point enterprises and outlets in these communities at their current unit grid."""
    communities = list(community_codes)
    if not communities:
        return
    for table in ("enterprise", "service_outlet"):
        session.execute(
            text(
                f"""
                UPDATE {table} t SET grid_id = {GRID_OF_POINT.format(point="t.geom")}
                FROM admin_area c
                WHERE c.code = ANY(:codes) AND ST_Covers(c.geom, t.geom)
                """
            ),
            {"codes": communities},
        )


# -- the whole import ----------------------------------------------------------------------


def run_import(
    session: Session, kind: str, path: Path, options: ImportOptions | None = None
) -> ImportReport:
    """Import one file; commits only when every row passed (or ``allow_rejects``).

    Raises ImportRejected (nothing written) when rows were rejected and not allowed.
    """
    options = options or ImportOptions()
    if kind not in KINDS:
        raise InvalidInput(
            f"unknown import kind {kind!r}", [FieldError("kind", f"one of {', '.join(KINDS)}")]
        )
    frame = read_lonlat(
        path,
        layer=options.layer,
        src_crs=options.src_crs,
        offset=options.offset,
        field_map=options.field_map,
    )
    rows, rejects, total = _prepare_rows(kind, frame)
    report = ImportReport(kind=kind, file=str(path), total=total, dry_run=options.dry_run)
    try:
        _stage(session, rows, options)
        rejects += _check_staged_geometry(session, kind)
        if kind in POLYGONAL:
            rejects += check_staged_topology(session, kind, options.limits)
        else:
            rejects += _check_inside_jurisdiction(session)
        if kind == "components":
            rejects += _check_staged_components(session)
        report.rejects = sorted(rejects, key=lambda r: (r.row is None, r.row or 0, r.reason))
        if report.rejects and not options.allow_rejects:
            raise ImportRejected(report)
        ok = session.execute(text("SELECT count(*) FROM import_stage WHERE ok")).scalar_one()
        if kind == "areas":
            report.inserted, report.updated = _upsert_areas(session)
        elif kind == "grids":
            report.inserted, report.updated = _upsert_grids(session)
        elif kind == "components":
            report.inserted, report.updated = _upsert_components(session)
        else:
            report.inserted, report.updated = _upsert_points(session, kind)
        report.unchanged = ok - report.inserted - report.updated
        if options.dry_run:
            session.rollback()
        else:
            session.commit()
            report.written = True
        return report
    except BaseException:
        session.rollback()
        raise

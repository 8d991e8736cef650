"""Loading the Foshan demo built by ``geodata/build.py`` (idempotent: run it any number of times).

The areas, enterprises and outlets go through the same import path as any city's files; the
unit grids of Chancheng are cut by the generator; the historical incidents are copied in and
located in one batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.grids.locate import assign_grids
from gridops.grids.service import communities_under, regenerate_community
from gridops.importing import ImportOptions, run_import

GRIDDED_DISTRICTS = ("440604",)  # Chancheng: every community is cut into unit grids


def load_incidents(session: Session, csv_path: Path) -> int:
    """Copy historical incidents in as closed cases (skipping client UUIDs already stored);
    returns the number of new rows."""
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS incident_stage")
        cursor.execute(
            "CREATE TEMP TABLE incident_stage (client_uuid uuid, category_code text, "
            "lon float8, lat float8, reported_at timestamptz, source text) ON COMMIT DROP"
        )
        with (
            cursor.copy("COPY incident_stage FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            csv_path.open("rb") as fh,
        ):
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
    unknown = session.execute(
        text(
            "SELECT DISTINCT s.category_code FROM incident_stage s "
            "LEFT JOIN category c ON c.code = s.category_code WHERE c.id IS NULL"
        )
    ).scalars()
    missing = list(unknown)
    if missing:
        raise ValueError(f"incidents use categories not in the catalogue: {missing}")
    inserted = session.execute(
        text(
            """
            INSERT INTO incident (client_uuid, category_id, geom, reported_at, source, status)
            SELECT s.client_uuid, c.id, ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326),
                   s.reported_at, s.source, 'closed'
            FROM incident_stage s JOIN category c ON c.code = s.category_code
            ORDER BY s.reported_at
            ON CONFLICT (client_uuid) DO NOTHING
            """
        )
    ).rowcount
    session.execute(text("DROP TABLE incident_stage"))
    return inserted


def load_demo(session: Session, data_dir: Path, *, log: Any = print) -> dict[str, Any]:
    """Load everything in ``data_dir`` (areas.gpkg, enterprises.gpkg, outlets.gpkg,
    incidents.csv); commits step by step and returns what it did."""
    started = time.perf_counter()
    summary: dict[str, Any] = {}
    quiet = ImportOptions(progress=False)
    report = run_import(session, "areas", data_dir / "areas.gpkg", quiet)
    log(report.summary())
    summary["areas"] = report.as_dict()

    created = unchanged = 0
    for district in GRIDDED_DISTRICTS:
        for community in communities_under(session, district):
            result = regenerate_community(session, community)
            created += result.created
            unchanged += result.unchanged
    session.commit()
    log(f"unit grids: {created} created, {unchanged} communities unchanged")
    summary["grids_created"] = created

    for kind in ("enterprises", "outlets"):
        report = run_import(session, kind, data_dir / f"{kind}.gpkg", quiet)
        log(report.summary())
        summary[kind] = report.as_dict()

    new_incidents = load_incidents(session, data_dir / "incidents.csv")
    located = assign_grids(session, "incident", where="grid_id IS NULL")
    session.commit()
    log(f"incidents: {new_incidents} new, {located} located in a unit grid")
    summary["incidents"] = {"inserted": new_incidents, "located": located}
    session.execute(text("ANALYZE"))  # fresh statistics for the rows just loaded
    session.commit()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    log(f"demo loaded in {summary['seconds']} s")
    return summary

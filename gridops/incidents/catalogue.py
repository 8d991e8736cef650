"""Load the category catalogue (GB/T 30428.3 components and events) from CSV data."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import Connection, text

CATALOGUE_CSV = Path(__file__).with_name("catalogue_gbt30428.csv")
COLUMNS = (
    "standard_ref",
    "kind",
    "code",
    "major_code",
    "minor_code",
    "name_zh",
    "name_en",
    "urgency",
    "time_limit_hours",
)


def read_catalogue(path: Path) -> list[dict[str, object]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out: list[dict[str, object]] = []
    for row in rows:
        out.append(
            {
                **{key: (row[key] or None) for key in COLUMNS},
                "urgency": int(row["urgency"] or 2),
                "time_limit_hours": int(row["time_limit_hours"])
                if row["time_limit_hours"]
                else None,
            }
        )
    return out


def upsert_catalogue(connection: Connection, path: Path, *, overwrite: bool = True) -> int:
    """Insert (and with ``overwrite`` update) categories; returns rows written."""
    rows = read_catalogue(path)
    action = (
        "DO UPDATE SET name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en, "
        "urgency = EXCLUDED.urgency, time_limit_hours = EXCLUDED.time_limit_hours"
        if overwrite
        else "DO NOTHING"
    )
    written = 0
    for row in rows:
        result = connection.execute(
            text(
                f"INSERT INTO category ({', '.join(COLUMNS)}) VALUES "
                f"({', '.join(':' + c for c in COLUMNS)}) "
                f"ON CONFLICT (standard_ref, code) {action}"
            ),
            row,
        )
        written += result.rowcount
    return written

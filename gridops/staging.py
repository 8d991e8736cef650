"""Rejected rows of an import, found by SQL checks on the ``import_stage`` temp table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass
class Reject:
    row: int | None  # 1-based feature number in the file; None for a whole-community problem
    code: str | None
    reason: str


def reject_staged(session: Session, sql: str, params: dict[str, Any] | None = None) -> list[Reject]:
    """Run a check returning (row_no, code, reason) and mark those staged rows not ok."""
    found = [Reject(r.row_no, r.code, r.reason) for r in session.execute(text(sql), params or {})]
    rows = sorted({r.row for r in found if r.row is not None})
    if rows:
        session.execute(
            text("UPDATE import_stage SET ok = false WHERE row_no = ANY(:rows)"), {"rows": rows}
        )
    return found

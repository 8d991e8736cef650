"""Unit-grid regeneration: versioned, so old incidents keep the grid they were filed in."""

from __future__ import annotations

from dataclasses import dataclass

import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.grids.generate import generate_unit_grids
from gridops.importing import relocate_overlays, version_instant


@dataclass
class RegenerateResult:
    community: str
    created: int
    closed: int
    unchanged: bool


def communities_under(session: Session, code: str) -> list[str]:
    """The community codes at or below an area (a community gives itself)."""
    rows = session.execute(
        text(
            "WITH RECURSIVE sub AS (SELECT code, level FROM admin_area WHERE code = :code "
            "UNION ALL SELECT a.code, a.level FROM admin_area a JOIN sub ON a.parent_code = "
            "sub.code) SELECT code FROM sub WHERE level = 'community' ORDER BY code"
        ),
        {"code": code},
    ).scalars()
    found = list(rows)
    if not found:
        exists = session.execute(
            text("SELECT 1 FROM admin_area WHERE code = :code"), {"code": code}
        ).first()
        if exists is None:
            raise NotFound(f"no area {code!r}", [FieldError("community", "unknown code")])
    return found


def regenerate_community(
    session: Session, community_code: str, *, target_area_m2: float = 10_000.0
) -> RegenerateResult:
    """Cut a community into unit grids; replaces the current set only if it differs.

    The caller commits. Old grids get ``valid_to``; new ones start at the same instant.
    """
    row = session.execute(
        text("SELECT level, ST_AsBinary(geom) AS wkb FROM admin_area WHERE code = :code"),
        {"code": community_code},
    ).first()
    if row is None:
        raise NotFound(f"no community {community_code!r}", [FieldError("community", "unknown")])
    if row.level != "community":
        raise InvalidInput(
            f"{community_code} is a {row.level}, not a community",
            [FieldError("community", "unit grids are cut per community")],
        )
    cells = generate_unit_grids(
        shapely.from_wkb(bytes(row.wkb)), community_code, target_area_m2=target_area_m2
    )
    current = session.execute(
        text(
            "SELECT code, ST_AsBinary(geom) AS wkb FROM unit_grid "
            "WHERE community_code = :code AND valid_to IS NULL ORDER BY code"
        ),
        {"code": community_code},
    ).all()
    if [c.code for c in current] == [c.code for c in cells] and all(
        shapely.equals_exact(shapely.from_wkb(bytes(old.wkb)), new.geom, tolerance=0)
        for old, new in zip(current, cells, strict=True)
    ):
        return RegenerateResult(community_code, 0, 0, unchanged=True)
    at = version_instant(session)
    closed = session.execute(
        text(
            "UPDATE unit_grid SET valid_to = :at WHERE community_code = :code AND valid_to IS NULL"
        ),
        {"code": community_code, "at": at},
    ).rowcount
    session.execute(
        text(
            "INSERT INTO unit_grid (code, community_code, geom, valid_from) "
            "VALUES (:code, :community, ST_GeomFromWKB(:wkb, 4326), :at)"
        ),
        [
            {"code": c.code, "community": community_code, "wkb": shapely.to_wkb(c.geom), "at": at}
            for c in cells
        ],
    )
    relocate_overlays(session, [community_code])
    return RegenerateResult(community_code, len(cells), closed, unchanged=False)

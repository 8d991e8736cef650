"""The administrative hierarchy and the unit grids that tile it."""

from __future__ import annotations

from datetime import datetime

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from gridops.db import Base

AREA_LEVELS = ("city", "district", "town", "community")
# Length of the administrative code at each level (GB/T 2260 + statistical division codes).
AREA_CODE_LENGTH = {"city": 6, "district": 6, "town": 9, "community": 12}


class AdminArea(Base):
    __tablename__ = "admin_area"

    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(16))
    parent_code: Mapped[str | None] = mapped_column(
        ForeignKey("admin_area.code", ondelete="RESTRICT")
    )
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("level IN ('city','district','town','community')"),)


class UnitGrid(Base):
    """A unit grid (单元网格). Versioned: a regenerated grid closes the old row (valid_to)."""

    __tablename__ = "unit_grid"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(15))
    community_code: Mapped[str] = mapped_column(ForeignKey("admin_area.code", ondelete="RESTRICT"))
    standard_ref: Mapped[str] = mapped_column(String(40))
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)
    )
    area_m2: Mapped[float] = mapped_column(Float, Computed("ST_Area(geom::geography)"))
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("code", "valid_from", name="unit_grid_code_version"),)

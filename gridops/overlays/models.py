"""Map overlays: market subjects (enterprises) and government service outlets."""

from __future__ import annotations

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import CHAR, BigInteger, ForeignKey, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from gridops.db import Base


class Enterprise(Base):
    __tablename__ = "enterprise"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uscc: Mapped[str] = mapped_column(CHAR(18), unique=True)  # unified social credit code
    name: Mapped[str] = mapped_column(String(200))
    industry: Mapped[str | None] = mapped_column(String(100))
    risk_level: Mapped[int] = mapped_column(SmallInteger)  # 1 low … 4 high
    address: Mapped[str | None] = mapped_column(String(300))
    geom: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    grid_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("unit_grid.id", ondelete="SET NULL")
    )


class ServiceOutlet(Base):
    __tablename__ = "service_outlet"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    outlet_type: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    opening_hours: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(40))
    geom: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    grid_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("unit_grid.id", ondelete="SET NULL")
    )

"""The category catalogue: GB/T 30428 components (部件) and events (事件), kept as data."""

from __future__ import annotations

import uuid
from datetime import datetime

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    CHAR,
    REAL,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from gridops.db import Base


class Category(Base):
    """A major class (minor_code NULL) or a minor class of components or events.

    ``code`` is the kind letter plus major and minor digits: ``E05`` (street order),
    ``E0502``; ``C01``, ``C0101``. ``standard_ref`` names the edition it comes from so a later
    edition can live beside it.
    """

    __tablename__ = "category"

    id: Mapped[int] = mapped_column(primary_key=True)
    standard_ref: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))  # component | event
    code: Mapped[str] = mapped_column(String(10))
    major_code: Mapped[str] = mapped_column(CHAR(2))
    minor_code: Mapped[str | None] = mapped_column(CHAR(2))
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200))
    urgency: Mapped[int] = mapped_column(SmallInteger, default=2)
    time_limit_hours: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Working hours per stage; time_limit_hours above is the handling stage (处置).
    verify_limit_hours: Mapped[float | None] = mapped_column(REAL)
    dispatch_limit_hours: Mapped[float | None] = mapped_column(REAL)
    check_limit_hours: Mapped[float | None] = mapped_column(REAL)
    department_id: Mapped[int | None] = mapped_column(Integer)  # default handling department
    duplicate_radius_m: Mapped[float] = mapped_column(REAL, server_default="50")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("standard_ref", "code", name="category_code_unique"),)


class Incident(Base):
    """A reported problem at a point (the case-workflow columns come later)."""

    __tablename__ = "incident"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    client_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="RESTRICT"))
    geom: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    source: Mapped[str] = mapped_column(String(16), server_default="inspector")
    grid_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("unit_grid.id", ondelete="RESTRICT")
    )
    # The case (see gridops.incidents.workflow); changed only through cases.transition.
    status: Mapped[str] = mapped_column(String(24), server_default="reported")
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    parked_from: Mapped[str | None] = mapped_column(String(24))
    handler_id: Mapped[int | None] = mapped_column(BigInteger)  # app_user.id
    rework_count: Mapped[int] = mapped_column(Integer, server_default="0")
    extensions: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gps_accuracy_m: Mapped[float | None] = mapped_column(REAL)
    description: Mapped[str] = mapped_column(Text, server_default="")
    reported_by: Mapped[int | None] = mapped_column(BigInteger)  # app_user.id
    intake_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    time_limit_hours: Mapped[float | None] = mapped_column(REAL)
    # Set by cases.transition: the handling department (at dispatch), the handling deadline
    # (NULL before dispatch and while the clock is paused), the close time, the original case.
    department_id: Mapped[int | None] = mapped_column(Integer)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duplicate_of: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("incident.id"))
    # Dispatch: the component concerned, who the case waits on now, SLA sweep bookkeeping.
    component_id: Mapped[int | None] = mapped_column(BigInteger)
    assignee_id: Mapped[int | None] = mapped_column(BigInteger)  # app_user.id
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    escalation_level: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    # Personal data: never serialised for planners or the public.
    reporter_name: Mapped[str | None] = mapped_column(String(100))
    reporter_phone: Mapped[str | None] = mapped_column(String(40))
    device_id: Mapped[str | None] = mapped_column(String(100))

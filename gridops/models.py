"""Imports every domain's models so that ``Base.metadata`` is complete (Alembic, tests)."""

from gridops.db import Base
from gridops.grids.models import AdminArea, UnitGrid
from gridops.incidents.models import Category, Incident
from gridops.overlays.models import Enterprise, ServiceOutlet

__all__ = ["AdminArea", "Base", "Category", "Enterprise", "Incident", "ServiceOutlet", "UnitGrid"]

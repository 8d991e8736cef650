"""Hot spot analysis on H3 cells: Getis-Ord Gi* with FDR bins, and emerging hot spots.

Flask-free and database-free: works on any lon/lat points anywhere. See docs/hotspots.md.
"""

from gridops.hotspots.cells import (
    default_k,
    kring_cover,
    neighbourhood,
    points_to_cells,
    study_area_cells,
)
from gridops.hotspots.emerging import (
    CATEGORIES,
    analyse_points,
    classify_emerging,
    emerging_hot_spots,
    mann_kendall,
    time_steps,
)
from gridops.hotspots.gistar import bh_adjust, fdr_bins, gi_star

__all__ = [
    "CATEGORIES",
    "analyse_points",
    "bh_adjust",
    "classify_emerging",
    "default_k",
    "emerging_hot_spots",
    "fdr_bins",
    "gi_star",
    "kring_cover",
    "mann_kendall",
    "neighbourhood",
    "points_to_cells",
    "study_area_cells",
    "time_steps",
]

"""Reading GIS files (GeoPackage, Shapefile, GeoJSON …) into lon/lat, whatever they came in.

Chinese map data often comes in GCJ-02 (the "Mars" offset of web maps, about 600 m off GPS in
Foshan) or BD-09 (Baidu, offset again). Those are not EPSG systems; they are undone with
prcoords' iterative (precise) inverses after any ordinary reprojection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import prcoords
import pyogrio
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from gridops.errors import FieldError, InvalidInput

# The iterative inverses stop at this many degrees; 1e-12 is exact to the nanometre.
prcoords.PRC_EPS = 1e-12

# EPSG:4490 (CGCS2000 geographic) differs from WGS 84 by centimetres: stored as 4326 unchanged.
SAME_AS_WGS84 = {4326, 4490}

OFFSET_SYSTEMS: dict[str, Callable[[prcoords.Coords], prcoords.Coords]] = {
    "gcj02": prcoords.gcj_wgs_bored,
    "bd09": prcoords.bd_wgs_bored,
}


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, [FieldError(field, message)])


def parse_field_map(spec: str | None) -> dict[str, str]:
    """``"code=GB_CODE,name=MC"`` → ``{"code": "GB_CODE", "name": "MC"}`` (ours = theirs)."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        ours, sep, theirs = part.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise _bad("field_map", f"field map entry {part!r} is not of the form ours=theirs")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def undo_offset(geoms: np.ndarray, system: str) -> np.ndarray:
    """Convert GCJ-02 or BD-09 lon/lat geometries to WGS 84 / CGCS2000."""
    try:
        inverse = OFFSET_SYSTEMS[system]
    except KeyError:
        raise _bad("from", f"unknown offset system {system!r}; use gcj02 or bd09") from None

    def convert(coords: np.ndarray) -> np.ndarray:
        out = np.empty_like(coords)
        for i, (lon, lat) in enumerate(coords):
            fixed = inverse(prcoords.Coords(lat, lon))  # prcoords is lat first
            out[i, 0], out[i, 1] = fixed.lon, fixed.lat
        return out

    return shapely.transform(geoms, convert)


def read_lonlat(
    path: Path,
    *,
    layer: str | None = None,
    src_crs: str | None = None,
    offset: str | None = None,
    field_map: Mapping[str, str] | None = None,
) -> gpd.GeoDataFrame:
    """Read one layer into EPSG:4326 with our field names; raises InvalidInput saying why not."""
    if not path.is_file():
        raise _bad("file", f"{path} does not exist or is not a file")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception:
        raise _bad(
            "file",
            f"{path.name} is not a GIS file gridops can read (GeoPackage, Shapefile, GeoJSON)",
        ) from None
    if layer is None and len(layers) > 1:
        raise _bad("layer", f"{path.name} has several layers ({', '.join(layers)}): pick one")
    if layer is not None and layer not in layers:
        raise _bad("layer", f"{path.name} has no layer {layer!r} (it has {', '.join(layers)})")
    # A CSV is a point file when it has lon and lat columns (GDAL's CSV driver reads them).
    csv_points = (
        {"X_POSSIBLE_NAMES": "lon", "Y_POSSIBLE_NAMES": "lat", "KEEP_GEOM_COLUMNS": "NO"}
        if path.suffix.lower() == ".csv"
        else {}
    )
    try:
        # A geometry GDAL reads but GEOS refuses (an empty shell with holes, a one-point line)
        # becomes None: that row is rejected by name, the others are still checked.
        frame = gpd.read_file(
            path, layer=layer, engine="pyogrio", on_invalid="ignore", **csv_points
        )
    except Exception as exc:  # GDAL's, pyproj's and GEOS's errors about the file's content
        raise _bad("file", f"{path.name} could not be read: {exc}") from None

    if src_crs:
        try:
            crs = CRS.from_user_input(src_crs)
        except CRSError:
            raise _bad("src_crs", f"{src_crs!r} is not a coordinate reference system") from None
        frame = frame.set_crs(crs, allow_override=True)
    if frame.crs is None:
        bounds = frame.total_bounds if len(frame) else np.zeros(4)
        if not (-180 <= bounds[0] <= bounds[2] <= 180 and -90 <= bounds[1] <= bounds[3] <= 90):
            raise _bad(
                "src_crs",
                f"{path.name} has no CRS and its coordinates are not lon/lat: "
                "give it with --src-crs (e.g. EPSG:4547)",
            )
        frame = frame.set_crs(4326)
    epsg = frame.crs.to_epsg()
    if epsg in SAME_AS_WGS84:
        frame = frame.set_crs(4326, allow_override=True)
    else:
        frame = frame.to_crs(4326)
    if offset:
        frame = frame.set_geometry(undo_offset(frame.geometry.values, offset), crs=4326)

    if field_map:
        missing = [theirs for theirs in field_map.values() if theirs not in frame.columns]
        if missing:
            raise _bad(
                "field_map",
                f"{path.name} has no column {', '.join(missing)} "
                f"(columns: {', '.join(c for c in frame.columns if c != 'geometry')})",
            )
        frame = frame.rename(columns={theirs: ours for ours, theirs in field_map.items()})
    return frame

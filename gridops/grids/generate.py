"""Cut a community into GB/T 30428 unit grids.

A square lattice of about the target area is laid in EPSG:4547 (metres), its corners are taken
to EPSG:4326 and the squares are intersected with the community there, so that the cells' outer
boundary is the community's own outline (not a re-projected copy of it). Pieces smaller than
``min_fraction`` of the target are merged into the neighbour they share the longest edge with,
and the cells are numbered north→south by lattice row, then west→east.

Everything is vectorised with shapely 2 / numpy; only the merge bookkeeping (a graph over the
few small pieces) and the union of merged groups run in Python loops.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import numpy as np
import shapely
from pyproj import Transformer
from shapely import MultiPolygon
from shapely.geometry.base import BaseGeometry

from gridops.errors import FieldError, InvalidInput

GEOGRAPHIC_EPSG = 4326
METRIC_EPSG = 4547  # CGCS2000 / 3-degree Gauss-Kruger CM 114E: fits Foshan
CENTRAL_MERIDIAN = 114.0
# Beyond ±6° of the central meridian the Gauss-Kruger scale error passes ~0.5 %, so areas in
# EPSG:4547 stop meaning anything; such input is almost always swapped or foreign coordinates.
MAX_MERIDIAN_OFFSET = 6.0

# Precision grid of every overlay, in degrees (1e-11° ≈ 1 µm). Snap-rounding all overlays to
# one grid makes the vertex where a lattice line crosses the community edge come out identical in
# the two cells on either side, so neighbours share vertices exactly and no slivers or overlaps
# appear from floating-point noise. It is finer than the 1e-9° (0.1 mm) one might pick because
# snapping also moves the community's own outline, by about perimeter × pixel / 4: 1e-9° costs
# ~0.15 m² on a 7 km outline and 1e-10° ~0.016 m², beyond the 0.01 m² an exact cover may differ;
# 1e-11° costs ~0.0015 m² and still leaves 113° / 1e-11 ≈ 1e13, far inside a double's 2^53.
GRID_SIZE_DEG = 1e-11

MAX_SEQUENCE = 999  # a 3-digit sequence (GB/T 30428.2-2013)
COMMUNITY_CODE = re.compile(r"[0-9]{12}")  # ASCII digits only (str.isdigit accepts "４")
# Two pieces sharing less edge than this (metres) only touch; merging them would give a cell that
# is connected by a hair, so they do not count as neighbours.
MIN_SHARED_EDGE_M = 1e-3
# A merged cell is one piece of at most one lattice square plus smaller pieces around it, so it
# never reaches many target areas; an estimate this far above the limit cannot end under it,
# and rejecting early avoids building a lattice of millions of squares for a mistaken input.
EARLY_REJECT_FACTOR = 20
# Lattice squares built at once (memory bound for long, thin communities with a large bbox).
BAND_SQUARES = 200_000
# The lattice covers the projected bbox plus this margin (metres): a straight lon/lat edge is
# very slightly curved in EPSG:4547 and may bulge past its projected vertices.
BBOX_MARGIN_M = 1.0


@dataclass(frozen=True)
class GeneratedGrid:
    """One unit grid: 15-digit code, outline in EPSG:4326 and area in EPSG:4547 (m²)."""

    code: str  # 15 digits: 12-digit community code + 3-digit sequence "001".."999"
    geom: MultiPolygon  # EPSG:4326 lon/lat
    area_m2: float  # area in EPSG:4547


@lru_cache(maxsize=1)
def _transformers() -> tuple[Transformer, Transformer]:
    """(to metric, to geographic); built once, pyproj >= 3.1 transformers are thread-safe."""
    return (
        Transformer.from_crs(GEOGRAPHIC_EPSG, METRIC_EPSG, always_xy=True),
        Transformer.from_crs(METRIC_EPSG, GEOGRAPHIC_EPSG, always_xy=True),
    )


def to_metric(geoms: BaseGeometry | np.ndarray) -> BaseGeometry | np.ndarray:
    """EPSG:4326 → EPSG:4547, vertex by vertex (one pyproj call for the whole array)."""
    forward = _transformers()[0]
    return shapely.transform(
        geoms, lambda xy: np.column_stack(forward.transform(xy[:, 0], xy[:, 1]))
    )


def generate_unit_grids(
    community: BaseGeometry,
    community_code: str,
    *,
    target_area_m2: float = 10_000.0,
    min_fraction: float = 0.4,
) -> list[GeneratedGrid]:
    """Cut ``community`` (EPSG:4326) into unit grids that tile it exactly.

    Cells are about ``target_area_m2`` (the lattice square); none is smaller than
    ``min_fraction × target_area_m2`` unless it has no neighbour to merge into (an island part)
    or the whole community is smaller than that, in which case the community is one cell.
    Codes are ``community_code`` + ``001``, ``002`` … north→south by lattice row, west→east
    within a row. The same input always gives the same codes and geometries.

    Raises ``InvalidInput`` for a bad code, target or geometry, and when more than 999 cells
    would be needed.
    """
    geom, target, fraction = _validated(community, community_code, target_area_m2, min_fraction)
    side = math.sqrt(target)
    threshold = fraction * target

    # Snap the outline once, so every overlay below starts from the same (already exact) vertices
    # and squares lying wholly inside can skip the overlay without breaking vertex sharing.
    snapped = shapely.set_precision(geom, GRID_SIZE_DEG)
    if snapped.is_empty or snapped.area == 0:
        _reject("community", "is too small to cut (it vanishes at 1 µm precision)")
    snapped_m = to_metric(snapped)
    total_m2 = snapped_m.area

    estimate = total_m2 / target
    if estimate > EARLY_REJECT_FACTOR * MAX_SEQUENCE:
        _too_many(community_code, f"about {estimate:,.0f}", estimate, target)

    if total_m2 < threshold:
        # Smaller than the sliver threshold: one cell, even if it has several parts.
        cells = np.array([snapped], dtype=object)
    else:
        pieces, pieces_m = _cut(snapped, snapped_m, side)
        cells = _merge(pieces, pieces_m, threshold)
        if len(cells) > MAX_SEQUENCE:
            _too_many(community_code, str(len(cells)), len(cells), target)

    cells_m = to_metric(cells)
    order = _north_to_south(cells_m, side)
    areas = shapely.area(cells_m)
    return [
        GeneratedGrid(
            code=f"{community_code}{seq:03d}",
            geom=_as_multipolygon(cells[i]),
            area_m2=float(areas[i]),
        )
        for seq, i in enumerate(order, start=1)
    ]


# -- validation ----------------------------------------------------------------------------


def _reject(field: str, message: str) -> NoReturn:
    raise InvalidInput(
        detail=f"cannot generate unit grids: invalid {field}",
        errors=[FieldError(field, message)],
    )


def _too_many(code: str, how_many: str, count: float, target: float) -> NoReturn:
    # Aim 10 % under the limit: merging makes the count at the new size only roughly linear.
    suggested = math.ceil(target * count / MAX_SEQUENCE * 1.1 / 100) * 100
    message = (
        f"needs {how_many} unit grids at {target:,.0f} m² each, but a 3-digit sequence allows "
        f"at most {MAX_SEQUENCE}; use a larger --target-area (e.g. {suggested})"
    )
    raise InvalidInput(
        detail=f"community {code} needs more than {MAX_SEQUENCE} unit grids",
        errors=[FieldError("target_area_m2", message)],
    )


def _validated(
    community: object, code: object, target: object, fraction: object
) -> tuple[BaseGeometry, float, float]:
    """The geometry (2-D), target and fraction, or InvalidInput naming every bad field."""
    errors: list[FieldError] = []
    if not isinstance(code, str) or not COMMUNITY_CODE.fullmatch(code):
        errors.append(
            FieldError(
                "community_code",
                f"{code!r} is not a 12-digit community code (6 county + 3 street + 3 community)",
            )
        )
    target_f = _number(target)
    if target_f is None or not target_f > 0:
        errors.append(
            FieldError("target_area_m2", f"{target!r} is not a positive area in square metres")
        )
    fraction_f = _number(fraction)
    if fraction_f is None or not 0 <= fraction_f <= 1:
        errors.append(FieldError("min_fraction", f"{fraction!r} is not a number in [0, 1]"))
    geom_error = _geometry_error(community)
    if geom_error:
        errors.append(FieldError("community", geom_error))
    if errors:
        detail = (
            f"cannot generate unit grids: invalid {errors[0].field}"
            if len(errors) == 1
            else f"cannot generate unit grids: {len(errors)} invalid inputs"
        )
        raise InvalidInput(detail=detail, errors=errors)
    assert isinstance(community, BaseGeometry)  # for the type checker; checked above
    return shapely.force_2d(community), float(target_f or 0), float(fraction_f or 0)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a double's range
        return None
    return number if math.isfinite(number) else None


def _geometry_error(geom: object) -> str | None:
    if not isinstance(geom, BaseGeometry):
        return f"is a {type(geom).__name__}, not a Polygon or MultiPolygon"
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        return f"is a {geom.geom_type}; a community must be a Polygon or MultiPolygon"
    if geom.is_empty:
        return "is empty"
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        return "has non-finite coordinates"
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        return (
            f"has coordinates outside lon/lat ranges (bounds {minx:g}, {miny:g}, {maxx:g}, "
            f"{maxy:g}); it must be EPSG:4326 lon/lat, not projected or lat/lon"
        )
    if max(abs(minx - CENTRAL_MERIDIAN), abs(maxx - CENTRAL_MERIDIAN)) > MAX_MERIDIAN_OFFSET:
        return (
            f"lies at longitude {minx:g}..{maxx:g}, too far from 114°E for EPSG:4547 areas "
            "(check the coordinate order: it must be lon/lat)"
        )
    if not geom.is_valid:
        return f"is not a valid geometry: {shapely.is_valid_reason(geom)}"
    if geom.area == 0:
        return "has no area"
    return None


# -- cutting -------------------------------------------------------------------------------


def _cut(
    community: BaseGeometry, community_m: BaseGeometry, side: float
) -> tuple[np.ndarray, np.ndarray]:
    """Polygon pieces of community ∩ lattice squares, in lattice order (row-major from the
    north-west), with their EPSG:4547 copies."""
    minx, miny, maxx, maxy = community_m.bounds
    # Columns/rows are whole multiples of the side in EPSG:4547: the same input always gets the
    # same lattice, and neighbouring communities' lattices line up.
    col0 = math.floor((minx - BBOX_MARGIN_M) / side)
    col1 = math.ceil((maxx + BBOX_MARGIN_M) / side)
    row_top = math.ceil((maxy + BBOX_MARGIN_M) / side)
    row_bottom = math.floor((miny - BBOX_MARGIN_M) / side)
    ncols, nrows = col1 - col0, row_top - row_bottom
    xs = (col0 + np.arange(ncols + 1)) * side

    shapely.prepare(community)
    pieces: list[np.ndarray] = []
    band = max(1, BAND_SQUARES // ncols)
    for first in range(0, nrows, band):
        rows = min(band, nrows - first)
        ys = (row_top - first - np.arange(rows + 1)) * side  # north → south
        squares = _lattice_squares(xs, ys)
        inside = shapely.contains_properly(community, squares)
        edge = ~inside & shapely.intersects(community, squares)
        parts = np.empty(squares.size, dtype=object)
        parts[inside] = squares[inside]
        parts[edge] = shapely.intersection(squares[edge], community, grid_size=GRID_SIZE_DEG)
        # Keep lattice order; explode each result (a square cut by a hole or a concave edge
        # gives several pieces) and drop the lines/points of squares that only touch.
        hit = parts[inside | edge]
        exploded = shapely.get_parts(hit)
        keep = (shapely.get_type_id(exploded) == 3) & (shapely.area(exploded) > 0)
        pieces.append(exploded[keep])
    all_pieces = np.concatenate(pieces) if pieces else np.empty(0, dtype=object)
    return all_pieces, to_metric(all_pieces)


def _lattice_squares(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Squares of the lattice with corner lines ``xs`` (west→east) and ``ys`` (north→south),
    row-major, corners taken to EPSG:4326 and snapped to the precision grid."""
    inverse = _transformers()[1]
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = inverse.transform(gx.ravel(), gy.ravel())
    # Snap the corners with GEOS itself, so they equal what an overlay on GRID_SIZE_DEG yields:
    # a square that skips the overlay then still shares its corners with its cut neighbours.
    corners = shapely.get_coordinates(
        shapely.set_precision(shapely.points(np.column_stack([lon, lat])), GRID_SIZE_DEG)
    ).reshape(len(ys), len(xs), 2)
    nw, ne = corners[:-1, :-1], corners[:-1, 1:]
    sw, se = corners[1:, :-1], corners[1:, 1:]
    rings = np.stack([nw, sw, se, ne, nw], axis=2).reshape(-1, 5, 2)
    return shapely.polygons(rings)


# -- merging slivers -----------------------------------------------------------------------


def _merge(pieces: np.ndarray, pieces_m: np.ndarray, threshold: float) -> np.ndarray:
    """Merge every piece under ``threshold`` m² into the neighbour it shares the longest edge
    with, smallest first, until none is left that has a neighbour. Returns the cells (4326)."""
    n = len(pieces)
    area = shapely.area(pieces_m).tolist()
    members: list[list[int]] = [[i] for i in range(n)]
    small = [i for i in range(n) if area[i] < threshold]
    neighbours = _shared_edges(pieces, small)

    # A group below the threshold consists of small pieces only (areas add up), so the edges of
    # pairs with at least one small piece are all the merging ever needs.
    heap = [(area[i], i) for i in small]
    heapq.heapify(heap)
    alive = [True] * n
    while heap:
        group_area, g = heapq.heappop(heap)
        if not alive[g] or group_area != area[g] or not neighbours[g]:
            continue  # stale entry, or no neighbour (an island): stays its own cell
        # Longest shared edge; ties go to the lower (more north-westerly) piece.
        into = max(neighbours[g].items(), key=lambda kv: (kv[1], -kv[0]))[0]
        members[into].extend(members[g])
        area[into] += group_area
        edges, neighbours[g] = neighbours[g], {}
        for other, length in edges.items():
            del neighbours[other][g]
            if other != into:
                neighbours[into][other] = neighbours[into].get(other, 0.0) + length
                neighbours[other][into] = neighbours[other].get(into, 0.0) + length
        alive[g] = False
        if area[into] < threshold:
            heapq.heappush(heap, (area[into], into))

    cells = []
    for g in range(n):
        if not alive[g]:
            continue
        group = members[g]
        if len(group) == 1:
            cells.append(pieces[group[0]])
        else:
            # The pieces share exact vertices, so this union on the same grid is clean.
            cells.append(shapely.union_all(pieces[sorted(group)], grid_size=GRID_SIZE_DEG))
    out = np.empty(len(cells), dtype=object)
    out[:] = cells
    return out


def _shared_edges(pieces: np.ndarray, small: list[int]) -> list[dict[int, float]]:
    """For each piece, {neighbour: metres of shared edge}, for pairs with a small piece."""
    neighbours: list[dict[int, float]] = [{} for _ in range(len(pieces))]
    if not small:
        return neighbours
    small_idx = np.asarray(small)
    tree = shapely.STRtree(pieces)
    query, found = tree.query(pieces[small_idx], predicate="intersects")
    a, b = small_idx[query], found
    a, b = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.column_stack([a, b])[a != b], axis=0)
    if not len(pairs):
        return neighbours
    boundaries = shapely.boundary(pieces)
    # Overlay on the precision grid so a vertex present on one side only (a T-junction) still
    # yields the whole common edge; measure it in metres, degrees of lon and lat differ.
    shared = shapely.intersection(
        boundaries[pairs[:, 0]], boundaries[pairs[:, 1]], grid_size=GRID_SIZE_DEG
    )
    lengths = shapely.length(to_metric(shared))
    for (i, j), length in zip(pairs.tolist(), lengths.tolist(), strict=True):
        if length > MIN_SHARED_EDGE_M:
            neighbours[i][j] = length
            neighbours[j][i] = length
    return neighbours


# -- numbering -----------------------------------------------------------------------------


def representative_points(cells_m: np.ndarray) -> np.ndarray:
    """Centroid (EPSG:4547) of each cell's largest part: stable, and inside the main body of a
    cell even when it has an island part."""
    parts, owner = shapely.get_parts(cells_m, return_index=True)
    areas = shapely.area(parts)
    # Per owner, the last of (owner, area) ascending is its largest part.
    order = np.lexsort((areas, owner))
    last = np.r_[owner[order][1:] != owner[order][:-1], True]
    largest = parts[order[last]]
    return shapely.get_coordinates(shapely.centroid(largest))


def lattice_row(y: np.ndarray, side: float) -> np.ndarray:
    """Lattice row of northing ``y``, counted southwards from northing 0: rows of the lattice
    are whole multiples of the side, so this orders exactly as counting from its top would."""
    return np.floor(-np.asarray(y) / side).astype(np.int64)


def _north_to_south(cells_m: np.ndarray, side: float) -> np.ndarray:
    """Indices of the cells north→south by lattice row, then west→east (then north→south)."""
    xy = representative_points(cells_m)
    rows = lattice_row(xy[:, 1], side)
    return np.lexsort((np.arange(len(xy)), -xy[:, 1], xy[:, 0], rows))


def _as_multipolygon(geom: BaseGeometry) -> MultiPolygon:
    if isinstance(geom, MultiPolygon):
        return geom
    polygons = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and g.area > 0]
    return MultiPolygon(polygons)

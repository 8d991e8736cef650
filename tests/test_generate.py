"""Unit-grid generation (gridops.grids.generate): exact cover, balance, numbering, errors.

Pure geometry, no database. Shapes are drawn in metres (EPSG:4547) around Foshan and taken to
EPSG:4326 with a transformer of the test's own, so the checks do not lean on the module's one.

How "exact cover" is measured matters at the 0.01 m² level:
- the overlay runs in EPSG:4326, where the geometry lives (as gridops.grids.topology does), on a
  1e-12° grid: a plain float overlay near lon 113 may fall back to snapping at ~1e-10° and
  swallow slivers of the size being checked;
- the difference is densified to ~10 m before it is projected: an edge straight in lon/lat is a
  curve in EPSG:4547 (an east-west one bows by L²·tanφ/8R), so a sliver whose one side has the
  lattice-crossing vertices and whose other side is one long edge would otherwise measure the
  area between arc and chord (~0.4 m² for a 430 m edge, ~90 m² for 2 km) instead of its own.
"""

from __future__ import annotations

import math
import re
import time
from functools import cache
from itertools import pairwise

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely import MultiPolygon, Polygon

from gridops.errors import GridopsError, InvalidInput
from gridops.grids.generate import GeneratedGrid, generate_unit_grids

CODE = "440605001001"
TARGET = 10_000.0
SIDE = math.sqrt(TARGET)
MIN_FRACTION = 0.4
TOLERANCE_M2 = 0.01

TO_METRIC = Transformer.from_crs(4326, 4547, always_xy=True)
TO_LONLAT = Transformer.from_crs(4547, 4326, always_xy=True)
X0, Y0 = TO_METRIC.transform(113.1, 23.0)
# Off the 100 m lattice on purpose, so shapes cut squares at arbitrary places.
X0, Y0 = X0 + 13.7, Y0 + 21.9


def metric(geom):
    return shapely.transform(
        geom, lambda xy: np.column_stack(TO_METRIC.transform(xy[:, 0], xy[:, 1]))
    )


def lonlat(geom):
    return shapely.transform(
        geom, lambda xy: np.column_stack(TO_LONLAT.transform(xy[:, 0], xy[:, 1]))
    )


def metric_area(geom) -> float:
    """EPSG:4547 area of a lon/lat geometry, its edges followed as lon/lat lines (see above)."""
    return metric(shapely.segmentize(geom, 1e-4)).area


def area_between(a, b) -> float:
    """m² of the symmetric difference of two lon/lat geometries."""
    return metric_area(shapely.symmetric_difference(a, b, grid_size=1e-12))


def box(x, y, w, h):
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def at(coords):
    """Lon/lat of metric offsets from the anchor near Foshan."""
    xy = np.asarray(coords, dtype=float)
    lon, lat = TO_LONLAT.transform(X0 + xy[:, 0], Y0 + xy[:, 1])
    return list(zip(lon, lat, strict=True))


def rotated(coords, degrees):
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return [(x * c - y * s, x * s + y * c) for x, y in coords]


def star(points, outer, inner):
    t = np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return list(zip(r * np.cos(t), r * np.sin(t), strict=True))


def wobbly(radius=600.0, vertices=400, seed=1):
    """An irregular ~1.1 km² community with a few hundred vertices."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = radius + 80 * np.sin(5 * t) + rng.uniform(-20, 20, t.size)
    return list(zip(r * np.cos(t), r * np.sin(t), strict=True))


SHAPES = {
    "rectangle": Polygon(at(box(0, 0, 430, 370))),
    "l_shape": Polygon(
        at(rotated([(0, 0), (500, 0), (500, 180), (190, 180), (190, 450), (0, 450)], 17))
    ),
    "star": Polygon(at(star(9, 420, 170))),
    "holes": Polygon(
        at(box(0, 0, 620, 480)),
        holes=[
            at(box(200, 150, 150, 110)),  # a pond
            at(box(30, 40, 12, 9)),  # a small courtyard
            at([(40, 300), (450, 330), (450, 336), (40, 306)]),  # a canal splitting squares
        ],
    ),
    "multipart_island": MultiPolygon(
        [Polygon(at(box(0, 0, 420, 310))), Polygon(at(box(560, 90, 40, 50)))]
    ),
    "wobbly": Polygon(at(wobbly())),
    "tiny": Polygon(at(box(0, 0, 50, 60))),
    "long_edges": Polygon(at(box(0, 0, 2_000, 400))),
}
ISLAND = Polygon(at(box(560, 90, 40, 50)))


@cache
def cut(name: str) -> tuple[GeneratedGrid, ...]:
    return tuple(generate_unit_grids(SHAPES[name], CODE))


def geoms_of(cells) -> np.ndarray:
    out = np.empty(len(cells), dtype=object)
    out[:] = [c.geom for c in cells]
    return out


def shared_edge_m(a, b) -> float:
    return metric(shapely.intersection(a.boundary, b.boundary)).length


# -- exact cover ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_cells_cover_the_community_exactly(name):
    union = shapely.union_all(geoms_of(cut(name)))
    assert area_between(union, SHAPES[name]) < TOLERANCE_M2


@pytest.mark.parametrize("name", SHAPES)
def test_cells_do_not_overlap(name):
    cells = metric(geoms_of(cut(name)))
    left, right = shapely.STRtree(cells).query(cells, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(cells[left[pairs]], cells[right[pairs]]))
    assert overlap.sum() < TOLERANCE_M2


@pytest.mark.parametrize("name", SHAPES)
def test_neighbours_share_identical_vertices(name):
    # A valid coverage: no overlaps and every shared edge has the same vertices on both sides.
    assert shapely.coverage_is_valid(geoms_of(cut(name)))


@pytest.mark.parametrize("name", SHAPES)
def test_nothing_lies_outside_the_community(name):
    fence = SHAPES[name].buffer(1e-9)  # ≈ 0.1 mm
    assert shapely.covered_by(geoms_of(cut(name)), fence).all()


@pytest.mark.parametrize("name", SHAPES)
def test_outline_keeps_the_community_vertices(name):
    cell_vertices = shapely.points(shapely.get_coordinates(geoms_of(cut(name))))
    own = shapely.points(shapely.get_coordinates(SHAPES[name]))
    _, distance = shapely.STRtree(cell_vertices).query_nearest(own, return_distance=True)
    assert distance.max() < 1e-10  # only the 1e-11° precision grid moves them


# -- the cells themselves ------------------------------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_cells_are_valid_connected_multipolygons(name):
    for cell in cut(name):
        assert isinstance(cell.geom, MultiPolygon)
        assert cell.geom.is_valid and not cell.geom.is_empty
        assert len(cell.geom.geoms) == 1  # merged along edges, so connected
        assert cell.area_m2 > 0


@pytest.mark.parametrize("name", SHAPES)
def test_area_is_measured_in_epsg_4547(name):
    for cell in cut(name):
        assert cell.area_m2 == pytest.approx(metric(cell.geom).area, rel=1e-9)


@pytest.mark.parametrize("name", SHAPES)
def test_no_small_cell_unless_it_has_no_neighbour(name):
    cells = cut(name)
    for cell in cells:
        if cell.area_m2 >= MIN_FRACTION * TARGET:
            continue
        others = [o for o in cells if o is not cell]
        assert all(shared_edge_m(cell.geom, o.geom) < 1e-3 for o in others), cell.code


@pytest.mark.parametrize("target", [5_000.0, 10_000.0, 20_000.0])
def test_rectangle_cells_are_about_the_target_area(target):
    cells = generate_unit_grids(SHAPES["rectangle"], CODE, target_area_m2=target)
    areas = np.array([c.area_m2 for c in cells])
    assert abs(areas.mean() / target - 1) <= 0.35
    assert areas.min() >= MIN_FRACTION * target
    assert areas.sum() == pytest.approx(metric_area(SHAPES["rectangle"]), rel=1e-6)


def test_a_hole_and_a_canal_split_squares_into_separate_cells():
    cells = cut("holes")
    assert sum(c.area_m2 for c in cells) == pytest.approx(metric_area(SHAPES["holes"]), rel=1e-6)
    # No cell reaches across the canal: none intersects both of its banks' far sides.
    north = shapely.Point(at([(200, 345)])[0])
    south = shapely.Point(at([(200, 290)])[0])
    canal_cells = [c for c in cells if metric(c.geom).intersects(metric(north).buffer(8))]
    assert canal_cells
    assert not any(metric(c.geom).intersects(metric(south)) for c in canal_cells)


def test_island_below_the_threshold_stays_its_own_cell():
    cells = cut("multipart_island")
    island = [c for c in cells if c.geom.intersects(ISLAND.representative_point())]
    assert len(island) == 1
    assert island[0].area_m2 == pytest.approx(40 * 50, rel=1e-3)
    assert island[0].area_m2 < MIN_FRACTION * TARGET
    assert area_between(island[0].geom, ISLAND) < TOLERANCE_M2


def test_tiny_community_is_one_cell():
    (cell,) = cut("tiny")
    assert cell.code == CODE + "001"
    assert cell.area_m2 == pytest.approx(50 * 60, rel=1e-3)


def test_tiny_multipart_community_is_one_cell():
    tiny = MultiPolygon([Polygon(at(box(0, 0, 30, 40))), Polygon(at(box(80, 0, 20, 20)))])
    (cell,) = generate_unit_grids(tiny, CODE)
    assert len(cell.geom.geoms) == 2
    assert cell.area_m2 == pytest.approx(30 * 40 + 20 * 20, rel=1e-3)


def test_pieces_around_a_lattice_corner_merge_into_one_cell():
    # 70 × 70 m around a lattice corner: four pieces, each under 40 %, together over it.
    corner_x = math.floor(X0 / SIDE) * SIDE
    corner_y = math.floor(Y0 / SIDE) * SIDE
    square = Polygon(box(corner_x - 30, corner_y - 40, 70, 70))
    (cell,) = generate_unit_grids(lonlat(square), CODE)
    assert len(cell.geom.geoms) == 1
    assert cell.area_m2 == pytest.approx(4_900, rel=1e-3)


def test_without_merging_every_cell_is_part_of_one_lattice_square():
    merged = generate_unit_grids(SHAPES["star"], CODE)
    unmerged = generate_unit_grids(SHAPES["star"], CODE, min_fraction=0.0)
    assert len(unmerged) > len(merged)
    assert max(c.area_m2 for c in unmerged) <= TARGET * 1.0001


def test_z_coordinates_are_dropped():
    flat = SHAPES["rectangle"]
    with_z = shapely.force_3d(flat, 12.5)
    cells = generate_unit_grids(with_z, CODE)
    assert not any(shapely.has_z(c.geom) for c in cells)
    assert [c.geom.wkb for c in cells] == [c.geom.wkb for c in cut("rectangle")]


def test_neighbouring_communities_share_one_lattice():
    # Two communities with a common edge: the lattice is aligned to multiples of the side in
    # EPSG:4547, so cutting each on its own still gives cells that do not overlap.
    west = Polygon(at(box(0, 0, 300, 250)))
    east = Polygon(at(box(300, 0, 260, 250)))
    cells = metric(
        geoms_of(generate_unit_grids(west, CODE) + generate_unit_grids(east, "440605001002"))
    )
    left, right = shapely.STRtree(cells).query(cells, predicate="intersects")
    pairs = left < right
    assert shapely.area(shapely.intersection(cells[left[pairs]], cells[right[pairs]])).sum() < (
        TOLERANCE_M2
    )


# -- codes and numbering -------------------------------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_codes_are_15_digits_contiguous_from_001(name):
    codes = [c.code for c in cut(name)]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[0-9]{15}", code) and code.startswith(CODE) for code in codes)
    assert [int(code[12:]) for code in codes] == list(range(1, len(codes) + 1))


def representative(cell) -> tuple[int, float]:
    """(lattice row counted southwards, easting) of the centroid of the cell's largest part."""
    largest = max(metric(cell.geom).geoms, key=lambda p: p.area)
    point = largest.centroid
    return math.floor(-point.y / SIDE), point.x


@pytest.mark.parametrize("name", SHAPES)
def test_codes_run_north_to_south_then_west_to_east(name):
    keys = [representative(c) for c in cut(name)]
    for (row, x), (next_row, next_x) in pairwise(keys):
        assert next_row >= row
        if next_row == row:
            assert next_x > x


def test_rectangle_numbering_starts_north_west_and_ends_south_east():
    cells = cut("rectangle")
    north_west = shapely.Point(at([(1, 369)])[0])
    south_east = shapely.Point(at([(429, 1)])[0])
    assert cells[0].geom.contains(north_west)
    assert cells[-1].geom.contains(south_east)
    rows = [representative(c)[0] for c in cells]
    # 370 m tall at a 100 m side: four or five lattice rows, each numbered before the next.
    assert 4 <= len(set(rows)) <= 5
    assert rows == sorted(rows)


@pytest.mark.parametrize("name", SHAPES)
def test_rerun_gives_the_same_codes_and_geometries(name):
    again = generate_unit_grids(SHAPES[name], CODE)
    first = cut(name)
    assert [c.code for c in again] == [c.code for c in first]
    assert all(a.geom.wkb == b.geom.wkb for a, b in zip(again, first, strict=True))
    assert [c.area_m2 for c in again] == [c.area_m2 for c in first]


# -- errors ---------------------------------------------------------------------------------


def fields(exc: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [e.field for e in exc.value.errors]


@pytest.mark.parametrize(
    "code",
    ["44060500100", "4406050010011", "44060500100a", "４４０６０５００１００１", 440605001001],
)
def test_bad_community_code_is_rejected(code):
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(SHAPES["rectangle"], code)
    assert fields(exc) == ["community_code"]
    assert "12-digit" in exc.value.errors[0].message
    assert isinstance(exc.value, GridopsError) and exc.value.status == 422


def test_more_than_999_cells_is_rejected_with_the_count_and_a_larger_target():
    big = Polygon(at(box(0, 0, 4_000, 3_000)))
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(big, CODE)
    assert fields(exc) == ["target_area_m2"]
    message = exc.value.errors[0].message
    needed = int(re.search(r"needs (\d+) unit grids", message).group(1))
    assert needed > 999
    assert needed == pytest.approx(12_000_000 / TARGET, rel=0.1)
    suggested = float(re.search(r"--target-area \(e\.g\. (\d+)\)", message).group(1))
    assert 0 < len(generate_unit_grids(big, CODE, target_area_m2=suggested)) <= 999


def test_a_far_too_large_community_is_rejected_before_cutting():
    huge = Polygon(at(box(0, 0, 60_000, 50_000)))
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(huge, CODE)
    assert time.perf_counter() - started < 1.0
    assert fields(exc) == ["target_area_m2"]
    assert "about 300,000" in exc.value.errors[0].message
    assert "--target-area" in exc.value.errors[0].message


@pytest.mark.parametrize(
    ("geom", "words"),
    [
        (Polygon(at([(0, 0), (200, 200), (200, 0), (0, 200)])), "Self-intersection"),
        (Polygon(), "empty"),
        (shapely.LineString(at([(0, 0), (100, 100)])), "LineString"),
        (shapely.Point(113.1, 23.0), "Point"),
        (None, "NoneType"),
        (Polygon([(23.0, 113.1), (23.01, 113.1), (23.01, 113.11)]), "lon/lat"),
        (Polygon(box(X0, Y0, 100, 100)), "lon/lat"),
        (Polygon([(90.0, 23.0), (90.01, 23.0), (90.01, 23.01)]), "114°E"),
    ],
    ids=["bowtie", "empty", "line", "point", "none", "lat_lon", "projected", "far_meridian"],
)
def test_bad_geometry_is_rejected(geom, words):
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(geom, CODE)
    assert fields(exc) == ["community"]
    assert words in exc.value.errors[0].message


@pytest.mark.parametrize("target", [0, -10_000, math.nan, math.inf, "10000", True])
def test_non_positive_or_non_numeric_target_is_rejected(target):
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(SHAPES["rectangle"], CODE, target_area_m2=target)
    assert fields(exc) == ["target_area_m2"]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan])
def test_min_fraction_outside_0_1_is_rejected(fraction):
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(SHAPES["rectangle"], CODE, min_fraction=fraction)
    assert fields(exc) == ["min_fraction"]


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidInput) as exc:
        generate_unit_grids(Polygon(), "123", target_area_m2=-1)
    assert set(fields(exc)) == {"community", "community_code", "target_area_m2"}
    assert "3 invalid inputs" in exc.value.detail


# -- speed ----------------------------------------------------------------------------------


def test_a_square_kilometre_community_takes_milliseconds():
    community = SHAPES["wobbly"]
    generate_unit_grids(community, CODE)  # warm the transformer cache
    started = time.perf_counter()
    cells = generate_unit_grids(community, CODE)
    elapsed = time.perf_counter() - started
    assert 90 <= len(cells) <= 150
    assert elapsed < 0.5  # ~20 ms on a laptop; generous for a loaded CI runner

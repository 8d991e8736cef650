"""The hot spot engine against its peers: h3 grid_disk, PySAL esda, pymannkendall, scipy.

No database: gridops.hotspots is pure computation.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import esda
import h3
import libpysal
import numpy as np
import pandas as pd
import pymannkendall
import pytest
import scipy.sparse as sp
from h3.api import basic_int as h3i
from scipy import stats
from shapely.geometry import Polygon

from gridops.hotspots import (
    CATEGORIES,
    analyse_points,
    bh_adjust,
    classify_emerging,
    default_k,
    emerging_hot_spots,
    fdr_bins,
    gi_star,
    kring_cover,
    mann_kendall,
    neighbourhood,
    points_to_cells,
    study_area_cells,
    time_steps,
)
from gridops.hotspots import cells as cells_mod

LISBON = (-9.1393, 38.7223)  # lon, lat
DOCS = Path(__file__).resolve().parent.parent / "docs" / "hotspots.md"


# --------------------------------------------------------------------------- helpers


def disk_sets(cells: np.ndarray, k: int) -> list[set[int]]:
    """The naive neighbourhood: grid_disk per cell, cut at the study area."""
    members = set(cells.tolist())
    return [{c for c in h3i.grid_disk(x, k) if c in members} for x in cells.tolist()]


def rows_of(w: sp.csr_matrix, cells: np.ndarray) -> list[set[int]]:
    return [
        set(cells[w.indices[w.indptr[i] : w.indptr[i + 1]]].tolist()) for i in range(len(cells))
    ]


def esda_gi(y: np.ndarray, cells: np.ndarray, k: int, *, with_self: bool) -> esda.G_Local:
    """esda Gi* on a libpysal W built from h3.grid_disk (independent of our neighbourhood)."""
    index = {c: i for i, c in enumerate(cells.tolist())}
    neighbours = {}
    for i, c in enumerate(cells.tolist()):
        ring = [index[x] for x in h3i.grid_disk(c, k) if x in index]
        neighbours[i] = ring if with_self else [j for j in ring if j != i]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = libpysal.weights.W(neighbours, silence_warnings=True)
        return esda.G_Local(y.astype(float), w, star=True, transform="B", permutations=0)


def random_patch(
    rng: np.random.Generator, res: int, lat: float, lon: float, radius: int, share: float
) -> np.ndarray:
    centre = h3i.latlng_to_cell(lat, lon, res)
    disk = np.array(h3i.grid_disk(centre, radius), dtype=np.int64)
    size = max(2, int(disk.size * share))
    return rng.choice(disk, size=size, replace=False)


# --------------------------------------------------------------------------- points to cells


def test_points_to_cells_equals_h3_per_point_and_is_lon_first():
    rng = np.random.default_rng(1)
    lon = rng.uniform(-180, 180, 2000)
    lat = rng.uniform(-90, 90, 2000)
    for res in (0, 7, 9, 15):
        cells = points_to_cells(lon, lat, res)
        assert cells.dtype == np.int64
        expected = [h3i.latlng_to_cell(la, lo, res) for lo, la in zip(lon, lat, strict=True)]
        assert cells.tolist() == expected
    # lon first: the Lisbon point lands in Lisbon, not in the Indian Ocean
    cell = points_to_cells([LISBON[0]], [LISBON[1]], 9)[0]
    lat_c, lon_c = h3i.cell_to_latlng(int(cell))
    assert abs(lat_c - LISBON[1]) < 0.01 and abs(lon_c - LISBON[0]) < 0.01


def test_parents_by_bits_equal_h3():
    rng = np.random.default_rng(2)
    cells = points_to_cells(rng.uniform(-180, 180, 500), rng.uniform(-90, 90, 500), 11)
    for p in (0, 3, 7, 10, 11):
        got = cells_mod.parents(cells, p)
        assert got.tolist() == [h3i.cell_to_parent(int(c), p) for c in cells]


def test_cell_validation():
    good = points_to_cells([LISBON[0]], [LISBON[1]], 9)
    assert cells_mod.as_cells([h3.int_to_str(int(good[0]))]).tolist() == good.tolist()
    with pytest.raises(ValueError, match="not H3 cells"):
        cells_mod.as_cells([12345])
    with pytest.raises(ValueError, match="mixes H3 resolutions"):
        cells_mod.as_cells([int(good[0]), h3i.cell_to_parent(int(good[0]), 8)])
    with pytest.raises(ValueError, match="unique"):
        neighbourhood([int(good[0]), int(good[0])], 1)


# --------------------------------------------------------------------------- neighbourhoods


@pytest.mark.parametrize("seed", range(6))
def test_neighbourhood_equals_grid_disk_on_random_sets(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        res = int(rng.integers(5, 11))
        k = int(rng.integers(1, 5))
        cells = random_patch(
            rng,
            res,
            rng.uniform(-80, 80),
            rng.uniform(-180, 180),
            int(rng.integers(3, 25)),
            rng.uniform(0.1, 1),
        )
        w = neighbourhood(cells, k)
        assert w.shape == (cells.size, cells.size)
        assert rows_of(w, cells) == disk_sets(cells, k)
        assert (w.diagonal() == 1).all() and (w != w.T).nnz == 0
        assert set(np.unique(w.data).tolist()) == {1.0}


@pytest.mark.parametrize("res", [5, 7, 8, 9, 10])
def test_neighbourhood_around_every_pentagon(res):
    rng = np.random.default_rng(res)
    for pentagon in h3i.get_pentagons(res):
        lat, lon = h3i.cell_to_latlng(pentagon)
        # a patch on the pentagon, and one a little way off (inside its distortion)
        for lat0, lon0 in (
            (lat, lon),
            (lat + 0.3 * rng.standard_normal(), lon + 0.3 * rng.standard_normal()),
        ):
            k = int(rng.integers(1, 4))
            cells = random_patch(rng, res, float(np.clip(lat0, -89, 89)), float(lon0), 12, 0.6)
            assert rows_of(neighbourhood(cells, k), cells) == disk_sets(cells, k)
            cover = kring_cover(cells, k)
            assert set(cover.tolist()) == set().union(
                *(h3i.grid_disk(c, k) for c in cells.tolist())
            )


def test_neighbourhood_per_parent_charts(monkeypatch):
    """The per-parent chart path (taken for study areas that reach near a pentagon or are
    very large) forced on ordinary sets, including one spanning two base cells."""
    monkeypatch.setattr(cells_mod, "_disc_is_pentagon_free", lambda *args: False)
    rng = np.random.default_rng(11)
    # Lisbon, a base cell border in the Atlantic and a spot near the antimeridian
    for lat, lon in ((LISBON[1], LISBON[0]), (45.0, -30.0), (-17.0, 179.9)):
        for res, k in ((7, 3), (9, 2), (10, 5)):
            cells = random_patch(rng, res, lat, lon, 40, 0.5)
            charts = cells_mod._charts(np.sort(cells), k)
            assert any(c.origin is not None for c in charts)
            assert rows_of(neighbourhood(cells, k), cells) == disk_sets(cells, k)
    # two base cells far apart in one set
    a = random_patch(rng, 8, 38.7, -9.1, 10, 0.8)
    b = random_patch(rng, 8, 23.0, 113.1, 10, 0.8)
    both = np.concatenate([a, b])
    assert rows_of(neighbourhood(both, 2), both) == disk_sets(both, 2)


def test_neighbourhood_keeps_the_callers_order_and_coarse_resolutions():
    rng = np.random.default_rng(5)
    cells = random_patch(rng, 9, LISBON[1], LISBON[0], 10, 0.7)
    shuffled = rng.permutation(cells)
    assert rows_of(neighbourhood(shuffled, 2), shuffled) == disk_sets(shuffled, 2)
    # coarse resolutions fall back to grid_disk and must still be right
    for res, k in ((1, 3), (2, 2), (3, 10), (4, 1)):
        patch = random_patch(rng, res, 10.0, 20.0, 4, 1.0)
        assert rows_of(neighbourhood(patch, k), patch) == disk_sets(patch, k)


def test_kring_cover_equals_union_of_grid_disks():
    rng = np.random.default_rng(3)
    for res, k in ((7, 1), (9, 2), (10, 4)):
        cells = random_patch(rng, res, 23.02, 113.12, 15, 0.2)
        expected = set().union(*(h3i.grid_disk(c, k) for c in cells.tolist()))
        cover = kring_cover(cells, k)
        assert cover.dtype == np.int64 and (np.diff(cover) > 0).all()
        assert set(cover.tolist()) == expected


# --------------------------------------------------------------------------- default k


def test_default_k_is_the_documented_rule():
    assert cells_mod.DEFAULT_K_TARGET == 8 and cells_mod.DEFAULT_K_MAX == 10
    centre = h3i.latlng_to_cell(LISBON[1], LISBON[0], 9)
    dense = np.array(h3i.grid_disk(centre, 10), dtype=np.int64)
    # every cell non-empty: a 1-ring holds 6 others (< 8), a 2-ring 18
    assert default_k(dense) == 2
    # every third cell along a line of IJ coordinates: sparse, needs wider rings
    i0, j0 = h3i.cell_to_local_ij(centre, centre)
    sparse = np.array(
        [
            h3i.local_ij_to_cell(centre, i0 + di, j0 + dj)
            for di in range(-30, 31, 3)
            for dj in range(-30, 31, 3)
        ],
        dtype=np.int64,
    )
    k = default_k(sparse)

    def mean_others(kk: int) -> float:
        return float(np.mean([len(s) - 1 for s in disk_sets(sparse, kk)]))

    assert mean_others(k) >= 8 > mean_others(k - 1)
    assert default_k([int(centre)]) == 10  # one cell: no ring reaches 8 others
    frame = analyse_points([LISBON[0]] * 3, [LISBON[1]] * 3, resolution=9)
    assert frame.attrs["k"] == 10 and frame.attrs["k_source"] == "default"


# --------------------------------------------------------------------------- Gi*


def gi_fixtures():
    rng = np.random.default_rng(42)
    centre = h3i.latlng_to_cell(LISBON[1], LISBON[0], 9)
    disk = np.array(h3i.grid_disk(centre, 9), dtype=np.int64)
    poisson = rng.poisson(1.5, disk.size)
    mostly_zero = np.where(rng.random(disk.size) < 0.9, 0, rng.poisson(4, disk.size))
    cluster = np.zeros(disk.size, dtype=np.int64)
    cluster[np.isin(disk, h3i.grid_disk(centre, 2))] = 12
    islands = np.concatenate(
        [disk[:60], np.array(h3i.grid_disk(h3i.latlng_to_cell(41.15, -8.61, 9), 4), dtype=np.int64)]
    )
    return [
        ("poisson", disk, poisson, 2),
        ("mostly zero", disk, mostly_zero, 3),
        ("one cluster", disk, cluster, 1),
        ("two islands", islands, rng.poisson(1.0, islands.size), 2),
    ]


@pytest.mark.parametrize(
    "name,cells,y,k", gi_fixtures(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_gi_star_equals_esda(name, cells, y, k):
    z, p = gi_star(y, neighbourhood(cells, k))
    for with_self in (False, True):
        g = esda_gi(y, cells, k, with_self=with_self)
        np.testing.assert_allclose(z, g.Zs, rtol=0, atol=1e-9)
        np.testing.assert_allclose(p, 2 * g.p_norm, rtol=0, atol=1e-9)
    # and the textbook formula written out
    w = neighbourhood(cells, k).toarray()
    n = y.size
    wi = w.sum(1)
    s = np.sqrt((y.astype(float) ** 2).mean() - y.mean() ** 2)
    z_book = (w @ y - y.mean() * wi) / (s * np.sqrt((n * wi - wi**2) / (n - 1)))
    np.testing.assert_allclose(z, z_book, rtol=0, atol=1e-9)


def test_analyse_points_with_a_study_area_of_empty_cells_equals_esda():
    rng = np.random.default_rng(8)
    # a polygon around central Lisbon; points only in its western part
    area = Polygon([(-9.20, 38.69), (-9.08, 38.69), (-9.08, 38.77), (-9.20, 38.77)])
    lon = np.concatenate([rng.uniform(-9.20, -9.15, 600), rng.normal(-9.17, 0.002, 150), [-9.0]])
    lat = np.concatenate([rng.uniform(38.70, 38.76, 600), rng.normal(38.72, 0.002, 150), [38.72]])
    frame = analyse_points(lon, lat, resolution=9, k=2, study_area=area)
    assert frame.attrs["study_area"] == "polygon"
    assert frame.attrs["n_points_outside"] >= 1  # the point at -9.0 is outside
    cells = frame["cell"].to_numpy()
    assert set(cells.tolist()) == set(h3i.geo_to_cells(area, 9))
    assert (frame["count"] == 0).mean() > 0.4  # the eastern part is empty
    assert frame["count"].sum() == frame.attrs["n_points"] - frame.attrs["n_points_outside"]
    g = esda_gi(frame["count"].to_numpy(), cells, 2, with_self=False)
    np.testing.assert_allclose(frame["z"], g.Zs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(frame["p"], 2 * g.p_norm, rtol=0, atol=1e-9)
    # the planted cluster is a 99 % hot spot, and the empty east has no hot spot
    planted = points_to_cells([-9.17], [38.72], 9)[0]
    assert frame.set_index("cell").loc[planted, "bin"] == 3
    east = frame["cell"].map(lambda c: h3i.cell_to_latlng(int(c))[1] > -9.12)
    assert (frame.loc[east, "bin"] <= 0).all()
    # explicit cells give the same frame as the polygon they came from
    again = analyse_points(
        lon, lat, resolution=9, k=2, study_area=[h3.int_to_str(int(c)) for c in cells]
    )
    pd.testing.assert_frame_equal(
        again[["cell", "count", "z", "p", "bin"]], frame[["cell", "count", "z", "p", "bin"]]
    )


def test_default_study_area_is_the_k_ring_cover():
    rng = np.random.default_rng(4)
    lon = rng.normal(LISBON[0], 0.01, 2000)
    lat = rng.normal(LISBON[1], 0.01, 2000)
    frame = analyse_points(lon, lat, resolution=9, k=3)
    occupied = np.unique(points_to_cells(lon, lat, 9))
    expected = set().union(*(h3i.grid_disk(c, 3) for c in occupied.tolist()))
    assert set(frame["cell"].tolist()) == expected
    assert frame["cell"].is_monotonic_increasing and frame["cell"].dtype == np.int64
    assert frame["count"].sum() == 2000
    g = esda_gi(frame["count"].to_numpy(), frame["cell"].to_numpy(), 3, with_self=True)
    np.testing.assert_allclose(frame["z"], g.Zs, rtol=0, atol=1e-9)


def test_gi_star_undefined_and_bad_input():
    w = neighbourhood(np.array(h3i.grid_disk(h3i.latlng_to_cell(0, 0, 8), 3), dtype=np.int64), 1)
    z, p = gi_star(np.zeros(w.shape[0]), w)
    assert (z == 0).all() and (p == 1).all()
    z, p = gi_star(np.full(w.shape[0], 3.0), w)
    assert (z == 0).all() and (p == 1).all()
    with pytest.raises(ValueError, match="W is 37 x 37 but there are 38 cells"):
        gi_star(np.zeros(w.shape[0] + 1), w)
    with pytest.raises(ValueError, match="at least 2"):
        gi_star([1.0], sp.identity(1))
    with pytest.raises(ValueError, match="finite"):
        gi_star(np.full(w.shape[0], np.nan), w)


def test_gi_star_columns_are_steps():
    rng = np.random.default_rng(6)
    cells = np.array(h3i.grid_disk(h3i.latlng_to_cell(10, 10, 9), 6), dtype=np.int64)
    w = neighbourhood(cells, 2)
    cube = rng.poisson(1, (cells.size, 5))
    z, p = gi_star(cube, w)
    for j in range(5):
        zj, pj = gi_star(cube[:, j], w)
        np.testing.assert_allclose(z[:, j], zj, atol=1e-12)
        np.testing.assert_allclose(p[:, j], pj, atol=1e-12)


# --------------------------------------------------------------------------- FDR and bins


def test_bh_adjust_by_hand_and_against_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.20])
    # sorted: 0.005, 0.01, 0.03, 0.04, 0.20 -> m p / rank: 0.025, 0.025, 0.05, 0.05, 0.20
    np.testing.assert_allclose(bh_adjust(p), [0.025, 0.05, 0.05, 0.025, 0.20])
    rng = np.random.default_rng(9)
    for _ in range(20):
        p = np.concatenate([rng.uniform(0, 1, 300), rng.uniform(0, 0.01, 30), [0.5, 0.5, 1.0]])
        np.testing.assert_allclose(
            bh_adjust(p), stats.false_discovery_control(p, method="bh"), atol=1e-15
        )
        # q <= alpha is the BH step-up rejection at alpha
        for alpha in (0.10, 0.05, 0.01):
            order = np.sort(p)
            passed = np.flatnonzero(order <= alpha * np.arange(1, p.size + 1) / p.size)
            cutoff = order[passed.max()] if passed.size else -1.0
            assert ((bh_adjust(p) <= alpha) == (p <= cutoff)).all()


def test_fdr_bins_rules():
    z = np.array([4.0, -4.0, 2.2, -2.0, 1.7, 0.5, 0.0])
    p = 2 * stats.norm.sf(np.abs(z))
    # no correction: thresholds straight on p
    assert fdr_bins(z, p, fdr=False).tolist() == [3, -3, 2, -2, 1, 0, 0]
    q = bh_adjust(p)
    expected = [
        int(np.sign(zi)) * sum(int(qi <= a) for a in (0.10, 0.05, 0.01))
        for zi, qi in zip(z, q, strict=True)
    ]
    assert fdr_bins(z, p).tolist() == expected
    # by hand: q = 2.2e-4, 2.2e-4, 0.065, 0.080, 0.125, 0.72, 1
    assert fdr_bins(z, p).tolist() == [3, -3, 1, -1, 0, 0, 0]
    with pytest.raises(ValueError):
        fdr_bins(z, p[:-1])
    with pytest.raises(ValueError, match="alphas"):
        fdr_bins(z, p, alphas=(0.01, 0.05))


# --------------------------------------------------------------------------- Mann-Kendall


def test_mann_kendall_equals_pymannkendall_with_ties():
    rng = np.random.default_rng(10)
    series = [
        rng.integers(0, 4, (200, 24)).astype(float),  # many ties
        rng.normal(size=(100, 12)),
        np.round(rng.normal(size=(100, 30)), 1),
        np.cumsum(rng.integers(-1, 3, (50, 24)), axis=1).astype(float),  # trends with ties
        np.array(
            [[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [2.0, 2.0, 1.0, 1.0]]
        ),
        rng.normal(size=(5, 2)),
        rng.normal(size=(5, 3)),
    ]
    for x in series:
        z, p = mann_kendall(x)
        for i, row in enumerate(x):
            ref = pymannkendall.original_test(row)
            assert z[i] == pytest.approx(ref.z, abs=1e-9)
            assert p[i] == pytest.approx(ref.p, abs=1e-9)
    z, p = mann_kendall([1.0, 3.0, 2.0, 5.0])  # one series as 1-d
    ref = pymannkendall.original_test([1.0, 3.0, 2.0, 5.0])
    assert z[0] == pytest.approx(ref.z, abs=1e-9) and p[0] == pytest.approx(ref.p, abs=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        mann_kendall([[1.0, np.nan, 2.0]])


# --------------------------------------------------------------------------- emerging categories


def cube_case(pattern: str, trend: str = "none") -> tuple[list[int], float, float]:
    """One cell's bins from a pattern string ('H' hot, 'C' cold, '.' neither), and a trend."""
    bins = [{"H": 2, "C": -2, ".": 0}[ch] for ch in pattern]
    tz, tp = {"up": (3.0, 0.003), "down": (-3.0, 0.003), "none": (0.4, 0.7)}[trend]
    return bins, tz, tp


EMERGING_CASES = [
    # 10 steps unless said: 90 % means 9 of 10
    ("intensifying hot spot", ".HHHHHHHHH", "up"),
    ("diminishing hot spot", "HHHHHHHHHH", "down"),
    ("persistent hot spot", "HHHH.HHHHH", "none"),
    ("historical hot spot", "HHHHHHHHH.", "none"),
    ("historical hot spot", "HHHHHHHHHC", "down"),  # 90 % hot wins over the final cold step
    ("intensifying cold spot", "CCCCCCCCCC", "down"),
    ("diminishing cold spot", "CCCCCCCCCC", "up"),
    ("persistent cold spot", "C.CCCCCCCC", "none"),
    ("historical cold spot", "CCCCCCCCC.", "up"),
    ("oscillating hot spot", "..C...H..H", "none"),
    ("oscillating hot spot", "C........H", "none"),  # first hot step, but was cold before
    ("new hot spot", ".........H", "up"),
    ("consecutive hot spot", ".......HHH", "up"),
    ("consecutive hot spot", "...HHHHHHH", "up"),  # 7 of 10: under 90 %
    ("sporadic hot spot", "..H..H...H", "none"),
    ("sporadic hot spot", ".H.....HHH", "none"),
    ("oscillating cold spot", "H...C....C", "none"),
    ("new cold spot", ".........C", "down"),
    ("consecutive cold spot", "......CCCC", "down"),
    ("sporadic cold spot", "C.C......C", "none"),
    ("no pattern", "..........", "none"),
    ("no pattern", "HH.HH.HH..", "up"),  # hot often, not in the final step, under 90 %
    ("no pattern", "CC.CC.....", "none"),
    ("persistent hot spot", "HHHHHHHHHH", "none"),
    ("intensifying hot spot", "HHHHHHHHHH", "up"),
]


def test_classify_emerging_each_category_hot_and_cold():
    rows = [cube_case(pattern, trend) for _, pattern, trend in EMERGING_CASES]
    bins = np.array([r[0] for r in rows])
    got = classify_emerging(bins, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
    for (expected, pattern, trend), category in zip(EMERGING_CASES, got, strict=True):
        assert category == expected, (pattern, trend)
    assert set(got) == set(CATEGORIES)  # every category covered
    # the 90 % rule in integers: 18 of 20 steps is 90 %, 17 is not
    t20 = np.array([[0, 0] + [1] * 18, [0, 0, 0] + [1] * 17])
    assert classify_emerging(t20, np.zeros(2), np.ones(2)).tolist() == [
        "persistent hot spot",
        "consecutive hot spot",
    ]


def count_cube_case(level: float, series: np.ndarray) -> tuple[str, float]:
    """Run emerging_hot_spots on a 12-step count cube: 469 cells (a 12-ring at resolution
    8) holding `level` plus a fixed 0/1/2 pattern, and a spot of 7 cells (a 1-ring) whose
    counts follow `series`. Returns the category and trend z of the spot's centre."""
    centre = h3i.latlng_to_cell(LISBON[1], LISBON[0], 8)
    cells = np.array(sorted(h3i.grid_disk(centre, 12)), dtype=np.int64)
    spot = np.searchsorted(cells, np.array(sorted(h3i.grid_disk(centre, 1)), dtype=np.int64))
    mid = int(np.searchsorted(cells, centre))
    steps = len(series)
    background = level + (np.arange(cells.size) % 3)
    cube = np.repeat(background[:, None], steps, axis=1)
    cube[spot, :] = series
    trend_z, trend_p, category = emerging_hot_spots(cube, neighbourhood(cells, 1))
    # the trend is pymannkendall's on the spot's per-step Gi* z
    zt, _ = gi_star(cube, neighbourhood(cells, 1))
    ref = pymannkendall.original_test(zt[mid])
    assert trend_z[mid] == pytest.approx(ref.z, abs=1e-9)
    assert trend_p[mid] == pytest.approx(ref.p, abs=1e-9)
    return category[mid], trend_z[mid]


def busy(steps: list[int] | range, high: float, low: float, n: int = 12) -> np.ndarray:
    series = np.full(n, float(low))
    series[list(steps)] = high
    return series


T12 = np.arange(12.0)
COUNT_CUBES = [
    # hot: a spot busier than a background of 5..7
    ("persistent hot spot", 5, np.full(12, 20.0)),
    ("intensifying hot spot", 5, 10 + 2 * T12),
    ("diminishing hot spot", 5, 40 - 2 * T12),
    ("historical hot spot", 5, busy(range(11), 20, 6)),
    ("new hot spot", 5, busy([11], 20, 6)),
    ("consecutive hot spot", 5, busy([9, 10, 11], 20, 6)),
    ("sporadic hot spot", 5, busy([2, 5, 11], 20, 6)),
    ("oscillating hot spot", 5, np.where(np.isin(T12, [1, 2, 3]), 0, busy([11], 20, 6))),
    # cold: a spot quieter than a background of 10..12
    ("persistent cold spot", 10, np.zeros(12)),
    ("intensifying cold spot", 10, 6 - 0.5 * T12),
    ("diminishing cold spot", 10, 0.5 * T12),
    ("historical cold spot", 10, busy(range(11), 0, 11)),
    ("new cold spot", 10, busy([11], 0, 11)),
    ("consecutive cold spot", 10, busy([9, 10, 11], 0, 11)),
    ("sporadic cold spot", 10, busy([2, 5, 11], 0, 11)),
    ("oscillating cold spot", 10, np.where(np.isin(T12, [1, 2, 3]), 30, busy([11], 0, 11))),
    ("no pattern", 5, np.full(12, 6.0)),
]


@pytest.mark.parametrize("expected,level,series", COUNT_CUBES, ids=[c[0] for c in COUNT_CUBES])
def test_emerging_category_from_a_hand_built_count_cube(expected, level, series):
    category, trend_z = count_cube_case(level, series)
    assert category == expected
    if expected.startswith(("intensifying hot", "diminishing cold")):
        assert trend_z > 0
    if expected.startswith(("diminishing hot", "intensifying cold")):
        assert trend_z < 0


def test_every_category_has_a_count_cube():
    assert {c[0] for c in COUNT_CUBES} == set(CATEGORIES)


def test_emerging_run_through_analyse_points():
    rng = np.random.default_rng(12)
    n = 4000
    lon = rng.uniform(-9.20, -9.10, n)
    lat = rng.uniform(38.70, 38.76, n)
    times = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.uniform(0, 365, n), unit="D")
    # a persistent cluster all year
    m = 1200
    lon = np.concatenate([lon, rng.normal(-9.18, 0.0012, m)])
    lat = np.concatenate([lat, rng.normal(38.75, 0.001, m)])
    times = times.append(
        pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.uniform(0, 365, m), unit="D")
    )
    frame = analyse_points(lon, lat, resolution=9, times=times.to_numpy(), step="month")
    assert list(frame.columns) == [
        "cell",
        "count",
        "z",
        "p",
        "bin",
        "trend_z",
        "trend_p",
        "category",
    ]
    assert len(frame.attrs["steps"]) == 12 and frame.attrs["step"] == "month"
    assert set(frame["category"]) <= set(CATEGORIES)
    cluster = points_to_cells([-9.18], [38.75], 9)[0]
    assert frame.set_index("cell").loc[cluster, "category"] in (
        "persistent hot spot",
        "intensifying hot spot",
        "diminishing hot spot",
    )
    # trend = Mann-Kendall of the per-step Gi* z, recomputed the naive way for the cluster cell
    cells = frame["cell"].to_numpy()
    step_of = time_steps(times, "month")[0]
    point_cells = points_to_cells(lon, lat, 9)
    row = int(np.searchsorted(cells, cluster))
    zs = []
    for s in range(12):
        counts = (
            pd.Series(point_cells[step_of == s])
            .value_counts()
            .reindex(cells, fill_value=0)
            .to_numpy()
        )
        zs.append(esda_gi(counts, cells, frame.attrs["k"], with_self=False).Zs[row])
    ref = pymannkendall.original_test(np.array(zs))
    assert frame.loc[row, "trend_z"] == pytest.approx(ref.z, abs=1e-9)
    assert frame.loc[row, "trend_p"] == pytest.approx(ref.p, abs=1e-9)


def test_time_steps():
    times = pd.to_datetime(["2025-03-05 10:00", "2025-03-11 23:59", "2025-03-24 00:00"])
    idx, steps = time_steps(times, "week")
    assert steps[0] == pd.Timestamp("2025-03-03")  # a Monday
    assert idx.tolist() == [0, 1, 3] and len(steps) == 4  # the empty week is kept
    idx, steps = time_steps(times, "month")
    assert idx.tolist() == [0, 0, 0] and steps.tolist() == [pd.Timestamp("2025-03-01")]
    idx, steps = time_steps(times, "day")
    assert idx.tolist() == [0, 6, 19]
    idx, steps = time_steps(times, "7D")
    assert steps[0] == pd.Timestamp("2025-03-05") and idx.tolist() == [0, 0, 2]
    # aware times are cut on their own wall clock
    aware = pd.to_datetime(["2025-01-31 23:30", "2025-02-01 00:30"]).tz_localize("Asia/Shanghai")
    idx, steps = time_steps(aware, "month")
    assert idx.tolist() == [0, 1] and str(steps.tz) == "Asia/Shanghai"
    idx, _ = time_steps(aware.tz_convert("UTC"), "month")  # in UTC both fall in January
    assert idx.tolist() == [0, 0]
    with pytest.raises(ValueError, match="step"):
        time_steps(times, "fortnightly-ish")
    with pytest.raises(ValueError, match="NaT"):
        time_steps(pd.to_datetime(["2025-01-01", None]), "day")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lon": [1.0, 2.0], "lat": [1.0]}, "differ in length"),
        ({"lon": [1.0, np.nan], "lat": [1.0, 2.0]}, "NaN"),
        ({"lon": [200.0], "lat": [1.0]}, "out of range"),
        ({"lon": [], "lat": []}, "no points"),
        ({"resolution": 16}, "between 0 and 15"),
        ({"resolution": -1}, "between 0 and 15"),
        ({"resolution": 9.5}, "integer"),
        ({"resolution": True}, "integer"),
        ({"k": 0}, "k must be between"),
        ({"k": 31}, "k must be between"),
        ({"times": ["2025-01-01"] * 3, "step": "day"}, "times for"),
        ({"times": ["2025-01-01", None], "step": "day"}, "NaT"),
        ({"times": ["2025-01-01", "2025-01-02"]}, "go together"),
        ({"step": "month"}, "go together"),
        ({"times": ["2025-01-01", "2025-01-02"], "step": "bogus"}, "step must be"),
        ({"times": ["2025-01-01", "2025-01-02"], "step": "month"}, "at least 2"),
        ({"times": ["2020-01-01", "2025-01-02"], "step": "day"}, "at most 500"),
        ({"study_area": "8939336"}, "not a string"),
        ({"study_area": []}, "no cells"),
        ({"study_area": [h3i.latlng_to_cell(0, 0, 8)]}, "resolution 8, not 9"),
        ({"study_area": Polygon([(0, 0), (1e-5, 0), (1e-5, 1e-5)])}, "no H3 cell"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    args = {"lon": [LISBON[0], LISBON[0] + 0.01], "lat": [LISBON[1], LISBON[1]], "resolution": 9}
    args.update(kwargs)
    lon, lat = args.pop("lon"), args.pop("lat")
    with pytest.raises(ValueError, match=message):
        analyse_points(lon, lat, **args)


def test_bad_input_of_the_pieces():
    with pytest.raises(ValueError, match="between 0 and 15"):
        points_to_cells([0.0], [0.0], 16)
    with pytest.raises(ValueError, match="NaN"):
        points_to_cells([0.0, np.inf], [0.0, 0.0], 9)
    with pytest.raises(ValueError, match="needs the point cells"):
        study_area_cells(None, 9)
    with pytest.raises(ValueError, match="k must be"):
        neighbourhood([h3i.latlng_to_cell(0, 0, 9)], 0)
    with pytest.raises(ValueError, match="at least one cell"):
        default_k([])
    with pytest.raises(ValueError, match="one value per cell"):
        classify_emerging(np.zeros((2, 3)), np.zeros(3), np.zeros(3))


# --------------------------------------------------------------------------- docs


def test_docs_example_runs():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "docs/hotspots.md has no runnable example"
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {})


def test_docs_name_every_category():
    text = DOCS.read_text(encoding="utf-8")
    for name in CATEGORIES:
        assert f"| {name} |" in text


def test_a_period_makes_the_steps_cover_it_whole():
    from gridops.hotspots import time_steps

    times = pd.to_datetime(["2026-03-05", "2026-03-20", "2026-05-02"])
    idx, steps = time_steps(times, "month", period=("2026-01-01", "2026-07-01"))
    assert list(steps.strftime("%Y-%m")) == [
        "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06",
    ]  # fmt: skip
    assert list(idx) == [2, 2, 4]
    unbounded_idx, unbounded = time_steps(times, "month")
    assert list(unbounded.strftime("%Y-%m")) == ["2026-03", "2026-04", "2026-05"]
    assert list(unbounded_idx) == [0, 0, 2]
    with pytest.raises(ValueError, match="outside the period"):
        time_steps(times, "month", period=("2026-04-01", "2026-07-01"))
    with pytest.raises(ValueError, match="end after it starts"):
        time_steps(times, "month", period=("2026-07-01", "2026-01-01"))

"""Points to H3 cells, study areas and k-ring neighbourhoods.

Cells are H3 v4 indexes held as int64 (a valid H3 index is below 2**63). The k-ring
neighbourhood of a cell is `h3.grid_disk(cell, k)`: every cell at grid distance <= k,
itself included.

Speed: `grid_disk` per cell is the obvious way and costs one C call (plus a Python list)
per cell. Instead we take the local IJ coordinates of every cell relative to one origin
(`cell_to_local_ij`, one cheap call per cell), after which a k-ring is a fixed list of IJ
offsets (|di|, |dj|, |di - dj| <= k) looked up in a sorted array of IJ keys with
`numpy.searchsorted`. Local IJ coordinates are only a faithful chart of the grid where
they do not reach around a pentagon (the 12 points of the icosahedron where the grid
has a 60° gap) and where every cell lies in the origin's base cell or a neighbouring
one. So:

- one chart for the whole set when the disc around the origin that holds every cell
  (plus k rings and a safety margin) holds no pentagon and every cell gets coordinates;
- otherwise one chart per parent cell four resolutions up (2,401 children, and any cell
  within 33 rings of a child lies in the parent or one of its six neighbours), whose
  origin is the parent's centre child and whose candidates are the cells of the parent
  and its neighbours;
- plain `grid_disk` for the rows of a parent near a pentagon (a pentagon within two
  parent rings), of a chart where a cell gets no coordinates or two cells get the same
  ones, and at coarse resolutions where the charts are too small for k.

tests/test_hotspots_stats.py checks the result against `grid_disk` on random sets all over
the globe and around every pentagon.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import h3
import h3._cy as h3c  # the Cython layer: same C calls as h3.api.basic_int, less wrapping
import numpy as np
import scipy.sparse as sp
from h3.api import basic_int as h3i

RESOLUTION_MIN = 0
RESOLUTION_MAX = 15
K_MAX = 30
# Default k: the smallest k whose ring holds on average this many other non-empty cells
# around a non-empty cell, capped at DEFAULT_K_MAX (the service stores k in 1..10).
DEFAULT_K_TARGET = 8.0
DEFAULT_K_MAX = 10
DEFAULT_K_SAMPLE = 50_000
MAX_STUDY_CELLS = 5_000_000

# Grid rings from any child of a parent g resolutions up to the outside of the children of
# the parent and its neighbours (measured; see the module docstring).
_CHART_MARGIN = {1: 2, 2: 5, 3: 12, 4: 33}
_CHART_LEVELS = 4
_EARTH_RADIUS_KM = 6371.0088
_CHUNK = 4_000_000  # offset lookups per numpy batch, to bound memory


# --------------------------------------------------------------------------- validation


def check_resolution(resolution: object) -> int:
    """Return `resolution` as an int, or raise ValueError unless it is an integer 0..15."""
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"resolution must be an integer 0..15, got {resolution!r}")
    if not RESOLUTION_MIN <= int(resolution) <= RESOLUTION_MAX:
        raise ValueError(f"resolution must be between 0 and 15, got {resolution}")
    return int(resolution)


def check_k(k: object) -> int:
    """Return `k` as an int, or raise ValueError unless it is an integer 1..K_MAX."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer 1..{K_MAX}, got {k!r}")
    if not 1 <= int(k) <= K_MAX:
        raise ValueError(f"k must be between 1 and {K_MAX}, got {k}")
    return int(k)


def as_cells(cells: Iterable[int] | np.ndarray, *, name: str = "cells") -> np.ndarray:
    """`cells` as a 1-d int64 array of valid H3 cells of one resolution (order kept).

    Raises ValueError on anything else. The check is vectorised on the index bits (mode 1,
    one resolution, base cell 0..121, unused digits 7); `h3.is_valid_cell` is not needed
    per cell.
    """
    arr = np.asarray(cells if isinstance(cells, np.ndarray) else list(cells))
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence of H3 cells")
    if arr.dtype.kind == "U" or arr.dtype.kind == "O":
        try:
            arr = np.array([h3i.str_to_int(c) if isinstance(c, str) else int(c) for c in arr])
        except (TypeError, ValueError, h3.H3BaseException) as exc:
            raise ValueError(f"{name} must be H3 cells (int64 or hex strings)") from exc
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer H3 cells, got dtype {arr.dtype}")
    u = arr.astype(np.uint64)
    mode = (u >> np.uint64(59)) & np.uint64(15)
    res = (u >> np.uint64(52)) & np.uint64(15)
    base = (u >> np.uint64(45)) & np.uint64(127)
    if (u >> np.uint64(63)).any() or (mode != 1).any() or (base > 121).any():
        raise ValueError(f"{name} holds values that are not H3 cells")
    if (res != res[0]).any():
        raise ValueError(f"{name} mixes H3 resolutions")
    r = int(res[0])
    if r < RESOLUTION_MAX:
        unused = np.uint64((1 << (3 * (RESOLUTION_MAX - r))) - 1)
        if ((u & unused) != unused).any():
            raise ValueError(f"{name} holds values that are not H3 cells")
    return u.astype(np.int64)


def cell_resolution(cells: np.ndarray) -> int:
    """Resolution of a non-empty int64 array of cells of one resolution."""
    return int((np.uint64(cells[0]) >> np.uint64(52)) & np.uint64(15))


# --------------------------------------------------------------------------- points


def points_to_cells(
    lon: Iterable[float] | np.ndarray, lat: Iterable[float] | np.ndarray, resolution: int
) -> np.ndarray:
    """H3 cell (int64) of each lon/lat point (WGS 84 degrees), in input order.

    h3 v4 has no vectorised `latlng_to_cell`; a `map` over the Cython function is ~1.8 M
    points/s here (measured faster than polars-h3, the vectorised Rust binding).
    Raises ValueError on mismatched lengths, non-finite or out-of-range coordinates, or a
    resolution outside 0..15.
    """
    resolution = check_resolution(resolution)
    lon = np.asarray(lon, dtype=np.float64).ravel()
    lat = np.asarray(lat, dtype=np.float64).ravel()
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat differ in length ({lon.size} and {lat.size})")
    if lon.size == 0:
        return np.empty(0, dtype=np.int64)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        bad = np.flatnonzero(~(np.isfinite(lon) & np.isfinite(lat)))
        raise ValueError(f"{bad.size} points have NaN or infinite coordinates (first: #{bad[0]})")
    if (np.abs(lat) > 90).any() or (np.abs(lon) > 180).any():
        raise ValueError("coordinates out of range: lon must be in -180..180, lat in -90..90")
    out = np.fromiter(
        map(h3c.latlng_to_cell, lat.tolist(), lon.tolist(), [resolution] * lon.size),
        dtype=np.uint64,
        count=lon.size,
    )
    return out.astype(np.int64)


# --------------------------------------------------------------------------- H3 bits


def parents(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Parent of each cell at a coarser `resolution`, by bit arithmetic (no per-cell call)."""
    u = cells.astype(np.uint64)
    digits = np.uint64((1 << (3 * (RESOLUTION_MAX - resolution))) - 1)
    res_mask = np.uint64(15 << 52)
    out = (u | digits) & ~res_mask | np.uint64(resolution << 52)
    return out.astype(np.int64)


def _edge_km(resolution: int) -> float:
    return float(h3.average_hexagon_edge_length(resolution, "km"))


def _latlng(cells: Iterable[int]) -> np.ndarray:
    return np.array([h3c.cell_to_latlng(int(c)) for c in cells], dtype=np.float64).reshape(-1, 2)


def _great_circle_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (km) between lat/lng rows of `a` and `b` (broadcast)."""
    a = np.radians(a)
    b = np.radians(b)
    h = (
        np.sin((b[..., 0] - a[..., 0]) / 2) ** 2
        + np.cos(a[..., 0]) * np.cos(b[..., 0]) * np.sin((b[..., 1] - a[..., 1]) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


@functools.cache
def _pentagon_latlng(resolution: int) -> np.ndarray:
    return _latlng(h3i.get_pentagons(resolution))


@functools.cache
def _pentagons(resolution: int) -> frozenset[int]:
    return frozenset(h3i.get_pentagons(resolution))


@functools.cache
def _offsets(k: int, ring_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """IJ offsets of the k-ring (or of the ring at exactly k) in H3 local IJ coordinates."""
    d = np.arange(-k, k + 1)
    di, dj = np.meshgrid(d, d, indexing="ij")
    dist = np.maximum(np.maximum(np.abs(di), np.abs(dj)), np.abs(di - dj))
    keep = dist == k if ring_only else dist <= k
    return di[keep].astype(np.int64), dj[keep].astype(np.int64)


# --------------------------------------------------------------------------- charts


@dataclass
class _Chart:
    rows: np.ndarray  # indices (into the sorted cells) this chart answers for
    origin: int | None  # None: rows go through grid_disk
    cand: np.ndarray | None = None  # sorted indices of the cells with coordinates
    ij: np.ndarray | None = None  # (len(cand), 2) local IJ of cand


def _local_ij(origin: int, cells: np.ndarray) -> np.ndarray | None:
    """Local IJ of `cells` relative to `origin`, or None if any cell has none."""
    to_ij = functools.partial(h3c.cell_to_local_ij, origin)
    try:
        return np.array(list(map(to_ij, cells.astype(np.uint64).tolist())), dtype=np.int64)
    except h3.H3BaseException:
        return None


def _unique_keys(ij: np.ndarray) -> bool:
    keys = ij[:, 0] * (1 << 32) + ij[:, 1]
    return np.unique(keys).size == keys.size


def _charts(cells: np.ndarray, k: int) -> list[_Chart]:
    """Partition the rows of sorted unique `cells` into charts (see module docstring)."""
    n = cells.size
    if n == 0:
        return []
    res = cell_resolution(cells)
    levels = min(_CHART_LEVELS, res)
    all_rows = np.arange(n)
    if levels == 0 or _CHART_MARGIN[levels] < k:
        return [_Chart(all_rows, None)]

    # One chart for all, around a cell of the most common base cell.
    base = (cells >> 45) & 127
    _, first, counts = np.unique(base, return_index=True, return_counts=True)
    origin = int(cells[first[counts.argmax()] + counts.max() // 2])
    if _disc_is_pentagon_free(origin, cells, k, res):
        ij = _local_ij(origin, cells)
        if ij is not None and _unique_keys(ij):
            return [_Chart(all_rows, origin, all_rows, ij)]

    # One chart per parent `levels` resolutions up.
    p = res - levels
    par = parents(cells, p)
    upar, starts = np.unique(par, return_index=True)
    ends = np.append(starts[1:], n)
    pent = _pentagons(p)
    charts: list[_Chart] = []
    exact: list[np.ndarray] = []
    for q, s, e in zip(upar.tolist(), starts.tolist(), ends.tolist(), strict=True):
        rows = np.arange(s, e)
        if not pent.isdisjoint(np.asarray(h3c.grid_disk(q, 2)).tolist()):
            exact.append(rows)
            continue
        around = np.asarray(h3c.grid_disk(q, 1)).astype(np.int64)
        pos = np.searchsorted(upar, around)
        pos = pos[(pos < upar.size) & (upar[np.minimum(pos, upar.size - 1)] == around)]
        cand = np.sort(np.concatenate([np.arange(starts[i], ends[i]) for i in pos]))
        origin = int(h3c.cell_to_center_child(q, res))
        ij = _local_ij(origin, cells[cand])
        if ij is None or not _unique_keys(ij):
            exact.append(rows)
            continue
        charts.append(_Chart(rows, origin, cand, ij))
    if exact:
        charts.append(_Chart(np.concatenate(exact), None))
    return charts


def _disc_is_pentagon_free(origin: int, cells: np.ndarray, k: int, res: int) -> bool:
    """Whether the disc around `origin` that holds every cell (plus k rings and a margin)
    holds no pentagon, judged from the cells' parents a few resolutions up."""
    p = max(res - _CHART_LEVELS, 0)
    upar = np.unique(parents(cells, p))
    if upar.size > 20_000:  # a continent at fine resolution: use per-parent charts
        return False
    centre = np.array(h3c.cell_to_latlng(origin))
    reach = _great_circle_km(centre, _latlng(upar.tolist())).max()
    # parent circumradius (edge length, doubled for the spread of cell sizes) + k rings
    reach += 2 * _edge_km(p) + 2 * (k + 2) * _edge_km(res) * np.sqrt(3)
    nearest_pentagon = _great_circle_km(centre, _pentagon_latlng(res)).min()
    return bool(nearest_pentagon > reach + 4 * _edge_km(p))


def _chart_lookup(
    chart: _Chart, cells: np.ndarray, di: np.ndarray, dj: np.ndarray, rows_mask: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For a chart with coordinates: yield (row, found, key_or_index) batches.

    For each row and offset: `found` says whether a candidate sits at row + offset;
    where it does, the third array holds the candidate's index into `cells`.
    """
    assert chart.cand is not None and chart.ij is not None
    ij = chart.ij
    kk = int(max(np.abs(di).max(), np.abs(dj).max()))
    imin, jmin = ij[:, 0].min() - kk, ij[:, 1].min() - kk
    width = int(ij[:, 1].max() + kk - jmin + 1)
    keys = (ij[:, 0] - imin) * width + (ij[:, 1] - jmin)
    order = np.argsort(keys)
    skeys = keys[order]
    rows = chart.rows if rows_mask is None else chart.rows[rows_mask[chart.rows]]
    if rows.size == 0:
        return
    rpos = np.searchsorted(chart.cand, rows)  # rows are candidates of their own chart
    rkeys = keys[rpos]
    offs = di * width + dj
    step = max(1, _CHUNK // offs.size)
    for s in range(0, rows.size, step):
        q = (rkeys[s : s + step, None] + offs[None, :]).ravel()
        hit = np.searchsorted(skeys, q)
        hit_c = np.minimum(hit, skeys.size - 1)
        found = skeys[hit_c] == q
        row = np.repeat(rows[s : s + step], offs.size)
        yield row, found, chart.cand[order[hit_c]]


def _pairs(
    cells: np.ndarray,
    k: int,
    *,
    ring_only: bool = False,
    charts: list[_Chart] | None = None,
    rows_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) index pairs of sorted unique `cells` with col within k rings of row
    (or at exactly k rings with ring_only), restricted to `cells`."""
    if charts is None:
        charts = _charts(cells, k)
    di, dj = _offsets(k, ring_only)
    out_r: list[np.ndarray] = []
    out_c: list[np.ndarray] = []
    for chart in charts:
        if chart.origin is None:
            rows = chart.rows if rows_mask is None else chart.rows[rows_mask[chart.rows]]
            fn = h3c.grid_ring if ring_only else h3c.grid_disk
            disks = [np.asarray(fn(c, k)) for c in cells[rows].astype(np.uint64).tolist()]
            if not disks:
                continue
            lens = np.fromiter(map(len, disks), dtype=np.int64, count=len(disks))
            nb = np.concatenate(disks).astype(np.int64)
            row = np.repeat(rows, lens)
            pos = np.minimum(np.searchsorted(cells, nb), cells.size - 1)
            found = cells[pos] == nb
            out_r.append(row[found])
            out_c.append(pos[found])
        else:
            for row, found, col in _chart_lookup(chart, cells, di, dj, rows_mask):
                out_r.append(row[found])
                out_c.append(col[found])
    if not out_r:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_r), np.concatenate(out_c)


# --------------------------------------------------------------------------- public


def neighbourhood(cells: Iterable[int] | np.ndarray, k: int) -> sp.csr_matrix:
    """Binary k-ring weights among `cells`, self included, as a CSR matrix aligned with
    `cells` (row i, column j is 1.0 when cells[j] is within grid distance k of cells[i]).

    Only the given cells appear: a ring reaching outside the study area is cut there.
    Raises ValueError on duplicate or invalid cells or a bad k.
    """
    k = check_k(k)
    cells = as_cells(cells)
    n = cells.size
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float64)
    order = np.argsort(cells, kind="stable")
    scells = cells[order]
    if (scells[1:] == scells[:-1]).any():
        raise ValueError("cells must be unique")
    r, c = _pairs(scells, k)
    if not (order[1:] > order[:-1]).all():  # back to the caller's order
        r, c = order[r], order[c]
    if (r[1:] < r[:-1]).any():
        srt = np.argsort(r, kind="stable")
        r, c = r[srt], c[srt]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    w = sp.csr_matrix((np.ones(r.size), c, indptr), shape=(n, n))
    w.sort_indices()
    return w


def kring_cover(cells: Iterable[int] | np.ndarray, k: int) -> np.ndarray:
    """Sorted unique cells within grid distance k of any of `cells` (the default study area)."""
    k = check_k(k)
    cells = np.unique(as_cells(cells))
    if cells.size == 0:
        return cells
    di, dj = _offsets(k)
    if cells.size * di.size > 20 * MAX_STUDY_CELLS:
        raise ValueError(_too_big(cells.size * di.size))
    found_cells: list[np.ndarray] = [cells]
    for chart in _charts(cells, k):
        if chart.origin is None:
            disks = [np.asarray(h3c.grid_disk(c, k)) for c in cells[chart.rows].tolist()]
            found_cells.append(np.concatenate(disks).astype(np.int64))
            continue
        assert chart.ij is not None
        rpos = np.searchsorted(chart.cand, chart.rows)
        ij = chart.ij[rpos]
        # every position in reach, once; those that are not input cells need a C call
        width = int(ij[:, 1].max() - ij[:, 1].min() + 2 * k + 1)
        i0, j0 = ij[:, 0].min() - k, ij[:, 1].min() - k
        keys = (ij[:, 0] - i0) * width + (ij[:, 1] - j0)
        offs = di * width + dj
        reach = np.unique((keys[:, None] + offs[None, :]).ravel())
        new = np.setdiff1d(reach, keys, assume_unique=True)
        to_cell = functools.partial(h3c.local_ij_to_cell, chart.origin)
        ii = (new // width + i0).tolist()
        jj = (new % width + j0).tolist()
        try:
            found = np.fromiter(map(to_cell, ii, jj), dtype=np.uint64, count=len(ii))
        except h3.H3BaseException:  # a position without a cell: take the slow, exact way
            disks = [np.asarray(h3c.grid_disk(c, k)) for c in cells[chart.rows].tolist()]
            found = np.concatenate(disks)
        found_cells.append(found.astype(np.int64))
    cover = np.unique(np.concatenate(found_cells))
    if cover.size > MAX_STUDY_CELLS:
        raise ValueError(_too_big(cover.size))
    return cover


def _too_big(n: int) -> str:
    return (
        f"the study area would hold about {n:,} cells (limit {MAX_STUDY_CELLS:,}): "
        "use a coarser resolution, a smaller k or an explicit study_area"
    )


def study_area_cells(
    study_area: object, resolution: int, *, cells: np.ndarray | None = None, k: int | None = None
) -> np.ndarray:
    """Sorted unique int64 cells of a study area at `resolution`.

    study_area: None (the cells within k rings of `cells`, which must then be given), an
    iterable of H3 cells of that resolution, or a shapely (Multi)Polygon in lon/lat whose
    cells are those with their centre inside (h3 `geo_to_cells`).
    """
    resolution = check_resolution(resolution)
    if study_area is None:
        if cells is None or k is None:
            raise ValueError("the default study area needs the point cells and k")
        return kring_cover(cells, k)
    if hasattr(study_area, "__geo_interface__"):
        geo = study_area.__geo_interface__
        if geo.get("type") not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"study_area must be a Polygon or MultiPolygon, not {geo.get('type')}")
        if getattr(study_area, "is_empty", False):
            raise ValueError("study_area is an empty polygon")
        area = np.unique(np.asarray(h3i.geo_to_cells(study_area, resolution), dtype=np.int64))
        if area.size == 0:
            raise ValueError(
                "study_area holds no H3 cell centre at this resolution: "
                "use a finer resolution or a larger polygon"
            )
    else:
        if isinstance(study_area, str | bytes):
            raise ValueError("study_area must be cells or a polygon, not a string")
        area = as_cells(study_area, name="study_area")
        if area.size == 0:
            raise ValueError("study_area holds no cells")
        if cell_resolution(area) != resolution:
            raise ValueError(
                f"study_area cells are at resolution {cell_resolution(area)}, not {resolution}"
            )
        area = np.unique(area)
    if area.size > MAX_STUDY_CELLS:
        raise ValueError(_too_big(area.size))
    return area


def default_k(
    cells: Iterable[int] | np.ndarray,
    *,
    target: float = DEFAULT_K_TARGET,
    k_max: int = DEFAULT_K_MAX,
) -> int:
    """The documented data-based default k.

    The smallest k (1..k_max) whose k-ring around a non-empty cell holds, on average over
    the non-empty cells, at least `target` other non-empty cells; k_max if none does. With
    more than 50,000 non-empty cells the average is taken over 50,000 evenly spaced ones
    (sorted by index). Counting only non-empty cells makes k follow the data: dense data
    gives k = 2 (a ring of 1 holds at most 6 others), sparse data larger rings.
    """
    k_max = check_k(k_max)
    cells = np.unique(as_cells(cells))
    n = cells.size
    if n == 0:
        raise ValueError("default_k needs at least one cell")
    mask = None
    m = n
    if n > DEFAULT_K_SAMPLE:
        mask = np.zeros(n, dtype=bool)
        mask[np.linspace(0, n - 1, DEFAULT_K_SAMPLE).astype(np.int64)] = True
        m = DEFAULT_K_SAMPLE
    charts = _charts(cells, k_max)
    total = 0
    for k in range(1, k_max + 1):
        r, _ = _pairs(cells, k, ring_only=True, charts=charts, rows_mask=mask)
        total += r.size
        if total / m >= target:
            return k
    return k_max

"""Emerging hot spots (space-time cube, Gi* per step, Mann-Kendall) and `analyse_points`.

The category rules are written down in docs/hotspots.md ("Emerging hot spots").
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gridops.hotspots.cells import (
    MAX_STUDY_CELLS,
    check_k,
    check_resolution,
    default_k,
    neighbourhood,
    points_to_cells,
    study_area_cells,
)
from gridops.hotspots.gistar import CONFIDENCE_ALPHAS, fdr_bins, gi_star

TREND_ALPHA = 0.05  # Mann-Kendall trend counts as significant when p < 0.05
MIN_STEPS = 2
MAX_STEPS = 500
NAMED_STEPS = {
    "day": pd.offsets.Day(1),
    "week": pd.offsets.Week(weekday=0),  # weeks start on Monday
    "month": pd.offsets.MonthBegin(1),
}
NO_PATTERN = "no pattern"
CATEGORIES = (
    "new hot spot",
    "consecutive hot spot",
    "intensifying hot spot",
    "persistent hot spot",
    "diminishing hot spot",
    "sporadic hot spot",
    "oscillating hot spot",
    "historical hot spot",
    "new cold spot",
    "consecutive cold spot",
    "intensifying cold spot",
    "persistent cold spot",
    "diminishing cold spot",
    "sporadic cold spot",
    "oscillating cold spot",
    "historical cold spot",
    NO_PATTERN,
)


# --------------------------------------------------------------------------- Mann-Kendall


def mann_kendall(
    series_2d: Sequence[Sequence[float]] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Kendall trend test of each row of `series_2d` (n series x T steps), vectorised.

    Same as pymannkendall.original_test on each row: S = sum_{i<j} sign(x_j - x_i);
    Var(S) = (T(T-1)(2T+5) - sum_t t(t-1)(2t+5)) / 18 over groups of t exactly equal
    values (ties); z = (S - 1)/sqrt(Var) if S > 0, (S + 1)/sqrt(Var) if S < 0, else 0;
    p two-sided from the normal. A 1-d input is one series. Returns (z, p), one per row.
    """
    x = np.asarray(series_2d, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError("series must be 2-d: one row per series, one column per step")
    if np.isnan(x).any():
        raise ValueError("series must not hold NaN")
    n, t = x.shape
    s = np.zeros(n)
    for lag in range(1, t):
        s += np.sign(x[:, lag:] - x[:, :-lag]).sum(axis=1)
    var = np.full(n, t * (t - 1) * (2 * t + 5), dtype=np.float64)
    if n and t > 1:
        xs = np.sort(x, axis=1)
        starts = np.ones_like(xs, dtype=bool)
        starts[:, 1:] = xs[:, 1:] != xs[:, :-1]
        run_id = np.cumsum(starts.ravel()) - 1
        lengths = np.bincount(run_id).astype(np.float64)
        run_row = np.flatnonzero(starts.ravel()) // t
        var -= np.bincount(
            run_row, weights=lengths * (lengths - 1) * (2 * lengths + 5), minlength=n
        )
    var /= 18.0
    z = np.zeros(n)
    root = np.sqrt(np.clip(var, 0.0, None))
    pos = (s > 0) & (root > 0)
    neg = (s < 0) & (root > 0)
    z[pos] = (s[pos] - 1) / root[pos]
    z[neg] = (s[neg] + 1) / root[neg]
    return z, 2.0 * stats.norm.sf(np.abs(z))


# --------------------------------------------------------------------------- categories


def _trailing_run(flags: np.ndarray) -> np.ndarray:
    """Length of the run of True at the end of each row."""
    t = flags.shape[1]
    rev_false = ~flags[:, ::-1]
    return np.where(rev_false.any(axis=1), rev_false.argmax(axis=1), t)


def classify_emerging(
    bins: np.ndarray,
    trend_z: np.ndarray,
    trend_p: np.ndarray,
    *,
    trend_alpha: float = TREND_ALPHA,
) -> np.ndarray:
    """Emerging hot/cold spot category of each cell (docs/hotspots.md gives the rules).

    bins: n cells x T steps of Gi* confidence bins (-3..3, after FDR within each step);
    a step is a significant hot (cold) spot when its bin is >= 1 (<= -1), i.e. at 90 %
    confidence or more. trend_z, trend_p: Mann-Kendall of each cell's z series.
    """
    bins = np.asarray(bins)
    if bins.ndim != 2 or bins.shape[1] < 1:
        raise ValueError("bins must be 2-d: cells x steps")
    n, t = bins.shape
    trend_z = np.asarray(trend_z, dtype=np.float64)
    trend_p = np.asarray(trend_p, dtype=np.float64)
    if trend_z.shape != (n,) or trend_p.shape != (n,):
        raise ValueError("trend_z and trend_p need one value per cell")
    hot = bins > 0
    cold = bins < 0
    n_hot = hot.sum(axis=1)
    n_cold = cold.sum(axis=1)
    final_hot = hot[:, -1]
    final_cold = cold[:, -1]
    trend = trend_p < trend_alpha
    up = trend & (trend_z > 0)
    down = trend & (trend_z < 0)
    mostly_hot = n_hot * 10 >= 9 * t  # at least 90 % of the steps, in integers
    mostly_cold = n_cold * 10 >= 9 * t
    hot_run = _trailing_run(hot)
    cold_run = _trailing_run(cold)
    rules = [
        (mostly_hot & final_hot & up, "intensifying hot spot"),
        (mostly_hot & final_hot & down, "diminishing hot spot"),
        (mostly_hot & final_hot, "persistent hot spot"),
        (mostly_hot, "historical hot spot"),
        (mostly_cold & final_cold & down, "intensifying cold spot"),
        (mostly_cold & final_cold & up, "diminishing cold spot"),
        (mostly_cold & final_cold, "persistent cold spot"),
        (mostly_cold, "historical cold spot"),
        (final_hot & (n_cold > 0), "oscillating hot spot"),
        (final_hot & (n_hot == 1), "new hot spot"),
        (final_hot & (hot_run == n_hot), "consecutive hot spot"),
        (final_hot, "sporadic hot spot"),
        (final_cold & (n_hot > 0), "oscillating cold spot"),
        (final_cold & (n_cold == 1), "new cold spot"),
        (final_cold & (cold_run == n_cold), "consecutive cold spot"),
        (final_cold, "sporadic cold spot"),
    ]
    return np.select([c for c, _ in rules], [name for _, name in rules], default=NO_PATTERN).astype(
        object
    )


def emerging_hot_spots(
    cube: np.ndarray, W: object, *, trend_alpha: float = TREND_ALPHA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Emerging hot spots of a space-time cube of counts (n cells x T steps).

    Gi* of each step with the same spatial weights W, BH FDR bins within each step,
    Mann-Kendall of each cell's z series, then `classify_emerging`.
    Returns (trend_z, trend_p, category).
    """
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 2 or cube.shape[1] < MIN_STEPS:
        raise ValueError(f"the cube must be cells x steps with at least {MIN_STEPS} steps")
    zt, pt = gi_star(cube, W)
    bins_t = np.column_stack([fdr_bins(zt[:, j], pt[:, j]) for j in range(cube.shape[1])])
    trend_z, trend_p = mann_kendall(zt)
    category = classify_emerging(bins_t, trend_z, trend_p, trend_alpha=trend_alpha)
    return trend_z, trend_p, category


# --------------------------------------------------------------------------- time steps


def time_steps(
    times: Iterable[object] | np.ndarray | pd.Series | pd.DatetimeIndex,
    step: str | pd.DateOffset,
    period: tuple[object, object] | None = None,
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Step index of each time, and the start of every step (contiguous, empty ones kept).

    period: (start, end), end exclusive, on the same clock as the times: the steps then cover
    the whole period (a category first reported mid-period still gets every step), and a time
    outside it is refused. Without it the steps span the times themselves.

    step: 'day', 'week' (Monday to Sunday), 'month', or a pandas offset or alias ('14D',
    '6h', 'QS', ...). Steps follow the wall clock of the times' own time zone (convert
    aware timestamps to the local zone first); the first step starts at the start of the
    day, week or month of the earliest time (at midnight of its day for fixed lengths).
    """
    try:
        t = pd.DatetimeIndex(pd.to_datetime(times))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"times must be datetimes: {exc}") from exc
    if t.size == 0:
        raise ValueError("no times")
    if t.isna().any():
        raise ValueError(f"{int(t.isna().sum())} times are missing (NaT)")
    if isinstance(step, str) and step in NAMED_STEPS:
        offset = NAMED_STEPS[step]
    else:
        try:
            offset = pd.tseries.frequencies.to_offset(step)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"step must be 'day', 'week', 'month' or a pandas offset, got {step!r}"
            ) from exc
    tz = t.tz
    wall = t.tz_localize(None) if tz is not None else t
    low, high = wall.min(), wall.max()
    if period is not None:
        try:
            bounds = pd.DatetimeIndex(pd.to_datetime(list(period)))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"period must be two datetimes: {exc}") from exc
        if (bounds.tz is None) != (tz is None):
            raise ValueError("period and times must both carry a time zone or both not")
        bounds = bounds.tz_convert(tz).tz_localize(None) if tz is not None else bounds
        if not bounds[0] < bounds[1]:
            raise ValueError("the period must end after it starts")
        if low < bounds[0] or high >= bounds[1]:
            raise ValueError("some times lie outside the period")
        low, high = bounds[0], bounds[1] - pd.Timedelta(1, "ns")
    first = offset.rollback(low.normalize())
    last = high
    approx = (last - first) / pd.Timedelta(days=1)
    try:
        edges = pd.date_range(first, last, freq=offset)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"step {step!r} cannot cut time into steps: {exc}") from exc
    if edges.size == 0 or edges[0] > low:
        raise ValueError(f"step {step!r} cannot cut time into steps")
    if edges.size > MAX_STEPS:
        raise ValueError(
            f"{edges.size} steps of {step!r} over {approx:.0f} days: at most {MAX_STEPS} allowed"
        )
    # One unit for both: pandas may infer seconds for some inputs and nanoseconds for others.
    idx = np.searchsorted(edges.as_unit("ns").asi8, wall.as_unit("ns").asi8, side="right") - 1
    if tz is not None:
        # a step starting in a repeated hour starts at its first occurrence
        first_time = np.ones(edges.size, dtype=bool)
        edges = edges.tz_localize(tz, ambiguous=first_time, nonexistent="shift_forward")
    return idx.astype(np.int64), edges


# --------------------------------------------------------------------------- analysis


def analyse_points(
    lon: Iterable[float] | np.ndarray,
    lat: Iterable[float] | np.ndarray,
    *,
    resolution: int,
    k: int | None = None,
    study_area: object = None,
    times: Iterable[object] | np.ndarray | pd.Series | None = None,
    step: str | pd.DateOffset | None = None,
    period: tuple[object, object] | None = None,
) -> pd.DataFrame:
    """Gi* hot spots (and, with `times`, emerging hot spots) of lon/lat points on H3 cells.

    Returns one row per H3 cell of the study area, sorted by cell, with columns
    cell (int64), count, z, p, bin (-3..3 after Benjamini-Hochberg FDR); with times= and
    step= also trend_z, trend_p (Mann-Kendall of the cell's per-step z) and category.
    count/z/p/bin are always over the whole period. `attrs` holds resolution, k,
    k_source ('given'/'default'), n_points, n_points_outside (points outside an explicit
    study area, dropped), n_cells, study_area ('k-ring cover'/'cells'/'polygon'), alphas,
    seconds, and with times: step, steps (start of each step), trend_alpha.
    period=(start, end) (end exclusive, same clock as times) makes the steps cover the whole
    period rather than the span of the times. See docs/hotspots.md.
    """
    started = _time.perf_counter()
    resolution = check_resolution(resolution)
    cells = points_to_cells(lon, lat, resolution)
    if cells.size == 0:
        raise ValueError("no points to analyse")
    if (times is None) != (step is None):
        raise ValueError("times and step go together: give both or neither")
    step_idx = steps = None
    if times is not None:
        if isinstance(times, str):
            raise ValueError("times must be one datetime per point")
        tlist = times if hasattr(times, "__len__") else list(times)
        if len(tlist) != cells.size:
            raise ValueError(f"{len(tlist)} times for {cells.size} points")
        step_idx, steps = time_steps(tlist, step, period)
        if steps.size < MIN_STEPS:
            raise ValueError(
                f"the points span {steps.size} step of {step!r}: emerging hot spots need "
                f"at least {MIN_STEPS} (10 or more for a meaningful trend)"
            )
    point_cells = np.unique(cells)
    if k is None:
        k = default_k(point_cells)
        k_source = "default"
    else:
        k = check_k(k)
        k_source = "given"
    area = study_area_cells(study_area, resolution, cells=point_cells, k=k)
    if area.size < 2:
        raise ValueError("the study area must hold at least 2 cells")
    if area.size > MAX_STUDY_CELLS:
        raise ValueError(f"the study area holds {area.size:,} cells (limit {MAX_STUDY_CELLS:,})")
    row = np.minimum(np.searchsorted(area, cells), area.size - 1)
    inside = area[row] == cells
    row = row[inside]
    n = area.size
    counts = np.bincount(row, minlength=n)
    W = neighbourhood(area, k)
    z, p = gi_star(counts, W)
    frame = pd.DataFrame(
        {"cell": area, "count": counts.astype(np.int64), "z": z, "p": p, "bin": fdr_bins(z, p)}
    )
    attrs: dict[str, object] = {
        "resolution": resolution,
        "k": k,
        "k_source": k_source,
        "n_points": int(cells.size),
        "n_points_outside": int((~inside).sum()),
        "n_cells": int(n),
        "study_area": _area_kind(study_area),
        "alphas": CONFIDENCE_ALPHAS,
    }
    if step_idx is not None and steps is not None:
        t = steps.size
        cube = np.bincount(row * t + step_idx[inside], minlength=n * t).reshape(n, t)
        trend_z, trend_p, category = emerging_hot_spots(cube, W)
        frame["trend_z"] = trend_z
        frame["trend_p"] = trend_p
        frame["category"] = category
        attrs.update(
            step=step if isinstance(step, str) else str(step),
            steps=list(steps),
            trend_alpha=TREND_ALPHA,
        )
    attrs["seconds"] = round(_time.perf_counter() - started, 4)
    frame.attrs.update(attrs)
    return frame


def _area_kind(study_area: object) -> str:
    if study_area is None:
        return "k-ring cover"
    if hasattr(study_area, "__geo_interface__"):
        return "polygon"
    return "cells"

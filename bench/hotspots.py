"""Hot spots on H3, end to end: the project's ``analyse_points`` against the path a user of the
libraries would write (h3 per point, a libpysal ``W`` from ``grid_disk``, esda ``G_Local``,
pymannkendall per cell), same process, same data, identical results required.

    .venv/bin/python bench/hotspots.py [--points 1000000] [--demo var/demo/incidents.csv]
                                       [--mk-sample 20000] [--skip-demo]

Two datasets, both at resolution 9: the demo's incidents (``make demo`` builds them; if absent
they are generated into a temporary folder by ``geodata/build.py``) and ``--points`` seeded
synthetic incidents (planted clusters with temporal patterns over an urban background in the
Foshan extent, timestamps over 24 months). Each run goes points → cells, neighbourhoods
(k-ring, self included), Gi* (analytic z, p), FDR + bins, and a 24-step emerging run (Gi* per
step, Mann-Kendall per cell, categories). The demo covers 12 months, so its 24 steps are half
months (``SemiMonthBegin``); the synthetic data uses calendar months.

Both paths use the project's ``classify_emerging`` for the category rules, so only the
statistics differ between them. The baseline is given the project's default k (it does no k
selection). Its per-cell Mann-Kendall loop runs on every cell (about 80 s at 1,000,000
points) unless ``--mk-sample N`` is given and the study area has more than N cells; then it
runs on a seeded sample of N cells, is checked against the project on those, and its time is
extrapolated to all cells (printed as such). Each path is timed once. Peak memory is
tracemalloc's peak (Python objects and numpy buffers) in a separate, untimed run of each path
(the baseline's with its Mann-Kendall loop on 1,000 cells, since that loop only allocates
per-cell temporaries). Last line: JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import pymannkendall
import scipy.stats
from esda.getisord import G_Local
from libpysal.weights import W

import gridops.hotspots as hotspots

ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = 9
STEPS = 24
MEMORY_RUN_MK_CELLS = 1_000
TOLERANCE = 1e-9  # z, p, trend z and trend p: largest absolute difference allowed
# The Foshan extent (lon/lat box of its five districts).
WEST, SOUTH, EAST, NORTH = 112.38, 22.64, 113.42, 23.58


# -- data ----------------------------------------------------------------------------------------


def demo_incidents(path: Path | None) -> pd.DataFrame:
    """The demo's incidents with local (UTC+8) naive timestamps; built into a tmp dir if absent."""
    if path is None or not path.exists():
        out = Path(tempfile.mkdtemp(prefix="gridops-bench-"))
        print(f"no demo incidents at {path}: building them into {out}")
        subprocess.run(
            [sys.executable, str(ROOT / "geodata" / "build.py"), "--out", str(out)], check=True
        )
        path = out / "incidents.csv"
    frame = pd.read_csv(path, usecols=["lon", "lat", "reported_at"])
    local = pd.to_datetime(frame["reported_at"], utc=True).dt.tz_convert("Asia/Shanghai")
    return pd.DataFrame(
        {
            "lon": frame["lon"].to_numpy(float),
            "lat": frame["lat"].to_numpy(float),
            "time": local.dt.tz_localize(None).to_numpy("datetime64[s]"),
        }
    )


def synthetic_incidents(n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` incidents over 24 months: 10 % uniform over the Foshan box, 65 % around 30 town
    centres (Gaussian, σ 1.5-6 km), 25 % in 60 planted clusters (σ 150-400 m) whose monthly
    intensity follows a pattern (steady, rising, fading, new, intermittent)."""
    rng = np.random.default_rng(seed)
    km_lon, km_lat = 102.5, 110.8  # km per degree at 23° N
    n_uniform = n // 10
    n_cluster = n // 4
    n_urban = n - n_uniform - n_cluster
    lon = [rng.uniform(WEST, EAST, n_uniform)]
    lat = [rng.uniform(SOUTH, NORTH, n_uniform)]
    month = [rng.integers(0, STEPS, n_uniform)]

    towns = np.column_stack([rng.uniform(112.6, 113.3, 30), rng.uniform(22.75, 23.45, 30)])
    sigma = rng.uniform(1.5, 6.0, 30)
    weight = rng.pareto(1.5, 30) + 0.2
    town = rng.choice(30, n_urban, p=weight / weight.sum())
    lon.append(towns[town, 0] + rng.normal(0, 1, n_urban) * sigma[town] / km_lon)
    lat.append(towns[town, 1] + rng.normal(0, 1, n_urban) * sigma[town] / km_lat)
    month.append(rng.integers(0, STEPS, n_urban))

    months = np.arange(STEPS)
    patterns = {
        "steady": np.ones(STEPS),
        "rising": 0.2 + months / STEPS,
        "fading": 1.2 - months / STEPS,
        "new": (months >= STEPS - 5).astype(float),
        "intermittent": (months % 4 == 0).astype(float),
    }
    names = list(patterns)
    centres = np.column_stack([rng.uniform(112.7, 113.25, 60), rng.uniform(22.8, 23.3, 60)])
    radius = rng.uniform(0.15, 0.4, 60)
    kind = rng.integers(0, len(names), 60)
    per_cluster = rng.multinomial(n_cluster, np.full(60, 1 / 60))
    for c in range(60):
        profile = patterns[names[kind[c]]]
        size = per_cluster[c]
        lon.append(centres[c, 0] + rng.normal(0, 1, size) * radius[c] / km_lon)
        lat.append(centres[c, 1] + rng.normal(0, 1, size) * radius[c] / km_lat)
        month.append(rng.choice(STEPS, size, p=profile / profile.sum()))

    lon_all = np.clip(np.concatenate(lon), WEST, EAST)
    lat_all = np.clip(np.concatenate(lat), SOUTH, NORTH)
    start = np.datetime64("2024-01-01T00:00:00", "s")
    month_start = (start.astype("datetime64[M]") + np.concatenate(month)).astype("datetime64[s]")
    seconds = rng.integers(0, 28 * 86_400, len(lon_all))  # within the month's first 28 days
    order = rng.permutation(len(lon_all))
    return pd.DataFrame(
        {
            "lon": lon_all[order],
            "lat": lat_all[order],
            "time": (month_start + seconds.astype("timedelta64[s]"))[order],
        }
    )


# -- measuring -----------------------------------------------------------------------------------


def traced_peak_mb(run: Callable[[], object]) -> float:
    """Peak of the memory traced by tracemalloc (Python objects and numpy buffers) during
    ``run``, in MB. Run apart from the timed runs: tracing slows Python-heavy code."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


class Steps:
    """Wall-clock time of named steps, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


# -- the project's path --------------------------------------------------------------------------


def project_end_to_end(data: pd.DataFrame, step: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One ``analyse_points`` call, as a user makes it: k by the default rule, static Gi* over
    the whole period plus the emerging run."""
    lon, lat, times = data["lon"].to_numpy(), data["lat"].to_numpy(), data["time"].to_numpy()

    def run() -> pd.DataFrame:
        return hotspots.analyse_points(lon, lat, resolution=RESOLUTION, times=times, step=step)

    started = time.perf_counter()
    frame = run()
    seconds = time.perf_counter() - started
    return frame, {"seconds": seconds, "peak_mb": traced_peak_mb(run)}


def project_pieces(data: pd.DataFrame, step: Any) -> dict[str, Any]:
    """The same analysis through the public pieces, timed step by step (the breakdown)."""
    steps = Steps()
    cells = hotspots.points_to_cells(data["lon"].to_numpy(), data["lat"].to_numpy(), RESOLUTION)
    steps.lap("points_to_cells")
    occupied, occupied_counts = np.unique(cells, return_counts=True)
    steps.lap("counts")
    k = hotspots.default_k(occupied)
    steps.lap("default_k")
    study = hotspots.kring_cover(occupied, k)
    weights = hotspots.neighbourhood(study, k)
    steps.lap("neighbourhood")
    counts = np.zeros(study.size, dtype=np.int64)
    counts[np.searchsorted(study, occupied)] = occupied_counts
    z, p = hotspots.gi_star(counts, weights)
    steps.lap("gi_star")
    bins = hotspots.fdr_bins(z, p)
    steps.lap("fdr_bins")
    step_of_point, starts = hotspots.time_steps(data["time"].to_numpy(), step)
    t = starts.size
    cube = np.bincount(
        np.searchsorted(study, cells) * t + step_of_point, minlength=study.size * t
    ).reshape(study.size, t)
    steps.lap("cube")
    step_z, step_p = hotspots.gi_star(cube, weights)
    steps.lap("gi_star_per_step")
    step_bins = np.column_stack([hotspots.fdr_bins(step_z[:, j], step_p[:, j]) for j in range(t)])
    steps.lap("fdr_bins_per_step")
    trend_z, trend_p = hotspots.mann_kendall(step_z)
    steps.lap("mann_kendall")
    category = hotspots.classify_emerging(step_bins, trend_z, trend_p)
    steps.lap("categories")
    return {
        "steps": steps.seconds,
        "k": k,
        "cells": study,
        "count": counts,
        "z": z,
        "p": p,
        "bin": bins,
        "step_starts": list(starts),
        "step_z": step_z,
        "step_bins": step_bins,
        "trend_z": trend_z,
        "trend_p": trend_p,
        "category": category,
    }


# -- the baseline: what a user of h3, pandas, libpysal, esda, scipy and pymannkendall writes ------


def baseline_bins(z: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy), then ±3/±2/±1 at 99/95/90 %."""
    q = scipy.stats.false_discovery_control(p, method="bh")
    level = np.where(q <= 0.01, 3, np.where(q <= 0.05, 2, np.where(q <= 0.10, 1, 0)))
    return (np.sign(z) * level).astype(np.int8)


def baseline_gi(y: np.ndarray, w: W) -> tuple[np.ndarray, np.ndarray]:
    """esda's analytic Gi* with binary weights (its default row standardisation deflates z);
    no permutations. esda's ``p_norm`` is one-sided: the two-sided p is twice it."""
    g = G_Local(y, w, transform="B", star=True, permutations=0)
    return g.Zs, 2 * g.p_norm


def baseline_step_starts(times: pd.Series, step: str) -> tuple[pd.Series, pd.DatetimeIndex]:
    """Start of each point's step and every step's start ('month', or 'semimonth': the 1st
    and the 15th)."""
    month = times.dt.to_period("M").dt.start_time
    if step == "month":
        return month, pd.date_range(month.min(), month.max(), freq="MS")
    start = month + pd.to_timedelta(np.where(times.dt.day >= 15, 14, 0), unit="D")
    return start, pd.date_range(start.min(), start.max(), freq="SMS")


def baseline(data: pd.DataFrame, k: int, step: str, mk_sample: int) -> dict[str, Any]:
    """k is given (the project's default k), so the baseline does no k selection."""
    steps = Steps()
    cells = [
        h3.latlng_to_cell(la, lo, RESOLUTION)
        for la, lo in zip(data["lat"].tolist(), data["lon"].tolist(), strict=True)
    ]
    steps.lap("points_to_cells")
    counts = pd.Series(cells).value_counts()
    steps.lap("counts")
    study_set: set[str] = set()
    for cell in counts.index:
        study_set.update(h3.grid_disk(cell, k))
    study = sorted(study_set)
    neighbors = {c: [n for n in h3.grid_disk(c, k) if n in study_set] for c in study}
    w = W(neighbors, id_order=study, silence_warnings=True)
    steps.lap("neighbourhood")
    y = counts.reindex(study, fill_value=0).to_numpy(float)
    z, p = baseline_gi(y, w)
    steps.lap("gi_star")
    bins = baseline_bins(z, p)
    steps.lap("fdr_bins")

    point_step, all_steps = baseline_step_starts(pd.Series(data["time"]), step)
    frame = pd.DataFrame({"cell": cells, "step": point_step.to_numpy()})
    cube = frame.groupby(["cell", "step"]).size().unstack(fill_value=0)
    cube = cube.reindex(index=study, columns=all_steps, fill_value=0)
    steps.lap("cube")
    step_z = np.empty(cube.shape)
    step_p = np.empty(cube.shape)
    for t in range(cube.shape[1]):
        step_z[:, t], step_p[:, t] = baseline_gi(cube.iloc[:, t].to_numpy(float), w)
    steps.lap("gi_star_per_step")
    step_bins = np.column_stack(
        [baseline_bins(step_z[:, t], step_p[:, t]) for t in range(cube.shape[1])]
    )
    steps.lap("fdr_bins_per_step")

    rows = np.arange(len(study))
    if 0 < mk_sample < len(study):
        rows = np.sort(np.random.default_rng(1).choice(len(study), mk_sample, replace=False))
    trend_z = np.full(len(study), np.nan)
    trend_p = np.full(len(study), np.nan)
    for i in rows:
        result = pymannkendall.original_test(step_z[i])
        trend_z[i], trend_p[i] = result.z, result.p
    steps.lap("mann_kendall")
    # The category rules are the project's (shared), so only the statistics paths differ.
    category = np.full(len(study), "", dtype=object)
    category[rows] = hotspots.classify_emerging(step_bins[rows], trend_z[rows], trend_p[rows])
    steps.lap("categories")
    # Not timed above: how much of one G_Local call is libpysal rebuilding the W's sparse
    # matrix (setting the transform, as G_Local does on every call, drops the cached one).
    rebuild_started = time.perf_counter()
    w.transform = "B"
    _ = w.sparse
    w_rebuild = time.perf_counter() - rebuild_started
    return {
        "steps": steps.seconds,
        "w_sparse_rebuild_s": w_rebuild,
        "cells": np.array([h3.str_to_int(c) for c in study], dtype=np.int64),
        "count": y.astype(np.int64),
        "z": z,
        "p": p,
        "bin": bins,
        "step_starts": list(all_steps),
        "step_z": step_z,
        "step_bins": step_bins,
        "mk_rows": rows,
        "trend_z": trend_z,
        "trend_p": trend_p,
        "category": category,
    }


def timed_baseline(data: pd.DataFrame, k: int, step: str, mk_sample: int) -> dict[str, Any]:
    started = time.perf_counter()
    result = baseline(data, k, step, mk_sample)
    result["seconds"] = time.perf_counter() - started
    # The per-cell Mann-Kendall loop only allocates per-cell temporaries: 1,000 cells of it
    # are enough for the memory run, which keeps that run short.
    result["peak_mb"] = traced_peak_mb(lambda: baseline(data, k, step, MEMORY_RUN_MK_CELLS))
    n_cells, n_mk = len(result["cells"]), len(result["mk_rows"])
    if n_mk < n_cells:
        # Sampled Mann-Kendall: scale the loop (and the end to end time) to every cell.
        extra = result["steps"]["mann_kendall"] * (n_cells / n_mk - 1)
        result["steps"]["mann_kendall"] += extra
        result["seconds"] += extra
        result["extrapolated"] = f"mann_kendall: {n_mk} of {n_cells} cells, scaled up"
    return result


# -- checking and reporting ----------------------------------------------------------------------


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float)), initial=0.0))


def compare(frame: pd.DataFrame, pieces: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The end to end frame against the baseline, the per-step figures of the breakdown
    against the baseline's, and the breakdown against the end to end frame."""
    order = np.argsort(base["cells"])  # frame row i is baseline row order[i]
    b = {key: base[key][order] for key in ("cells", "count", "z", "p", "bin", "step_z")}
    b["step_bins"] = base["step_bins"][order]
    check: dict[str, Any] = {
        "cells_equal": bool(np.array_equal(frame["cell"].to_numpy(), b["cells"])),
    }
    if not check["cells_equal"]:
        check["identical"] = False
        return check
    sampled = np.zeros(order.size, dtype=bool)
    sampled[base["mk_rows"]] = True
    mk = sampled[order]
    check.update(
        counts_equal=bool(np.array_equal(frame["count"].to_numpy(), b["count"])),
        max_abs_dz=max_diff(frame["z"], b["z"]),
        max_abs_dp=max_diff(frame["p"], b["p"]),
        bins_equal=bool(np.array_equal(frame["bin"].to_numpy(), b["bin"])),
        steps_equal=[pd.Timestamp(s) for s in pieces["step_starts"]]
        == [pd.Timestamp(s) for s in base["step_starts"]],
        max_abs_dz_per_step=max_diff(pieces["step_z"], b["step_z"]),
        step_bins_equal=bool(np.array_equal(pieces["step_bins"], b["step_bins"])),
        max_abs_dtrend_z=max_diff(frame["trend_z"].to_numpy()[mk], base["trend_z"][order][mk]),
        max_abs_dtrend_p=max_diff(frame["trend_p"].to_numpy()[mk], base["trend_p"][order][mk]),
        categories_equal=bool(
            np.array_equal(
                frame["category"].to_numpy()[mk].astype(str),
                base["category"][order][mk].astype(str),
            )
        ),
        cells_checked_for_trend=int(mk.sum()),
        breakdown_matches_end_to_end=bool(
            np.array_equal(pieces["cells"], frame["cell"].to_numpy())
            and np.array_equal(pieces["bin"], frame["bin"].to_numpy())
            and np.array_equal(pieces["category"], frame["category"].to_numpy())
            and max_diff(pieces["z"], frame["z"]) == 0.0
            and max_diff(pieces["trend_z"], frame["trend_z"]) == 0.0
        ),
    )
    check["identical"] = bool(
        check["counts_equal"]
        and check["bins_equal"]
        and check["steps_equal"]
        and check["step_bins_equal"]
        and check["categories_equal"]
        and check["breakdown_matches_end_to_end"]
        and max(
            check["max_abs_dz"],
            check["max_abs_dp"],
            check["max_abs_dz_per_step"],
            check["max_abs_dtrend_z"],
            check["max_abs_dtrend_p"],
        )
        <= TOLERANCE
    )
    return check


STEP_NAMES = (
    "points_to_cells",
    "counts",
    "default_k",
    "neighbourhood",
    "gi_star",
    "fdr_bins",
    "cube",
    "gi_star_per_step",
    "fdr_bins_per_step",
    "mann_kendall",
    "categories",
)


def print_table(
    name: str,
    frame: pd.DataFrame,
    e2e: dict[str, Any],
    pieces: dict[str, Any],
    base: dict[str, Any],
    check: dict[str, Any],
    step_name: str,
) -> None:
    print(
        f"\n{name}: {frame.attrs['n_points']:,} points -> {len(frame):,} cells at resolution "
        f"{RESOLUTION}, k = {frame.attrs['k']} (project default, given to the baseline), "
        f"{len(frame.attrs['steps'])} steps ({step_name})"
    )
    print(f"  {'step':22s} {'project s':>10s} {'baseline s':>11s} {'ratio':>8s}")
    for step in STEP_NAMES:
        p = pieces["steps"].get(step)
        b = base["steps"].get(step)
        ratio = f"{b / p:7.1f}x" if p and b else "       -"
        print(
            f"  {step:22s} {p if p is not None else float('nan'):10.3f} "
            f"{b if b is not None else float('nan'):11.3f} {ratio}"
        )
    p_sum, b_sum = sum(pieces["steps"].values()), sum(base["steps"].values())
    print(f"  {'sum of the steps':22s} {p_sum:10.3f} {b_sum:11.3f} {b_sum / p_sum:7.1f}x")
    print(
        f"  {'end to end':22s} {e2e['seconds']:10.3f} {base['seconds']:11.3f} "
        f"{base['seconds'] / e2e['seconds']:7.1f}x   (project: one analyse_points call)"
    )
    print(f"  {'peak traced MB':22s} {_mb(e2e['peak_mb']):>10s} {_mb(base['peak_mb']):>11s}")
    per_call = base["steps"]["gi_star_per_step"] / len(base["step_starts"])
    print(
        f"  baseline G_Local: {per_call:.2f} s per call, of which libpysal rebuilding the W's "
        f"sparse matrix {base['w_sparse_rebuild_s']:.2f} s (measured apart)"
    )
    if "extrapolated" in base:
        print(f"  baseline EXTRAPOLATED: {base['extrapolated']}")
    if not check["cells_equal"]:
        print("  check: the two paths have different study cells -> NOT identical")
        return
    print(
        f"  check: cells {_eq(check['cells_equal'])}, counts {_eq(check['counts_equal'])}, "
        f"max|dz| {check['max_abs_dz']:.1e}, max|dp| {check['max_abs_dp']:.1e}, "
        f"bins {_eq(check['bins_equal'])}, step starts {_eq(check['steps_equal'])}, "
        f"max|dz| per step {check['max_abs_dz_per_step']:.1e}, "
        f"step bins {_eq(check['step_bins_equal'])},\n"
        f"         trend max|dz| {check['max_abs_dtrend_z']:.1e} max|dp| "
        f"{check['max_abs_dtrend_p']:.1e} and categories {_eq(check['categories_equal'])} "
        f"on {check['cells_checked_for_trend']:,} cells, breakdown = end to end "
        f"{_eq(check['breakdown_matches_end_to_end'])} -> "
        f"{'IDENTICAL' if check['identical'] else 'NOT IDENTICAL'} (tolerance {TOLERANCE:g})"
    )


def _eq(flag: bool) -> str:
    return "equal" if flag else "DIFFER"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def run_dataset(
    name: str, data: pd.DataFrame, step: Any, baseline_step: str, step_name: str, mk_sample: int
) -> dict[str, Any]:
    gc.collect()
    frame, e2e = project_end_to_end(data, step)
    gc.collect()
    pieces = project_pieces(data, step)
    gc.collect()
    base = timed_baseline(data, int(frame.attrs["k"]), baseline_step, mk_sample)
    check = compare(frame, pieces, base)
    print_table(name, frame, e2e, pieces, base, check, step_name)
    figures: dict[str, Any] = {
        "points": int(frame.attrs["n_points"]),
        "cells": len(frame),
        "k": int(frame.attrs["k"]),
        "steps": len(frame.attrs["steps"]),
        "project_s": round(e2e["seconds"], 3),
        "baseline_s": round(base["seconds"], 3),
        "ratio": round(base["seconds"] / e2e["seconds"], 1),
        "peak_mb": None if e2e["peak_mb"] is None else round(e2e["peak_mb"], 1),
        "baseline_peak_mb": None if base["peak_mb"] is None else round(base["peak_mb"], 1),
        "identical": check["identical"],
        "project_steps_s": {k: round(v, 3) for k, v in pieces["steps"].items()},
        "baseline_steps_s": {k: round(v, 3) for k, v in base["steps"].items()},
        "baseline_w_sparse_rebuild_s": round(base["w_sparse_rebuild_s"], 3),
        "max_abs_dz": check.get("max_abs_dz"),
        "max_abs_dp": check.get("max_abs_dp"),
        "hot_cells": int((frame["bin"] > 0).sum()),
        "cold_cells": int((frame["bin"] < 0).sum()),
    }
    if "extrapolated" in base:
        figures["baseline_extrapolated"] = base["extrapolated"]
    return figures


def warm_up(data: pd.DataFrame) -> None:
    """Run both paths once on a few points: lazy imports and caches are not timed."""
    small = data.iloc[:3000]
    hotspots.analyse_points(
        small["lon"].to_numpy(),
        small["lat"].to_numpy(),
        resolution=RESOLUTION,
        times=small["time"].to_numpy(),
        step="month",
    )
    project_pieces(small, "month")
    baseline(small, 2, "month", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--demo", type=Path, default=ROOT / "var" / "demo" / "incidents.csv")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument(
        "--mk-sample",
        type=int,
        default=0,
        help="run the baseline's per-cell Mann-Kendall loop on this many cells and scale its "
        "time up (0: every cell)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)

    demo = None if args.skip_demo else demo_incidents(args.demo)
    synthetic = synthetic_incidents(args.points)
    warm_up(synthetic)
    figures: dict[str, Any] = {"bench": "hotspots"}
    if demo is not None:
        demo_figures = run_dataset(
            "demo incidents",
            demo,
            pd.offsets.SemiMonthBegin(),
            "semimonth",
            "half months over 12 months",
            args.mk_sample,
        )
    synthetic_figures = run_dataset(
        "synthetic incidents",
        synthetic,
        "month",
        "month",
        "months over 24 months",
        args.mk_sample,
    )
    figures.update(
        {key: synthetic_figures[key] for key in ("project_s", "baseline_s", "ratio", "peak_mb")}
    )
    figures.update(resolution=RESOLUTION, synthetic=synthetic_figures)
    if demo is not None:
        figures["demo"] = demo_figures
    figures["identical"] = all(
        f["identical"] for f in (synthetic_figures, figures.get("demo", synthetic_figures))
    )
    figures["note"] = (
        "headline = synthetic set; project = one analyse_points call (default k, whole-period "
        "Gi* + emerging); baseline = h3 string API per point, pandas counts, libpysal W from "
        "grid_disk, esda G_Local(star=True, transform='B', permutations=0), scipy BH, "
        "pymannkendall per cell; both use the project's classify_emerging; peak_mb = "
        "tracemalloc peak in a separate untimed run"
    )
    print(json.dumps(figures))
    if not figures["identical"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Getis-Ord Gi* (analytic) and Benjamini-Hochberg confidence bins.

Gi* as in ArcGIS Hot Spot Analysis and Getis & Ord (1995), with the cell itself in its
neighbourhood. For cell i with weights w_ij (row i of W, self included):

    z_i = (sum_j w_ij x_j - xbar * W_i) / (S * sqrt((n * S1_i - W_i**2) / (n - 1)))

where W_i = sum_j w_ij, S1_i = sum_j w_ij**2, n the number of cells of the study area,
xbar = mean(x) and S = sqrt(mean(x**2) - xbar**2) over ALL cells of the study area (empty
cells count as zeros). p is two-sided from the standard normal: p = 2 * (1 - Phi(|z|)).
This equals esda `G_Local(y, w, star=True, transform="B")`'s `Zs`; esda's `p_norm` is the
one-sided tail, so p = 2 * p_norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy import stats

CONFIDENCE_ALPHAS = (0.10, 0.05, 0.01)  # bins 1, 2, 3: 90, 95 and 99 % confidence


def gi_star(
    counts: Sequence[float] | np.ndarray, W: sp.spmatrix | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic Gi* z-scores and two-sided p-values of `counts` under weights `W`.

    counts: n values (one per cell of the study area), or an n x T array whose columns
    are analysed separately (the time steps of a space-time cube; z and p are then n x T).
    W is n x n (sparse or dense), row i holding cell i's weights with the diagonal set
    (Gi*, self included): `neighbourhood(cells, k)` gives the binary k-ring matrix. Where
    the statistic is undefined (every value equal, or a neighbourhood that is the whole
    study area) z is 0 and p is 1: no evidence of clustering.
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError("counts must be 1-d (cells) or 2-d (cells x steps)")
    n = x.shape[0]
    if n < 2:
        raise ValueError("Gi* needs a study area of at least 2 cells")
    if not np.isfinite(x).all():
        raise ValueError("counts must be finite")
    W = sp.csr_matrix(W, dtype=np.float64)
    if W.shape != (n, n):
        raise ValueError(f"W is {W.shape[0]} x {W.shape[1]} but there are {n} cells")
    wi = np.asarray(W.sum(axis=1)).ravel()
    s1 = np.asarray(W.multiply(W).sum(axis=1)).ravel()
    xbar = x.mean(axis=0)
    s = x.std(axis=0)  # population standard deviation (divides by n), as Getis-Ord and ArcGIS
    col = (slice(None), None) if x.ndim == 2 else slice(None)
    num = W @ x - np.multiply.outer(wi, xbar) if x.ndim == 2 else W @ x - xbar * wi
    spread = np.sqrt(np.clip((n * s1 - wi**2) / (n - 1), 0.0, None))[col]
    den = spread * s
    z = np.zeros_like(num)
    ok = den > 0
    z[ok] = num[ok] / den[ok]
    p = 2.0 * stats.norm.sf(np.abs(z))
    return z, p


def bh_adjust(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): q_(i) = min_{j >= i} m p_(j) / j,
    capped at 1. A p-value is significant at FDR level alpha exactly when q <= alpha.
    Same as scipy.stats.false_discovery_control(p, method="bh")."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in 0..1")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def fdr_bins(
    z: Sequence[float] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    alphas: Sequence[float] = CONFIDENCE_ALPHAS,
    *,
    fdr: bool = True,
) -> np.ndarray:
    """ArcGIS-style confidence bins: +-3 / +-2 / +-1 for hot (z > 0) or cold (z < 0) spots
    significant at 99 / 95 / 90 % confidence, 0 otherwise.

    With fdr=True (default) significance is judged on the Benjamini-Hochberg adjusted
    p-values over all cells, i.e. a BH procedure run at each level alpha separately.
    `alphas` are the levels of bins 1, 2, 3 (largest first).
    """
    z = np.asarray(z, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if z.shape != p.shape or z.ndim != 1:
        raise ValueError("z and p must be 1-d and of the same length")
    alphas = tuple(float(a) for a in alphas)
    if list(alphas) != sorted(alphas, reverse=True) or not all(0 < a < 1 for a in alphas):
        raise ValueError("alphas must lie in (0, 1) and decrease, e.g. (0.10, 0.05, 0.01)")
    q = bh_adjust(p) if fdr else p
    level = np.zeros(z.size, dtype=np.int8)
    for a in alphas:
        level += q <= a
    return (np.sign(z).astype(np.int8) * level).astype(np.int8)

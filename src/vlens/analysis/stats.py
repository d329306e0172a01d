"""Vectorised statistics for the analysis: one call tests every (stratum, concept) at once.

scipy.stats.fisher_exact tests one 2x2 table per call; with 500 concepts x 100 classes that
loop dominates the run, so the tests here work on whole count arrays (hypergeometric tail
for the one-sided Fisher test, the Cochran-Mantel-Haenszel statistic over strata, and the
Benjamini-Hochberg step-up rule), all with numpy broadcasting.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def fisher_greater(a, n_present, k_events, n_total) -> np.ndarray:
    """One-sided Fisher exact p-value that events are enriched among `present` rows.

    For each table: `n_total` rows, `k_events` of them events (e.g. errors), `n_present`
    rows carry the concept and `a` of those are events. p = P(X >= a), X hypergeometric.
    Arrays broadcast; empty tables give p = 1.
    """
    a = np.asarray(a, dtype=np.float64)
    n_present = np.asarray(n_present, dtype=np.float64)
    k_events = np.asarray(k_events, dtype=np.float64)
    n_total = np.asarray(n_total, dtype=np.float64)
    a, n_present, k_events, n_total = np.broadcast_arrays(a, n_present, k_events, n_total)
    p = np.ones(a.shape, dtype=np.float64)
    ok = (n_total > 0) & (n_present > 0) & (k_events > 0) & (a > 0)
    if ok.any():
        p[ok] = stats.hypergeom.sf(a[ok] - 1, n_total[ok], k_events[ok], n_present[ok])
    return np.clip(p, 0.0, 1.0)


def cmh_greater(a, n_present, k_events, n_total, axis: int = 0):
    """Cochran-Mantel-Haenszel test over strata (summed along `axis`), one-sided (greater).

    Same table layout as `fisher_greater`; strata with fewer than 2 rows are ignored.
    Returns (p_value, common_odds_ratio) with the continuity-corrected statistic, so a
    concept whose association only comes from co-occurring with a hard stratum (class) gets
    no signal: within every stratum the expected count is already matched.
    """
    a = np.asarray(a, dtype=np.float64)
    n1 = np.asarray(n_present, dtype=np.float64)
    m1 = np.asarray(k_events, dtype=np.float64)
    n = np.asarray(n_total, dtype=np.float64)
    a, n1, m1, n = np.broadcast_arrays(a, n1, m1, n)
    valid = n > 1
    n_safe = np.where(valid, n, 2.0)
    expected = np.where(valid, n1 * m1 / n_safe, 0.0)
    var = np.where(valid, n1 * (n - n1) * m1 * (n - m1) / (n_safe**2 * (n_safe - 1)), 0.0)
    s_obs = np.where(valid, a, 0.0).sum(axis=axis)
    s_exp = expected.sum(axis=axis)
    s_var = var.sum(axis=axis)
    diff = s_obs - s_exp - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s_var > 0, diff / np.sqrt(s_var), 0.0)
    p = np.where(s_var > 0, stats.norm.sf(z), 1.0)
    b = n1 - a  # present, no event
    c = m1 - a  # event, absent
    d = n - n1 - c
    with np.errstate(divide="ignore", invalid="ignore"):
        num = np.where(valid, a * d / n_safe, 0.0).sum(axis=axis)
        den = np.where(valid, b * c / n_safe, 0.0).sum(axis=axis)
        odds = np.where(den > 0, num / den, np.where(num > 0, np.inf, 1.0))
    return np.clip(p, 0.0, 1.0), odds


def binom_greater(k, n, p0) -> np.ndarray:
    """One-sided binomial test P(X >= k), X ~ Bin(n, p0); arrays broadcast, n = 0 gives 1."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n, p0 = np.broadcast_arrays(k, n, np.asarray(p0, dtype=np.float64))
    out = np.ones(k.shape)
    ok = (n > 0) & (k > 0)
    if ok.any():
        out[ok] = stats.binom.sf(k[ok] - 1, n[ok], p0[ok])
    return np.clip(out, 0.0, 1.0)


def bh_fdr(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted q-values (same shape as the input; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    q = np.full(flat.shape, np.nan)
    ok = ~np.isnan(flat)
    m = int(ok.sum())
    if m == 0:
        return q.reshape(p.shape)
    pv = flat[ok]
    order = np.argsort(pv, kind="stable")
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.clip(ranked, 0.0, 1.0)
    q[ok] = out
    return q.reshape(p.shape)


def otsu_threshold(hist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Otsu thresholds for many histograms at once.

    `hist` is (k x bins) counts, `edges` (k x bins+1) bin edges. Returns one threshold per
    row: the bin edge that maximises the between-class variance (a 2-class split of the
    score distribution, no labels needed).
    """
    hist = np.asarray(hist, dtype=np.float64)
    centers = 0.5 * (edges[:, :-1] + edges[:, 1:])
    total = hist.sum(axis=1, keepdims=True)
    total = np.where(total > 0, total, 1.0)
    w0 = np.cumsum(hist, axis=1) / total
    mu_cum = np.cumsum(hist * centers, axis=1) / total
    mu_t = mu_cum[:, -1:]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu_cum) ** 2 / (w0 * w1)
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    between = between[:, :-1]
    # empty bins between two modes give a plateau of equal values: take its middle
    top = between >= between.max(axis=1, keepdims=True) * (1 - 1e-12)
    first = np.argmax(top, axis=1)
    last = top.shape[1] - 1 - np.argmax(top[:, ::-1], axis=1)
    best = (first + last) // 2
    return edges[np.arange(len(best)), best + 1]

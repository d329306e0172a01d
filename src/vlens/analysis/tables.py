"""Streaming count tables: one pass over a concept matrix gives every count the tests need.

Rows are grouped by a small integer key (here split x label x prediction); for each group
and concept we sum the binarised concept. Rows are visited in key order, chunk by chunk,
and summed with `np.add.reduceat`, so memory stays at one chunk and no per-concept pandas
groupby is needed. Everything downstream (concept x error, spurious cues, confusion pairs,
the held-out split) is arithmetic on these small arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vlens.analysis.stats import otsu_threshold
from vlens.errors import ConfigError

CHUNK = 32768


def iter_chunks(n: int, chunk: int = CHUNK):
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def concept_histograms(mat: np.ndarray, bins: int = 256, chunk: int = CHUNK):
    """Per-column histograms (m x bins) and edges (m x bins+1), streamed over row chunks.

    uint8 matrices use one bin per value; float matrices are binned between each column's
    min and max (a first streaming pass). NaNs are ignored.
    """
    n, m = mat.shape
    if mat.dtype == np.uint8:
        bins = 256
        lo = np.zeros(m)
        hi = np.full(m, 256.0)
    else:
        lo = np.full(m, np.inf)
        hi = np.full(m, -np.inf)
        for a, b in iter_chunks(n, chunk):
            x = mat[a:b]
            with np.errstate(invalid="ignore"):
                lo = np.fmin(lo, np.nanmin(x, axis=0)) if b > a else lo
                hi = np.fmax(hi, np.nanmax(x, axis=0)) if b > a else hi
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), hi, 1.0)
        hi = np.where(hi > lo, hi + 1e-6 * np.maximum(1.0, np.abs(hi)), lo + 1.0)
    width = (hi - lo) / bins
    hist = np.zeros(m * bins, dtype=np.int64)
    offs = (np.arange(m) * bins)[None, :]
    if mat.dtype != np.uint8:  # keep the int64 index array at ~32 MB
        chunk = max(1, min(chunk, (1 << 22) // max(m, 1)))
    for a, b in iter_chunks(n, chunk):
        x = mat[a:b]
        if mat.dtype == np.uint8:  # one bincount per column of the transposed chunk
            xt = np.ascontiguousarray(x.T)
            h2 = hist.reshape(m, bins)
            for j in range(m):
                h2[j] += np.bincount(xt[j], minlength=256)
        else:
            q = np.floor((x - lo) / width)
            ok = np.isfinite(q)
            q = np.clip(np.where(ok, q, 0), 0, bins - 1).astype(np.int64) + offs
            hist += np.bincount(q[ok], minlength=m * bins)
    edges = lo[:, None] + width[:, None] * np.arange(bins + 1)[None, :]
    return hist.reshape(m, bins), edges


def concept_thresholds(mat: np.ndarray, method: str = "otsu", quantile: float = 0.2,
                       value: float | None = None, chunk: int = CHUNK,
                       max_rows: int = 100_000) -> np.ndarray:
    """One presence threshold per concept column (present = score >= threshold).

    - "otsu": 2-class split of each column's score histogram (default; unsupervised, so it
      uses no error information and cannot leak into the tests);
    - "quantile": the top `quantile` fraction of each column is "present";
    - "fixed": the same `value` for every column (in the matrix's units; uint8 = 0..255).
    Histograms use at most `max_rows` evenly spaced rows (a distribution estimate needs no
    more; it keeps thresholds cheap at 1M rows).
    """
    m = mat.shape[1]
    if method == "fixed":
        if value is None:
            raise ConfigError("threshold method 'fixed' needs a value")
        return np.full(m, float(value))
    if method not in ("otsu", "quantile"):
        raise ConfigError(f"unknown threshold method {method!r} (otsu, quantile, fixed)")
    if mat.shape[0] > max_rows:
        mat = mat[np.linspace(0, mat.shape[0] - 1, max_rows).astype(np.int64)]
    hist, edges = concept_histograms(mat, chunk=chunk)
    if method == "otsu":
        return otsu_threshold(hist, edges)
    if not 0 < quantile < 1:
        raise ConfigError(f"quantile must be in (0, 1), got {quantile}")
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1] / np.maximum(hist.sum(1, keepdims=True), 1)
    # last bin whose upper tail still holds >= quantile of the mass
    k = np.maximum((tail >= quantile).sum(axis=1) - 1, 0)
    return edges[np.arange(m), k]


def binarise(x: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Presence (uint8 0/1) of each concept in a chunk; NaN scores count as absent."""
    if x.dtype == np.uint8:
        t = np.ceil(thr)
        out = (x >= np.clip(t, 0, 255).astype(np.uint8)[None, :]).view(np.uint8)
        if (t > 255).any():  # threshold above every possible score: never present
            out[:, t > 255] = 0
        return out
    with np.errstate(invalid="ignore"):
        return (x >= thr[None, :].astype(x.dtype)).view(np.uint8)


def group_sums(keys: np.ndarray, n_groups: int, fn: Callable[[np.ndarray], np.ndarray],
               m: int, chunk: int = CHUNK, dtype=np.int64) -> np.ndarray:
    """Sum `fn(rows)` (len(rows) x m) within each key group; returns (n_groups x m).

    Rows are visited in key order, so a chunk holds a few contiguous groups, each summed
    with one `ndarray.sum(axis=0)` straight from uint8 into int32 (measured: ~10x faster
    than a float32 conversion + BLAS product and ~40x faster than `np.add.reduceat` with an
    integer upcast). Rows with a negative key are skipped.
    """
    keep = np.flatnonzero(keys >= 0)
    order = keep[np.argsort(keys[keep], kind="stable")]
    integer = np.issubdtype(dtype, np.integer)
    out = np.zeros((n_groups, m), dtype=np.int64 if integer else np.float64)
    for a, b in iter_chunks(len(order), chunk):
        rows = order[a:b]
        k = keys[rows]
        x = fn(rows)
        cuts = np.flatnonzero(k[1:] != k[:-1]) + 1
        bounds = np.r_[0, cuts, len(rows)]
        acc = np.int32 if integer and len(rows) < 2**31 else None
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            out[k[s]] += x[s:e].sum(axis=0, dtype=acc)
    return out.astype(dtype, copy=False)


@dataclass
class CountTables:
    """Counts by (split, label, pred): `n` is (2, C, C); `present` is (2, C, C, m)."""

    n: np.ndarray
    present: np.ndarray

    def merged(self, split: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(n, present) for one split (0/1) or both (None)."""
        if split is None:
            return self.n.sum(0), self.present.sum(0)
        return self.n[split], self.present[split]


def count_tables(label: np.ndarray, pred: np.ndarray, split: np.ndarray, n_classes: int,
                 mat: np.ndarray, thr: np.ndarray, chunk: int = CHUNK) -> CountTables:
    """Stream the concept matrix once; return the (split, label, pred, concept) counts."""
    c = n_classes
    keys = (split.astype(np.int64) * c + label) * c + pred
    m = mat.shape[1]
    present = group_sums(keys, 2 * c * c, lambda rows: binarise(mat[rows], thr), m, chunk)
    n = np.bincount(keys, minlength=2 * c * c).reshape(2, c, c)
    return CountTables(n=n, present=present.reshape(2, c, c, m))

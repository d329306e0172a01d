"""The XAI confusion matrix and confusion pairs (label errors: `analysis.label_errors`)."""

from __future__ import annotations

import numpy as np

from vlens.analysis.inputs import AnalysisInput
from vlens.errors import ConfigError

CELLS = ("correct_high", "correct_low", "wrong_high", "wrong_low")


def xai_matrix(inp: AnalysisInput, threshold: float = 2.5, max_ids: int | None = None) -> dict:
    """Correct/wrong x judge focus high (>= threshold) / low, overall and per class.

    Samples without a focus score (NaN) are left out and counted in `n_missing_focus`.
    Rates are shares of the samples that have a focus score. `max_ids` caps the ids listed
    per cell (None = all).
    """
    if inp.focus is None:
        raise ConfigError("the XAI matrix needs judge focus scores (vlm.parquet focus_score)")
    has = ~np.isnan(inp.focus)
    high = np.zeros(inp.n, dtype=bool)
    high[has] = inp.focus[has] >= threshold
    corr = inp.correct
    masks = {"correct_high": corr & high & has, "correct_low": corr & ~high & has,
             "wrong_high": ~corr & high & has, "wrong_low": ~corr & ~high & has}
    total = int(has.sum())
    cells = {}
    for name in CELLS:
        idx = np.flatnonzero(masks[name])
        ids = inp.ids[idx] if max_ids is None else inp.ids[idx[:max_ids]]
        cells[name] = {"count": int(len(idx)), "rate": len(idx) / total if total else 0.0,
                       "sample_ids": ids.tolist()}
    # per class (by true label): one bincount per cell
    per = {name: np.bincount(inp.label[masks[name]], minlength=len(inp.classes))
           for name in CELLS}
    per_class = {c: {name: int(per[name][k]) for name in CELLS}
                 for k, c in enumerate(inp.classes) if sum(per[n][k] for n in CELLS) > 0}
    return {"threshold": float(threshold), "n_missing_focus": int(inp.n - total),
            "cells": cells, "per_class": per_class}


def confusion_counts(inp: AnalysisInput) -> np.ndarray:
    c = len(inp.classes)
    return np.bincount(inp.label * c + inp.pred, minlength=c * c).reshape(c, c)


def top_confusions(inp: AnalysisInput, k: int = 5, min_count: int = 5) -> list[tuple]:
    """The k most frequent (true, pred) pairs with true != pred and at least min_count."""
    cm = confusion_counts(inp).astype(np.int64)
    np.fill_diagonal(cm, 0)
    flat = np.argsort(-cm, axis=None, kind="stable")[:k]
    out = []
    for f in flat:
        a, b = divmod(int(f), cm.shape[0])
        if cm[a, b] >= min_count:
            out.append((a, b, int(cm[a, b])))
    return out


def pair_concepts(n: np.ndarray, present: np.ndarray, a: int, b: int, names: list[str],
                  top: int = 5) -> list[tuple[str, float, float, float]]:
    """Concepts that separate A-predicted-as-B from correctly classified A.

    Returns (concept, difference in prevalence, prevalence in A->B, prevalence in A->A),
    largest positive differences first (from the count tables, no extra pass).
    """
    n_ab, n_aa = n[a, b], n[a, a]
    if n_ab == 0 or n_aa == 0:
        return []
    p_ab = present[a, b] / n_ab
    p_aa = present[a, a] / n_aa
    diff = p_ab - p_aa
    order = np.argsort(-diff, kind="stable")[:top]
    return [(names[j], float(diff[j]), float(p_ab[j]), float(p_aa[j])) for j in order
            if diff[j] > 0]

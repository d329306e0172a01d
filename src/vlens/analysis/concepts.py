"""Concept x error, spurious cues (concept x prediction) and attention cues.

All tests read the (split, label, pred, concept) count tables from `tables.py`:
- concept x error, per class: one-sided Fisher exact test of "errors are enriched among
  samples of class c showing the concept"; across classes: Cochran-Mantel-Haenszel
  stratified by class. Within-class testing is what keeps a concept that only co-occurs
  with a hard class from being reported: inside every class its error rate is unchanged.
- spurious cue for class c: among samples whose label is NOT c, is "predicted c" enriched
  when the concept is present? CMH stratified by the true label, so the test compares like
  with like (P(pred = c | concept) beyond what P(label = c | concept) explains).
- attention cue for predicted class c: how often the attended region (grounding) scores
  the concept above the class's own concept, compared with the other predicted classes'
  attended regions (one-sided Fisher; the rate must also clear `p0`, binomial).
Discovery uses split 0, confirmation re-runs the same test on split 1; q-values are
Benjamini-Hochberg over every test of the discovery pass (all kinds together).
"""

from __future__ import annotations

import numpy as np

from vlens.analysis.stats import binom_greater, cmh_greater, fisher_greater


def _smoothed_ratio(a, n_a, b, n_b):
    """((a + .5)/(n_a + 1)) / ((b + .5)/(n_b + 1)): finite lift even with empty cells."""
    return ((a + 0.5) / (n_a + 1.0)) / ((b + 0.5) / (n_b + 1.0))


def concept_error_arrays(n: np.ndarray, present: np.ndarray) -> dict:
    """Per (class, concept) error statistics from one split's counts.

    `n` is (C, C) label x pred, `present` (C, C, m). Returns arrays of shape (C, m) and the
    CMH p-value/odds ratio across classes of shape (m,).
    """
    c = n.shape[0]
    big_n = n.sum(1).astype(np.float64)  # samples per class
    errs = big_n - np.diag(n)  # errors per class
    p_cnt = present.sum(1).astype(np.float64)  # (C, m) with concept
    a = p_cnt - present[np.arange(c), np.arange(c)]  # errors with concept
    with np.errstate(divide="ignore", invalid="ignore"):
        err_with = np.where(p_cnt > 0, a / p_cnt, np.nan)
        n_without = big_n[:, None] - p_cnt
        err_without = np.where(n_without > 0, (errs[:, None] - a) / n_without, np.nan)
    lift = _smoothed_ratio(a, p_cnt, errs[:, None] - a, n_without)
    p = fisher_greater(a, p_cnt, errs[:, None], big_n[:, None])
    cmh_p, odds = cmh_greater(a, p_cnt, errs[:, None], big_n[:, None], axis=0)
    return {"support": p_cnt, "errors_with": a, "err_with": err_with,
            "err_without": err_without, "lift": lift, "p": p, "cmh_p": cmh_p, "cmh_or": odds,
            "n_class": big_n}


def spurious_arrays(n: np.ndarray, present: np.ndarray) -> dict:
    """Per (target class c, concept) statistics of "predicted c although labelled otherwise".

    Strata are true labels l != c. Shapes: (C, m) for everything indexed by target class.
    """
    c = n.shape[0]
    big_n = n.sum(1).astype(np.float64)  # per true label
    p_cnt = present.sum(1).astype(np.float64)  # (L, m)
    # tables indexed [l, c, j]: stratum l, target c
    a = present.astype(np.float64)
    k = n.astype(np.float64)[:, :, None]
    not_same = (np.arange(c)[:, None] != np.arange(c)[None, :])[:, :, None]
    nn = np.where(not_same, big_n[:, None, None], 0.0)
    pp = np.where(not_same, p_cnt[:, None, :], 0.0)
    aa = np.where(not_same, a, 0.0)
    kk = np.where(not_same, k, 0.0)
    p, odds = cmh_greater(aa, pp, kk, nn, axis=0)  # (C, m)
    s_a = aa.sum(0)
    s_p = pp.sum(0)
    s_k = kk.sum(0)
    s_n = nn.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_with = np.where(s_p > 0, s_a / s_p, np.nan)
        rate_without = np.where(s_n - s_p > 0, (s_k - s_a) / (s_n - s_p), np.nan)
        tot_p = p_cnt.sum(0)  # samples with the concept
        p_pred = np.where(tot_p > 0, present.sum(0) / np.maximum(tot_p, 1), np.nan)  # (C, m)
        p_label = np.where(tot_p > 0, p_cnt / np.maximum(tot_p, 1), np.nan)
    lift = _smoothed_ratio(s_a, s_p, s_k - s_a, s_n - s_p)
    # do the concept's errors go to c more than other errors do? (separates a cue for c
    # from a concept that only makes a class hard, with errors spread over all classes)
    diag = present[np.arange(c), np.arange(c)].astype(np.float64)  # (L, m) correct w/ concept
    err_with = np.where(not_same[:, :, 0][:, :, None], (p_cnt - diag)[:, None, :], 0.0).sum(0)
    n_err = (big_n - np.diag(n))[:, None]  # errors per stratum
    err_all = np.where(not_same[:, :, 0], n_err, 0.0).sum(0)[:, None]
    share_lift = _smoothed_ratio(s_a, err_with, s_k - s_a, err_all - err_with)
    return {"share_lift": share_lift, "support": s_p, "flips": s_a, "rate_with": rate_with,
            "rate_without": rate_without,
            "lift": lift, "p": p, "odds": odds, "p_pred_given_concept": p_pred,
            "p_label_given_concept": p_label}


def attention_arrays(cnt: np.ndarray, n_valid: np.ndarray, p0: float) -> dict:
    """Per (predicted class, concept): share of attended regions showing the concept more
    than the object, tested against the same share in the OTHER classes' attended regions
    (one-sided Fisher). The contrast matters: a masked view is black outside the attended
    region by construction, so concepts such as "black" or "cropped" describe every view;
    only a concept enriched for one class says what the model looks at for that class.
    `p0` is the floor the class's own rate must also clear (binomial). cnt (C, m), n_valid (C,).
    """
    nv = n_valid.astype(np.float64)[:, None]
    cnt = cnt.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(nv > 0, cnt / nv, np.nan)
    tot_cnt = cnt.sum(0, keepdims=True)
    tot_n = float(nv.sum())
    n_b = np.broadcast_to(nv, cnt.shape)
    p_vs_others = fisher_greater(cnt, n_b, np.broadcast_to(tot_cnt, cnt.shape), tot_n)
    p_floor = binom_greater(cnt, n_b, p0)
    lift = _smoothed_ratio(cnt, n_b, tot_cnt - cnt, tot_n - n_b)
    return {"rate": rate, "count": cnt, "n": n_b, "p": np.maximum(p_vs_others, p_floor),
            "lift": lift}


def attention_counts(grounding: np.ndarray, pred: np.ndarray, split: np.ndarray,
                     obj_cols: np.ndarray, n_classes: int, chunk: int,
                     thr: np.ndarray) -> tuple:
    """Stream the grounding matrix: per (split, pred class, concept) count of samples whose
    attended region shows the concept (score >= its threshold `thr`) AND scores it above
    the predicted class's own concept."""
    from vlens.analysis.tables import binarise, group_sums

    col = obj_cols[pred]
    keys = np.where(col >= 0, split.astype(np.int64) * n_classes + pred, -1)
    m = grounding.shape[1]

    def fn(rows):
        x = grounding[rows]
        obj = x[np.arange(len(rows)), col[rows]]
        with np.errstate(invalid="ignore"):
            return ((x > obj[:, None]) & binarise(x, thr).view(bool)).view(np.uint8)

    cnt = group_sums(keys, 2 * n_classes, fn, m, chunk).reshape(2, n_classes, m)
    n_valid = np.bincount(keys[keys >= 0], minlength=2 * n_classes).reshape(2, n_classes)
    return cnt, n_valid

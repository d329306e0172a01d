"""Possible label errors from two views of each sample, with a noisy-label likelihood.

View 1, the model: its class probabilities (`AnalysisInput.probs`, from the run's top-k;
without them, `confidence` on the predicted class and the rest spread evenly).
View 2, the VLM: its whole-image score of every class name (the class-name columns of
concepts.parquet) as log-odds.

The views are combined as a product of experts, q(c) ∝ P_model(c)^a · exp(b · logit_vlm(c)),
and the given label is modelled as noisy: with probability 1 - eps it is the class drawn
from q, with probability eps a uniformly drawn other class (symmetric label noise). a, b >= 0
and eps in [0, 0.5] are fitted by maximum likelihood of the GIVEN labels on the discovery
half (scipy L-BFGS-B). A view that does not explain the labels gets a small weight, so
neither view is trusted by fiat, and the fitted eps is the estimated noise rate. A sample is
a candidate when the posterior probability that its label is wrong,
    eps (1 - q(y)) / (C - 1)  /  [(1 - eps) q(y) + eps (1 - q(y)) / (C - 1)],
exceeds `min_posterior` (0.5: more likely wrong than right); candidates are ranked by it,
and the suggested label is the most probable other class. Why the noise term: fitting q to
noisy labels without it flattens q (the mislabelled samples pull it towards uniform), which
hides exactly the samples we look for.

The noise rate is tested on each half (likelihood ratio, eps = 0 vs free; the null sits on
the boundary, so p = 0.5 · P(chi2_1 > LR)); the finding is confirmed when the held-out half,
refitted on its own, also rejects eps = 0. Each candidate also says whether it lies off the
diagonal of the confident joint (Northcutt, Jiang & Chuang, "Confident learning", JAIR 2021:
per-class thresholds = mean q(c) over samples labelled c) as a second, stricter opinion.

Written here rather than with cleanlab (not a dependency): the two-view noisy-label fit is
not part of cleanlab, and the confident joint is a few array operations.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from vlens.analysis.inputs import AnalysisInput

_EPS = 1e-6


def model_probabilities(inp: AnalysisInput) -> np.ndarray | None:
    """(n, C) class probabilities of the model: `inp.probs` when the run has them, else
    `confidence` on the predicted class and the remainder spread over the other classes."""
    c = len(inp.classes)
    if inp.probs is not None:
        p = np.nan_to_num(inp.probs.astype(np.float64), nan=0.0)
        s = p.sum(1, keepdims=True)
        return np.where(s > 0, p / np.maximum(s, 1e-12), 1.0 / c)
    if inp.confidence is None or c < 2:
        return None
    conf = np.clip(np.nan_to_num(inp.confidence.astype(np.float64), nan=1.0 / c), 0.0, 1.0)
    p = np.repeat(((1.0 - conf) / (c - 1))[:, None], c, axis=1)
    p[np.arange(inp.n), inp.pred] = conf
    return p


def vlm_class_logits(concepts: np.ndarray | None, class_cols: np.ndarray) -> np.ndarray | None:
    """(n, C) log-odds of the VLM's whole-image score of each class name, or None when some
    class has no class-name concept column (the VLM view would not cover every class)."""
    if concepts is None or len(class_cols) == 0 or (class_cols < 0).any():
        return None
    s = concepts[:, class_cols].astype(np.float64)
    if concepts.dtype == np.uint8:
        s = (s + 0.5) / 256.0  # bin centres: never exactly 0 or 1
    s = np.clip(np.nan_to_num(s, nan=0.5), _EPS, 1 - _EPS)
    return np.log(s) - np.log1p(-s)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def fit_noisy(views: list[np.ndarray], y: np.ndarray, noise: bool = True
               ) -> tuple[np.ndarray, float, float]:
    """(weights, eps, mean NLL) maximising the likelihood of labels `y` under
    softmax(sum_k w_k view_k) with symmetric label noise eps (eps fixed at 0 when `noise`
    is False). Views are (n, C) log-probabilities or logits."""
    rows = np.arange(len(y))
    v = np.stack(views)
    c = v.shape[2]

    def nll(th):
        w = th[: len(views)]
        eps = th[-1] if noise else 0.0
        qy = np.exp(_log_softmax(np.tensordot(w, v, axes=1))[rows, y])
        return float(-np.log((1 - eps) * qy + eps * (1 - qy) / (c - 1) + 1e-300).mean())

    x0 = np.r_[np.ones(len(views)), 0.05 if noise else []]
    bounds = [(0.0, 50.0)] * len(views) + ([(0.0, 0.5)] if noise else [])
    res = minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    w = res.x[: len(views)]
    return w, float(res.x[-1]) if noise else 0.0, float(res.fun)


def noise_test(views: list[np.ndarray], y: np.ndarray) -> dict:
    """Likelihood-ratio test of eps = 0 on these rows: {eps, lr, p_value, weights}."""
    from scipy.stats import chi2

    w1, eps, nll1 = fit_noisy(views, y, noise=True)
    _, _, nll0 = fit_noisy(views, y, noise=False)
    lr = max(0.0, 2.0 * len(y) * (nll0 - nll1))
    return {"eps": eps, "lr": lr, "p_value": float(0.5 * chi2.sf(lr, 1)) if lr > 0 else 1.0,
            "weights": w1}


def wrong_label_posterior(q: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """P(label wrong | x, y) under symmetric noise eps (see module doc)."""
    c = q.shape[1]
    qy = q[np.arange(len(y)), y]
    flip = eps * (1 - qy) / (c - 1)
    return flip / np.maximum((1 - eps) * qy + flip, 1e-300)


def combined_log_probs(views: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    return _log_softmax(np.tensordot(np.asarray(w, dtype=np.float64), np.stack(views), axes=1))


def confident_thresholds(q: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class c: mean q(c) over samples labelled c (inf when no sample has label c)."""
    cnt = np.bincount(y, minlength=n_classes)
    tot = np.bincount(y, weights=q[np.arange(len(y)), y], minlength=n_classes)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.inf)


def confident_joint_flags(q: np.ndarray, y: np.ndarray, thr: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(flag, suggested): a sample is off the diagonal of the confident joint when the most
    probable class among those reaching their threshold is not its label."""
    above = q >= thr[None, :]
    sugg = np.where(above, q, -1.0).argmax(1)
    return above.any(1) & (sugg != y), sugg


def _fit_rows(rows: np.ndarray, max_fit: int, seed: int) -> np.ndarray:
    if len(rows) > max_fit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_fit, replace=False))
    return rows


def label_error_candidates(inp: AnalysisInput, class_cols: np.ndarray, *,
                           max_candidates: int = 200, min_posterior: float = 0.5,
                           max_fit: int = 20000, seed: int = 0) -> tuple[list[dict], dict]:
    """Possible label errors with their evidence, most probable first, and a summary
    `info` (views, weights, eps, the noise test on each half, counts); see module doc.

    Returns ([], info) when neither view is available. Each candidate: id, label, pred,
    suggested, posterior (P(label wrong)), confidence, p_label / p_suggested (combined
    view), model_p_label, vlm_p_label / vlm_p_suggested, vlm_top, vlm_agrees_with ("pred",
    "label" or "other": the VLM's top class), vlm_margin (VLM score of the suggested class
    minus the label's), confident_joint (also flagged by the confident joint), focus_score
    (evidence only: the judge's focus, None without one).
    """
    c = len(inp.classes)
    y = inp.label
    pm = model_probabilities(inp)
    lv = vlm_class_logits(inp.concepts, class_cols)
    views, names = [], []
    if pm is not None:
        views.append(np.log(np.clip(pm, _EPS, 1.0)))
        names.append("model")
    if lv is not None:
        views.append(lv)
        names.append("vlm")
    info: dict = {"views": names}
    if not views or c < 2 or inp.n < 4 * c:
        return [], info
    halves = [np.flatnonzero(inp.split == s) for s in (0, 1)]
    disc = halves[0] if len(halves[0]) >= 2 * c else np.arange(inp.n)
    tests = [noise_test([v[r] for v in views], y[r]) if len(r) >= 2 * c else None
             for r in (_fit_rows(disc, max_fit, seed), _fit_rows(halves[1], max_fit, seed))]
    fit = tests[0]
    w, eps = fit["weights"], fit["eps"]
    info.update({"weights": {k: round(float(x), 4) for k, x in zip(names, w, strict=True)},
                 "noise_rate": eps,
                 "tests": [None if t is None else {k: t[k] for k in ("eps", "lr", "p_value")}
                           for t in tests]})
    q = np.exp(combined_log_probs(views, w))
    post = wrong_label_posterior(q, y, eps)
    other = np.where(np.eye(c, dtype=bool)[y], -1.0, q)
    sugg = other.argmax(1)
    flag = post > min_posterior
    cj, _ = confident_joint_flags(q, y, confident_thresholds(q[disc], y[disc], c))
    info["n_flagged"] = int(flag.sum())
    info["n_flagged_by_half"] = [int((flag & (inp.split == s)).sum()) for s in (0, 1)]
    idx = np.flatnonzero(flag)
    idx = idx[np.argsort(-post[idx], kind="stable")][:max_candidates]
    pv = np.exp(_log_softmax(w[names.index("vlm")] * lv)) if lv is not None else None
    conf, focus = inp.confidence, inp.focus
    out = []
    for i in idx:
        cand = {"id": str(inp.ids[i]), "label": inp.classes[y[i]],
                "pred": inp.classes[inp.pred[i]], "suggested": inp.classes[sugg[i]],
                "posterior": float(post[i]),
                "confidence": float(conf[i]) if conf is not None else None,
                "p_label": float(q[i, y[i]]), "p_suggested": float(q[i, sugg[i]]),
                "model_p_label": float(pm[i, y[i]]) if pm is not None else None,
                "confident_joint": bool(cj[i]),
                "focus_score": (float(focus[i]) if focus is not None
                                and np.isfinite(focus[i]) else None)}
        if lv is not None:
            top = int(lv[i].argmax())
            cand.update({
                "vlm_top": inp.classes[top],
                "vlm_agrees_with": ("pred" if top == inp.pred[i] else
                                    "label" if top == y[i] else "other"),
                "vlm_p_label": float(pv[i, y[i]]), "vlm_p_suggested": float(pv[i, sugg[i]]),
                "vlm_margin": float(_score(inp.concepts, i, class_cols[sugg[i]])
                                    - _score(inp.concepts, i, class_cols[y[i]]))})
        out.append(cand)
    return out, info


def _score(mat: np.ndarray, i: int, j: int) -> float:
    v = float(mat[i, j])
    return v / 255.0 if mat.dtype == np.uint8 else v

"""Failure slices: coherent groups of errors in VLM embedding space, named by concepts.

Two methods, scored side by side by `vlens.analysis.bench`:

- `domino_baseline`: the plain Domino-style slicer (Eyuboglu et al. 2022): one Gaussian
  mixture over all samples on [PCA(embedding), w * one-hot(label), w * confidence-weighted
  one-hot(pred)]; components ranked by error rate; a slice's members are ranked by the
  component's posterior.
- `error_slices` (ours): per class (a slice is "what these errors of class c share"), a
  mixture over [PCA(embedding), PCA(concept log-odds), w * error] fitted on the DISCOVERY
  half with the number of components chosen by BIC; a component is a slice when its error
  rate beats the rest of the class (one-sided Fisher); it is re-tested on the held-out
  half (confirmation); its members are its errors ranked by posterior; its name is the
  concepts whose prevalence among members most exceeds their prevalence among correctly
  handled samples of the class.
Fitting uses at most `max_fit` rows per mixture (all errors first), so 1M rows stay fast.

Why concept features (`concept_features`): the image embedding is dominated by what the
class looks like; the whole-image concept scores name attributes (size, lighting, ...)
directly, and a few whitened principal components of their log-odds give the mixture
axes on which hard groups separate. On the bench's rare small+dark slice this raised P@10
from 0.40 to 0.58 (mean over 2 worlds x 4 mixture seeds; docs/analysis.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from vlens.analysis.stats import fisher_greater
from vlens.analysis.tables import binarise


def reduce_embeddings(emb: np.ndarray, dim: int = 16, seed: int = 0,
                      max_fit: int = 50000) -> np.ndarray:
    """PCA (fitted on a subsample) to `dim` whitened components, float32."""
    n, d = emb.shape
    dim = min(dim, d, max(1, n - 1))
    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(n, size=min(n, max_fit), replace=False) if n > max_fit else slice(None)
    x = np.nan_to_num(emb.astype(np.float32, copy=False))
    pca = PCA(n_components=dim, whiten=True, random_state=seed).fit(x[fit_rows])
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, 200000):
        out[a:a + 200000] = pca.transform(x[a:a + 200000])
    return out


def concept_features(concepts: np.ndarray, dim: int = 4, seed: int = 0,
                     max_fit: int = 20000, chunk: int = 32768) -> np.ndarray:
    """(n, dim) float32: whitened PCA of the standardised log-odds of the concept scores
    (uint8 = score x 255 or float in [0, 1]). Scores are read at uint8 resolution and the
    log-odds come from a 256-entry table (a gather, no transcendental per element: 1M x 500
    stays fast); PCA is fitted on <= max_fit rows and applied chunk by chunk."""
    n, m = concepts.shape
    dim = min(dim, m, max(1, n - 1))
    lut = np.log((np.arange(256) + 0.5) / 256.0) - np.log1p(-(np.arange(256) + 0.5) / 256.0)
    lut = lut.astype(np.float32)

    def logodds(block: np.ndarray) -> np.ndarray:
        if block.dtype != np.uint8:
            block = np.rint(np.clip(np.nan_to_num(block, nan=0.5), 0, 1) * 255).astype(np.uint8)
        return lut[block]

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, max_fit, replace=False)) if n > max_fit else slice(None)
    fit = logodds(concepts[rows])
    mu, sd = fit.mean(0), fit.std(0) + 1e-6
    pca = PCA(n_components=dim, whiten=True, svd_solver="randomized",
              random_state=seed).fit((fit - mu) / sd)
    # fold the standardisation and whitening into one (m, dim) matrix
    w = (pca.components_ / sd).T / np.sqrt(pca.explained_variance_)
    off = ((mu + sd * pca.mean_) / sd) @ (pca.components_.T / np.sqrt(pca.explained_variance_))
    w, off = w.astype(np.float32), off.astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, chunk):
        out[a:a + chunk] = logodds(concepts[a:a + chunk]) @ w - off
    return out


def _fit_rows(err: np.ndarray, rows: np.ndarray, max_fit: int, rng) -> np.ndarray:
    """All error rows (up to max_fit/2) plus random correct rows, up to max_fit."""
    e = rows[err[rows]]
    c = rows[~err[rows]]
    if len(e) > max_fit // 2:
        e = rng.choice(e, max_fit // 2, replace=False)
    room = max_fit - len(e)
    if len(c) > room:
        c = rng.choice(c, room, replace=False)
    return np.sort(np.r_[e, c])


def name_slice(members: np.ndarray, concepts: np.ndarray | None, thr: np.ndarray | None,
               correct_prev: np.ndarray | None, names: list[str], top: int = 3) -> list:
    """[(concept, prevalence among members - among correct same-class samples)], top first."""
    if concepts is None or correct_prev is None or len(members) == 0:
        return []
    prev = binarise(concepts[np.sort(members)], thr).mean(axis=0)
    diff = prev - correct_prev
    order = np.argsort(-diff, kind="stable")[:top]
    return [[names[j], round(float(diff[j]), 4)] for j in order if diff[j] > 0]


def _marginal_posterior(g: GaussianMixture, x: np.ndarray) -> np.ndarray:
    """Posterior over components of a diagonal mixture using only the first x.shape[1] dims."""
    d = x.shape[1]
    mu = g.means_[:, :d]
    prec = 1.0 / g.covariances_[:, :d]
    const = -0.5 * np.log(2 * np.pi / prec).sum(-1) + np.log(g.weights_)
    out = np.empty((len(x), g.n_components))
    for a in range(0, len(x), 50000):
        xb = x[a:a + 50000].astype(np.float64)
        # expanded quadratic form: a (rows x comps) matmul, no rows x comps x dims array
        ll = -0.5 * ((xb**2) @ prec.T - 2 * xb @ (mu * prec).T + (mu**2 * prec).sum(1))
        ll += const
        ll -= ll.max(1, keepdims=True)
        p = np.exp(ll)
        out[a:a + 50000] = p / p.sum(1, keepdims=True)
    return out


def error_slices(z: np.ndarray, label: np.ndarray, err: np.ndarray, split: np.ndarray,
                 classes: list[str], ids: np.ndarray, max_components: int = 6,
                 error_weight: float = 3.0, min_errors: int = 10, min_size: int = 5,
                 alpha: float = 0.05, max_fit: int = 20000, seed: int = 0,
                 min_lift: float = 1.5) -> list[dict]:
    """Our error-aware slices (see module doc). Returns slice dicts without names."""
    rng = np.random.default_rng(seed)
    out = []
    for c, cname in enumerate(classes):
        rows = np.flatnonzero(label == c)
        disc = rows[split[rows] == 0]
        if err[disc].sum() < min_errors:
            continue
        fit = _fit_rows(err, disc, max_fit, rng)
        feats = np.c_[z[fit], error_weight * err[fit]]
        best, best_bic = None, np.inf
        for k in range(1, max_components + 1):
            if k * 4 > len(fit):
                break
            g = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-3,
                                max_iter=100, init_params="k-means++").fit(feats)
            bic = g.bic(feats)
            if bic < best_bic:
                best, best_bic = g, bic
        if best is None:
            continue
        # the error term found the components; membership and error rates use the
        # embedding alone (marginal of the mixture), so a component is judged by whether
        # its region of embedding space is error-prone, not by the error feature itself
        post = _marginal_posterior(best, z[rows])
        comp = post.argmax(1)
        for k in range(best.n_components):
            inside = comp == k
            stats = {}
            for s, tag in ((0, "discover"), (1, "confirm")):
                sm = split[rows] == s
                n_in = int((inside & sm).sum())
                e_in = int((inside & sm & err[rows]).sum())
                n_all = int(sm.sum())
                e_all = int((sm & err[rows]).sum())
                p = float(fisher_greater(e_in, n_in, e_all, n_all))
                rest = (e_all - e_in) / max(n_all - n_in, 1)
                stats[tag] = {"n": n_in, "errors": e_in, "error_rate": e_in / max(n_in, 1),
                              "rest_error_rate": rest, "p_value": p}
            m_rows = rows[inside & err[rows]]
            if len(m_rows) < min_size or stats["discover"]["p_value"] > alpha:
                continue
            # an effect-size floor: with many rows a tiny difference is "significant"
            if stats["discover"]["error_rate"] < min_lift * stats["discover"]["rest_error_rate"]:
                continue
            score = post[inside & err[rows], k]
            order = np.argsort(-score, kind="stable")
            conf = stats["confirm"]
            out.append({
                "class_index": c, "class": cname, "member_rows": m_rows[order],
                "member_scores": score[order], "size": int(len(m_rows)),
                "error_rate": float((stats["discover"]["errors"] + conf["errors"])
                                    / max(stats["discover"]["n"] + conf["n"], 1)),
                "p_value": stats["discover"]["p_value"],
                "confirmed": bool(conf["p_value"] <= alpha
                                  and conf["error_rate"] > conf["rest_error_rate"]),
                "confirmation": {"split": "holdout", "statistic": "error_rate",
                                 "value": conf["error_rate"], "rest": conf["rest_error_rate"],
                                 "p_value": conf["p_value"]},
            })
    out.sort(key=lambda s: (not s["confirmed"], s["p_value"], -s["size"]))
    return out


def domino_baseline(z: np.ndarray, label: np.ndarray, pred: np.ndarray, err: np.ndarray,
                    confidence: np.ndarray | None, n_classes: int, n_slices: int = 10,
                    weight: float = 10.0, max_fit: int = 50000, seed: int = 0) -> list[dict]:
    """Plain Domino-style slicer (see module doc); slices sorted by error rate."""
    rng = np.random.default_rng(seed)
    n = len(label)
    conf = np.ones(n, np.float32) if confidence is None else np.nan_to_num(confidence, nan=1.0)

    def feats(rows):
        y = np.eye(n_classes, dtype=np.float32)[label[rows]]
        yh = np.eye(n_classes, dtype=np.float32)[pred[rows]] * conf[rows, None]
        return np.c_[z[rows], weight * y, weight * yh]

    fit = rng.choice(n, size=min(n, max_fit), replace=False)
    g = GaussianMixture(min(n_slices, len(fit)), covariance_type="diag", random_state=seed,
                        reg_covar=1e-3, max_iter=200).fit(feats(fit))
    post = np.concatenate([g.predict_proba(feats(np.arange(a, min(n, a + 200000))))
                           for a in range(0, n, 200000)])
    comp = post.argmax(1)
    out = []
    for k in range(g.n_components):
        inside = comp == k
        if not inside.any():
            continue
        order = np.argsort(-post[:, k], kind="stable")[: max(int(inside.sum()), 10)]
        out.append({"member_rows": order, "member_scores": post[order, k],
                    "size": int(inside.sum()), "error_rate": float(err[inside].mean())})
    out.sort(key=lambda s: -s["error_rate"])
    return out


def describe_slices(slices: list[dict], ids: np.ndarray, label: np.ndarray,
                    correct: np.ndarray, describe: Callable | None, k: int = 4) -> None:
    """Optional generative description: `describe(member_ids, nonmember_ids) -> str | None`
    gets a few members and a few correctly handled samples of the same class; None or an
    empty text leaves the slice without a description (its concept name stays)."""
    if describe is None:
        return
    for s in slices:
        rows = s["member_rows"][:k]
        pool = np.flatnonzero((label == s["class_index"]) & correct)[:k]
        text = describe(ids[rows].tolist(), ids[pool].tolist())
        if text is not None and str(text).strip():  # None / empty: no usable description
            s["description"] = str(text).strip()

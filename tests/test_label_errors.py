"""Label-error candidates: two views (model, VLM) + a symmetric-noise likelihood."""

from __future__ import annotations

import numpy as np
import pytest

from vlens.analysis import AnalysisConfig, AnalysisInput, analyze
from vlens.analysis import label_errors as L
from vlens.analysis.bench import score_findings
from vlens.analysis.inputs import topk_probabilities
from vlens.errors import ConfigError, DataError

CLASSES = ["circle", "square", "star", "heart"]


def _world(n=2000, flip=0.12, seed=0, vlm_strength=4.0, model_strength=1.5, probs=True):
    """True classes; the VLM scores the true class name high (noisy); the model's probs lean
    to the true class; a share `flip` of labels is replaced by a random other class."""
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    true = rng.integers(0, c, n)
    flipped = rng.random(n) < flip
    label = np.where(flipped, (true + rng.integers(1, c, n)) % c, true)
    logit = rng.normal(0, 1, (n, c)) + vlm_strength * np.eye(c)[true] - 2.0
    scores = (1 / (1 + np.exp(-logit))).astype(np.float32)
    z = rng.normal(0, 1, (n, c)) + model_strength * np.eye(c)[true]
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    pred = p.argmax(1)
    extra = rng.random((n, 2)).astype(np.float32)
    inp = AnalysisInput(ids=[f"s{i}" for i in range(n)], classes=CLASSES, label=label, pred=pred,
                        confidence=p.max(1), concepts=np.c_[scores, extra],
                        concept_names=[*CLASSES, "grass", "dark"],
                        probs=p.astype(np.float32) if probs else None)
    return inp, np.flatnonzero(flipped)


def _cands(inp, **kw):
    return L.label_error_candidates(inp, inp.class_columns(inp.concept_names),
                                    max_candidates=10**6, **kw)


def test_noisy_labels_are_found_and_the_noise_rate_estimated():
    inp, flipped = _world(flip=0.12)
    cands, info = _cands(inp)
    assert info["views"] == ["model", "vlm"]
    assert info["noise_rate"] == pytest.approx(0.12, abs=0.03)
    assert info["tests"][0]["p_value"] < 1e-6 and info["tests"][1]["p_value"] < 1e-6
    found = {c["id"] for c in cands}
    truth = {f"s{i}" for i in flipped}
    assert len(found & truth) / len(truth) >= 0.85
    assert len(found & truth) / len(found) >= 0.85
    post = [c["posterior"] for c in cands]
    assert post == sorted(post, reverse=True) and min(post) > 0.5
    c0 = cands[0]
    assert c0["suggested"] != c0["label"] and c0["p_suggested"] > c0["p_label"]
    assert c0["vlm_agrees_with"] in ("pred", "other") and c0["vlm_margin"] > 0
    assert c0["focus_score"] is None  # no judge scores in this input
    capped, info2 = L.label_error_candidates(inp, inp.class_columns(inp.concept_names),
                                             max_candidates=20)
    assert [c["id"] for c in capped] == [c["id"] for c in cands[:20]]
    assert info2["n_flagged"] == len(cands) == sum(info2["n_flagged_by_half"])


def test_clean_labels_give_no_candidates_and_no_significant_noise():
    inp, _ = _world(flip=0.0, seed=1)
    cands, info = _cands(inp)
    assert cands == []
    assert info["noise_rate"] < 0.01 and info["tests"][0]["p_value"] > 0.05


def test_a_view_that_does_not_explain_the_labels_gets_little_weight():
    inp, _ = _world(flip=0.1, seed=2, model_strength=0.0)  # the model is pure noise
    _, info = _cands(inp)
    assert info["weights"]["model"] < 0.2 * info["weights"]["vlm"]


def test_model_view_alone_when_a_class_has_no_vlm_column():
    inp, _ = _world(flip=0.1, seed=3)
    cols = inp.class_columns(inp.concept_names)
    cols[2] = -1
    cands, info = L.label_error_candidates(inp, cols)
    assert info["views"] == ["model"]
    assert all("vlm_top" not in c for c in cands)
    # neither view: nothing to say
    inp.probs, inp.confidence = None, None
    assert L.label_error_candidates(inp, cols) == ([], {"views": []})


def test_confidence_only_model_view():
    inp = AnalysisInput.from_arrays(["a", "b"], ["x", "y"], ["x", "x"], confidence=[0.7, 0.4],
                                    classes=None)
    # classes sorted: x, y; pred codes both x
    p = L.model_probabilities(inp)
    assert np.allclose(p, [[0.7, 0.3], [0.4, 0.6]])


def test_posterior_and_confident_joint_exact():
    q = np.array([[0.1, 0.6, 0.3], [0.8, 0.1, 0.1], [0.5, 0.4, 0.1]])
    y = np.array([0, 0, 1])
    post = L.wrong_label_posterior(q, y, 0.1)
    # row 0: flip = 0.1 * 0.9 / 2 = 0.045; right = 0.9 * 0.1 = 0.09 -> 1/3
    assert post[0] == pytest.approx(1 / 3)
    assert post[1] == pytest.approx(0.1 * 0.2 / 2 / (0.9 * 0.8 + 0.1 * 0.2 / 2))
    thr = L.confident_thresholds(q, y, 3)
    assert thr[0] == pytest.approx((0.1 + 0.8) / 2) and thr[1] == pytest.approx(0.4)
    assert np.isinf(thr[2])  # no sample labelled 2
    flag, sugg = L.confident_joint_flags(q, y, thr)
    assert flag.tolist() == [True, False, True] and sugg.tolist() == [1, 0, 0]


def test_topk_probabilities_spread_the_rest_and_ignore_unknown_classes():
    p = topk_probabilities([["b", "a"], ["zz", "c"], None], [[0.6, 0.3], [0.5, 0.2], None],
                           ["a", "b", "c", "d"])
    assert np.allclose(p[0], [0.3, 0.6, 0.05, 0.05])
    assert np.allclose(p[1], [0.8 / 3, 0.8 / 3, 0.2, 0.8 / 3])
    assert np.isnan(p[2]).all()


def test_bad_probs_and_config():
    with pytest.raises(DataError, match=r"probs has shape \(2, 3\), expected \(2, 2\)"):
        AnalysisInput(ids=["a", "b"], classes=["x", "y"], label=[0, 1], pred=[0, 1],
                      probs=np.ones((2, 3)))
    with pytest.raises(ConfigError, match="label_error_min_posterior"):
        AnalysisConfig(label_error_min_posterior=1.0)


def test_analyze_reports_one_honest_finding_and_scores_precision_at_k():
    inp, flipped = _world(n=1500, flip=0.1, seed=4)
    res = analyze(inp, AnalysisConfig(slices=False))
    (f,) = [f for f in res.findings if f.kind == "label_error"]
    assert f.title.startswith(f"{f.stats['count']} images may be mislabelled")
    assert f.confirmed and f.confirmation["statistic"] == "noise_rate"
    assert f.evidence["numbers"]["noise_rate"] == pytest.approx(0.1, abs=0.03)
    truth = {"label_errors": [f"s{i}" for i in flipped]}
    s = score_findings(res, truth)
    assert s["label_error_recall"] >= 0.85 and s["label_error_precision"] >= 0.85
    assert s["label_error_precision@10"] == 1.0
    assert s["label_error_candidates"] == len(res.label_error_candidates)
    ranked = [c["id"] for c in res.label_error_candidates]
    want = sum(i in truth["label_errors"] for i in ranked[:50]) / 50
    assert s["label_error_precision@50"] == want
    # fewer than k candidates: P@k is undefined, not 0
    few = score_findings({"label_error_candidates": [{"id": "s1"}]}, truth)
    assert few["label_error_precision@10"] is None

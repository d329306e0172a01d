"""Error slices use concept features: a hard group that the embedding does not separate but
the concept scores do is found (and not without them)."""

from __future__ import annotations

import numpy as np
import pytest

from vlens.analysis import AnalysisConfig, AnalysisInput, analyze
from vlens.analysis.bench import score_findings
from vlens.analysis.slices import concept_features

NAMES = ["small object", "dark lighting"] + [f"noise{k}" for k in range(10)]


def _world(n=3000, seed=0):
    """3 classes; a group (small & dark) inside every class has 75% errors vs 15% elsewhere.
    The embedding carries only the class; the concepts carry size and lighting."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    small = rng.random(n) < 0.3
    dark = rng.random(n) < 0.3
    group = small & dark
    err = rng.random(n) < np.where(group, 0.75, 0.15)
    pred = np.where(err, (label + rng.integers(1, 3, n)) % 3, label)
    bits = np.c_[small, dark, rng.random((n, 10)) < 0.3]
    scores = np.where(bits, rng.uniform(0.6, 0.95, bits.shape), rng.uniform(0.02, 0.35, bits.shape))
    emb = rng.normal(0, 1, (n, 32)).astype(np.float32)
    emb[:, :3] += 3.0 * np.eye(3, dtype=np.float32)[label]
    inp = AnalysisInput(ids=[f"s{i}" for i in range(n)], classes=["a", "b", "c"], label=label,
                        pred=pred, confidence=np.full(n, 0.9, np.float32),
                        concepts=scores.astype(np.float32), concept_names=list(NAMES),
                        embeddings=emb)
    truth = {"slices": [{"sample_ids": inp.ids[group].tolist()}]}
    return inp, truth


def test_concept_features_find_a_slice_the_embedding_cannot():
    inp, truth = _world()
    with_c = analyze(inp, AnalysisConfig(slice_concept_dim=4))
    s = score_findings(with_c, truth)
    assert s["slice_precision@10"] >= 0.9
    top = with_c.slices[0]
    assert {top["concepts"][0][0], top["concepts"][1][0]} == {"small object", "dark lighting"}
    inp2, _ = _world()
    without = score_findings(analyze(inp2, AnalysisConfig(slice_concept_dim=0)), truth)
    assert without["slice_precision@10"] <= 0.6
    assert s["slice_precision@10"] > without["slice_precision@10"]


def test_concept_features_uint8_matches_float_and_shapes():
    rng = np.random.default_rng(1)
    f = rng.uniform(0.01, 0.99, (500, 6)).astype(np.float32)
    u = np.round(f * 255).astype(np.uint8)
    a = concept_features(f, dim=3)
    b = concept_features(u, dim=3, chunk=70)  # chunked transform == one block
    assert a.shape == (500, 3) and a.dtype == np.float32
    for k in range(3):
        assert abs(np.corrcoef(a[:, k], b[:, k])[0, 1]) > 0.98
    # whitened: unit variance per component
    assert a.std(0) == pytest.approx(np.ones(3), rel=0.05)
    assert concept_features(f, dim=10).shape == (500, 6)  # at most m components

"""Attention cues need a contrast with the other classes' attended regions.

A masked view is black outside the attended region, so a concept like "black" tops the
grounding of every view; it must not become a finding. A concept that only one predicted
class's attended regions show (the model looks at water when it says 'star') must.
"""

from __future__ import annotations

import numpy as np

from vlens.analysis import AnalysisConfig, AnalysisInput, analyze


def _input(seed: int = 0) -> AnalysisInput:
    rng = np.random.default_rng(seed)
    classes = ["circle", "square", "star"]
    n = 1200
    label = rng.integers(0, 3, n)
    pred = label.copy()
    names = [*classes, "black", "water", "grass"]
    g = rng.uniform(0.0, 0.3, (n, len(names))).astype(np.float32)
    g[np.arange(n), pred] = rng.uniform(0.4, 0.6, n)  # the object, moderately visible
    g[:, 3] = rng.uniform(0.7, 1.0, n)  # "black": every masked view, every class
    star = pred == 2
    g[star, 4] = rng.uniform(0.7, 1.0, star.sum())  # "water" only where 'star' is predicted
    return AnalysisInput.from_arrays(
        ids=[f"s{i}" for i in range(n)], label=label, pred=pred, classes=classes,
        grounding=g, grounding_names=names, concepts=g.copy(), concept_names=names)


def test_attention_cue_needs_enrichment_over_other_classes():
    res = analyze(_input(), AnalysisConfig())
    att = [(f.cls, f.concept) for f in res.findings if f.kind == "attention_cue"]
    assert ("star", "water") in att
    assert not [a for a in att if a[1] == "black"], att
    f = next(f for f in res.findings if (f.kind, f.cls, f.concept) ==
             ("attention_cue", "star", "water"))
    assert f.confirmed and f.stats["lift"] > 2.5

"""Synthetic analysis inputs with planted structure (truth known), for tests and benchmarks.

`make_synthetic` plants, on top of random noise concepts:
- `hard_cooccur`: present mostly in the hard class 0 (30% base error) but with no effect
  inside any class (must NOT be reported as a cause);
- `cause`: raises the error rate inside class 1 only (concept_error, class 1);
- `water`: images of other classes showing it are predicted class 2 (spurious_cue, class 2);
- a slice of class 3: a cluster in embedding space with a high error rate (+ `dark` concept);
- label flips: samples whose label was changed; the model predicts the true class
  confidently and the VLM's class-name concept agrees with the prediction;
- `bg_attended`: for class 4 predictions, the attended region shows it over the object.
Concept scores are uint8 (0..255 = 0..1) or float32, generated chunk by chunk.
"""

from __future__ import annotations

import numpy as np

from vlens.analysis.inputs import AnalysisInput

PLANTED = ["hard_cooccur", "cause", "water", "dark", "bg_attended"]


def make_synthetic(n: int = 4000, n_classes: int = 5, n_noise: int = 20, seed: int = 0,
                   dtype=np.float32, embed_dim: int = 16, flip_rate: float = 0.02,
                   chunk: int = 65536, grounding: bool = True,
                   plant_in_half: int | None = None) -> tuple[AnalysisInput, dict]:
    """Return (input, truth). `plant_in_half=0/1` plants `cause` only in that split half."""
    rng = np.random.default_rng(seed)
    assert n_classes >= 5
    classes = [f"class{k}" for k in range(n_classes)]
    ids = np.char.add("s", np.arange(n).astype(str))
    true = rng.integers(0, n_classes, n)
    from vlens.analysis.inputs import holdout_split

    split = holdout_split(ids)
    has = {
        "hard_cooccur": rng.random(n) < np.where(true == 0, 0.7, 0.1),
        "cause": rng.random(n) < 0.3,
        "water": rng.random(n) < 0.2,
    }
    slice_mask = (true == 3) & (rng.random(n) < 0.15)
    has["dark"] = np.where(slice_mask, rng.random(n) < 0.9, rng.random(n) < 0.1)
    has["bg_attended"] = rng.random(n) < 0.3
    p_err = np.where(true == 0, 0.3, 0.08)
    cause_active = has["cause"] & (true == 1)
    if plant_in_half is not None:
        cause_active &= split == plant_in_half
    p_err = np.where(cause_active, 0.6, p_err)
    p_err = np.where(slice_mask, 0.8, p_err)
    wrong = rng.random(n) < p_err
    pred = np.where(wrong, (true + rng.integers(1, n_classes, n)) % n_classes, true)
    water_flip = has["water"] & (true != 2) & (rng.random(n) < 0.4)
    pred = np.where(water_flip, 2, pred)
    conf = np.where(pred == true, rng.uniform(0.6, 1.0, n), rng.uniform(0.3, 0.75, n))
    # label noise: the model is right about the true class, the label is wrong
    flipped = (rng.random(n) < flip_rate) & (pred == true) & ~slice_mask
    label = np.where(flipped, (true + rng.integers(1, n_classes, n)) % n_classes, true)
    conf = np.where(flipped, rng.uniform(0.9, 1.0, n), conf)
    focus = np.clip(np.where(pred == true, rng.normal(3.5, 0.8, n), rng.normal(2.0, 0.8, n)),
                    0, 5).astype(np.float32)
    focus[flipped] = np.clip(rng.normal(4.0, 0.4, flipped.sum()), 0, 5)
    names = classes + PLANTED + [f"noise{k}" for k in range(n_noise)]
    m = len(names)

    def fill(mat, bits_fn):
        # present ~ U(0.65, 0.80), absent ~ U(0.25, 0.40); uint8 is made directly (fast)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            bits = bits_fn(a, b)
            if dtype == np.uint8:
                mat[a:b] = rng.integers(0, 39, (b - a, m), dtype=np.uint8)
                mat[a:b] += np.where(bits, np.uint8(166), np.uint8(64))
            else:
                noise = rng.random((b - a, m), dtype=np.float32) * np.float32(0.15)
                mat[a:b] = np.where(bits, np.float32(0.65), np.float32(0.25)) + noise

    concepts = np.empty((n, m), dtype=dtype)

    def concept_bits(a, b):
        bits = rng.integers(0, 5, (b - a, m), dtype=np.uint8) == 0  # p = 0.2
        bits[:, :n_classes] = np.eye(n_classes, dtype=bool)[true[a:b]]
        for k, name in enumerate(PLANTED):
            bits[:, n_classes + k] = has[name][a:b]
        return bits

    fill(concepts, concept_bits)
    g = None
    if grounding:
        g = np.empty((n, m), dtype=dtype)

        def ground_bits(a, b):
            bits = concept_bits(a, b)
            p4 = pred[a:b] == 4
            bits[p4, n_classes + PLANTED.index("bg_attended")] = True
            bits[p4, 4] = False  # the object itself is not in the attended region
            return bits

        fill(g, ground_bits)
    emb = rng.normal(0, 1, (n, embed_dim)).astype(np.float32)
    emb[slice_mask, :4] += 4.0
    emb[:, 4:4 + n_classes] += 2.0 * np.eye(n_classes, dtype=np.float32)[true][:, :embed_dim - 4]
    inp = AnalysisInput(ids=ids, classes=classes, label=label, pred=pred, confidence=conf,
                        focus=focus, concepts=concepts, concept_names=names,
                        grounding=g, grounding_names=list(names) if grounding else [],
                        embeddings=emb, split=split)
    truth = {
        "biases": [{"kind": "concept_error", "class": "class1", "concept": "cause"},
                   {"kind": "spurious_cue", "class": "class2", "concept": "water"},
                   {"kind": "attention_cue", "class": "class4", "concept": "bg_attended"}],
        "non_causal": [{"concept": "hard_cooccur", "class": "class0"}],
        "slices": [{"class": "class3", "sample_ids": ids[slice_mask].tolist()}],
        "label_errors": ids[flipped].tolist(),
    }
    return inp, truth

"""Zero-shot quality of a contrastive VLM on freshly generated, held-out world images.

For each attribute family the VLM picks, per image, the value whose text prompt scores
highest; accuracy is the share of images where that is the true value. No image labels are
used to make the choice, only text (the backend's prompt ensemble).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlens.vlm.embedded import vocab as V
from vlens.vlm.embedded.data import make_views

# Never used for training (training uses world seed 10_000 + seed, calibration 20_000 + seed).
EVAL_SEED = 777_777
ZERO_SHOT_FAMILIES = ("shape", "color", "background", "size", "lighting", "tag")
UNSEEN_WORDS = {  # background words that never occur in training captions
    "grass": "a green field", "water": "waves", "sand": "dunes", "snow": "a frozen landscape",
    "brick": "a stone wall", "sky": "the heavens",
}


def _acc(vlm: Any, images: np.ndarray, truth: list[str], concepts: list[str],
         values: list[str]) -> float:
    sim = vlm.similarity(list(images), concepts)
    pick = [values[k] for k in sim.argmax(1)]
    return float(np.mean([p == t for p, t in zip(pick, truth, strict=True)]))


def evaluate_zero_shot(n: int = 300, seed: int = EVAL_SEED, vlm: Any = None,
                       extras: bool = True) -> dict[str, float]:
    """Top-1 accuracy per family on `n` held-out full images (plus extra measurements).

    Keys: the six families; with `extras`: ``background_synonyms`` (only non-canonical
    synonyms, e.g. "the ocean"), ``background_unseen_words`` (words never in training),
    ``shape_masked`` / ``color_masked`` (object-on-black views) and ``empty_top`` (share of
    black images whose best concept among a small set is the "empty" one).
    """
    if vlm is None:
        from vlens.vlm.embedded.backend import EmbeddedVLM

        vlm = EmbeddedVLM()
    full = make_views(n, seed=seed, view_probs={"full": 1.0})
    res: dict[str, float] = {}
    for fam in ZERO_SHOT_FAMILIES:
        vals = [v for v in V.FAMILIES[fam] if v != "black"]
        res[fam] = _acc(vlm, full.images, [v[fam] for v in full.values], vals, vals)
    if not extras:
        return res
    bgs = [v for v in V.FAMILIES["background"] if v != "black"]
    truth = [v["background"] for v in full.values]
    accs = []
    for k in range(1, 4):
        words = [V.WORDS["background"][b][1 + (k - 1) % (len(V.WORDS["background"][b]) - 1)]
                 for b in bgs]
        accs.append(_acc(vlm, full.images, truth, words, bgs))
    res["background_synonyms"] = float(np.mean(accs))
    res["background_unseen_words"] = _acc(vlm, full.images, truth,
                                          [UNSEEN_WORDS[b] for b in bgs], bgs)
    masked = make_views(n, seed=seed + 1, view_probs={"object": 1.0})
    for fam in ("shape", "color"):
        vals = V.FAMILIES[fam]
        res[f"{fam}_masked"] = _acc(vlm, masked.images, [v[fam] for v in masked.values],
                                    vals, vals)
    rng = np.random.default_rng(seed)
    black = [np.zeros((64, 64, 3), np.uint8)] + [
        rng.integers(0, 6, (64, 64, 3)).astype(np.uint8) for _ in range(19)]
    set_ = ["nothing", "grass", "water", "a red circle", "a blue square", "sky"]
    sim = vlm.similarity(black, set_)
    res["empty_top"] = float(np.mean(sim.argmax(1) == 0))
    return res

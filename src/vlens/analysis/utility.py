"""UtilityK: does the explanation help a VLM predict what the model will say?

A VLM sees the model's top-k classes and either the explanation view or the raw image, and
guesses the model's prediction. The pipeline asks the VLM; the functions here only score.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from vlens.errors import DataError


def utility_k(guess_explanation: Sequence, guess_image: Sequence, model_pred: Sequence,
              k: int) -> dict:
    """Accuracy of the guesses from each view and their ratio (explanation / image).

    Missing guesses (None) count as wrong; the ratio is None when the image-only accuracy
    is 0.
    """
    ge, gi, mp = (np.asarray(x, dtype=object) for x in (guess_explanation, guess_image,
                                                           model_pred))
    if not (len(ge) == len(gi) == len(mp)):
        raise DataError(f"utility_k needs equal lengths, got {len(ge)}, {len(gi)}, {len(mp)}")
    if len(mp) == 0:
        raise DataError("utility_k needs at least one sample")
    acc_e = float(np.mean(ge == mp))
    acc_i = float(np.mean(gi == mp))
    return {"k": int(k), "n": int(len(mp)), "acc_with_explanation": acc_e,
            "acc_image_only": acc_i, "ratio": acc_e / acc_i if acc_i > 0 else None}


def run_utility_k(ask: Callable[[str, str, list], object], ids: Sequence[str],
                  topk_labels: Sequence[Sequence], model_pred: Sequence, k: int = 3) -> dict:
    """Ask `ask(sample_id, view, candidates)` (view = "explanation" | "image") for every
    sample, candidates = the model's top-k classes shuffled deterministically, then score."""
    ge, gi = [], []
    for sid, top in zip(ids, topk_labels, strict=True):
        cands = list(top)[:k]
        rng = np.random.default_rng(zlib.crc32(str(sid).encode()))
        cands = [cands[i] for i in rng.permutation(len(cands))]
        ge.append(ask(sid, "explanation", cands))
        gi.append(ask(sid, "image", cands))
    return utility_k(ge, gi, model_pred, k)

"""The analysis hooks that need the VLM, built from a finished run.

`utility_answers`: UtilityK — a VLM sees the model's top-k classes and either the
explanation (masked view) or the raw image, and guesses what the model predicted.

(The occlusion counterfactual hook of `vlens.analysis` is not wired: hiding the attended
region flips almost any prediction whatever concept it shows, so it does not test the cue.)
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vlens.data.images import load_image
from vlens.errors import VlensError
from vlens.runs import load_run


def _rows(run_dir: Path) -> pd.DataFrame:
    r = load_run(run_dir)
    if r.predictions is None or r.saliency is None or r.samples is None:
        return pd.DataFrame()
    p = r.predictions[r.predictions["status"] == "ok"]
    s = r.saliency[r.saliency["status"] == "ok"][["id", "view_masked", "map_path"]]
    return p.merge(s, on="id").merge(r.samples[["id", "uri"]], on="id")


def utility_answers(run_dir: str | Path, vlm: Any, k: int = 3, max_samples: int = 300
                    ) -> dict[str, Any] | None:
    """Guesses from the explanation and from the raw image for up to `max_samples` samples
    (a fixed, id-hashed subset), in the form `vlens.analysis.Hooks.utility` expects."""
    from vlens.vlm.judge import guess_prediction

    run_dir = Path(run_dir)
    df = _rows(run_dir)
    if df.empty or "topk_labels" not in df:
        return None
    df = df.assign(order_key=df["id"].map(lambda s: zlib.crc32(str(s).encode())))
    df = df.sort_values("order_key").head(max_samples)
    views, images, choices, preds = [], [], [], []
    for r in df.itertuples():
        cands = [str(c) for c in list(r.topk_labels)[:k]]
        if len(cands) < 2:
            continue
        rng = np.random.default_rng(r.order_key)
        cands = [cands[i] for i in rng.permutation(len(cands))]
        try:
            with Image.open(run_dir / r.view_masked) as v:
                views.append(v.convert("RGB"))
            images.append(load_image(r.uri))
        except (OSError, VlensError):
            continue
        choices.append(cands)
        preds.append(str(r.pred))
    if not preds:
        return None
    ge = [row["guess"] for row in guess_prediction(vlm, views, choices)]
    gi = [row["guess"] for row in guess_prediction(vlm, images, choices)]
    return {"guess_explanation": ge, "guess_image": gi, "model_pred": preds, "k": k}

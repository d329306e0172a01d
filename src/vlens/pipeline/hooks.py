"""The analysis hooks that need the VLM, built from a finished run.

`utility_answers`: UtilityK — a VLM sees the model's top-k classes and either the
explanation (masked view) or the raw image, and guesses what the model predicted.

(The counterfactual hook is `vlens.pipeline.counterfactual.background_occluder`; the
generative slice-description and narrative hooks are in `vlens.pipeline.vlm_hooks`.)
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vlens.data.images import content_hash, load_image
from vlens.engine.cache import Cache
from vlens.engine.digest import file_digest
from vlens.engine.stage import fingerprint_of
from vlens.errors import VlensError
from vlens.runs import load_run


def _rows(run_dir: Path) -> pd.DataFrame:
    r = load_run(run_dir)
    if r.predictions is None or r.saliency is None or r.samples is None:
        return pd.DataFrame()
    p = r.predictions[r.predictions["status"] == "ok"]
    s = r.saliency[r.saliency["status"] == "ok"][["id", "view_masked", "map_path"]]
    cols = ["id", "uri", *(["content_hash"] if "content_hash" in r.samples else [])]
    return p.merge(s, on="id").merge(r.samples[cols], on="id")


UTILITY_VERSION = "1"


def utility_fingerprint(vlm: Any, k: int) -> str:
    """Cache fingerprint of one utility guess: the VLM, k and the guessing code."""
    from vlens.engine.digest import code_digest

    return fingerprint_of("utility", UTILITY_VERSION, getattr(vlm, "fingerprint", None), k,
                          code_digest(("vlens.vlm.judge", "vlens.pipeline.hooks")))


def _guesses(vlm: Any, paths: list[Any], choices: list[list[str]], keys: list[str | None],
             fp: str, cache: Cache | None, loader: Any, bad: set[int]) -> list[Any]:
    """guess_prediction over the images at `paths`; rows already cached under (fp, key) are
    reused and only the misses are decoded and sent to the VLM. Indices of images that
    cannot be decoded are added to `bad`."""
    from vlens.vlm.judge import guess_prediction

    hits = cache.get_many(fp, [k for k in keys if k]) if cache is not None else {}
    out: list[Any] = [hits[k]["guess"] if k and k in hits else None for k in keys]
    todo = [i for i, k in enumerate(keys) if not (k and k in hits)]
    loaded = []
    for i in todo:
        try:
            loaded.append((i, loader(paths[i])))
        except (OSError, VlensError):
            bad.add(i)  # unreadable: the sample is left out of UtilityK, as before
    todo = [i for i, _ in loaded]
    if todo:
        rows = guess_prediction(vlm, [im for _, im in loaded], [choices[i] for i in todo])
        put = {}
        for i, row in zip(todo, rows, strict=True):
            out[i] = row["guess"]
            if keys[i] and row.get("status", "ok") == "ok":
                put[keys[i]] = {"guess": row["guess"]}
        if cache is not None and put:
            cache.put_many(fp, put)
    return out


def _open_rgb(path: Any) -> Image.Image:
    with Image.open(path) as v:
        return v.convert("RGB")


def utility_answers(run_dir: str | Path, vlm: Any, k: int = 3, max_samples: int = 300,
                    cache: Cache | None = None) -> dict[str, Any] | None:
    """Guesses from the explanation and from the raw image for up to `max_samples` samples
    (a fixed, id-hashed subset), in the form `vlens.analysis.Hooks.utility` expects.

    With a `cache`, each guess is cached by (VLM fingerprint, k, image content, choices):
    the view by the sha256 of its file, the image by its content hash.
    """
    run_dir = Path(run_dir)
    df = _rows(run_dir)
    if df.empty or "topk_labels" not in df:
        return None
    df = df.assign(order_key=df["id"].map(lambda s: zlib.crc32(str(s).encode())))
    df = df.sort_values("order_key").head(max_samples)
    views, images, choices, preds, vkeys, ikeys = [], [], [], [], [], []
    for r in df.itertuples():
        cands = [str(c) for c in list(r.topk_labels)[:k]]
        if len(cands) < 2:
            continue
        rng = np.random.default_rng(r.order_key)
        cands = [cands[i] for i in rng.permutation(len(cands))]
        view = run_dir / r.view_masked
        vkey = ch = None
        if cache is not None:  # keys only; images are decoded later, and only on a miss
            ch = getattr(r, "content_hash", None)
            try:
                vkey = file_digest(view)
                if not (isinstance(ch, str) and ch):
                    ch = content_hash(r.uri)
            except (OSError, VlensError):
                ch = ch if isinstance(ch, str) and ch else None
        tag = json.dumps(cands)
        vkeys.append(f"view|{vkey}|{tag}" if vkey else None)
        ikeys.append(f"image|{ch}|{tag}" if ch else None)
        views.append(view)
        images.append(r.uri)
        choices.append(cands)
        preds.append(str(r.pred))
    if not preds:
        return None
    fp = utility_fingerprint(vlm, k)
    bad: set[int] = set()
    ge = _guesses(vlm, views, choices, vkeys, fp, cache, _open_rgb, bad)
    gi = _guesses(vlm, images, choices, ikeys, fp, cache, load_image, bad)
    keep = [i for i in range(len(preds)) if i not in bad]
    if not keep:
        return None
    return {"guess_explanation": [ge[i] for i in keep], "guess_image": [gi[i] for i in keep],
            "model_pred": [preds[i] for i in keep], "k": k}

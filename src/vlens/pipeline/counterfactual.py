"""The background counterfactual for cue findings: swap the background, re-predict.

`background_occluder(adapter, source)` builds the `occlude(ids, concept, donors)` hook of
`vlens.analysis` for classification models on data with object masks (the generated world,
COCO, segmentation sets): each image keeps its object (mask dilated by `grow` pixels) and
takes the background of one of the `donors` (drawn per sample, seeded by its id; the donor's
own object is filled with its background's median colour): the background swap of Xiao et
al. (2020, "Noise or Signal: The Role of Image Backgrounds in Object Recognition"). It
replaces every concept outside the object at once (scene, tag, context), and says so in its
`what` attribute. The analysis calls it twice per cue, with donors without the concept and
with donors showing it, so the only difference between the two edits is the concept.

Filling the background with a constant (the usual occlusion baseline) was tried first: on
the demo model it flipped 86-100% of *all* predictions, cue or not, so it tests nothing.
Comparing with the same class's predictions without the concept was tried next: those are
few and unsure, and flipped as often as the cue's.

Samples without a mask (or whose image or mask cannot be read) get None and are left out.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from vlens.data.base import Sample
from vlens.errors import VlensError

WHAT = "the background"


def _grown(mask: np.ndarray, grow: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    m = np.asarray(mask, bool)
    return binary_dilation(m, iterations=grow) if grow > 0 else m


def swap_background(image: Image.Image, mask: np.ndarray, donor: Image.Image,
                    donor_mask: np.ndarray, grow: int = 2) -> Image.Image:
    """`image`'s object (mask dilated by `grow` px) on `donor`'s background; the donor's own
    object region is filled with the median colour of its background first."""
    a = np.asarray(image.convert("RGB"))
    d = np.asarray(donor.convert("RGB").resize(image.size, Image.BILINEAR)).copy()
    dm = _grown(np.asarray(Image.fromarray(np.asarray(donor_mask, np.uint8) * 255)
                           .resize(image.size, Image.NEAREST)) > 127, grow)
    if (~dm).any():
        d[dm] = np.median(d[~dm], axis=0).astype(np.uint8)
    m = _grown(mask, grow)
    d[m] = a[m]
    return Image.fromarray(d)


def background_occluder(adapter: Any, source: Any, batch_size: int = 32,
                        grow: int = 2) -> Callable[..., list[str | None]] | None:
    """The hook, or None when the model is not a classifier (a box or mask output has no
    single prediction to flip)."""
    from vlens.data.images import load_image, load_mask
    from vlens.models.predict import predict_batch

    if getattr(getattr(adapter, "task", None), "name", None) != "classification":
        return None
    index: dict[str, Sample] = {}

    def samples() -> dict[str, Sample]:
        if not index:  # one streaming pass over the source, keeping masked samples only
            for s in source:
                if s.mask_uri and not s.error:
                    index[s.id] = s
        return index

    def occlude(ids: Sequence[str], concept: str,
                donors: Sequence[str] | None = None) -> list[str | None]:
        have = samples()
        pool = [d for d in (donors if donors is not None else have) if d in have]
        out: dict[str, str | None] = {}
        todo = list(dict.fromkeys(ids))
        for start in range(0, len(todo), batch_size):
            images, batch = [], []
            for i in todo[start:start + batch_size]:
                out[i] = None
                s, cands = have.get(i), [d for d in pool if d != i]
                if s is None or not cands:
                    continue
                rng = np.random.default_rng(zlib.crc32(i.encode()))
                d = have[cands[int(rng.integers(len(cands)))]]
                try:
                    img = load_image(s.uri)
                    images.append(swap_background(
                        img, load_mask(s.mask_uri, size=img.size), load_image(d.uri),
                        load_mask(d.mask_uri), grow))
                    batch.append(s)
                except (VlensError, OSError, ValueError):
                    continue
            if batch:
                for s, row in zip(batch, predict_batch(adapter, images, batch), strict=True):
                    out[s.id] = row.get("pred") if row.get("status", "ok") == "ok" else None
        return [out[i] for i in ids]

    occlude.what = WHAT  # type: ignore[attr-defined]
    return occlude

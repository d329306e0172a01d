"""The predict stage core: one batch of images -> one prediction row per sample.

The engine wraps `predict_batch` with streaming, caching and error rows; this function is
pure (no files written): no gradients, one forward pass, the task's postprocess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlens.data.base import Sample
from vlens.errors import VlensError
from vlens.models.base import ModelAdapter


def input_scales(adapter: ModelAdapter, images: Sequence[Image.Image]) -> list[tuple[float, float]]:
    """Per image (sx, sy): original pixel coordinates * scale = model-input coordinates."""
    h, w = adapter.input_size
    return [(w / im.width, h / im.height) for im in images]


def _masks(adapter: ModelAdapter, samples: Sequence[Sample]) -> list[np.ndarray | None]:
    """Ground-truth masks (integer maps at model-input size) for tasks that score them."""
    from vlens.data.images import load_label_mask, load_mask

    h, w = adapter.input_size
    out: list[np.ndarray | None] = []
    for s in samples:
        if not s.mask_uri:
            out.append(None)
            continue
        try:
            if s.mask_uri.startswith("coco://"):
                m = load_mask(s.mask_uri).astype(np.int64)
            else:
                m = load_label_mask(s.mask_uri)
        except VlensError:
            out.append(None)  # a broken mask only loses the metric, not the prediction
            continue
        im = Image.fromarray(m.astype(np.int32), mode="I").resize((w, h), Image.NEAREST)
        out.append(np.asarray(im).astype(np.int64))
    return out


def predict_batch(adapter: ModelAdapter, images: Sequence[Image.Image],
                  samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Predict one batch: rows in the order of `samples` (see the task for the row keys)."""
    if len(images) != len(samples):
        raise ValueError(f"{len(images)} images for {len(samples)} samples")
    if not samples:
        return []
    kw: dict[str, Any] = {"scales": input_scales(adapter, images)}
    if adapter.task.name == "segmentation":
        kw["masks"] = _masks(adapter, samples)
    with torch.no_grad():
        x = adapter.preprocess(images)
        out = adapter.forward(x)
        rows = adapter.task.postprocess(out, samples, adapter.class_names, **kw)
    for r, s in zip(rows, samples, strict=True):
        r.setdefault("id", s.id)
    return rows

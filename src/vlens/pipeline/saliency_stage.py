"""The saliency stage: maps for each sample's own prediction, the views built from them, and
per-sample faithfulness/ground-truth metrics.

The stage is pure: it returns PNG bytes in private ``_png_*`` fields and the
`ArtefactTableSink` writes them as files under ``saliency/`` (maps as 8-bit grayscale PNGs,
which are small, lossless at display precision and viewable as they are).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlens.data.paths import load_sample_image
from vlens.engine.base import rows_frame
from vlens.engine.stage import Row, error_row, fingerprint_of
from vlens.engine.store import RunStore
from vlens.errors import ImageError, VlensError
from vlens.saliency.metrics import EnergyInside, PointingGame, get_metric
from vlens.saliency.views import render_views

SALIENCY_VERSION = "1"
VIEW_KINDS = ("masked", "overlay", "crop")


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode an image (PIL or uint8 array) as PNG bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=1)  # 0.6x the time, +2% bytes
    return buf.getvalue()


def safe_name(sample_id: str) -> str:
    """A file name for `sample_id` that cannot escape a folder (ids may hold '/' or '..')."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(sample_id)).strip("._")[:80] or "sample"
    return f"{stem}-{hashlib.sha1(str(sample_id).encode()).hexdigest()[:8]}"


def _gt_masks(items: list[Row], size: tuple[int, int]) -> torch.Tensor | None:
    """Ground-truth object masks (n, H, W) at map size, or None if any sample lacks one."""
    from vlens.data.images import load_mask

    out = []
    for it in items:
        uri = it.get("mask_uri")
        if not uri:
            return None
        try:
            m = load_mask(uri)
        except VlensError:
            return None
        im = Image.fromarray(m.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
        out.append(torch.from_numpy(np.asarray(im) > 127))
    return torch.stack(out) if out else None


class SaliencyStage:
    """Explain each sample's own prediction with `explainer`; render the views; score them.

    Items carry the predict stage's row in ``prediction`` (so the target is the predicted
    class without a second forward pass). ``faithfulness=True`` adds deletion/insertion AUC
    (each costs `steps` extra forward passes per image).
    """

    name = "saliency"

    def __init__(
        self,
        adapter: Any,
        explainer: Any,
        *,
        method: str,
        alpha: float = 25.0,
        beta: float = 0.6,
        faithfulness: bool = False,
        steps: int = 10,
    ) -> None:
        self.adapter, self.explainer, self.method = adapter, explainer, method
        self.alpha, self.beta = alpha, beta
        self.faithfulness, self.steps = faithfulness, steps
        params = {k: v for k, v in vars(explainer).items() if isinstance(v, (int, float, str))}
        self.fingerprint = fingerprint_of(
            "saliency", SALIENCY_VERSION, adapter.fingerprint, method, params,
            alpha, beta, faithfulness, steps,
        )

    def cache_key(self, item: Mapping[str, Any]) -> str | None:
        ch = item.get("content_hash")
        pred = (item.get("prediction") or {}).get("pred")
        return f"{ch}|{pred}|{item.get('mask_uri') is not None}" if ch else None

    def __call__(self, batch: list[Row]) -> list[Row]:
        from vlens.engine.predict import item_to_sample

        rows: list[Row | None] = [None] * len(batch)
        images, good = [], []
        for i, item in enumerate(batch):
            pred = item.get("prediction") or {}
            if pred.get("status", "ok") != "ok":
                rows[i] = error_row(item, "no_prediction", str(pred.get("error") or ""))
                continue
            try:
                images.append(load_sample_image(item_to_sample(item)))
                good.append(i)
            except ImageError as e:
                rows[i] = error_row(item, e.reason, e.detail)
        if good:
            for i, r in zip(good, self._explain([batch[i] for i in good], images), strict=True):
                rows[i] = r
        for r in rows:
            if r is not None:
                r.setdefault("method", self.method)
        return [r for r in rows if r is not None]

    def _explain(self, items: list[Row], images: list[Image.Image]) -> list[Row]:
        adapter = self.adapter
        x = adapter.preprocess(images)
        preds = [it["prediction"] for it in items]
        out = None
        if getattr(adapter.task, "target_needs_output", True):  # e.g. segmentation masks
            with torch.no_grad():
                out = adapter.forward(x)
        target = adapter.task.default_target(out, preds)
        maps = self.explainer.explain(adapter, x, target).detach()
        views = render_views(images, maps, alpha=self.alpha, beta=self.beta, output="array")
        extra: dict[str, list[float]] = {}
        masks = _gt_masks(items, tuple(maps.shape[-2:]))
        if masks is not None:
            masks = masks.to(maps.device)
            extra["energy_on_object"] = EnergyInside()(maps, masks).float().cpu().tolist()
            extra["pointing_hit"] = PointingGame()(maps, masks).float().cpu().tolist()
        if self.faithfulness:
            for name in ("deletion", "insertion"):
                metric = get_metric(name, steps=self.steps)
                extra[f"{name}_auc"] = metric(adapter, x, target, maps).float().cpu().tolist()
        maps_u8 = (maps.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # one transfer
        rows = []
        for j, it in enumerate(items):
            row: Row = {
                "id": it["id"],
                "method": self.method,
                "target": preds[j].get("pred"),
                **{k: v[j] for k, v in extra.items()},
                "_png_map": png_bytes(maps_u8[j]),
            }
            for kind in VIEW_KINDS:
                row[f"_png_{kind}"] = png_bytes(views[kind][j])
            rows.append(row)
        return rows


class ArtefactTableSink:
    """A `TableSink` that first writes ``_png_<kind>`` fields as files under ``saliency/``
    and replaces them with relative paths (``view_<kind>``, ``map_path``)."""

    def __init__(self, store: RunStore, table: str) -> None:
        self.store, self.table = store, table

    def done_ids(self) -> set[str]:
        return self.store.ids(self.table, ok_only=True)

    def write(self, items: list[Row], rows: list[Row]) -> None:
        out, files = [], {}
        for row in rows:
            row = dict(row)
            name = safe_name(row["id"])
            data = row.pop("_png_map", None)
            if data is not None:
                row["map_path"] = rel = f"saliency/maps/{name}.png"
                files[rel] = data
            for kind in VIEW_KINDS:
                data = row.pop(f"_png_{kind}", None)
                if data is not None:
                    row[f"view_{kind}"] = rel = f"saliency/views/{name}.{kind}.png"
                    files[rel] = data
            out.append(row)
        # the batch's files, flushed once, before the rows that point at them
        stored = self.store.write_artefacts(files)
        for row in out:
            for k in ("map_path", *(f"view_{kind}" for kind in VIEW_KINDS)):
                if row.get(k) is not None:
                    row[k] = stored[row[k]]
        self.store.append(self.table, rows_frame(out))

    def close(self) -> None:
        if self.store.has_parts(self.table):
            self.store.finalize(self.table)


def load_map(store_path: str, rel: str) -> np.ndarray:
    """A stored saliency map as float32 in [0, 1]."""
    from pathlib import Path

    with Image.open(Path(store_path) / rel) as im:
        return np.asarray(im, dtype=np.float32) / 255.0


__all__ = ["ArtefactTableSink", "SaliencyStage", "load_map", "png_bytes", "safe_name"]

"""The segmentation task: per-pixel logits (n, C, H, W) over `class_names`.

Class index `background` (default 0) is the background. Ground truth comes from the
sample's mask, passed by predict as integer maps at model-input size: a binary mask (one
non-zero value) with a known sample label means "this object is of class `label`"
(``vlens.world`` masks), otherwise the values are class indices (values >= C, such as VOC's
255, are ignored).

Row keys: id, label, pred (the dominant non-background class by pixel count; background
when no pixel is foreground), pred_idx, confidence (mean softmax probability of `pred` over
its pixels), pred_fraction (share of pixels predicted `pred`), miou (mean IoU over classes
present in ground truth or prediction; NaN without a mask), correct (pred == label; None
without a label), loss (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlens.data.base import Sample
from vlens.errors import ModelError
from vlens.models.base import TASKS, Target
from vlens.models.targets import SegmentationTarget, _describe, unwrap_output
from vlens.models.tasks import NAN, label_index, present


def mean_iou(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> float:
    """Mean IoU over classes present in `pred` or `gt` (pixels with gt outside [0, C) ignored)."""
    valid = (gt >= 0) & (gt < num_classes)
    p, g = pred[valid].long(), gt[valid].long()
    if p.numel() == 0:
        return NAN
    conf = torch.bincount(g * num_classes + p, minlength=num_classes**2).view(num_classes, -1)
    inter = conf.diag().float()
    union = conf.sum(0).float() + conf.sum(1).float() - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def gt_map(mask: np.ndarray, label_idx: int | None) -> np.ndarray:
    """Binary mask + known label -> class map; otherwise the mask already holds classes."""
    vals = np.unique(mask)
    nonzero = vals[vals != 0]
    if label_idx is not None and len(nonzero) <= 1:
        return np.where(mask != 0, label_idx, 0).astype(np.int64)
    return mask.astype(np.int64)


class SegmentationTask:
    name = "segmentation"
    target_needs_output = True  # default_target reads the output

    def __init__(self, background: int = 0) -> None:
        self.background = int(background)

    def check(self, output: Any, n: int, class_names: Sequence[str]) -> torch.Tensor:
        logits = unwrap_output(output)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            raise ModelError(f"segmentation model must return logits (n, C, H, W); got "
                             f"{_describe(logits)}")
        if logits.shape[0] != n:
            raise ModelError(f"model returned {logits.shape[0]} maps for a batch of {n}")
        if logits.shape[1] != len(class_names):
            raise ModelError(f"model returned {logits.shape[1]} classes but "
                             f"{len(class_names)} class_names were declared")
        return logits

    def _pred_class(self, amap: torch.Tensor, c: int) -> torch.Tensor:
        """(n,) dominant non-background class per sample (background if none)."""
        counts = F.one_hot(amap.flatten(1), c).sum(1)  # (n, C)
        counts[:, self.background] = -1
        best = counts.argmax(1)
        none = counts.gather(1, best[:, None])[:, 0] <= 0
        return torch.where(none, torch.full_like(best, self.background), best)

    def postprocess(self, output: Any, samples: Sequence[Sample], class_names: Sequence[str],
                    masks: Sequence[np.ndarray | None] | None = None,
                    **_: Any) -> list[dict[str, Any]]:
        logits = self.check(output, len(samples), class_names).detach().float()
        n, c, h, w = logits.shape
        probs = logits.softmax(1)
        amap = probs.argmax(1)  # (n, H, W)
        pred = self._pred_class(amap, c)
        sel = amap == pred[:, None, None]
        pclass = probs.gather(1, pred[:, None, None, None].expand(n, 1, h, w))[:, 0]
        conf = (pclass * sel).sum((1, 2)) / sel.sum((1, 2)).clamp(min=1)
        frac = sel.float().mean((1, 2))
        pred_l, conf_l, frac_l = pred.cpu().tolist(), conf.cpu().tolist(), frac.cpu().tolist()
        rows = []
        for i, s in enumerate(samples):
            miou = NAN
            m = masks[i] if masks is not None else None
            if m is not None:
                g = torch.from_numpy(gt_map(m, label_index(s.label, class_names)))
                if tuple(g.shape) != (h, w):
                    g = F.interpolate(g[None, None].float(), size=(h, w), mode="nearest")
                    g = g[0, 0].long()
                miou = mean_iou(amap[i].cpu(), g, c)
            name = class_names[pred_l[i]]
            rows.append({
                "id": s.id, "label": s.label, "pred": name, "pred_idx": pred_l[i],
                "confidence": conf_l[i], "pred_fraction": frac_l[i], "miou": miou,
                "correct": None if s.label is None else name == s.label, "loss": NAN,
            })
        return rows

    def default_target(self, output: Any, rows: Sequence[dict[str, Any]]) -> Target:
        """Sum of the predicted class's logits inside its predicted region, per sample."""
        logits = unwrap_output(output)
        if rows and all(present(r.get("pred_idx")) for r in rows):
            idx = torch.tensor([int(r["pred_idx"]) for r in rows], device=logits.device)
        else:
            idx = self._pred_class(logits.argmax(1), logits.shape[1])
        masks = logits.detach().argmax(1) == idx[:, None, None]
        return SegmentationTarget(idx, masks)


@TASKS.register("segmentation", help="per-pixel logits (n, C, H, W)")
def segmentation_task(**kw: Any) -> SegmentationTask:
    return SegmentationTask(**kw)

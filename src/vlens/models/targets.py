"""Saliency targets: callables ``model_output -> tensor (n,)``, one scalar per sample.

They make detection and segmentation the same problem as classification for every
explainer (the pytorch-grad-cam idea): the explainer back-propagates (or, for black boxes,
perturbs and re-scores) whatever the target returns. All targets stay on the output's device
and keep the autograd graph, so gradients flow from the returned scalars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vlens.errors import ModelError


def unwrap_output(output: Any) -> Any:
    """The tensor inside common wrappers: HF ``.logits``, torchvision seg ``{"out": ...}``."""
    if isinstance(output, torch.Tensor | list | tuple):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
        return output
    logits = getattr(output, "logits", None)
    return logits if logits is not None else output


class ClassTarget:
    """The logit of class ``indices[i]`` for sample i (pre-softmax, as Grad-CAM uses)."""

    def __init__(self, indices: Sequence[int] | torch.Tensor) -> None:
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)

    def __call__(self, output: Any) -> torch.Tensor:
        logits = unwrap_output(output)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ModelError(f"ClassTarget expects logits (n, C), got {_describe(logits)}")
        n = logits.shape[0]
        if n != len(self.indices):
            raise ModelError(f"ClassTarget has {len(self.indices)} indices for {n} outputs")
        idx = self.indices.to(logits.device)
        return logits[torch.arange(n, device=logits.device), idx]

    def __repr__(self) -> str:
        return f"ClassTarget({self.indices.tolist()})"


class BoxScoreTarget:
    """Detection: the score of the predicted box that best matches a reference box.

    For sample i, among output boxes with label ``labels[i]`` (any label if `labels` is
    None) the one with the highest IoU to ``ref_boxes[i]`` is chosen; its score is the
    target if that IoU >= `iou_thr`, else 0. Works on any torchvision-style detector output
    (list of dicts with ``boxes``/``labels``/``scores``), so black-box perturbation methods
    (D-RISE style) can re-score perturbed images with it. Boxes are in model-input pixels.
    """

    def __init__(self, ref_boxes: Sequence[Sequence[float]] | torch.Tensor,
                 labels: Sequence[int] | torch.Tensor | None = None, iou_thr: float = 0.5) -> None:
        self.ref_boxes = torch.as_tensor(ref_boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if self.labels is not None and len(self.labels) != len(self.ref_boxes):
            raise ValueError("BoxScoreTarget: one label per reference box")
        self.iou_thr = float(iou_thr)

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, list | tuple) or len(output) != len(self.ref_boxes):
            raise ModelError(f"BoxScoreTarget expects a list of {len(self.ref_boxes)} detection "
                             f"dicts, got {_describe(output)}")
        vals = []
        for i, det in enumerate(output):
            boxes, scores = det["boxes"], det["scores"]
            zero = scores.sum() * 0.0 if scores.numel() else scores.new_zeros(())
            if boxes.numel() == 0:
                vals.append(zero)
                continue
            from torchvision.ops import box_iou  # lazy: torchvision costs ~1.8 s to import
            ious = box_iou(self.ref_boxes[i : i + 1].to(boxes.device, boxes.dtype), boxes)[0]
            if self.labels is not None:
                ious = torch.where(det["labels"] == self.labels[i].to(boxes.device), ious,
                                   torch.full_like(ious, -1.0))
            ious = ious.detach()
            j = int(torch.argmax(ious))
            vals.append(scores[j] if float(ious[j]) >= self.iou_thr else zero)
        return torch.stack(vals)

    def __repr__(self) -> str:
        return f"BoxScoreTarget({self.ref_boxes.tolist()}, iou_thr={self.iou_thr})"


class SegmentationTarget:
    """Segmentation: the sum of class ``class_idx[i]``'s logits inside ``masks[i]``.

    `masks` is (n, H, W) bool/float; resized (nearest) to the output's spatial size if needed.
    """

    def __init__(self, class_idx: Sequence[int] | torch.Tensor,
                 masks: torch.Tensor | Sequence[Any]) -> None:
        self.class_idx = torch.as_tensor(class_idx, dtype=torch.long).reshape(-1)
        m = torch.as_tensor(masks) if not isinstance(masks, torch.Tensor) else masks
        if m.ndim == 2:
            m = m[None]
        self.masks = m.float()
        if len(self.masks) != len(self.class_idx):
            raise ValueError("SegmentationTarget: one mask per class index")

    def __call__(self, output: Any) -> torch.Tensor:
        logits = unwrap_output(output)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            raise ModelError(f"SegmentationTarget expects logits (n, C, H, W), got "
                             f"{_describe(logits)}")
        n = logits.shape[0]
        if n != len(self.class_idx):
            raise ModelError(f"SegmentationTarget has {len(self.class_idx)} classes for "
                             f"{n} outputs")
        masks = self.masks.to(logits.device, logits.dtype)
        if masks.shape[-2:] != logits.shape[-2:]:
            masks = F.interpolate(masks[:, None], size=logits.shape[-2:], mode="nearest")[:, 0]
        sel = logits[torch.arange(n, device=logits.device), self.class_idx.to(logits.device)]
        return (sel * masks).sum(dim=(1, 2))

    def __repr__(self) -> str:
        return f"SegmentationTarget({self.class_idx.tolist()}, masks={tuple(self.masks.shape)})"


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, list | tuple):
        return f"{type(x).__name__} of length {len(x)}"
    return type(x).__name__

"""The detection task: torchvision-style outputs (a list of dicts ``boxes``/``labels``/``scores``
per image, boxes ``[x0, y0, x1, y1]`` in model-input pixels, labels indexing `class_names`).

Per-sample metrics against the ground-truth boxes (scaled into model-input pixels with the
``scales`` predict passes in): predictions with score >= `score_thr` are matched greedily,
highest score first, to the unmatched ground-truth box of the same label (any label when the
sample has no box labels) with the highest IoU >= `iou_thr`.

Row keys: id, label, pred (label of the top-scoring box, None when there is none),
pred_idx, confidence (its score, 0.0 when none), pred_box (its box in ORIGINAL image pixels),
input_scale ([sx, sy]: original * scale = model input), n_pred, n_gt, matched, missed,
false_pos, mean_iou (mean over ground-truth boxes of the IoU of their match, 0 for a missed
box; NaN without ground truth), correct (no misses and no false positives when ground truth
exists; else pred == label; None without either), loss (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlens.data.base import Sample
from vlens.errors import ModelError
from vlens.models.base import TASKS, Target
from vlens.models.targets import BoxScoreTarget, _describe
from vlens.models.tasks import NAN, label_index, present


def greedy_match(pred_boxes: torch.Tensor, pred_labels: torch.Tensor | None,
                 gt_boxes: torch.Tensor, gt_labels: torch.Tensor | None,
                 iou_thr: float = 0.5) -> list[tuple[int, int, float]]:
    """(pred index, gt index, IoU) pairs; predictions must be sorted by score, descending."""
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return []
    from torchvision.ops import box_iou  # lazy: torchvision costs ~1.8 s to import
    ious = box_iou(pred_boxes.float(), gt_boxes.float()).cpu()
    if pred_labels is not None and gt_labels is not None:
        same = pred_labels.cpu()[:, None] == gt_labels.cpu()[None, :]
        ious = torch.where(same, ious, torch.full_like(ious, -1.0))
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    pairs = []
    for p in range(len(pred_boxes)):
        row = torch.where(taken, torch.full_like(ious[p], -1.0), ious[p])
        g = int(torch.argmax(row))
        if float(row[g]) >= iou_thr:
            taken[g] = True
            pairs.append((p, g, float(row[g])))
    return pairs


class DetectionTask:
    name = "detection"
    target_needs_output = False  # default_target reads only the rows

    def __init__(self, score_thr: float = 0.5, iou_thr: float = 0.5) -> None:
        self.score_thr = float(score_thr)
        self.iou_thr = float(iou_thr)

    def check(self, output: Any, n: int, class_names: Sequence[str]) -> list[dict[str, Any]]:
        if not isinstance(output, list | tuple) or len(output) != n:
            raise ModelError(f"detection model must return a list of {n} dicts with boxes/"
                             f"labels/scores; got {_describe(output)}")
        for i, d in enumerate(output):
            if not isinstance(d, dict) or not {"boxes", "labels", "scores"} <= set(d):
                got = sorted(d) if isinstance(d, dict) else _describe(d)
                raise ModelError(f"detection output {i} must be a dict with boxes, labels, "
                                 f"scores; got {got}")
            b, lab, s = d["boxes"], d["labels"], d["scores"]
            if b.ndim != 2 or b.shape[1] != 4 or lab.shape != (len(b),) or s.shape != (len(b),):
                raise ModelError(f"detection output {i}: boxes must be (k, 4) with k labels and "
                                 f"k scores; got {tuple(b.shape)}, {tuple(lab.shape)}, "
                                 f"{tuple(s.shape)}")
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= len(class_names)):
                raise ModelError(f"detection output {i}: label {int(lab.max())} outside "
                                 f"{len(class_names)} class_names")
        return list(output)

    def postprocess(self, output: Any, samples: Sequence[Sample], class_names: Sequence[str],
                    scales: Sequence[tuple[float, float]] | None = None,
                    **_: Any) -> list[dict[str, Any]]:
        dets = self.check(output, len(samples), class_names)
        rows = []
        for i, (s, d) in enumerate(zip(samples, dets, strict=True)):
            sx, sy = scales[i] if scales else (1.0, 1.0)
            scores = d["scores"].detach().float().cpu()
            order = torch.argsort(scores, descending=True)
            boxes = d["boxes"].detach().float().cpu()[order]
            labels = d["labels"].detach().cpu()[order]
            scores = scores[order]
            keep = scores >= self.score_thr
            n_pred = int(keep.sum())
            row: dict[str, Any] = {"id": s.id, "label": s.label, "input_scale": [sx, sy],
                                   "n_pred": n_pred, "loss": NAN}
            if len(boxes):
                top = boxes[0].tolist()
                row.update(pred=class_names[int(labels[0])], pred_idx=int(labels[0]),
                           confidence=float(scores[0]),
                           pred_box=[top[0] / sx, top[1] / sy, top[2] / sx, top[3] / sy])
            else:
                row.update(pred=None, pred_idx=None, confidence=0.0, pred_box=None)
            if s.boxes:
                gt = torch.tensor(s.boxes, dtype=torch.float32) * torch.tensor([sx, sy, sx, sy])
                gl = None
                if s.box_labels is not None:
                    idx = [label_index(b, class_names) for b in s.box_labels]
                    gl = torch.tensor([-1 if j is None else j for j in idx])
                pairs = greedy_match(boxes[keep], labels[keep], gt, gl, self.iou_thr)
                n_gt, matched = len(gt), len(pairs)
                row.update(n_gt=n_gt, matched=matched, missed=n_gt - matched,
                           false_pos=n_pred - matched,
                           mean_iou=sum(p[2] for p in pairs) / n_gt,
                           correct=(matched == n_gt and n_pred == matched))
            else:
                row.update(n_gt=0, matched=0, missed=0, false_pos=n_pred, mean_iou=NAN,
                           correct=None if s.label is None else row["pred"] == s.label)
            rows.append(row)
        return rows

    def default_target(self, output: Any, rows: Sequence[dict[str, Any]]) -> Target:
        """Score of the box that best matches each sample's top prediction (IoU >= 0.5)."""
        refs, labels = [], []
        for r in rows:  # rows may come back from Parquet: arrays, NaN for missing
            b, sc = r.get("pred_box"), r.get("input_scale")
            sx, sy = (1.0, 1.0) if sc is None or len(sc) != 2 else (float(sc[0]), float(sc[1]))
            ok = b is not None and not isinstance(b, float) and len(b) == 4
            refs.append([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] if ok else [0.0] * 4)
            labels.append(int(r["pred_idx"]) if ok and present(r.get("pred_idx")) else -1)
        return BoxScoreTarget(refs, labels, iou_thr=self.iou_thr)


@TASKS.register("detection", help="boxes/labels/scores per image (torchvision style)")
def detection_task(**kw: Any) -> DetectionTask:
    return DetectionTask(**kw)

"""The classification task (and helpers shared by every task).

A task reads a model's raw output for a batch: `check` validates its shape against the
declared task (clear `ModelError` otherwise), `postprocess` turns it into one prediction row
per sample, `default_target` builds the saliency target that explains each sample's own
prediction. Tensors stay on the device until the rows are built, then cross to Python once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vlens.data.base import Sample
from vlens.errors import ModelError
from vlens.models.base import TASKS, Target
from vlens.models.targets import ClassTarget, _describe, unwrap_output

NAN = float("nan")


def label_index(label: str | None, class_names: Sequence[str]) -> int | None:
    """Index of `label` in `class_names`, or None when missing / unknown."""
    if label is None:
        return None
    try:
        return list(class_names).index(label)
    except ValueError:
        return None


class ClassificationTask:
    """Softmax classifier over `class_names`; logits (n, C) in, rows out.

    Row keys: id, label, pred, pred_idx, confidence (max softmax prob), correct (None when
    the sample has no label), loss (cross-entropy vs the label; NaN without a known label),
    topk_labels / topk_probs (k = min(`k`, C), most probable first).
    """

    name = "classification"
    target_needs_output = False  # default_target reads only the rows

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def check(self, output: Any, n: int, class_names: Sequence[str]) -> torch.Tensor:
        logits = unwrap_output(output)
        if not isinstance(logits, torch.Tensor):
            raise ModelError(f"classification model must return logits (n, C); got "
                             f"{_describe(logits)}")
        if logits.ndim != 2:
            raise ModelError(f"classification model must return logits of rank 2 (n, C); got "
                             f"shape {tuple(logits.shape)}")
        if logits.shape[0] != n:
            raise ModelError(f"model returned {logits.shape[0]} rows for a batch of {n}")
        if logits.shape[1] != len(class_names):
            raise ModelError(f"model returned {logits.shape[1]} classes but "
                             f"{len(class_names)} class_names were declared")
        return logits

    def postprocess(self, output: Any, samples: Sequence[Sample], class_names: Sequence[str],
                    **_: Any) -> list[dict[str, Any]]:
        logits = self.check(output, len(samples), class_names).detach().float()
        logp = torch.log_softmax(logits, dim=1)
        probs = logp.exp()
        k = min(self.k, logits.shape[1])
        topp, topi = probs.topk(k, dim=1)
        lab = [label_index(s.label, class_names) for s in samples]
        lab_t = torch.tensor([i if i is not None else 0 for i in lab], device=logits.device)
        loss = -logp.gather(1, lab_t[:, None])[:, 0]
        # one transfer to host at the edge
        topp_l, topi_l, loss_l = topp.cpu().tolist(), topi.cpu().tolist(), loss.cpu().tolist()
        rows = []
        for i, s in enumerate(samples):
            pi = topi_l[i][0]
            rows.append({
                "id": s.id,
                "label": s.label,
                "pred": class_names[pi],
                "pred_idx": pi,
                "confidence": topp_l[i][0],
                "correct": None if s.label is None else (class_names[pi] == s.label),
                "loss": loss_l[i] if lab[i] is not None else NAN,
                "topk_labels": [class_names[j] for j in topi_l[i]],
                "topk_probs": topp_l[i],
            })
        return rows

    def default_target(self, output: Any, rows: Sequence[dict[str, Any]]) -> Target:
        if rows and all(present(r.get("pred_idx")) for r in rows):
            return ClassTarget([int(r["pred_idx"]) for r in rows])
        logits = unwrap_output(output)
        return ClassTarget(logits.argmax(dim=1).tolist())


def is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def present(x: Any) -> bool:
    """Not None and not NaN (rows read back from Parquet/pandas carry NaN for missing)."""
    return x is not None and not is_nan(x)


@TASKS.register("classification", help="softmax classifier: logits (n, C)")
def classification_task(**kw: Any) -> ClassificationTask:
    return ClassificationTask(**kw)

"""vlens.models: model adapters (`torch:`, `torchvision:`, `timm:`, `hf:`, `onnx:`, `demo`),
tasks (`classification`, `detection`, `segmentation`), saliency targets and the predict core.

Importing this package registers the built-ins in `MODELS` and `TASKS`.
"""

from __future__ import annotations

from typing import Any

import torch

from vlens.models import adapters as _adapters  # noqa: F401  (torch:, demo)
from vlens.models import detection as _detection  # noqa: F401  (detection)
from vlens.models import hf as _hf  # noqa: F401  (hf:)
from vlens.models import onnx as _onnx  # noqa: F401  (onnx:)
from vlens.models import segmentation as _segmentation  # noqa: F401  (segmentation)
from vlens.models import tasks as _tasks  # noqa: F401  (classification)
from vlens.models import zoo as _zoo  # noqa: F401  (torchvision:, timm:)
from vlens.models.adapters import TorchAdapter, load_weights, state_dict_digest
from vlens.models.base import MODELS, TASKS, ModelAdapter, Target, Task
from vlens.models.predict import predict_batch
from vlens.models.targets import BoxScoreTarget, ClassTarget, SegmentationTarget

__all__ = [
    "MODELS", "TASKS", "BoxScoreTarget", "ClassTarget", "ModelAdapter", "SegmentationTarget",
    "Target", "Task", "TorchAdapter", "load_model", "load_weights", "predict_batch",
    "state_dict_digest",
]


def load_model(spec: str | torch.nn.Module, **kw: Any) -> ModelAdapter:
    """Build an adapter from a spec (``torchvision:resnet18``, ``onnx:m.onnx``, ``demo``...)
    or wrap an `nn.Module` directly (then `class_names=` is required)."""
    if isinstance(spec, torch.nn.Module):
        return TorchAdapter(spec, **kw)
    return MODELS.create(spec, **kw)

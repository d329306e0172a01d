"""The `Explainer` plug-in point: one call shape for every attribution method.

``explain(model, x, target) -> maps`` with `x` a preprocessed batch (n, 3, H, W) on the
model's device and `target` a callable ``model_output -> (n,)`` (see `vlens.models.base`).
Maps are float tensors (n, H, W) on the same device, each normalised to [0, 1].
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from vlens.models.base import ModelAdapter, Target
from vlens.registry import Registry


@runtime_checkable
class Explainer(Protocol):
    name: str
    needs_gradients: bool  # False for black-box methods (RISE, occlusion): work on ONNX too

    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor: ...


EXPLAINERS: Registry[Explainer] = Registry("explainer")

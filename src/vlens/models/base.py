"""The `ModelAdapter` and `Task` plug-in points.

An adapter wraps the user's vision model behind one interface: preprocess PIL images into a
batch tensor on the model's device, run the model, and hand raw outputs to a `Task`, which
turns them into prediction rows and into default saliency *targets* (callables
``model_output -> tensor of shape (n,)``), so one explainer serves every task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from vlens.data.base import Sample
from vlens.registry import Registry

Target = Callable[[Any], torch.Tensor]
"""A saliency target: maps a model output for a batch to one scalar per sample, shape (n,)."""


@runtime_checkable
class Task(Protocol):
    """What kind of output a model produces and how to read it."""

    name: str  # "classification" | "detection" | "segmentation"
    # True when `default_target` needs the model output (the saliency stage then runs one
    # no-grad forward first); False when the prediction rows suffice (classification).
    target_needs_output: bool

    def postprocess(
        self, output: Any, samples: Sequence[Sample], class_names: Sequence[str]
    ) -> list[dict[str, Any]]:
        """One prediction row per sample (pred, confidence, correct, loss, task metrics)."""
        ...

    def default_target(self, output: Any, rows: Sequence[dict[str, Any]]) -> Target:
        """The target explaining each sample's own prediction (e.g. its predicted class)."""
        ...


@runtime_checkable
class ModelAdapter(Protocol):
    """A vision model behind one interface. `module` is None for black boxes (e.g. ONNX)."""

    task: Task
    class_names: list[str]
    device: torch.device
    fingerprint: str  # stable hash of weights + config; part of every cache key
    module: torch.nn.Module | None
    input_size: tuple[int, int]  # (H, W) the model expects after preprocessing

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL RGB images -> float tensor (n, 3, H, W) on `device`, normalised for the model."""
        ...

    def forward(self, x: torch.Tensor) -> Any:
        """Run the model on a preprocessed batch; gradients flow when `module` is not None."""
        ...


MODELS: Registry[ModelAdapter] = Registry("model adapter")
TASKS: Registry[Task] = Registry("task")

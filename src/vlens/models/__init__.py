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


def _spec_options(query: str) -> dict[str, Any]:
    """``classes=a,b,c&input_size=64&mean=.5,.5,.5&weights=w.safetensors`` -> kwargs.

    ``classes=@FILE`` reads one class name per line. Lets CLI users configure a model in
    the spec string alone (e.g. ``vlens predict --model "torchvision:resnet18?classes=..."``).
    """
    from urllib.parse import parse_qsl

    from vlens.errors import ConfigError

    out: dict[str, Any] = {}
    for key, val in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key in ("classes", "class_names"):
            if val.startswith("@"):
                try:
                    lines = open(val[1:], encoding="utf-8").read().splitlines()  # noqa: SIM115
                except OSError as e:
                    raise ConfigError(f"cannot read class names from {val[1:]}: {e}") from None
                out["class_names"] = [ln.strip() for ln in lines if ln.strip()]
            else:
                out["class_names"] = [c.strip() for c in val.split(",") if c.strip()]
        elif key == "input_size":
            nums = [int(v) for v in val.replace("x", ",").split(",") if v.strip()]
            out["input_size"] = nums[0] if len(nums) == 1 else tuple(nums)
        elif key in ("mean", "std"):
            out[key] = tuple(float(v) for v in val.split(","))
        elif key in ("weights", "task", "device"):
            out[key] = val
        else:
            raise ConfigError(f"unknown model spec option {key!r} (known: classes, input_size, "
                              f"mean, std, weights, task, device)")
    return out


def load_model(spec: str | torch.nn.Module, **kw: Any) -> ModelAdapter:
    """Build an adapter from a spec (``torchvision:resnet18``, ``onnx:m.onnx``, ``demo``...)
    or wrap an `nn.Module` directly (then `class_names=` is required).

    Options may also ride in the spec after ``?`` (see `_spec_options`); keyword arguments
    win over them.
    """
    if isinstance(spec, torch.nn.Module):
        return TorchAdapter(spec, **kw)
    base, sep, query = spec.partition("?")
    if sep:
        try:
            opts = _spec_options(query)
        except ValueError as e:
            from vlens.errors import ConfigError

            raise ConfigError(f"bad option in model spec {spec!r}: {e}") from None
        kw = {**opts, **kw}
        spec = base
    return MODELS.create(spec, **kw)

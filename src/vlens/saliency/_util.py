"""Shared tensor helpers for explainers: normalising maps, slicing model outputs, and scoring
many perturbed copies of a batch in large forward chunks.

The chunked scorer is what lets Score-CAM, RISE, occlusion, Captum's path methods and the
faithfulness metrics reuse one per-batch `target` callable: perturbed inputs are laid out
*block-major* (copy j of sample i sits at row ``j * n + i``), every forward sees whole blocks,
and the target is applied to each block's slice of the output, so it always sees an output
for exactly the `n` samples it was built for, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target

EPS = 1e-12


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to [0, 1]; a constant map becomes all zeros (no division by ~0)."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    safe = torch.where(span > EPS, span, torch.ones_like(span))
    out = (flat - lo) / safe
    out = torch.where(span > EPS, out, torch.zeros_like(out))
    return out.reshape(maps.shape)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) or (n, c, h, w) -> same at `size`, bilinear (align_corners=False)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    squeeze = maps.dim() == 3
    t = maps[:, None] if squeeze else maps
    t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return t[:, 0] if squeeze else t


def finalize(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The CAM finishing recipe: upsample to the input size, ReLU, per-map min-max."""
    return normalize_maps(torch.relu(upsample(cam.float(), size)))


def require_module(model: ModelAdapter, method: str) -> torch.nn.Module:
    """The adapter's torch module, or a clear error for black-box models."""
    module = getattr(model, "module", None)
    if module is None:
        raise ConfigError(
            f"{method} needs gradients or layer activations, but this model is a black box "
            "(module=None); use a black-box explainer: rise or occlusion"
        )
    return module


def has_conv(model: ModelAdapter) -> bool:
    """Whether the adapter's torch module holds a 2-d convolution (None for black boxes)."""
    module = getattr(model, "module", None)
    return isinstance(module, nn.Module) and any(
        isinstance(m, nn.Conv2d) for m in module.modules()
    )


def use_channels_last(model: ModelAdapter, x: torch.Tensor, flag: bool | None = None) -> bool:
    """Whether to feed `x` to the model in channels-last layout.

    `flag` None (auto): yes for a 4-d float batch on the CPU going into a torch module with
    convolutions. oneDNN's channels-last convolutions measured 1.2x (resnet18, 224 px) to
    1.9x (demo CNN, 64 px) faster per core than the default layout here; on CUDA the gain
    depends on dtype and cuDNN, so auto leaves it off there (pass True to force it).
    """
    if x.dim() != 4 or not x.is_floating_point():
        return False
    if flag is not None:
        return bool(flag)
    return x.device.type == "cpu" and has_conv(model)


def forward_as(
    model: ModelAdapter, x: torch.Tensor, channels_last: bool,
    reset: Callable[[], None] | None = None,
) -> Any:
    """``model.forward(x)``, with `x` in channels-last layout when asked.

    The values are the same in both layouts (up to float rounding of the convolution
    algorithm); a forward that rejects a channels-last input (e.g. ``x.view(n, -1)`` on it)
    is retried once with `x` as given. `reset` runs before every attempt (hook state)."""
    if channels_last:
        if reset is not None:
            reset()
        try:
            return model.forward(x.contiguous(memory_format=torch.channels_last))
        except RuntimeError:
            pass
    if reset is not None:
        reset()
    return model.forward(x)


@contextmanager
def frozen_parameters(module: nn.Module | None) -> Iterator[None]:
    """Parameters that require grad stop requiring it inside the block, and are restored
    after it (also on errors). With a gradient taken only w.r.t. an activation or the input,
    the graph then records no weight-gradient edges and saves nothing for them."""
    params = [] if module is None else [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def slice_output(out: Any, start: int, stop: int, total: int) -> Any:
    """Rows [start, stop) of a model output of `total` rows: tensors, lists, tuples, dicts.

    Tensors slice on dim 0 when it equals `total`; a list/tuple of `total` non-tensor items
    (torchvision detection: one dict per image) slices as a list; dict-like outputs
    (HF `ModelOutput`) recurse into their values and keep their type when possible.
    """
    if isinstance(out, torch.Tensor):
        return out[start:stop] if out.dim() > 0 and out.shape[0] == total else out
    if isinstance(out, dict):
        items = {k: slice_output(v, start, stop, total) for k, v in out.items()}
        try:
            return type(out)(**items)
        except TypeError:
            return items
    if isinstance(out, (list, tuple)):
        if len(out) == total and not any(isinstance(v, torch.Tensor) for v in out):
            return type(out)(out[start:stop]) if isinstance(out, list) else tuple(out[start:stop])
        sliced = [slice_output(v, start, stop, total) for v in out]
        return sliced if isinstance(out, list) else tuple(sliced)
    return out


def target_scores(target: Target, out: Any, n: int) -> torch.Tensor:
    """Apply `target` and check it gave one float per sample."""
    s = target(out)
    if not isinstance(s, torch.Tensor) or s.dim() != 1 or s.shape[0] != n:
        shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ConfigError(f"a saliency target must return a tensor of shape ({n},); got {shape}")
    return s.float()


@torch.no_grad()
def block_scores(
    model: ModelAdapter,
    target: Target,
    n: int,
    k: int,
    make: Callable[[int, int], torch.Tensor],
    chunk: int = 64,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Score `k` perturbed copies of an `n`-sample batch; returns (k, n).

    ``make(j0, j1)`` returns copies j0..j1-1 as a tensor (j1 - j0, n, C, H, W); they are
    flattened block-major and forwarded `chunk // n` blocks at a time (at least one), in
    channels-last layout where `use_channels_last` says so (`channels_last`: None = auto).
    """
    per = max(1, chunk // max(n, 1))
    rows = []
    cl: bool | None = None
    for j0 in range(0, k, per):
        j1 = min(k, j0 + per)
        xb = make(j0, j1)
        m = j1 - j0
        xb = xb.reshape(m * n, *xb.shape[2:])
        if cl is None:
            cl = use_channels_last(model, xb, channels_last)
        out = forward_as(model, xb, cl)
        rows.extend(target_scores(target, slice_output(out, b * n, (b + 1) * n, m * n), n)
                    for b in range(m))
    return torch.stack(rows)

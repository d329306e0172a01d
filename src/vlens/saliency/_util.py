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
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target

EPS = 1e-12


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to [0, 1]; a constant map (span within float rounding of its
    magnitude) or one holding NaN becomes all zeros."""
    flat = maps.reshape(maps.shape[0], -1)
    lo, hi = _minmax(flat)
    return _scale_(flat - lo, lo, hi).reshape(maps.shape)


def _minmax(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row min and max, (n, 1) each. ``amin``/``amax``: ``min(dim)``/``max(dim)`` and
    ``aminmax`` also track indices and measured ~20x slower on the CPU (32 x 224^2)."""
    return flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)


def _scale_(shifted: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """In place: (x - lo) / (hi - lo) per row, given ``shifted = x - lo``.

    A row is constant, and becomes 0, when its span is at most EPS or a few units of float
    rounding of its magnitude (4 ulps): a constant map resized bilinearly varies by ~1e-7
    relative from rounding alone, and min-max would blow that noise up to [0, 1]. A NaN
    row becomes 0 too. In-place passes, no broadcast mask (``masked_fill_`` with an (n, 1)
    mask measured 5x slower than these two passes together)."""
    span = hi - lo
    ulp = torch.finfo(shifted.dtype).eps if shifted.is_floating_point() else 0.0
    tol = torch.maximum(lo.abs(), hi.abs()).mul_(4 * ulp).clamp_min_(EPS)
    shifted.div_(torch.where(span > tol, span, torch.full_like(span, float("inf"))))
    return shifted.nan_to_num_(nan=0.0, posinf=1.0, neginf=0.0)


@lru_cache(maxsize=64)
def _bilinear_matrix(src: int, dst: int, device: torch.device, dtype: torch.dtype
                     ) -> torch.Tensor:
    """(dst, src) weights of 1-d linear interpolation, ``align_corners=False``, the source
    index rule of ``F.interpolate`` (src = (i + 0.5) * src/dst - 0.5, clamped at 0)."""
    i = torch.arange(dst, dtype=torch.float64)
    pos = ((i + 0.5) * (src / dst) - 0.5).clamp_min(0)
    i0 = pos.floor().long().clamp_max(src - 1)
    i1 = (i0 + 1).clamp_max(src - 1)
    lam = pos - i0
    m = torch.zeros(dst, src, dtype=torch.float64)
    m[torch.arange(dst), i0] += 1 - lam
    m[torch.arange(dst), i1] += lam
    return m.to(device, dtype)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) or (n, c, h, w) -> same at `size`, bilinear (align_corners=False).

    On the CPU, bilinear resizing is separable, so it runs as two small matrix products
    ``R_y @ map @ R_x^T`` (equal to ``F.interpolate`` up to float rounding, < 1e-6):
    measured 9x faster than ``F.interpolate`` for 8x8 -> 64x64 maps and 1.6x for
    7x7 -> 224x224 on one thread. Elsewhere (CUDA: a matmul may run in TF32) it is
    ``F.interpolate``."""
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    if maps.device.type == "cpu" and maps.dtype in (torch.float32, torch.float64):
        ry = _bilinear_matrix(maps.shape[-2], size[0], maps.device, maps.dtype)
        rx = _bilinear_matrix(maps.shape[-1], size[1], maps.device, maps.dtype)
        return ry @ maps @ rx.T
    squeeze = maps.dim() == 3
    t = maps[:, None] if squeeze else maps
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t[:, 0] if squeeze else t


def finalize(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The CAM finishing recipe: upsample to the input size, ReLU, per-map min-max.

    Same values as ``normalize_maps(relu(upsample(cam)))`` in fewer passes: with
    lo = max(min, 0), ``relu(x) - lo == clamp(x, min=lo) - lo`` for every x, so the ReLU
    folds into a clamp, done in place on the upsampled copy."""
    up = upsample(cam.float(), size)
    if up.data_ptr() == cam.data_ptr():
        up = up.clone()  # never write into the caller's tensor
    flat = up.reshape(up.shape[0], -1)
    lo, hi = _minmax(flat)
    lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    flat = flat.clamp_(min=lo).sub_(lo)
    return _scale_(flat, lo, hi).reshape(up.shape)


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
    is retried once with `x` in the default (contiguous) layout. `reset` runs before every
    attempt (hook state)."""
    if channels_last:
        if reset is not None:
            reset()
        try:
            return model.forward(x.contiguous(memory_format=torch.channels_last))
        except RuntimeError:
            x = x.contiguous()
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

"""The CAM family, batched and on the device.

Written here rather than wrapped from pytorch-grad-cam because that library moves
activations to numpy and runs its CAM math (and Score-CAM's forwards) per image on the CPU.
One template (`BaseCAM`): a forward hook on the target layer captures activations for the
whole batch in ONE forward, gradients come from ONE ``torch.autograd.grad`` w.r.t. those
activations (no parameter gradients, nothing below the layer; the forward runs without
autograd up to the layer), and a subclass supplies only the channel weighting.
Finishing (`_util.finalize`): bilinear upsample to the input size, ReLU, per-map min-max.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target
from vlens.saliency._util import (
    block_scores,
    finalize,
    forward_as,
    frozen_parameters,
    normalize_maps,
    require_module,
    target_scores,
    upsample,
    use_channels_last,
)
from vlens.saliency.base import EXPLAINERS
from vlens.saliency.layers import resolve_target_layer, tokens_to_grid

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


class BaseCAM:
    """Template: capture (activations, gradients) of one layer, weight, finish.

    Parameters: `target_layer` a dotted module name (None: chosen automatically, see
    `vlens.saliency.layers`); `reshape_transform` turns the layer's output into (n, C, h, w)
    (None: ViT-style (n, tokens, C) outputs are reshaped automatically); `channels_last`
    feeds the input in channels-last layout (None: auto, see `_util.use_channels_last`).

    Speed paths (each checked against the plain computation in
    tests/test_saliency_speedpaths.py): the forward runs without autograd up to the target
    layer; the module's parameters stop requiring grad for the call (restored afterwards),
    so the graph above the layer holds no weight-gradient edges; the one gradient is
    ``torch.autograd.grad`` w.r.t. the captured activations, so backward stops at the layer.
    """

    name = "cam"
    needs_gradients = True

    def __init__(
        self,
        target_layer: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.target_layer = target_layer or None
        self.reshape_transform = reshape_transform
        self.channels_last = channels_last

    # -- template -------------------------------------------------------------------------
    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Maps (n, H, W) in [0, 1] on x's device."""
        acts, grads = self.capture(model, x, target)
        cam = self.cam(acts, grads, model=model, x=x, target=target)
        return finalize(cam, tuple(x.shape[-2:]))

    def capture(
        self, model: ModelAdapter, x: torch.Tensor, target: Target
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(activations, gradients or None), both (n, C, h, w), from one forward(+backward)."""
        module = require_module(model, self.name)
        _, layer = resolve_target_layer(module, self.target_layer)
        store: dict[str, torch.Tensor] = {}
        need_grad = self.needs_gradients

        def hook(_mod: torch.nn.Module, _inp: Any, out: Any) -> Any:
            t = out[0] if isinstance(out, (tuple, list)) else out
            leaf = t.detach().requires_grad_(need_grad)
            store["a"] = leaf
            # record the graph only from here on: nothing below the layer is ever needed
            torch.set_grad_enabled(need_grad)
            # a clone, so an in-place op after the layer cannot touch the captured leaf
            new = leaf.clone() if need_grad else leaf
            if isinstance(out, tuple):
                return (new, *out[1:])
            if isinstance(out, list):
                return [new, *out[1:]]
            return new

        def reset() -> None:
            store.clear()
            torch.set_grad_enabled(False)

        cl = use_channels_last(model, x, self.channels_last)
        handle = layer.register_forward_hook(hook)
        prev = torch.is_grad_enabled()
        try:
            with frozen_parameters(module if need_grad else None):
                out = forward_as(model, x, cl, reset)
                if "a" not in store:
                    raise ConfigError(f"target layer {self.target_layer!r} was not run")
                grads = None
                if need_grad:
                    torch.set_grad_enabled(True)
                    s = target_scores(target, out, x.shape[0])
                    if not s.requires_grad:
                        raise ConfigError(
                            f"{self.name}: the target does not depend on the target layer "
                            "(no gradient path); choose another layer"
                        )
                    (grads,) = torch.autograd.grad(s.sum(), store["a"], allow_unused=True)
                    if grads is None:
                        grads = torch.zeros_like(store["a"])
        finally:
            torch.set_grad_enabled(prev)
            handle.remove()
        acts = store["a"].detach()
        return self._to_grid(acts, x, module), (
            None if grads is None else self._to_grid(grads, x, module)
        )

    def _to_grid(self, t: torch.Tensor, x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        if self.reshape_transform is not None:
            t = self.reshape_transform(t)
        elif t.dim() == 3:
            prefix = getattr(module, "num_prefix_tokens", None)
            t = tokens_to_grid(t, tuple(x.shape[-2:]), prefix if isinstance(prefix, int) else None)
        if t.dim() != 4:
            raise ConfigError(
                f"{self.name}: target layer output has shape {tuple(t.shape)}; expected "
                "(n, C, h, w) or ViT tokens (n, T, C); pass reshape_transform"
            )
        return t.float()

    # -- override points ------------------------------------------------------------------
    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Channel weights (n, C)."""
        raise NotImplementedError

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, **ctx: Any) -> torch.Tensor:
        """Raw CAM (n, h, w) at layer resolution: sum_c w_c * A_c by default."""
        w = self.weights(acts, grads)  # type: ignore[arg-type]
        return torch.einsum("nc,nchw->nhw", w, acts)


@EXPLAINERS.register("gradcam", help="Grad-CAM: channel weights = mean gradient")
class GradCAM(BaseCAM):
    name = "gradcam"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3))


@EXPLAINERS.register("gradcam++", help="Grad-CAM++: second/third-order gradient weighting")
class GradCAMPlusPlus(BaseCAM):
    name = "gradcam++"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
        return (torch.relu(grads) * aij).sum(dim=(2, 3))


@EXPLAINERS.register("xgradcam", help="XGrad-CAM: activation-weighted gradients")
class XGradCAM(BaseCAM):
    name = "xgradcam"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        return (grads * acts / (sum_a + 1e-7)).sum(dim=(2, 3))


@EXPLAINERS.register("layercam", help="LayerCAM: per-location positive-gradient weighting")
class LayerCAM(BaseCAM):
    name = "layercam"

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, **ctx: Any) -> torch.Tensor:
        return (torch.relu(grads) * acts).sum(dim=1)  # type: ignore[arg-type]


SELECTIONS = ("variance", "mean")


@EXPLAINERS.register("scorecam", help="Score-CAM: weights = softmax of masked-input scores")
class ScoreCAM(BaseCAM):
    """Each channel, upsampled and min-max normalised, masks the input; the target's score
    on the masked input (softmax over channels) is the channel weight.

    Exact by default: one masked forward per channel and image, as in the paper and
    pytorch-grad-cam. The masked inputs of ALL images and channels are laid out block-major
    and go through the model in chunks of `batch_size` images, without autograd and in
    channels-last layout on the CPU (`channels_last`). Its cost is C forwards per image.

    `max_channels=k` is Faster Score-CAM (tabayashi0117/Score-CAM, tf-keras-vis ``max_N``):
    only the k channels of each image with the largest spatial variance
    (`channel_selection="variance"`; ``"mean"``: largest mean activation) are scored and
    summed, so C/k times fewer forwards. It is a different, approximate map; the
    correlation with the exact map is measured in benchmarks/bench_saliency.py.
    """

    name = "scorecam"
    needs_gradients = False

    def __init__(
        self,
        target_layer: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        batch_size: int = 64,
        max_channels: int | None = None,
        channel_selection: str = "variance",
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(target_layer, reshape_transform, channels_last)
        if batch_size < 1 or (max_channels is not None and max_channels < 1):
            raise ConfigError("scorecam: batch_size and max_channels must be >= 1")
        if channel_selection not in SELECTIONS:
            raise ConfigError(
                f"scorecam: channel_selection must be one of {SELECTIONS}, "
                f"got {channel_selection!r}"
            )
        self.batch_size = batch_size
        self.max_channels = max_channels
        self.channel_selection = channel_selection

    def select(self, acts: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) -> (n, k, h, w): the channels scored (all unless `max_channels`)."""
        c = acts.shape[1]
        if self.max_channels is None or self.max_channels >= c:
            return acts
        flat = acts.flatten(2)
        key = flat.var(dim=2) if self.channel_selection == "variance" else flat.mean(dim=2)
        idx = key.topk(self.max_channels, dim=1).indices
        return torch.gather(acts, 1, idx[:, :, None, None].expand(-1, -1, *acts.shape[2:]))

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, **ctx: Any) -> torch.Tensor:
        x: torch.Tensor = ctx["x"]
        acts = self.select(acts)
        n, c = acts.shape[:2]
        size = tuple(x.shape[-2:])
        cl = use_channels_last(ctx["model"], x, self.channels_last)
        x_last = x.permute(0, 2, 3, 1)  # (n, H, W, 3) view

        def make(j0: int, j1: int) -> torch.Tensor:
            """Masked copies (m, n, 3, H, W), written once, straight into the layout the
            forward takes (channels-last memory when `cl`: no transpose or layout copy)."""
            m = upsample(acts[:, j0:j1].transpose(0, 1), size)  # (m, n, H, W)
            m = normalize_maps(m.reshape(-1, *size)).reshape(m.shape).to(x.dtype)
            if cl:
                out = torch.empty((*m.shape, x.shape[1]), dtype=x.dtype, device=x.device)
                torch.mul(m[..., None], x_last[None], out=out)
                return out.permute(0, 1, 4, 2, 3)
            out = torch.empty((m.shape[0], *x.shape), dtype=x.dtype, device=x.device)
            return torch.mul(m[:, :, None], x[None], out=out)

        scores = block_scores(ctx["model"], ctx["target"], n, c, make, self.batch_size, cl)
        w = torch.softmax(scores.T, dim=1)  # (n, c)
        return torch.einsum("nc,nchw->nhw", w, acts)


@EXPLAINERS.register("eigencam", help="Eigen-CAM: first principal component (gradient-free)")
class EigenCAM(BaseCAM):
    """Projection of the centred activations on their first right-singular vector (batched
    ``torch.linalg.svd``). The SVD sign is arbitrary; it is fixed so the map's largest
    magnitude is positive (Seg-Eigen-CAM, eq. 13). Class-agnostic: `target` is unused."""

    name = "eigencam"
    needs_gradients = False

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, **ctx: Any) -> torch.Tensor:
        return principal_projection(acts)


def principal_projection(acts: torch.Tensor) -> torch.Tensor:
    """(n, C, h, w) -> (n, h, w): centred activations projected on the first component.

    The float64 SVD runs on the CPU even for CUDA activations (the result goes back to their
    device): with the SVD on the GPU, Eigen-CAM measured 628 img/s on an H200 against
    1,914 img/s on 2 CPU threads (demo CNN, batch 32). This CPU path itself has not been
    timed on a GPU machine yet."""
    n, c, h, w = acts.shape
    a = torch.nan_to_num(acts.detach().double()).reshape(n, c, h * w).transpose(1, 2).cpu()
    a = a - a.mean(dim=1, keepdim=True)  # (n, hw, C)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    proj = (a @ vh[:, 0, :, None])[..., 0]  # (n, hw)
    flip = proj.min(dim=1).values.abs() > proj.max(dim=1).values.abs()
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(n, h, w).to(acts.device, acts.dtype)

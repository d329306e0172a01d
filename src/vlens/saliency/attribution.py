"""Gradient-path methods through Captum: Integrated Gradients and SmoothGrad.

Captum expands the batch (IG: one copy per step, block-major; NoiseTunnel: one copy per
noise sample, sample-major). A per-batch `target` only understands an output for the `n`
original samples in order, so a sample index rides along as an additional forward argument
(Captum expands it exactly like the inputs); the wrapped forward reorders rows block-major,
applies the target per block, and scatters the scores back. Attributions are reduced over
channels by absolute sum and min-max normalised per map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target
from vlens.saliency._util import (
    forward_as,
    frozen_parameters,
    normalize_maps,
    require_module,
    slice_output,
    target_scores,
    use_channels_last,
)
from vlens.saliency.base import EXPLAINERS


def per_row_forward(
    model: ModelAdapter, target: Target, n: int, channels_last: bool = False
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """forward(inputs (m, ...), sample_idx (m,)) -> target score per row (m,); the rows go
    through the model in channels-last layout when `channels_last` (differentiable)."""

    def forward(inp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        m = inp.shape[0]
        if m % n:
            raise ConfigError(f"expanded batch of {m} rows is not a multiple of {n} samples")
        k = m // n
        order = torch.argsort(idx, stable=True).view(n, k).T.reshape(-1)
        out = forward_as(model, inp[order], channels_last)
        s = torch.cat(
            [target_scores(target, slice_output(out, b * n, (b + 1) * n, m), n) for b in range(k)]
        )
        return torch.zeros_like(s).scatter(0, order, s)

    return forward


def _reduce(attr: torch.Tensor) -> torch.Tensor:
    return normalize_maps(attr.detach().abs().sum(dim=1).float())


@EXPLAINERS.register("integrated_gradients", help="Integrated Gradients (Captum), zero baseline")
class IntegratedGradientsExplainer:
    """Parameters: `n_steps` path steps, `baseline` constant baseline value (in the model's
    normalised input space), `internal_batch_size` rows per forward (None: all at once)."""

    name = "integrated_gradients"
    needs_gradients = True

    def __init__(
        self, n_steps: int = 32, baseline: float = 0.0, internal_batch_size: int | None = 64
    ) -> None:
        if n_steps < 1:
            raise ConfigError("integrated_gradients: n_steps must be >= 1")
        self.n_steps, self.baseline = n_steps, baseline
        self.internal_batch_size = internal_batch_size

    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor:
        require_module(model, self.name)
        n = x.shape[0]
        idx = torch.arange(n, device=x.device)
        cl = use_channels_last(model, x)
        from captum.attr import IntegratedGradients  # lazy: captum costs ~1.6 s to import

        ig = IntegratedGradients(per_row_forward(model, target, n, cl))
        # gradients w.r.t. the input only: no weight-gradient edges in the graph
        with torch.enable_grad(), frozen_parameters(model.module):
            attr = ig.attribute(
                x,
                baselines=self.baseline,
                additional_forward_args=(idx,),
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
            )
        return _reduce(attr)


@EXPLAINERS.register("smoothgrad", help="SmoothGrad (Captum NoiseTunnel over gradients)")
class SmoothGradExplainer:
    """Parameters: `n_samples` noisy copies, `noise_level` noise std as a fraction of the
    batch's value range (paper: 0.1-0.2), `seed` for reproducible noise, `batch_size` rows
    per forward (at least one noisy copy of the whole batch)."""

    name = "smoothgrad"
    needs_gradients = True

    def __init__(
        self, n_samples: int = 16, noise_level: float = 0.15, seed: int = 0, batch_size: int = 64
    ) -> None:
        if n_samples < 1 or noise_level < 0 or batch_size < 1:
            raise ConfigError(
                "smoothgrad: n_samples and batch_size must be >= 1 and noise_level >= 0"
            )
        self.n_samples, self.noise_level, self.seed = n_samples, noise_level, seed
        self.batch_size = batch_size

    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor:
        require_module(model, self.name)
        n = x.shape[0]
        idx = torch.arange(n, device=x.device)
        sigma = float(self.noise_level * (x.max() - x.min()))
        from captum.attr import NoiseTunnel, Saliency  # lazy (see above)

        nt = NoiseTunnel(Saliency(per_row_forward(model, target, n, use_channels_last(model, x))))
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=devices),
            torch.enable_grad(),
            frozen_parameters(model.module),
        ):
            torch.manual_seed(self.seed)
            attr = nt.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=self.n_samples,
                stdevs=sigma,
                nt_samples_batch_size=max(1, self.batch_size // n),
                additional_forward_args=(idx,),
            )
        return _reduce(attr)

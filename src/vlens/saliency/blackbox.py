"""Black-box explainers: they only call ``model.forward`` (no module, no gradients), so they
work for ONNX models too. Perturbed copies of the batch go through the model in large
block-major chunks (`_util.block_scores`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target
from vlens.saliency._util import block_scores, normalize_maps
from vlens.saliency.base import EXPLAINERS


def rise_masks(
    n_masks: int, size: tuple[int, int], grid: int, p: float, generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """RISE masks (N, H, W): a random binary `grid`x`grid` pattern (keep prob `p`),
    bilinearly upsampled to one cell larger than the image and randomly shifted."""
    h, w = size
    ch, cw = -(-h // grid), -(-w // grid)
    cells = (torch.rand(n_masks, 1, grid, grid, generator=generator) < p).float()
    up = F.interpolate(cells, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear",
                       align_corners=False)[:, 0]
    dy = torch.randint(0, ch, (n_masks,), generator=generator)
    dx = torch.randint(0, cw, (n_masks,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :]
    return up[torch.arange(n_masks)[:, None, None], rows, cols].to(device)


@EXPLAINERS.register("rise", help="RISE: random-mask importance (black box)")
class RISE:
    """Saliency = sum over masks of score(x * mask) * mask / (N * p).

    Parameters: `n_masks` (paper: 4000-8000; fewer is noisier), `grid` cells per side,
    `p` keep probability, `batch_size` images per forward, `seed`."""

    name = "rise"
    needs_gradients = False

    def __init__(
        self, n_masks: int = 1000, grid: int = 7, p: float = 0.5, batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if n_masks < 1 or grid < 1 or not 0 < p <= 1 or batch_size < 1:
            raise ConfigError("rise: need n_masks >= 1, grid >= 1, 0 < p <= 1, batch_size >= 1")
        self.n_masks, self.grid, self.p = n_masks, grid, p
        self.batch_size, self.seed = batch_size, seed

    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor:
        n, size = x.shape[0], tuple(x.shape[-2:])
        gen = torch.Generator().manual_seed(self.seed)
        masks = rise_masks(self.n_masks, size, self.grid, self.p, gen, x.device).to(x.dtype)

        def make(j0: int, j1: int) -> torch.Tensor:
            return x[None] * masks[j0:j1, None, None]  # (m, n, 3, H, W)

        scores = block_scores(model, target, n, self.n_masks, make, self.batch_size)
        sal = torch.einsum("kn,khw->nhw", scores, masks.float()) / (self.n_masks * self.p)
        return normalize_maps(sal)


def _starts(total: int, patch: int, stride: int) -> list[int]:
    s = list(range(0, total - patch + 1, stride))
    if s[-1] != total - patch:
        s.append(total - patch)
    return s


@EXPLAINERS.register("occlusion", help="Occlusion: score drop under sliding patches (black box)")
class Occlusion:
    """Each pixel's value is the mean score drop (base - occluded) over the patches covering
    it. Parameters: `patch` side in pixels (None: 1/8 of the image), `stride` (None:
    patch / 2), `baseline` fill value, `batch_size` images per forward."""

    name = "occlusion"
    needs_gradients = False

    def __init__(
        self, patch: int | None = None, stride: int | None = None, baseline: float = 0.0,
        batch_size: int = 64,
    ) -> None:
        if (patch is not None and patch < 1) or (stride is not None and stride < 1):
            raise ConfigError("occlusion: patch and stride must be >= 1")
        self.patch, self.stride = patch, stride
        self.baseline, self.batch_size = baseline, batch_size

    def explain(self, model: ModelAdapter, x: torch.Tensor, target: Target) -> torch.Tensor:
        n, (h, w) = x.shape[0], x.shape[-2:]
        patch = self.patch or max(1, min(h, w) // 8)
        patch = min(patch, h, w)
        stride = self.stride or max(1, patch // 2)
        pos = torch.tensor(
            [(y, xx) for y in _starts(h, patch, stride) for xx in _starts(w, patch, stride)],
            device=x.device,
        )
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)

        def cover(j0: int, j1: int) -> torch.Tensor:  # (m, H, W) bool
            y, xx = pos[j0:j1, 0], pos[j0:j1, 1]
            ry = (ar_h[None] >= y[:, None]) & (ar_h[None] < y[:, None] + patch)
            rx = (ar_w[None] >= xx[:, None]) & (ar_w[None] < xx[:, None] + patch)
            return ry[:, :, None] & rx[:, None, :]

        def make(j0: int, j1: int) -> torch.Tensor:
            c = cover(j0, j1)[:, None, None]
            return torch.where(c, torch.full_like(x, self.baseline)[None], x[None])

        base = block_scores(model, target, n, 1, lambda a, b: x[None], self.batch_size)[0]
        scores = block_scores(model, target, n, len(pos), make, self.batch_size)
        drop = base[None] - scores  # (P, n)
        heat = torch.zeros(n, h, w, device=x.device)
        count = torch.zeros(h, w, device=x.device)
        for j0 in range(0, len(pos), 256):
            c = cover(j0, min(len(pos), j0 + 256)).float()
            heat += torch.einsum("pn,phw->nhw", drop[j0:j0 + 256], c)
            count += c.sum(0)
        return normalize_maps(heat / count.clamp_min(1))

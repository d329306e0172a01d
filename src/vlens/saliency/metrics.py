"""Faithfulness and localisation metrics for saliency maps, batched for any explainer/model.

Each metric is a small object whose class declares its own metadata, Quantus-style, so a
report can rank and label metrics without special cases:
``name``, ``category`` ("faithfulness" | "localisation"), ``higher_is_better``,
``needs_ground_truth``. Every call returns one value per sample, shape (n,).

Faithfulness metrics are called ``metric(model, x, target, maps)`` and perturb the input;
all perturbation steps of a batch go through the model in chunked forwards (block-major,
see `_util.block_scores`). Use a probability target (softmax score) for Average
Drop/Increase, whose definitions assume a positive score. Localisation metrics are called
``metric(maps, masks)`` with ground-truth masks (n, H, W) at the map's size; see
`boxes_to_masks` for boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from vlens.errors import ConfigError
from vlens.models.base import ModelAdapter, Target
from vlens.registry import Registry
from vlens.saliency._util import block_scores

METRICS: Registry = Registry("saliency metric")


def _check(x: torch.Tensor, maps: torch.Tensor) -> None:
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ConfigError(f"maps {tuple(maps.shape)} do not match inputs {tuple(x.shape)}")


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(n, H, W) -> rank of each pixel by saliency, 0 = most salient (ties: lower index)."""
    n = maps.shape[0]
    order = torch.argsort(-maps.reshape(n, -1), dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=maps.device).expand(n, -1))
    return ranks.reshape(maps.shape)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under (n, K+1) curves sampled at 0, 1/K, ..., 1."""
    k = curve.shape[1] - 1
    if k == 0:
        return curve[:, 0].clone()
    return (curve.sum(1) - 0.5 * (curve[:, 0] + curve[:, -1])) / k


class _Perturbation:
    """Base for metrics on the curve of scores while pixels are removed/inserted by rank."""

    category: ClassVar[str] = "faithfulness"
    needs_ground_truth: ClassVar[bool] = False
    insert: ClassVar[bool] = False

    def __init__(self, steps: int = 20, baseline: float = 0.0, batch_size: int = 64) -> None:
        if steps < 1 or batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: steps and batch_size must be >= 1")
        self.steps, self.baseline, self.batch_size = steps, baseline, batch_size

    def curve(self, model: ModelAdapter, x: torch.Tensor, target: Target,
              maps: torch.Tensor) -> torch.Tensor:
        """Scores (n, steps+1) after removing (or inserting) fraction k/steps of pixels,
        most salient first."""
        _check(x, maps)
        n, hw = x.shape[0], x.shape[-2] * x.shape[-1]
        ranks = pixel_ranks(maps.to(x.device))[:, None]  # (n, 1, H, W)
        base = torch.full_like(x, self.baseline)
        counts = torch.tensor([round(k * hw / self.steps) for k in range(self.steps + 1)],
                              device=x.device)

        def make(j0: int, j1: int) -> torch.Tensor:
            sel = ranks[None] < counts[j0:j1, None, None, None, None]  # (m, n, 1, H, W)
            if self.insert:
                return torch.where(sel, x[None], base[None])
            return torch.where(sel, base[None], x[None])

        return block_scores(model, target, n, self.steps + 1, make, self.batch_size).T


@METRICS.register("deletion")
class DeletionAUC(_Perturbation):
    """Area under the score curve while the most salient pixels are deleted (set to
    `baseline`): a faithful map makes the score fall fast. Lower is better."""

    name = "deletion"
    higher_is_better = False

    def __call__(self, model, x, target, maps) -> torch.Tensor:
        return auc(self.curve(model, x, target, maps))


@METRICS.register("insertion")
class InsertionAUC(_Perturbation):
    """Area under the score curve while the most salient pixels are inserted into a
    `baseline` image: a faithful map makes the score rise fast. Higher is better."""

    name = "insertion"
    higher_is_better = True
    insert = True

    def __call__(self, model, x, target, maps) -> torch.Tensor:
        return auc(self.curve(model, x, target, maps))


@METRICS.register("aopc")
class AOPC(_Perturbation):
    """Area over the perturbation curve (Samek et al.): mean over k = 0..K of
    f(x) - f(x with the k/K most salient pixels deleted). Higher is better."""

    name = "aopc"
    higher_is_better = True

    def __call__(self, model, x, target, maps) -> torch.Tensor:
        c = self.curve(model, x, target, maps)
        return (c[:, :1] - c).mean(1)


class _Explanation:
    """Score of the image multiplied by its map (Grad-CAM++ paper, Chattopadhyay et al.)."""

    category: ClassVar[str] = "faithfulness"
    needs_ground_truth: ClassVar[bool] = False

    def scores(self, model, x, target, maps) -> tuple[torch.Tensor, torch.Tensor]:
        _check(x, maps)
        n = x.shape[0]
        m = maps.to(x.device, x.dtype)[:, None]
        both = torch.stack([x, x * m])  # (2, n, 3, H, W)
        s = block_scores(model, target, n, 2, lambda a, b: both[a:b], 2 * n)
        return s[0], s[1]


@METRICS.register("average_drop")
class AverageDrop(_Explanation):
    """Per sample 100 * max(0, Y - O) / Y with Y the score on the image and O on image * map
    (the batch mean is the paper's Average Drop %). Lower is better."""

    name = "average_drop"
    higher_is_better = False

    def __call__(self, model, x, target, maps) -> torch.Tensor:
        y, o = self.scores(model, x, target, maps)
        return 100 * torch.relu(y - o) / y.abs().clamp_min(1e-12)


@METRICS.register("average_increase")
class AverageIncrease(_Explanation):
    """Per sample 100 if the score on image * map exceeds the score on the image, else 0
    (the batch mean is the paper's Increase in Confidence %). Higher is better."""

    name = "average_increase"
    higher_is_better = True

    def __call__(self, model, x, target, maps) -> torch.Tensor:
        y, o = self.scores(model, x, target, maps)
        return 100 * (o > y).float()


def _check_gt(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    if masks.shape != maps.shape:
        raise ConfigError(f"ground-truth masks {tuple(masks.shape)} must match maps "
                          f"{tuple(maps.shape)}")
    return masks.to(maps.device).bool()


@METRICS.register("energy_inside")
class EnergyInside:
    """Fraction of the map's mass inside the object mask (energy-based pointing game,
    Score-CAM paper); 0 for an all-zero map. Higher is better."""

    name = "energy_inside"
    category = "localisation"
    higher_is_better = True
    needs_ground_truth = True

    def __call__(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        gt = _check_gt(maps, masks)
        m = maps.float().clamp_min(0)
        total = m.sum(dim=(1, 2))
        inside = (m * gt).sum(dim=(1, 2))
        return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))


@METRICS.register("pointing_game")
class PointingGame:
    """1 if the map's maximum (first one in row-major order) lies within `tolerance` pixels
    (Chebyshev distance) of the object mask, else 0 (Zhang et al. use 15 px). Higher is
    better."""

    name = "pointing_game"
    category = "localisation"
    higher_is_better = True
    needs_ground_truth = True

    def __init__(self, tolerance: int = 0) -> None:
        if tolerance < 0:
            raise ConfigError("pointing_game: tolerance must be >= 0")
        self.tolerance = tolerance

    def __call__(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        gt = _check_gt(maps, masks).float()
        if self.tolerance:
            k = 2 * self.tolerance + 1
            gt = F.max_pool2d(gt[:, None], k, stride=1, padding=self.tolerance)[:, 0]
        n, w = maps.shape[0], maps.shape[2]
        idx = maps.reshape(n, -1).argmax(dim=1)
        hit = gt[torch.arange(n, device=maps.device), idx // w, idx % w]
        return (hit > 0).float()


def boxes_to_masks(
    boxes: Sequence[torch.Tensor | Sequence[Sequence[float]]], size: tuple[int, int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-sample box lists (x0, y0, x1, y1 in pixels, x1/y1 exclusive) -> (n, H, W) bool.

    A pixel (row r, col c) is inside when x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1; a
    sample with several boxes gets their union."""
    h, w = size
    cy = torch.arange(h, device=device, dtype=torch.float32)[:, None] + 0.5
    cx = torch.arange(w, device=device, dtype=torch.float32)[None, :] + 0.5
    out = torch.zeros(len(boxes), h, w, dtype=torch.bool, device=device)
    for i, bs in enumerate(boxes):
        b = torch.as_tensor(bs, dtype=torch.float32, device=device).reshape(-1, 4)
        for x0, y0, x1, y1 in b:
            out[i] |= (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    return out


def get_metric(name: str, **params: object):
    """A metric by name: deletion, insertion, aopc, average_drop, average_increase,
    energy_inside, pointing_game."""
    return METRICS.create(name, **params)

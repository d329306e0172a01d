"""Views of a saliency map shown to the VLM and in the report: masked-CAM, overlay, crop.

Maps come at the model's input size; every view is rendered at the ORIGINAL image size (the
map is resized bilinearly). Images of the same size are processed as one batch on the
maps' device; outputs are PIL images (default) or uint8 arrays (H, W, 3). No matplotlib:
the jet-like colormap is a closed-form piecewise-linear function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlens.errors import ConfigError

ImagesLike = Sequence[Image.Image] | Sequence[np.ndarray] | np.ndarray | torch.Tensor
Output = Literal["pil", "array"]


def soft_mask(maps: torch.Tensor, alpha: float = 25.0, beta: float = 0.6) -> torch.Tensor:
    """m = 1 / (1 + exp(alpha * (beta - v))): ~0 below beta, 0.5 at beta, ~1 above."""
    return torch.sigmoid(alpha * (maps - beta))


def jet(v: torch.Tensor) -> torch.Tensor:
    """Jet-like colormap: values in [0, 1] (...) -> RGB in [0, 1] (..., 3), blue -> red."""
    v = v.clamp(0, 1)[..., None]
    centres = torch.tensor([3.0, 2.0, 1.0], device=v.device, dtype=v.dtype)
    return (1.5 - (4 * v - centres).abs()).clamp(0, 1)


def _to_uint8_list(images: ImagesLike) -> list[torch.Tensor]:
    if isinstance(images, (torch.Tensor, np.ndarray)):
        arr = torch.tensor(images) if isinstance(images, np.ndarray) else images  # copy: may be RO
        if arr.dim() != 4 or arr.shape[-1] != 3:
            raise ConfigError(f"images must be (n, H, W, 3) uint8; got {tuple(arr.shape)}")
        return [a.to(torch.uint8) for a in arr]
    out = []
    for im in images:
        if isinstance(im, Image.Image):
            im = np.array(im.convert("RGB"))
        a = torch.tensor(np.asarray(im))
        if a.dim() != 3 or a.shape[-1] != 3:
            raise ConfigError(f"each image must be (H, W, 3); got {tuple(a.shape)}")
        out.append(a.to(torch.uint8))
    return out


def _groups(images: list[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.shape[0], im.shape[1]), []).append(i)
    return groups


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) -> (n, H, W), bilinear, clamped to [0, 1]."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear",
                         align_corners=False)[:, 0].clamp(0, 1)


def _render(images: ImagesLike, maps: torch.Tensor, fn, output: Output) -> list:
    imgs = _to_uint8_list(images)
    if maps.dim() != 3 or maps.shape[0] != len(imgs):
        raise ConfigError(f"need one (H, W) map per image: {len(imgs)} images, maps "
                          f"{tuple(maps.shape)}")
    if output not in ("pil", "array"):
        raise ConfigError(f"output must be 'pil' or 'array'; got {output!r}")
    result: list = [None] * len(imgs)
    for size, idx in _groups(imgs).items():
        batch = torch.stack([imgs[i] for i in idx]).to(maps.device).float()  # (g, H, W, 3)
        m = resize_maps(maps[idx], size)
        out = fn(batch, m).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        for j, i in enumerate(idx):
            result[i] = Image.fromarray(out[j]) if output == "pil" else out[j]
    return result


def masked_cam(
    images: ImagesLike, maps: torch.Tensor, alpha: float = 25.0, beta: float = 0.6,
    output: Output = "pil",
) -> list:
    """The image multiplied pixel-wise by `soft_mask(map)`: black where the model did not look
    (the view of arXiv 2508.20227)."""
    return _render(images, maps, lambda b, m: b * soft_mask(m, alpha, beta)[..., None], output)


def overlay(
    images: ImagesLike, maps: torch.Tensor, opacity: float = 0.5, output: Output = "pil"
) -> list:
    """The jet-coloured map blended over the image: (1 - opacity) * image + opacity * jet."""
    if not 0 <= opacity <= 1:
        raise ConfigError("overlay opacity must be in [0, 1]")
    return _render(images, maps, lambda b, m: (1 - opacity) * b + opacity * 255 * jet(m), output)


def attended_boxes(maps: torch.Tensor, threshold: float = 0.5, pad: float = 0.1) -> torch.Tensor:
    """(n, 4) int boxes (x0, y0, x1, y1), x1/y1 exclusive: the bounding box of map > threshold,
    grown by `pad` times its size on each side and clipped; the whole map when none is above."""
    n, h, w = maps.shape
    hot = maps > threshold
    rows, cols = hot.any(dim=2), hot.any(dim=1)
    ar_h = torch.arange(h, device=maps.device)
    ar_w = torch.arange(w, device=maps.device)
    big = torch.iinfo(torch.long).max
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    empty = ~rows.any(1)
    py = ((y1 - y0).float() * pad).round().long()
    px = ((x1 - x0).float() * pad).round().long()
    box = torch.stack([(x0 - px).clamp(0, w), (y0 - py).clamp(0, h),
                       (x1 + px).clamp(0, w), (y1 + py).clamp(0, h)], dim=1)
    whole = torch.tensor([0, 0, w, h], device=maps.device)
    return torch.where(empty[:, None], whole, box)


def crop_attended(
    images: ImagesLike, maps: torch.Tensor, threshold: float = 0.5, pad: float = 0.1,
    output: Output = "pil",
) -> tuple[list, torch.Tensor]:
    """Crops of the attended region (at original resolution) and their (n, 4) boxes."""
    imgs = _to_uint8_list(images)
    if maps.dim() != 3 or maps.shape[0] != len(imgs):
        raise ConfigError(f"need one map per image: {len(imgs)} images, maps {tuple(maps.shape)}")
    boxes = torch.zeros(len(imgs), 4, dtype=torch.long)
    crops: list = [None] * len(imgs)
    for size, idx in _groups(imgs).items():
        b = attended_boxes(resize_maps(maps[idx], size), threshold, pad).cpu()
        for j, i in enumerate(idx):
            x0, y0, x1, y1 = (int(v) for v in b[j])
            arr = imgs[i][y0:y1, x0:x1].numpy()
            crops[i] = Image.fromarray(arr) if output == "pil" else arr
            boxes[i] = b[j]
    return crops, boxes


def render_views(
    images: ImagesLike, maps: torch.Tensor, alpha: float = 25.0, beta: float = 0.6,
    opacity: float = 0.5, crop_threshold: float = 0.5, pad: float = 0.1,
    output: Output = "pil",
) -> dict[str, list]:
    """All three views at once: {"masked": [...], "overlay": [...], "crop": [...]}."""
    crops, _ = crop_attended(images, maps, crop_threshold, pad, output)
    return {
        "masked": masked_cam(images, maps, alpha, beta, output),
        "overlay": overlay(images, maps, opacity, output),
        "crop": crops,
    }

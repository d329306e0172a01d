"""Views shown to the VLM: masked-CAM formula, overlay colours, crops, original resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vlens.errors import ConfigError
from vlens.saliency.views import (
    attended_boxes,
    crop_attended,
    jet,
    masked_cam,
    overlay,
    render_views,
    soft_mask,
)


def test_soft_mask_formula_at_exact_values() -> None:
    v = torch.tensor([0.6, 0.7, 0.5, 0.0, 1.0])
    m = soft_mask(v)  # alpha 25, beta 0.6
    expect = [1 / (1 + math.exp(25 * (0.6 - float(x)))) for x in v]
    assert m[0].item() == 0.5
    assert torch.allclose(m, torch.tensor(expect))
    assert abs(m[1].item() - 0.9241418) < 1e-6
    assert soft_mask(torch.tensor([0.3]), alpha=10, beta=0.3).item() == 0.5
    assert abs(soft_mask(torch.tensor([0.4]), alpha=10, beta=0.3).item()
               - 1 / (1 + math.exp(-1))) < 1e-6


def _two_level_map() -> torch.Tensor:
    """Model-size map (8x8): 1 in the left half, 0 in the right half."""
    m = torch.zeros(1, 8, 8)
    m[:, :, :4] = 1.0
    return m


def test_masked_cam_is_black_outside_and_at_original_resolution() -> None:
    img = Image.fromarray(np.full((16, 24, 3), 200, dtype=np.uint8))  # original 16x24
    (out,) = masked_cam([img], _two_level_map())
    a = np.asarray(out)
    assert out.size == (24, 16) and a.dtype == np.uint8
    assert (a[:, :10] == 200).all()  # left, away from the resized edge: untouched
    assert (a[:, 14:] == 0).all()  # right: black
    (arr,) = masked_cam(np.asarray(img)[None], _two_level_map(), output="array")
    assert np.array_equal(arr, a)


def test_masked_cam_uses_alpha_and_beta() -> None:
    img = np.full((1, 4, 4, 3), 100, dtype=np.uint8)
    (a,) = masked_cam(img, torch.full((1, 4, 4), 0.6), output="array")
    assert (a == 50).all()  # v == beta -> mask 0.5
    (b,) = masked_cam(img, torch.full((1, 4, 4), 0.6), beta=0.5, alpha=10, output="array")
    assert (b == round(100 / (1 + math.exp(-1)))).all()


def test_images_of_different_sizes_in_one_call() -> None:
    imgs = [Image.new("RGB", (10, 6), (9, 9, 9)), Image.new("RGB", (5, 7), (9, 9, 9))]
    outs = masked_cam(imgs, torch.ones(2, 8, 8))
    assert [o.size for o in outs] == [(10, 6), (5, 7)]
    views = render_views(imgs, torch.ones(2, 8, 8), output="array")
    assert [v.shape for v in views["overlay"]] == [(6, 10, 3), (7, 5, 3)]
    assert set(views) == {"masked", "overlay", "crop"}


def test_jet_and_overlay_colours() -> None:
    assert torch.allclose(jet(torch.tensor([0.0, 0.5, 1.0])),
                          torch.tensor([[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]]))
    img = np.full((1, 3, 3, 3), 100, dtype=np.uint8)
    (hot,) = overlay(img, torch.ones(1, 3, 3), opacity=0.5, output="array")
    assert hot.dtype == np.uint8 and hot.shape == (3, 3, 3)
    assert (hot[..., 0] == 114).all() and (hot[..., 1] == 50).all() and (hot[..., 2] == 50).all()
    (plain,) = overlay(img, torch.ones(1, 3, 3), opacity=0.0, output="array")
    assert (plain == 100).all()
    with pytest.raises(ConfigError, match="opacity"):
        overlay(img, torch.ones(1, 3, 3), opacity=2)


def test_crop_bounds() -> None:
    m = torch.zeros(2, 10, 12)
    m[0, 2:5, 3:7] = 1.0  # rows 2-4, cols 3-6
    boxes = attended_boxes(m, threshold=0.5, pad=0.0)
    assert boxes[0].tolist() == [3, 2, 7, 5]
    assert boxes[1].tolist() == [0, 0, 12, 10]  # nothing above threshold: whole image
    padded = attended_boxes(m, threshold=0.5, pad=0.5)  # +2 cols, +2 rows (1.5 rounds to 2)
    assert padded[0].tolist() == [1, 0, 9, 7]
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(1, 10, 12, 3).repeat(2, 0)
    crops, b = crop_attended(img, m, pad=0.0, output="array")
    assert np.array_equal(crops[0], img[0, 2:5, 3:7]) and crops[1].shape == (10, 12, 3)
    assert b.tolist() == boxes.tolist()


def test_bad_inputs() -> None:
    img = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="one"):
        masked_cam(img, torch.zeros(3, 4, 4))
    with pytest.raises(ConfigError, match="output"):
        masked_cam(img, torch.zeros(2, 4, 4), output="png")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\(n, H, W, 3\)"):
        masked_cam(np.zeros((2, 4, 4), dtype=np.uint8), torch.zeros(2, 4, 4))

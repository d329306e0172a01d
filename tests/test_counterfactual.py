"""The background-swap counterfactual: exact pixels, and a model that reads only the
background must follow the donor's background."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlens.data.base import Sample
from vlens.pipeline.counterfactual import background_occluder, swap_background

RED, BLUE, WHITE = (200, 0, 0), (0, 0, 200), (255, 255, 255)


def _scene(bg, size=16):
    a = np.zeros((size, size, 3), np.uint8)
    a[:] = bg
    m = np.zeros((size, size), bool)
    m[6:10, 6:10] = True
    a[m] = WHITE
    return Image.fromarray(a), m


def test_swap_background_exact_pixels():
    img, m = _scene(RED)
    donor = np.zeros((16, 16, 3), np.uint8)
    donor[:] = BLUE
    donor[0, 0] = (0, 0, 100)  # one odd pixel: the median ignores it
    dm = np.zeros((16, 16), bool)
    dm[1:4, 1:4] = True
    donor[dm] = (9, 9, 9)  # the donor's own object
    out = np.asarray(swap_background(img, m, Image.fromarray(donor), dm, grow=0))
    assert (out[m] == WHITE).all()  # our object kept
    assert (out[dm] == BLUE).all()  # the donor's object filled with its background median
    rest = ~m & ~dm
    rest[0, 0] = False
    assert (out[rest] == BLUE).all() and tuple(out[0, 0]) == (0, 0, 100)
    grown = np.asarray(swap_background(img, m, Image.fromarray(donor), dm, grow=1))
    assert (grown[5, 6] == RED).all()  # one pixel of our own background comes along


class BackgroundReader(torch.nn.Module):
    """Logits [red, blue] = mean red and mean blue of the border pixels: a pure shortcut."""

    def forward(self, x):
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
        return border.mean(-1)[:, [0, 2]]


def _dataset(tmp_path):
    samples = []
    for i, bg in enumerate([RED, RED, BLUE, BLUE]):
        img, m = _scene(bg)
        img.save(tmp_path / f"{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / f"{i}.mask.png")
        samples.append(Sample(id=f"s{i}", uri=str(tmp_path / f"{i}.png"),
                              label="red" if bg == RED else "blue",
                              mask_uri=str(tmp_path / f"{i}.mask.png")))
    img, _ = _scene(RED)
    img.save(tmp_path / "nomask.png")
    samples.append(Sample(id="s4", uri=str(tmp_path / "nomask.png"), label="red"))
    return samples


def test_occluder_follows_the_donor_background(tmp_path):
    from vlens.models import TorchAdapter

    adapter = TorchAdapter(BackgroundReader(), ["red", "blue"], input_size=16,
                           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    occlude = background_occluder(adapter, _dataset(tmp_path))
    assert occlude.what == "the background"
    ids = ["s0", "s1", "s4"]
    assert occlude(ids, "red", donors=["s2", "s3"]) == ["blue", "blue", None]  # no mask: None
    assert occlude(ids, "red", donors=["s0", "s1"]) == ["red", "red", None]  # s0 gets s1's
    assert occlude(["s0"], "red", donors=["s0"]) == [None]  # never its own background
    assert occlude(["s0"], "red", donors=["nope"]) == [None]


def test_occluder_only_for_classifiers():
    class Det:
        class task:  # noqa: N801
            name = "detection"

    assert background_occluder(Det(), []) is None


@pytest.mark.parametrize("bad", ["missing.png"])
def test_unreadable_image_gives_none(tmp_path, bad):
    from vlens.models import TorchAdapter

    samples = _dataset(tmp_path)
    samples[0] = Sample(id="s0", uri=str(tmp_path / bad), label="red",
                        mask_uri=samples[0].mask_uri)
    adapter = TorchAdapter(BackgroundReader(), ["red", "blue"], input_size=16,
                           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    occlude = background_occluder(adapter, samples)
    assert occlude(["s0", "s1"], "red", donors=["s2"]) == [None, "blue"]

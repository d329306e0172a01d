"""Faithfulness and localisation metrics on model/map pairs whose answer is known."""

from __future__ import annotations

import pytest
import torch

from vlens.errors import ConfigError
from vlens.saliency.metrics import (
    METRICS,
    AverageDrop,
    AverageIncrease,
    boxes_to_masks,
    get_metric,
    pixel_ranks,
)

W = torch.tensor([[4.0, 3.0], [2.0, 1.0]])


class Linear:
    """f(x) = sum(w * x) per sample: deleting a pixel removes exactly its weight."""

    module = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * W).sum(dim=(1, 2, 3))[:, None]


def first(out: torch.Tensor) -> torch.Tensor:
    return out[:, 0]


X = torch.ones(1, 1, 2, 2)


def test_deletion_insertion_aopc_exact() -> None:
    good = (W / 4)[None]  # most salient = highest weight
    bad = (1 / W)[None]  # reversed order
    dele = get_metric("deletion", steps=4)
    assert dele.curve(Linear(), X, first, good).tolist() == [[10, 6, 3, 1, 0]]
    assert dele(Linear(), X, first, good).item() == 3.75  # (20 - 10/2) / 4
    assert dele(Linear(), X, first, bad).item() == 6.25
    ins = get_metric("insertion", steps=4)
    assert ins.curve(Linear(), X, first, good).tolist() == [[0, 4, 7, 9, 10]]
    assert ins(Linear(), X, first, good).item() == 6.25
    assert ins(Linear(), X, first, bad).item() == 3.75
    assert get_metric("aopc", steps=4)(Linear(), X, first, good).item() == 6.0  # mean(0,4,7,9,10)


def test_uneven_steps_and_baseline() -> None:
    good = (W / 4)[None]
    c = get_metric("deletion", steps=3, baseline=1.0)  # deleting to 1 changes nothing
    assert c.curve(Linear(), X, first, good).tolist() == [[10, 10, 10, 10]]
    c = get_metric("deletion", steps=3)  # 0, 1.33 -> 1, 2.67 -> 3, 4 pixels
    assert c.curve(Linear(), X, first, good).tolist() == [[10, 6, 1, 0]]


def test_batched_metric_equals_singles_with_per_sample_targets() -> None:
    class Two:
        module = None

        def forward(self, x):
            return torch.stack([(x * W).sum((1, 2, 3)), (x * W.flip(0)).sum((1, 2, 3))], 1)

    x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)) + 0.5
    maps = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(1))
    cls = torch.tensor([0, 1, 1])
    m = get_metric("insertion", steps=4, batch_size=4)  # forces several chunks
    batch = m(Two(), x, lambda o: o[torch.arange(len(o)), cls], maps)
    singles = [m(Two(), x[i:i + 1], lambda o, c=int(cls[i]): o[:, c], maps[i:i + 1])
               for i in range(3)]
    assert torch.allclose(batch, torch.cat(singles))


def test_average_drop_and_increase_exact() -> None:
    half = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])  # O = 4 + 1.5 = 5.5, Y = 10
    assert AverageDrop()(Linear(), X, first, half).item() == pytest.approx(45.0)
    assert AverageIncrease()(Linear(), X, first, half).item() == 0.0
    ones = torch.ones(1, 2, 2)
    assert AverageDrop()(Linear(), X, first, ones).item() == 0.0
    assert AverageIncrease()(Linear(), X, first, ones).item() == 0.0  # equal is not an increase
    neg = Linear()
    neg_x = -X  # Y = -10, O = -5.5 with `half`: the score rose
    assert AverageIncrease()(neg, neg_x, first, half).item() == 100.0


def test_energy_inside_and_pointing_game_exact() -> None:
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[1, 0], [0, 1]], [[1, 1], [1, 1]]], dtype=torch.bool)
    e = get_metric("energy_inside")(maps, masks)
    assert e.tolist() == [0.5, 0.0]
    big = torch.zeros(1, 5, 5)
    big[0, 4, 4] = 1.0
    obj = torch.zeros(1, 5, 5, dtype=torch.bool)
    obj[0, 0:3, 0:3] = True  # argmax (4, 4) is 2 px away from the object
    assert get_metric("pointing_game")(big, obj).tolist() == [0.0]
    assert get_metric("pointing_game", tolerance=1)(big, obj).tolist() == [0.0]
    assert get_metric("pointing_game", tolerance=2)(big, obj).tolist() == [1.0]
    obj[0, 4, 4] = True
    assert get_metric("pointing_game")(big, obj).tolist() == [1.0]


def test_boxes_to_masks() -> None:
    m = boxes_to_masks([[(1, 0, 3, 2)], [(0, 0, 1, 1), (3, 3, 4, 4)], []], (4, 4))
    assert m[0].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    assert m[1].nonzero().tolist() == [[0, 0], [3, 3]]
    assert not m[2].any()


def test_pixel_ranks() -> None:
    r = pixel_ranks(torch.tensor([[[0.1, 0.9], [0.5, 0.5]]]))
    assert r.tolist() == [[[3, 0], [1, 2]]]


def test_metric_metadata_is_declared() -> None:
    expected = {"deletion": False, "insertion": True, "aopc": True, "average_drop": False,
                "average_increase": True, "energy_inside": True, "pointing_game": True}
    assert set(METRICS.names()) == set(expected)
    for name, hib in expected.items():
        m = get_metric(name)
        assert m.name == name and m.higher_is_better is hib
        assert m.category == ("localisation" if m.needs_ground_truth else "faithfulness")


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="do not match"):
        get_metric("deletion")(Linear(), X, first, torch.zeros(1, 3, 3))
    with pytest.raises(ConfigError, match="must match"):
        get_metric("energy_inside")(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ConfigError):
        get_metric("deletion", steps=0)
    with pytest.raises(ConfigError):
        get_metric("pointing_game", tolerance=-1)

"""The saliency speed paths give the same maps as the plain computation and leave no trace.

* gradient CAMs: forward without autograd below the target layer, parameters frozen for the
  call, one ``torch.autograd.grad`` w.r.t. the activations == a full ``loss.backward()``
  with a tensor hook on the layer (what pytorch-grad-cam does);
* channels-last input (auto on CPU conv nets) == the default layout;
* parameters' ``requires_grad`` is restored exactly, also after an error;
* Faster Score-CAM picks the channels of largest spatial variance.
No timings here: benchmarks/bench_saliency.py measures them.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlens.errors import ConfigError
from vlens.saliency import get_explainer
from vlens.saliency._util import (
    block_scores,
    finalize,
    frozen_parameters,
    use_channels_last,
)
from vlens.saliency.cam import ScoreCAM


class Adapter:
    def __init__(self, module: nn.Module | None) -> None:
        self.module = module
        self.device = torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class Net(nn.Module):
    """Conv-BN stem, a target block, then an in-place ReLU after it (must not touch the
    captured activations) and a head. Records what its forward saw."""

    def __init__(self, flatten_input_view: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.after = nn.ReLU(inplace=True)
        self.head = nn.Linear(8, 5)
        self.flatten_input_view = flatten_input_view
        self.seen: list[dict] = []
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append({
            "channels_last": x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous(),
            "param_requires_grad": [p.requires_grad for p in self.parameters()],
            "grad_enabled": torch.is_grad_enabled(),
        })
        if self.flatten_input_view:
            x.view(x.shape[0], -1)  # rejects a channels-last tensor
        h = self.after(self.block(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


CLS = torch.tensor([1, 4, 0, 2])


def per_sample(out: torch.Tensor) -> torch.Tensor:
    return out[torch.arange(len(out)), CLS]


def inputs() -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def full_backward_gradcam(model: Net, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM the slow way: grad mode everywhere, loss.backward() through the whole net
    (every parameter gradient), activations and gradients captured with hooks."""
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out: torch.Tensor) -> torch.Tensor:
        store["a"] = out.detach().clone()
        out.register_hook(lambda g: store.__setitem__("g", g.detach().clone()))
        return out.clone()  # the in-place ReLU after the layer must not touch it

    h = model.block.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            per_sample(model(x)).sum().backward()
    finally:
        h.remove()
        model.zero_grad(set_to_none=True)
    w = store["g"].mean(dim=(2, 3))
    return finalize(torch.einsum("nc,nchw->nhw", w, store["a"]), (16, 16))


@pytest.mark.parametrize("channels_last", [None, False, True])
def test_fast_gradcam_equals_full_backward(channels_last: bool | None) -> None:
    model, x = Net(), inputs()
    ref = full_backward_gradcam(model, x)
    ours = get_explainer("gradcam", target_layer="block", channels_last=channels_last).explain(
        Adapter(model), x, per_sample)
    assert ref.std() > 0.1
    assert (ours - ref).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["gradcam++", "xgradcam", "layercam", "scorecam", "eigencam"])
def test_channels_last_gives_the_same_maps(name: str) -> None:
    model, x = Net(), inputs()
    a = get_explainer(name, target_layer="block", channels_last=False).explain(
        Adapter(model), x, per_sample)
    b = get_explainer(name, target_layer="block").explain(Adapter(model), x, per_sample)
    assert (a - b).abs().max() < 1e-5
    assert a.std() > 0.05


def test_auto_channels_last_only_for_cpu_conv_nets() -> None:
    x = inputs()
    model = Net()
    get_explainer("gradcam", target_layer="block").explain(Adapter(model), x, per_sample)
    assert model.seen[-1]["channels_last"] is True
    get_explainer("gradcam", target_layer="block", channels_last=False).explain(
        Adapter(model), x, per_sample)
    assert model.seen[-1]["channels_last"] is False
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    assert use_channels_last(Adapter(mlp), x) is False
    assert use_channels_last(Adapter(None), x) is False  # black box
    assert use_channels_last(Adapter(model), x[:, :, :, 0]) is False  # not 4-d
    assert use_channels_last(Adapter(mlp), x, True) is True  # forced


def test_forward_that_rejects_channels_last_is_retried_as_given() -> None:
    model, x = Net(flatten_input_view=True), inputs()
    ref = get_explainer("gradcam", target_layer="block", channels_last=False).explain(
        Adapter(model), x, per_sample)
    model.seen.clear()
    ours = get_explainer("gradcam", target_layer="block").explain(Adapter(model), x, per_sample)
    assert [s["channels_last"] for s in model.seen] == [True, False]
    assert (ours - ref).abs().max() == 0
    # Score-CAM builds its masked inputs in channels-last memory; the retry must still work
    ref = get_explainer("scorecam", target_layer="block", channels_last=False).explain(
        Adapter(model), x, per_sample)
    model.seen.clear()
    ours = get_explainer("scorecam", target_layer="block").explain(Adapter(model), x, per_sample)
    assert [s["channels_last"] for s in model.seen][:4] == [True, False, True, False]
    assert (ours - ref).abs().max() < 1e-6


def test_parameters_do_not_require_grad_during_the_call_and_are_restored() -> None:
    model, x = Net(), inputs()
    model.stem[0].weight.requires_grad_(False)  # the user froze one on purpose
    before = [p.requires_grad for p in model.parameters()]
    assert before.count(False) == 1
    for name in ["gradcam", "gradcam++", "layercam", "integrated_gradients", "smoothgrad"]:
        model.seen.clear()
        kw = {"target_layer": "block"} if "cam" in name else {}
        if name == "integrated_gradients":
            kw["n_steps"] = 4
        if name == "smoothgrad":
            kw["n_samples"] = 2
        get_explainer(name, **kw).explain(Adapter(model), x, per_sample)
        assert model.seen and all(not any(s["param_requires_grad"]) for s in model.seen), name
        assert [p.requires_grad for p in model.parameters()] == before, name
        assert all(p.grad is None for p in model.parameters()), name
    assert torch.is_grad_enabled()


def test_requires_grad_is_restored_after_an_error() -> None:
    model, x = Net(), inputs()

    def bad_target(out: torch.Tensor) -> torch.Tensor:
        assert not any(p.requires_grad for p in model.parameters())
        raise ValueError("target failed")

    with pytest.raises(ValueError, match="target failed"):
        get_explainer("gradcam", target_layer="block").explain(Adapter(model), x, bad_target)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError), frozen_parameters(model):
        raise RuntimeError("inside")
    assert all(p.requires_grad for p in model.parameters())


def test_the_forward_below_the_layer_runs_without_autograd() -> None:
    model, x = Net(), inputs()
    seen: list[bool] = []
    h = model.stem.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    try:
        get_explainer("gradcam", target_layer="block").explain(Adapter(model), x, per_sample)
    finally:
        h.remove()
    assert seen == [False]
    assert model.seen[-1]["grad_enabled"] is False


def test_block_scores_channels_last_equals_default_layout() -> None:
    model, x = Net(), inputs()

    def make(j0: int, j1: int) -> torch.Tensor:
        k = torch.arange(j0, j1, dtype=x.dtype)[:, None, None, None, None]
        return x[None] * (1 + k) / 3  # (m, n, 3, H, W)

    model.seen.clear()
    a = block_scores(Adapter(model), per_sample, 4, 5, make, chunk=8, channels_last=False)
    assert not any(s["channels_last"] for s in model.seen)
    model.seen.clear()
    b = block_scores(Adapter(model), per_sample, 4, 5, make, chunk=8)
    assert all(s["channels_last"] for s in model.seen) and len(model.seen) == 3
    assert a.shape == (5, 4)
    assert (a - b).abs().max() < 1e-5


def test_faster_scorecam_keeps_the_channels_of_largest_variance() -> None:
    acts = torch.zeros(2, 4, 3, 3)
    acts[:, 0] = 5.0  # largest mean, zero variance
    acts[:, 1, 0, 0] = 4.0  # large variance
    acts[:, 2] = torch.arange(9.0).view(3, 3) / 10  # small variance
    acts[1, 3, 1, 1] = 9.0  # image 1 only: the largest variance
    var = ScoreCAM(max_channels=2).select(acts)
    assert torch.equal(var[0], acts[0, [1, 2]])
    assert torch.equal(var[1], acts[1, [3, 1]])
    mean = ScoreCAM(max_channels=1, channel_selection="mean").select(acts)
    assert torch.equal(mean[:, 0], acts[:, 0])
    assert ScoreCAM(max_channels=4).select(acts) is acts
    with pytest.raises(ConfigError, match="channel_selection"):
        get_explainer("scorecam", channel_selection="random")


def test_faster_scorecam_with_all_channels_is_exact_scorecam() -> None:
    model, x = Net(), inputs()
    exact = get_explainer("scorecam", target_layer="block").explain(Adapter(model), x, per_sample)
    allk = get_explainer("scorecam", target_layer="block", max_channels=8).explain(
        Adapter(model), x, per_sample)
    fewer = get_explainer("scorecam", target_layer="block", max_channels=3).explain(
        Adapter(model), x, per_sample)
    assert torch.equal(exact, allk)
    assert (exact - fewer).abs().max() > 1e-3  # an approximation, not the same map


@pytest.mark.parametrize(("src", "dst"), [((8, 8), (64, 64)), ((7, 5), (224, 97)),
                                          ((20, 12), (6, 9)), ((1, 3), (4, 4))])
def test_matmul_upsample_equals_f_interpolate(src: tuple[int, int], dst: tuple[int, int]) -> None:
    import torch.nn.functional as F

    from vlens.saliency._util import upsample

    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 2, *src, generator=g)
    ref = F.interpolate(maps, size=dst, mode="bilinear", align_corners=False)
    ours = upsample(maps, dst)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 1e-5
    assert (upsample(maps[:, 0], dst) - ref[:, 0]).abs().max() < 1e-5  # (n, h, w) too
    cl = maps.contiguous(memory_format=torch.channels_last)
    assert (upsample(cl, dst) - ref).abs().max() < 1e-5
    assert (upsample(maps.double(), dst) - ref.double()).abs().max() < 1e-5


def test_fused_finalize_equals_upsample_relu_minmax() -> None:
    import torch.nn.functional as F

    cam = torch.randn(6, 7, 5, generator=torch.Generator().manual_seed(2))
    cam[1] = -1.0  # all negative: ReLU makes it constant -> zeros
    cam[2] = 3.0  # constant
    cam[3, 0, 0] = float("nan")  # NaN map -> zeros, as before
    cam[4] = cam[4].abs() + 1  # all positive: the ReLU changes nothing
    before = cam.clone()
    up = torch.relu(F.interpolate(cam[:, None], size=(30, 21), mode="bilinear",
                                  align_corners=False)[:, 0]).reshape(6, -1)
    lo = up.min(dim=1, keepdim=True).values
    span = up.max(dim=1, keepdim=True).values - lo
    ref = torch.where(span > 1e-12, (up - lo) / span.clamp_min(1e-12), 0.0).reshape(6, 30, 21)
    ref[3] = 0.0
    ref[2] = 0.0  # a constant map: F.interpolate's rounding noise (~1e-7) is not a signal
    assert 0 < span[2] < 1e-5
    ours = finalize(cam, (30, 21))
    assert (ours - ref).abs().max() < 1e-6
    assert ours.min() == 0 and ours.max() == 1
    assert ours[1].abs().max() == 0 and ours[2].abs().max() == 0 and ours[3].abs().max() == 0
    same = finalize(cam[:, :, :], (7, 5))  # no resize: must not write into the input
    assert torch.equal(cam.nan_to_num(), before.nan_to_num()) and same.shape == (6, 7, 5)

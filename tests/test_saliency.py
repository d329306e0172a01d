"""Explainers on tiny hand-built models whose right answer is known, batching, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlens.errors import ConfigError
from vlens.saliency import EXPLAINERS, get_explainer
from vlens.saliency.cam import principal_projection
from vlens.saliency.layers import auto_target_layer, resolve_target_layer, tokens_to_grid


class Adapter:
    """Minimal ModelAdapter: module + forward (module=None makes a black box)."""

    def __init__(self, module: nn.Module | None, fn=None) -> None:
        self.module = module
        self._fn = fn or module
        self.device = torch.device("cpu")

    def forward(self, x: torch.Tensor):
        return self._fn(x)


class TopLeftGate(nn.Module):
    """Zeroes everything outside the top-left quadrant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = torch.zeros_like(x)
        m[..., : h // 2, : w // 2] = 1
        return x * m


class QuadNet(nn.Module):
    """Output depends only on the top-left quadrant; 1x1 conv, so no spatial bleed."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), TopLeftGate())
        with torch.no_grad():
            self.block[0].weight.copy_(torch.rand(4, 3, 1, 1, generator=g) + 0.1)
            self.block[0].bias.fill_(0.1)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 2.0, 1.0, 0.5], [0.5, 0.2, 0.1, 0.3]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(dim=(2, 3)))


def class0(out: torch.Tensor) -> torch.Tensor:
    return out[:, 0]


def quad_input(n: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) + 0.2


FAST = {
    "scorecam": {"batch_size": 32},
    "rise": {"n_masks": 300, "grid": 4},
    "occlusion": {"patch": 4, "stride": 4},
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
}
EXACT_ZERO_OUTSIDE = [
    "gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam",
    "integrated_gradients", "smoothgrad", "occlusion",
]


def _outside(maps: torch.Tensor) -> torch.Tensor:
    m = torch.ones_like(maps, dtype=torch.bool)
    m[:, :8, :8] = False
    return maps[m].reshape(maps.shape[0], -1)


def test_all_methods_are_registered() -> None:
    assert set(EXACT_ZERO_OUTSIDE) | {"rise", "rollout"} <= set(EXPLAINERS.names())
    for name in EXPLAINERS.names():
        ex = get_explainer(name)
        assert ex.name == name and isinstance(ex.needs_gradients, bool)


@pytest.mark.parametrize("name", EXACT_ZERO_OUTSIDE)
def test_map_is_zero_outside_the_quadrant_the_model_reads(name: str) -> None:
    torch.manual_seed(0)
    model = Adapter(QuadNet())
    x = quad_input()
    params = dict(FAST.get(name, {}))
    if name not in ("integrated_gradients", "smoothgrad", "occlusion"):
        params["target_layer"] = "block"
    maps = get_explainer(name, **params).explain(model, x, class0)
    assert maps.shape == (3, 16, 16) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))  # normalised per map
    assert torch.count_nonzero(_outside(maps)) == 0
    assert (maps[:, :8, :8].mean(dim=(1, 2)) > 0.1).all()


def test_rise_peaks_in_the_quadrant_the_model_reads() -> None:
    maps = get_explainer("rise", **FAST["rise"]).explain(Adapter(None, QuadNet()), quad_input(),
                                                         class0)
    inside = maps[:, :8, :8].mean(dim=(1, 2))
    outside = _outside(maps).mean(dim=1)
    assert (inside > outside + 0.25).all()
    flat = maps.reshape(3, -1).argmax(1)
    assert ((flat // 16 < 8) & (flat % 16 < 8)).all()


def test_black_box_methods_work_without_a_module_and_cams_refuse() -> None:
    box = Adapter(None, QuadNet())
    maps = get_explainer("occlusion", patch=4, stride=4).explain(box, quad_input(), class0)
    assert torch.count_nonzero(_outside(maps)) == 0
    assert not EXPLAINERS.get("rise")().needs_gradients
    for name in ("gradcam", "integrated_gradients", "rollout"):
        with pytest.raises(ConfigError, match="black box"):
            get_explainer(name).explain(box, quad_input(), class0)


def test_occlusion_values_are_the_score_drop() -> None:
    """Linear model: occluding a patch drops the score by exactly its weighted sum."""
    w = torch.arange(16.0).reshape(1, 1, 4, 4)
    model = Adapter(None, lambda x: (x * w).sum(dim=(1, 2, 3))[:, None])
    x = torch.ones(1, 1, 4, 4)
    maps = get_explainer("occlusion", patch=2, stride=2).explain(model, x, class0)
    drops = torch.tensor([[10.0, 18.0], [42.0, 50.0]])  # sums of w over each 2x2 patch
    expect = drops.repeat_interleave(2, 0).repeat_interleave(2, 1)
    expect = (expect - expect.min()) / (expect.max() - expect.min())
    assert torch.allclose(maps[0], expect)


def test_integrated_gradients_of_a_linear_model_is_input_times_weight() -> None:
    w = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(3)) - 0.5
    model = Adapter(nn.Identity(), lambda x: (x * w).sum(dim=(1, 2, 3))[:, None])
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    maps = get_explainer("integrated_gradients", n_steps=4).explain(model, x, class0)
    expect = (x * w).abs().sum(1)
    mn = expect.amin(dim=(1, 2), keepdim=True)
    expect = (expect - mn) / (expect.amax(dim=(1, 2), keepdim=True) - mn)
    assert torch.allclose(maps, expect, atol=1e-5)


def test_eigencam_recovers_a_known_principal_component() -> None:
    g = torch.Generator().manual_seed(5)
    s = torch.rand(2, 5, 6, generator=g)  # spatial pattern per sample
    v = torch.rand(2, 7, generator=g) + 0.5  # channel loading per sample
    acts = v[:, :, None, None] * s[:, None]  # rank one: A = v s^T
    proj = principal_projection(acts)
    centred = s - s.mean(dim=(1, 2), keepdim=True)
    expect = centred * v.norm(dim=1)[:, None, None]
    flip = expect.amin(dim=(1, 2)).abs() > expect.amax(dim=(1, 2)).abs()
    expect = torch.where(flip[:, None, None], -expect, expect)
    assert torch.allclose(proj, expect, atol=1e-5)


class DownNet(nn.Module):
    """A small CNN with stride-2 convs (demo-sized) and random weights."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.head = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


BATCHED = ["gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam",
           "integrated_gradients", "rise", "occlusion"]


@pytest.mark.parametrize("name", BATCHED)
def test_batch_of_four_equals_four_singles(name: str) -> None:
    model = Adapter(DownNet())
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cls = torch.tensor([0, 2, 1, 2])
    ex = get_explainer(name, **FAST.get(name, {}))
    batch = ex.explain(model, x, lambda out: out[torch.arange(len(out)), cls])
    singles = torch.cat([
        ex.explain(model, x[i : i + 1], lambda out, c=int(cls[i]): out[:, c]) for i in range(4)
    ])
    assert batch.shape == (4, 16, 16) and batch.device == x.device
    assert batch.min() >= 0 and batch.max() <= 1
    assert torch.allclose(batch, singles, atol=1e-5)


def test_constant_map_normalises_to_zero_not_nan() -> None:
    model = Adapter(DownNet())
    x = torch.zeros(2, 3, 16, 16)
    maps = get_explainer("eigencam").explain(model, x, class0)
    assert torch.isfinite(maps).all()


def test_target_must_return_one_value_per_sample() -> None:
    with pytest.raises(ConfigError, match=r"shape \(2,\)"):
        get_explainer("gradcam").explain(Adapter(DownNet()), torch.rand(2, 3, 16, 16),
                                         lambda out: out)


def test_automatic_target_layers() -> None:
    import timm
    import torchvision

    assert auto_target_layer(DownNet()) == "features.1"
    assert auto_target_layer(QuadNet()) == "block"
    resnet = torchvision.models.resnet18(weights=None)
    assert auto_target_layer(resnet) == "layer4"
    assert auto_target_layer(nn.Sequential(nn.Identity(), resnet)) == "1.layer4"
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                            embed_dim=16, depth=2, num_heads=2, num_classes=3)
    assert auto_target_layer(vit) == "blocks.1.norm1"
    net = DownNet()
    net.vlens_target_layer = "features.0"
    assert auto_target_layer(net) == "features.0"
    assert resolve_target_layer(resnet, "layer4.1.conv2")[1] is resnet.layer4[1].conv2


def test_wrong_layer_name_lists_candidates() -> None:
    with pytest.raises(ConfigError, match=r"'features\.9' not found.*candidates:.*features\.1"):
        resolve_target_layer(DownNet(), "features.9")
    with pytest.raises(ConfigError, match="could not choose a target layer"):
        auto_target_layer(nn.Linear(3, 3))


def test_spec_string_sets_the_cam_layer() -> None:
    model = Adapter(DownNet())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    a = EXPLAINERS.create("gradcam:features.0").explain(model, x, class0)
    b = get_explainer("gradcam", target_layer="features.0").explain(model, x, class0)
    c = get_explainer("gradcam").explain(model, x, class0)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_tokens_to_grid_drops_prefix_tokens() -> None:
    grid = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)  # (n, 6 tokens, C)
    t = torch.cat([torch.full((2, 1, 3), -1.0), grid], dim=1)  # one CLS token in front
    out = tokens_to_grid(t, (20, 30))  # aspect 2:3 -> 2x3 grid, CLS inferred
    assert out.shape == (2, 3, 2, 3)
    assert torch.equal(out[:, :, 0, 1], grid[:, 1])
    assert torch.equal(tokens_to_grid(t, (20, 30), num_prefix_tokens=1), out)
    with pytest.raises(ConfigError, match="cannot reshape"):
        tokens_to_grid(torch.zeros(1, 7, 2), (10, 10), num_prefix_tokens=0)


def test_bad_parameters_are_rejected() -> None:
    for name, params in [("scorecam", {"batch_size": 0}), ("rise", {"p": 0}),
                         ("occlusion", {"patch": 0}), ("integrated_gradients", {"n_steps": 0}),
                         ("smoothgrad", {"n_samples": 0}), ("rollout", {"head_fusion": "x"})]:
        with pytest.raises(ConfigError):
            get_explainer(name, **params)
    with pytest.raises(ConfigError, match="unknown explainer"):
        get_explainer("nope")


def test_cams_leave_no_side_effects_and_work_under_no_grad() -> None:
    net = DownNet()
    model = Adapter(net)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ex = get_explainer("gradcam")
    ref = ex.explain(model, x, class0)
    with torch.no_grad():
        inside = ex.explain(model, x, class0)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert torch.equal(ref, inside)
    assert all(p.grad is None for p in net.parameters())  # no parameter gradients computed
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed


def test_demo_cnn_target_layer_is_its_last_block() -> None:
    from vlens.world.demo_model import DemoCNN

    net = DemoCNN().eval()
    assert auto_target_layer(net) == "features"
    maps = get_explainer("gradcam").explain(Adapter(net), torch.rand(2, 3, 64, 64), class0)
    assert maps.shape == (2, 64, 64)


def test_smoothgrad_is_reproducible_and_seeded() -> None:
    model = Adapter(DownNet())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    a = get_explainer("smoothgrad", n_samples=3, seed=1).explain(model, x, class0)
    b = get_explainer("smoothgrad", n_samples=3, seed=1).explain(model, x, class0)
    c = get_explainer("smoothgrad", n_samples=3, seed=2).explain(model, x, class0)
    chunked = get_explainer("smoothgrad", n_samples=3, seed=1, batch_size=2)
    d = chunked.explain(model, x, class0)  # one noisy copy of the batch per forward
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert d.shape == (2, 16, 16) and d.min() >= 0 and d.max() == 1

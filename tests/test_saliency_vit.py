"""Transformers: token reshape for the CAM family and attention rollout on tiny timm ViTs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from vlens.errors import ConfigError
from vlens.saliency import get_explainer


class Adapter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.device = torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def vit(img: int, patch: int, depth: int = 2, dim: int = 16, heads: int = 2) -> torch.nn.Module:
    torch.manual_seed(21)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img,
                             patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                             num_classes=3).eval()


def test_gradcam_on_vit_tokens_matches_pytorch_grad_cam_with_its_reshape() -> None:
    model = vit(img=8, patch=1)  # 8x8 token grid == input size: no resize-order difference
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cls = [2, 0]
    ours = get_explainer("gradcam").explain(  # layer (blocks.1.norm1) and reshape chosen for us
        Adapter(model), x, lambda o: o[torch.arange(2), torch.tensor(cls)])

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], 8, 8, t.shape[2]).permute(0, 3, 1, 2)

    layer = model.blocks[-1].norm1
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as c:
        ref = c(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in cls])
    assert ours.shape == (2, 8, 8)
    assert np.abs(ours.numpy() - ref).max() < 1e-4 and ref.std() > 0.1


def test_cam_family_runs_on_a_vit_with_upsampling() -> None:
    model = vit(img=32, patch=8)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for name in ("gradcam", "gradcam++", "layercam", "eigencam"):
        maps = get_explainer(name).explain(Adapter(model), x, lambda o: o[:, 1])
        assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() == 1


def attends_to_one_patch(p: int) -> torch.nn.Module:
    """A 1-block ViT whose every query attends (almost) only to patch token `p`."""
    model = vit(img=32, patch=8, depth=1, dim=16, heads=2)  # 4x4 patches, head_dim 8
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        model.blocks[0].norm1.weight.fill_(1.0)
        model.pos_embed[0, 1 + p, 0] = 5.0  # only patch p has content (patch embed is zero)
        qkv = model.blocks[0].attn.qkv
        for h in range(2):
            qkv.bias[h * 8] = 20.0  # every query = 20 * e0 in each head
            qkv.weight[16 + h * 8, 0] = 1.0  # key dim 0 reads input dim 0
    return model


def test_rollout_peaks_on_the_patch_everything_attends_to() -> None:
    p = 6  # row 1, col 2 of the 4x4 grid
    model = attends_to_one_patch(p)
    x = torch.randn(2, 3, 32, 32)
    maps = get_explainer("rollout").explain(Adapter(model), x, lambda o: o[:, 0])
    assert maps.shape == (2, 32, 32)
    # patch p covers rows 8-15, cols 16-23; bilinear upsampling peaks at its centre
    assert torch.allclose(maps[:, 11:13, 19:21], torch.ones(2, 2, 2))
    assert (maps[:, 8:16, 16:24] > 0.35).all()  # corners: 0.6 * 0.6
    assert maps[:, 24:, :].max() < 1e-6 and maps[:, :, :8].max() < 1e-6  # two patches away


def test_rollout_equals_an_explicit_computation() -> None:
    model = vit(img=32, patch=8, depth=3)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    maps = get_explainer("rollout").explain(Adapter(model), x, lambda o: o[:, 0])
    with torch.no_grad():  # independent re-implementation, block by block
        tok = model._pos_embed(model.patch_embed(x))
        roll = torch.eye(tok.shape[1]).expand(2, -1, -1)
        for blk in model.blocks:
            h = blk.norm1(tok)
            w = blk.attn.qkv.weight
            b = blk.attn.qkv.bias
            q = (h @ w[:16].T + b[:16]).reshape(2, -1, 2, 8).transpose(1, 2)
            k = (h @ w[16:32].T + b[16:32]).reshape(2, -1, 2, 8).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1).mean(1)
            a = (a + torch.eye(a.shape[-1])) / 2  # rows of a sum to 1, so (a + I) sums to 2
            roll = a @ roll
            tok = blk(tok)
    grid = roll[:, 0, 1:].reshape(2, 1, 4, 4)
    up = torch.nn.functional.interpolate(grid, size=(32, 32), mode="bilinear")[:, 0]
    mn = up.amin(dim=(1, 2), keepdim=True)
    ref = (up - mn) / (up.amax(dim=(1, 2), keepdim=True) - mn)
    # float32 round-off, amplified by min-max over a narrow range of rollout values
    assert (maps - ref).abs().max() < 5e-4 and ref.std() > 0.1


def test_rollout_needs_attention_modules() -> None:
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="no attention modules"):
        get_explainer("rollout").explain(Adapter(cnn), torch.zeros(1, 3, 8, 8), lambda o: o[:, 0])

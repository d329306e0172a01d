"""Our batched CAMs against independent references on the same model, layer and input.

Captum's LayerGradCam (upsampled, ReLU, min-max like ours): max abs diff < 1e-5.
pytorch-grad-cam applies ReLU and min-max at layer resolution, then resizes with OpenCV,
then min-max again (with 1e-7 in the denominator); we upsample first. The two orders agree
exactly when the layer has the input's resolution, so that is what we compare on
(stride-1 convs), with tolerance 1e-4 (its float32 numpy math and 1e-7 epsilon).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from vlens.saliency import get_explainer
from vlens.saliency._util import normalize_maps


class Adapter:
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.device = torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def net(stride: int) -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=stride, padding=1), nn.ReLU(),
        nn.Conv2d(8, 10, 3, stride=stride, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 4),
    ).eval()


CLS = [1, 3, 0]


def per_sample(out: torch.Tensor) -> torch.Tensor:
    return out[torch.arange(len(out)), torch.tensor(CLS)]


def inputs(size: int = 20) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(12))


def test_gradcam_matches_captum_layergradcam() -> None:
    model = net(stride=2)  # 20 px input -> 5x5 layer: upsampling matters
    x = inputs()
    ours = get_explainer("gradcam", target_layer="3").explain(Adapter(model), x, per_sample)
    lgc = LayerGradCam(model, model[3])
    ref = lgc.attribute(x, target=torch.tensor(CLS))  # (n, 1, 5, 5)
    ref = LayerAttribution.interpolate(ref, (20, 20), interpolate_mode="bilinear")
    ref = normalize_maps(torch.relu(ref[:, 0]))
    assert ref.shape == ours.shape
    assert (ours - ref).abs().max() < 1e-5
    assert ref.std() > 0.1  # a real map, not a degenerate one


PGC = [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("xgradcam", XGradCAM),
       ("layercam", LayerCAM), ("scorecam", ScoreCAM)]


@pytest.mark.parametrize(("name", "ref_cls"), PGC)
def test_cams_match_pytorch_grad_cam(name: str, ref_cls: type) -> None:
    model = net(stride=1)
    x = inputs(12)
    ours = get_explainer(name, target_layer="3").explain(Adapter(model), x, per_sample)
    with ref_cls(model=model, target_layers=[model[3]]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLS])
    assert ref.shape == tuple(ours.shape)
    assert np.abs(ours.numpy() - ref).max() < 1e-4
    assert ref.std() > 0.1


def test_eigencam_matches_pytorch_grad_cam_up_to_the_svd_sign() -> None:
    model = net(stride=1)
    x = inputs(12)
    ours = get_explainer("eigencam", target_layer="3").explain(Adapter(model), x, per_sample)
    with EigenCAM(model=model, target_layers=[model[3]]) as cam:
        ref = cam(input_tensor=x, targets=None)
    with torch.no_grad():
        acts = model[:4](x).numpy()
    proj = torch.from_numpy(get_2d_projection(acts))
    for i in range(3):
        # pytorch-grad-cam keeps numpy's arbitrary SVD sign; we fix it (max |value| positive)
        candidates = [normalize_maps(torch.relu(s * proj[i : i + 1]))[0] for s in (1, -1)]
        assert any((ours[i] - c).abs().max() < 1e-4 for c in candidates)
        p = proj[i]
        expected_sign = 1 if p.max().abs() >= p.min().abs() else -1
        assert (ours[i] - candidates[0 if expected_sign == 1 else 1]).abs().max() < 1e-4
        if expected_sign == 1:
            assert np.abs(ours[i].numpy() - ref[i]).max() < 1e-4

"""torchvision / timm / onnx adapters built without downloads, run end to end on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vlens.data import Sample
from vlens.errors import ConfigError, ModelError
from vlens.models import load_model, predict_batch
from vlens.models.zoo import torchvision_family

IMGS = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8))
        for i in range(2)]


def test_torchvision_family():
    assert torchvision_family("resnet18") == "classification"
    assert torchvision_family("fasterrcnn_mobilenet_v3_large_320_fpn") == "detection"
    assert torchvision_family("lraspp_mobilenet_v3_large") == "segmentation"
    with pytest.raises(ConfigError, match="unknown torchvision model"):
        torchvision_family("resnet9000")


def test_torchvision_classifier_local_weights(tmp_path):
    names = ["a", "b", "c"]
    torch.manual_seed(0)
    a = load_model("torchvision:resnet18", class_names=names, input_size=32)
    assert a.task.name == "classification" and a.input_size == (32, 32)
    save_file(a.module.state_dict(), str(tmp_path / "w.safetensors"))
    torch.manual_seed(1)  # different random init, then the saved weights restore a's
    b = load_model("torchvision:resnet18", class_names=names, input_size=32,
                   weights=str(tmp_path / "w.safetensors"))
    x = a.preprocess(IMGS)
    with torch.no_grad():
        assert torch.equal(a.forward(x), b.forward(x))
    rows = predict_batch(b, IMGS, [Sample("0", "/0", "a"), Sample("1", "/1", "c")])
    assert [r["pred"] in names for r in rows] == [True, True]
    assert all(0 < r["confidence"] <= 1 and math.isfinite(r["loss"]) for r in rows)


def test_torchvision_detection_end_to_end():
    names = ["background", "star", "circle"]
    a = load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", class_names=names,
                   input_size=96, model_kwargs={"min_size": 96, "max_size": 96})
    assert a.task.name == "detection" and a.mean == (0.0, 0.0, 0.0)
    samples = [Sample("0", "/0", "star", boxes=[[4, 4, 30, 30]], box_labels=["star"]),
               Sample("1", "/1", "circle")]
    rows = predict_batch(a, IMGS, samples)
    assert [r["id"] for r in rows] == ["0", "1"]
    assert rows[0]["n_gt"] == 1 and rows[0]["matched"] + rows[0]["missed"] == 1
    assert rows[0]["input_scale"] == [96 / 64, 96 / 48]
    x = a.preprocess(IMGS).requires_grad_(True)
    out = a.forward(x)  # with gradients: the target must back-propagate into the input
    target = a.task.default_target(out, rows)
    v = target(out)
    assert v.shape == (2,)
    for r, val in zip(rows, v.tolist(), strict=True):
        if r["pred_box"] is not None:
            assert val == pytest.approx(r["confidence"], abs=1e-5)  # the top box matches itself
    assert any(r["pred_box"] is not None for r in rows)
    v.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_torchvision_segmentation_end_to_end(tmp_path):
    names = ["background", "star"]
    a = load_model("torchvision:lraspp_mobilenet_v3_large", class_names=names, input_size=64)
    assert a.task.name == "segmentation"
    m = np.zeros((48, 64), dtype=np.uint8)
    m[10:30, 10:40] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    samples = [Sample("0", "/0", "star", mask_uri=str(tmp_path / "m.png")), Sample("1", "/1")]
    rows = predict_batch(a, IMGS, samples)
    assert 0.0 <= rows[0]["miou"] <= 1.0 and math.isnan(rows[1]["miou"])
    assert rows[0]["pred"] in names and 0 < rows[0]["pred_fraction"] <= 1
    x = a.preprocess(IMGS).requires_grad_(True)
    out = a.forward(x)
    t = a.task.default_target(out, rows)
    v = t(out)
    v.sum().backward()
    assert v.shape == (2,) and x.grad.abs().sum() > 0
    amap = out.argmax(1)
    for i, r in enumerate(rows):  # exact: sum of the predicted class's logits on its pixels
        want = (out[i, r["pred_idx"]] * (amap[i] == r["pred_idx"])).sum()
        assert float(v[i].detach()) == pytest.approx(float(want.detach()), rel=1e-5)


def test_task_override_and_bad_output():
    with pytest.raises(ModelError, match="logits of rank 2"):
        a = load_model("torchvision:lraspp_mobilenet_v3_large", class_names=["b", "x"],
                       input_size=32, task="classification")
        predict_batch(a, IMGS[:1], [Sample("0", "/0")])


def test_timm_no_download():
    a = load_model("timm:resnet18", class_names=["a", "b"], input_size=32)
    assert a.input_size == (32, 32) and a.task.name == "classification"
    rows = predict_batch(a, IMGS, [Sample("0", "/0", "a"), Sample("1", "/1", "b")])
    assert len(rows) == 2 and rows[0]["topk_labels"][0] == rows[0]["pred"]
    b = load_model("timm:resnet18")  # timm's own default head and data config
    assert len(b.class_names) == 1000 and b.input_size == (224, 224)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _export(tmp_path):
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(Tiny().eval(), (torch.zeros(1, 3, 16, 16),), str(path),
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_matches_torch(tmp_path):
    path = _export(tmp_path)
    names = ["a", "b", "c"]
    o = load_model(f"onnx:{path}", class_names=names)
    t = load_model(Tiny(), class_names=names, input_size=16)
    assert o.module is None and o.input_size == (16, 16)
    x = t.preprocess(IMGS)
    assert torch.equal(x, o.preprocess(IMGS))
    with torch.no_grad():
        ref = t.forward(x)
    got = o.forward(x)
    assert isinstance(got, torch.Tensor) and torch.allclose(got, ref, atol=1e-5)
    samples = [Sample("0", "/0", "a"), Sample("1", "/1", "b")]
    ro, rt = predict_batch(o, IMGS, samples), predict_batch(t, IMGS, samples)
    assert [r["pred"] for r in ro] == [r["pred"] for r in rt]
    assert [r["loss"] for r in ro] == pytest.approx([r["loss"] for r in rt], abs=1e-5)
    assert o.fingerprint == load_model(f"onnx:{path}", class_names=names).fingerprint
    assert load_model(f"onnx:{path}").class_names == ["0", "1", "2"]
    with pytest.raises(ModelError, match="4 class_names"):
        load_model(f"onnx:{path}", class_names=list("abcd")).forward(x)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        load_model(f"onnx:{tmp_path / 'junk.onnx'}")


def test_hf_local_folder(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, num_labels=3,
                    id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1,
                                                                       "fox": 2})
    torch.manual_seed(0)
    ref = ViTForImageClassification(cfg).eval()
    ref.save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],'
        ' "size": {"height": 16, "width": 16}}')
    a = load_model(f"hf:{tmp_path / 'vit'}")
    assert a.class_names == ["cat", "dog", "fox"] and a.input_size == (16, 16)
    assert a.mean == (0.5, 0.5, 0.5)
    x = a.preprocess(IMGS)
    with torch.no_grad():
        assert torch.allclose(a.forward(x), ref(pixel_values=x).logits, atol=1e-6)
    rows = predict_batch(a, IMGS, [Sample("0", "/0", "dog"), Sample("1", "/1")])
    assert rows[0]["pred"] in a.class_names and math.isfinite(rows[0]["loss"])
    with pytest.raises(ModelError, match="never downloads"):
        load_model("hf:google/vit-base-patch16-224")

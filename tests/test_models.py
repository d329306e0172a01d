"""Adapters, tasks and targets on tiny hand-built models with known outputs."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vlens.data import Sample
from vlens.errors import ConfigError, ModelError
from vlens.models import (
    MODELS,
    TASKS,
    BoxScoreTarget,
    ClassTarget,
    SegmentationTarget,
    TorchAdapter,
    load_model,
    predict_batch,
)
from vlens.models.detection import DetectionTask, greedy_match
from vlens.models.segmentation import SegmentationTask, gt_map, mean_iou

NAN = float("nan")


class RedNet(torch.nn.Module):
    """Logits = W @ mean-colour: for a pure red image (1, 0, 0) they are exactly [2, 0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[2.0, 0, 0], [0, 1, 0], [1, 0, 0]]))

    def forward(self, x):
        return self.lin(x.mean(dim=(2, 3)))


def _adapter(**kw):
    kw.setdefault("class_names", ["a", "b", "c"])
    return TorchAdapter(RedNet(), input_size=4, mean=(0, 0, 0), std=(1, 1, 1), **kw)


RED = Image.new("RGB", (8, 8), (255, 0, 0))
GREEN = Image.new("RGB", (5, 3), (0, 255, 0))


def test_registries():
    assert {"torch", "torchvision", "timm", "onnx", "demo"} <= set(MODELS.names())
    assert TASKS.names() == ["classification", "detection", "segmentation"]


def test_preprocess_exact():
    a = TorchAdapter(RedNet(), ["a", "b", "c"], input_size=(2, 3), mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.25, 1.0))
    x = a.preprocess([RED, GREEN])
    assert x.shape == (2, 3, 2, 3) and x.dtype == torch.float32
    assert torch.equal(x[0, :, 0, 0], torch.tensor([1.0, -2.0, -0.5]))
    assert torch.equal(x[1, :, 1, 2], torch.tensor([-1.0, 2.0, -0.5]))


def test_classification_rows_exact():
    a = _adapter()
    samples = [Sample("r1", "/r1", "c"), Sample("r2", "/r2", None), Sample("r3", "/r3", "zzz"),
               Sample("g", "/g", "b")]
    rows = predict_batch(a, [RED, RED, RED, GREEN], samples)
    z = math.exp(2) + 1 + math.exp(1)
    r1, r2, r3, g = rows
    assert r1["id"] == "r1" and r1["pred"] == "a" and r1["pred_idx"] == 0
    assert r1["confidence"] == pytest.approx(math.exp(2) / z, abs=1e-6)
    assert r1["loss"] == pytest.approx(-math.log(math.exp(1) / z), abs=1e-6)
    assert r1["correct"] is False and r1["label"] == "c"
    assert r1["topk_labels"] == ["a", "c", "b"]
    assert r1["topk_probs"] == pytest.approx([math.exp(2) / z, math.exp(1) / z, 1 / z], abs=1e-6)
    assert r2["correct"] is None and math.isnan(r2["loss"])
    assert r3["correct"] is False and math.isnan(r3["loss"])  # unknown label: no loss
    # green (0, 1, 0): logits [0, 1, 0]
    zg = 2 + math.e
    assert g["pred"] == "b" and g["correct"] is True
    assert g["loss"] == pytest.approx(-math.log(math.e / zg), abs=1e-6)


def test_topk_capped_and_k_option():
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 7))
    a = TorchAdapter(module, list("abcdefg"), input_size=2, mean=(0,) * 3, std=(1,) * 3)
    (row,) = predict_batch(a, [RED], [Sample("x", "/x")])
    assert len(row["topk_labels"]) == 5 and row["topk_probs"] == sorted(row["topk_probs"])[::-1]
    a2 = TorchAdapter(module, list("abcdefg"), input_size=2, task=TASKS.create("classification",
                      k=2))
    assert len(predict_batch(a2, [RED], [Sample("x", "/x")])[0]["topk_labels"]) == 2


def test_wrong_outputs_give_model_error():
    with pytest.raises(ModelError, match="3 classes but 2 class_names"):
        predict_batch(_adapter(class_names=["a", "b"]), [RED], [Sample("x", "/x")])

    class Rank3(torch.nn.Module):
        def forward(self, x):
            return x[:, :, 0]

    a = TorchAdapter(Rank3(), ["a"], input_size=2)
    with pytest.raises(ModelError, match="rank 2"):
        a.forward(a.preprocess([RED]))
    with pytest.raises(ModelError, match=r"must return a list of 1 dicts"):
        TorchAdapter(RedNet(), ["a", "b", "c"], input_size=2, task="detection").forward(
            torch.zeros(1, 3, 2, 2))
    with pytest.raises(ModelError, match=r"logits \(n, C, H, W\)"):
        TorchAdapter(RedNet(), ["a", "b", "c"], input_size=2, task="segmentation").forward(
            torch.zeros(1, 3, 2, 2))
    with pytest.raises(ModelError, match="nn.Module"):
        TorchAdapter(lambda x: x, ["a"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown task"):
        _adapter(task="captioning")


# -- fingerprints and weights -------------------------------------------------------------
@pytest.mark.slow
def test_fingerprint_stable_across_processes():
    fp = _adapter().fingerprint
    here = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import test_models as t; " \
           "print(t._adapter().fingerprint)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert other == fp  # same across processes (a fresh interpreter, fresh module objects)


def test_fingerprint_stable_and_sensitive():
    fp = _adapter().fingerprint
    assert len(fp) == 64 and fp == _adapter().fingerprint
    a = _adapter()
    with torch.no_grad():
        a.module.lin.weight[0, 0] += 1e-3
    assert TorchAdapter(a.module, ["a", "b", "c"], input_size=4, mean=(0, 0, 0),
                        std=(1, 1, 1)).fingerprint != fp
    assert _adapter(class_names=["a", "b", "x"]).fingerprint != fp  # config is part of it


FACTORY = '''
import torch
class RedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, bias=False)
    def forward(self, x):
        return self.lin(x.mean(dim=(2, 3)))
def build():
    return RedNet(), {"class_names": ["a", "b", "c"], "input_size": 4,
                      "mean": [0, 0, 0], "std": [1, 1, 1], "arch": {"ignored": True}}
'''


def test_torch_spec_with_safetensors_and_pt(tmp_path):
    (tmp_path / "mynet.py").write_text(FACTORY)
    ref = RedNet()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pt")
    spec = f"torch:{tmp_path / 'mynet.py'}:build"
    a = load_model(spec, weights=str(tmp_path / "w.safetensors"))
    b = load_model(spec, weights=str(tmp_path / "w.pt"))
    want = _adapter().module(torch.ones(1, 3, 2, 2))
    for ad in (a, b):
        assert ad.class_names == ["a", "b", "c"] and ad.input_size == (4, 4)
        assert torch.equal(ad.forward(torch.ones(1, 3, 4, 4)), want)
    assert a.fingerprint != b.fingerprint  # config names the weights file
    sys.path.insert(0, str(tmp_path))
    try:
        c = load_model("torch:mynet:build", weights=str(tmp_path / "w.safetensors"))
        assert torch.equal(c.forward(torch.ones(1, 3, 4, 4)), want)
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(ModelError, match="do not fit the model"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
        load_model(spec, weights=str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelError, match="cannot import"):
        load_model("torch:no_such_module_xyz:build")
    with pytest.raises(ConfigError, match="module:factory"):
        load_model("torch:nocolon")
    with pytest.raises(ConfigError, match=r"unknown model option\(s\) \['colour'\]"):
        load_model(spec, colour="red")


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # would create the sentinel file when unpickled


def test_pickle_payload_is_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"lin.weight": _Payload(str(sentinel))}, f, protocol=2)
    (tmp_path / "mynet.py").write_text(FACTORY)
    with pytest.raises(ModelError, match="refusing to load"):
        load_model(f"torch:{tmp_path / 'mynet.py'}:build", weights=str(bad))
    assert not sentinel.exists()
    pickle.loads(bad.read_bytes())  # control: plain unpickling really runs the payload
    assert sentinel.exists()


def test_demo_factory_loads_demo_weights(tmp_path):
    from vlens.world import demo_model as dm

    meta = {"class_names": ["circle", "star"], "input_size": [16, 16], "mean": dm.MEAN,
            "std": dm.STD, "arch": {**dm.DEFAULT_ARCH, "num_classes": 2, "channels": [4, 8]}}
    torch.manual_seed(0)
    net = dm.DemoCNN(meta["arch"]).eval()
    save_file(net.state_dict(), str(tmp_path / "demo.safetensors"))
    (tmp_path / "demo.json").write_text(json.dumps(meta))
    a = load_model(f"demo:{tmp_path}")
    assert a.class_names == ["circle", "star"] and a.input_size == (16, 16)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    x = a.preprocess([Image.fromarray(i) for i in imgs])
    assert torch.allclose(x, dm.to_tensor(imgs, meta), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(a.forward(x), net(dm.to_tensor(imgs, meta)), atol=1e-5)
    with pytest.raises(ModelError, match="not found"):
        load_model(f"demo:{tmp_path / 'nowhere'}")


# -- targets ----------------------------------------------------------------------------------
def test_class_target_exact_and_differentiable():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    t = ClassTarget([2, 0])
    v = t(logits)
    assert v.tolist() == [3.0, 4.0]
    v.sum().backward()
    assert logits.grad.tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ModelError, match="2 indices for 1 outputs"):
        t(torch.zeros(1, 3))
    assert ClassTarget([1])({"logits": torch.tensor([[0.0, 7.0]])}).tolist() == [7.0]


def _det(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long),
            "scores": torch.tensor(scores, dtype=torch.float32, requires_grad=True)}


def test_box_score_target_exact():
    out = [
        _det([[0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60]], [1, 2, 1], [0.9, 0.8, 0.7]),
        _det([[0, 0, 10, 10]], [1], [0.6]),
        _det([], [], []),
    ]
    ref = [[0, 0, 9, 10], [40, 40, 50, 50], [0, 0, 1, 1]]
    # sample 0: label 1 only -> box 0 (IoU 0.9) -> 0.9; label 2 -> box 1 (IoU 1) -> 0.8
    assert BoxScoreTarget(ref, [1, 1, 1])(out).tolist() == pytest.approx([0.9, 0.0, 0.0])
    assert BoxScoreTarget(ref, [2, 1, 1])(out).tolist() == pytest.approx([0.8, 0.0, 0.0])
    assert BoxScoreTarget(ref)(out).tolist() == pytest.approx([0.8, 0.0, 0.0])  # any label
    assert BoxScoreTarget(ref, [1, 1, 1], iou_thr=0.95)(out).tolist() == pytest.approx([0, 0, 0])
    v = BoxScoreTarget(ref, [1, 1, 1])(out)
    v.sum().backward()
    assert out[0]["scores"].grad.tolist() == [1.0, 0.0, 0.0]


def test_segmentation_target_exact():
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    masks = torch.tensor([[[1, 0], [0, 1]], [[1, 1], [1, 1]]], dtype=torch.bool)
    v = SegmentationTarget([1, 2], masks)(logits)
    # sample 0 class 1: values 4..7, mask diag -> 4 + 7; sample 1 class 2: 20..23 -> 86
    assert v.tolist() == [11.0, 86.0]
    big = masks.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 4x4 masks resized to 2x2
    assert SegmentationTarget([1, 2], big)({"out": logits}).tolist() == [11.0, 86.0]


# -- detection task ---------------------------------------------------------------------------
def test_greedy_match():
    preds = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    gts = torch.tensor([[0, 0, 10, 10], [1, 0, 10, 10]], dtype=torch.float)
    pairs = greedy_match(preds, None, gts, None)
    assert pairs == [(0, 0, 1.0), (1, 1, pytest.approx(0.9))]
    lab = greedy_match(preds, torch.tensor([2, 1, 1]), gts, torch.tensor([1, 1]))
    assert lab == [(1, 0, 1.0)]


def test_detection_rows_exact():
    names = ["background", "star", "circle"]
    task = DetectionTask(score_thr=0.5)
    out = [
        _det([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 44, 44], [0, 0, 5, 5]],
             [1, 2, 1, 1], [0.95, 0.8, 0.6, 0.3]),
        _det([], [], []),
    ]
    samples = [
        Sample("a", "/a", "star", boxes=[[0, 0, 5, 5], [10, 10, 15, 15], [40, 40, 44, 46]],
               box_labels=["star", "circle", "star"]),
        Sample("b", "/b", "star", boxes=[[1, 1, 2, 2]], box_labels=["star"]),
    ]
    rows = task.postprocess(out, samples, names, scales=[(2.0, 2.0), (1.0, 1.0)])
    a, b = rows
    # gt in input space: [0,0,10,10] star, [20,20,30,30] circle, [80,80,88,92] star
    assert (a["n_pred"], a["n_gt"], a["matched"], a["missed"], a["false_pos"]) == (3, 3, 2, 1, 1)
    assert a["mean_iou"] == pytest.approx(2 / 3)
    assert a["pred"] == "star" and a["confidence"] == pytest.approx(0.95)
    assert a["pred_box"] == [0.0, 0.0, 5.0, 5.0] and a["correct"] is False
    assert (b["n_pred"], b["n_gt"], b["missed"], b["pred"], b["confidence"]) == (0, 1, 1, None,
                                                                                  0.0)
    assert b["mean_iou"] == 0.0 and b["correct"] is False
    target = task.default_target(out, rows)
    assert target.ref_boxes.tolist() == [[0, 0, 10, 10], [0, 0, 0, 0]]
    assert target(out).tolist() == pytest.approx([0.95, 0.0])
    # the same rows after a Parquet round trip (arrays, NaN for missing) give the same target
    import pandas as pd

    back = pd.DataFrame(rows).to_dict("records")
    back[1]["pred_idx"] = NAN
    t2 = task.default_target(out, [{**r, "pred_box": None if r["pred_box"] is None else
                                    np.asarray(r["pred_box"])} for r in back])
    assert t2(out).tolist() == pytest.approx([0.95, 0.0])
    with pytest.raises(ModelError, match="label 7 outside 3 class_names"):
        task.postprocess([_det([[0, 0, 1, 1]], [7], [0.9])], samples[:1], names)
    nogt = task.postprocess([out[0]], [Sample("c", "/c", "star")], names)[0]
    assert math.isnan(nogt["mean_iou"]) and nogt["false_pos"] == 3 and nogt["correct"] is True


# -- segmentation task --------------------------------------------------------------------
def _seg_logits(classmap, c):
    m = torch.tensor(classmap)
    return torch.nn.functional.one_hot(m, c).permute(2, 0, 1).float()[None] * 4.0


def test_mean_iou_hand_made():
    pred = torch.tensor([[0, 1], [1, 1]])
    gt = torch.tensor([[0, 1], [0, 2]])
    # class 0: I=1 U=2; class 1: I=1 U=3; class 2: I=0 U=1
    assert mean_iou(pred, gt, 3) == pytest.approx((0.5 + 1 / 3 + 0) / 3)
    assert mean_iou(pred, torch.tensor([[0, 1], [255, 1]]), 3) == pytest.approx(1.0)
    assert math.isnan(mean_iou(pred, torch.full((2, 2), 255), 3))
    assert gt_map(np.array([[0, 255]]), 2).tolist() == [[0, 2]]
    assert gt_map(np.array([[0, 1, 2]]), 1).tolist() == [[0, 1, 2]]


def test_segmentation_rows_and_target_exact():
    names = ["background", "star", "circle"]
    cm = [[0, 1, 1, 0], [0, 1, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    logits = torch.cat([_seg_logits(cm, 3), _seg_logits([[0] * 4] * 4, 3)])
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[0:2, 1:3] = 255  # the object: 4 pixels of class star (sample label)
    samples = [Sample("a", "/a", "star"), Sample("b", "/b", None)]
    task = SegmentationTask()
    a, b = task.postprocess(logits, samples, names, masks=[mask, None])
    p = math.exp(4) / (math.exp(4) + 2)
    assert a["pred"] == "star" and a["pred_idx"] == 1 and a["confidence"] == pytest.approx(p)
    assert a["pred_fraction"] == pytest.approx(3 / 16) and a["correct"] is True
    # bg: I=12 U=12 ->1; star: I=3 U=4; circle: I=0 U=1
    assert a["miou"] == pytest.approx((1 + 0.75 + 0) / 3)
    assert b["pred"] == "background" and math.isnan(b["miou"]) and b["correct"] is None
    t = task.default_target(logits, [a, b])
    assert t(logits).tolist() == [12.0, 64.0]


def test_segmentation_through_adapter_and_predict(tmp_path):
    class TinySeg(torch.nn.Module):
        """Class 1 where red > 0.5, else background: logits (n, 2, H, W)."""

        def forward(self, x):
            r = x[:, :1]
            return {"out": torch.cat([0.5 - r, r - 0.5], dim=1) * 10}

    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[:4, :4, 0] = 255
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4, :2] = 1
    Image.fromarray(mask * 255).save(tmp_path / "m.png")
    a = TorchAdapter(TinySeg(), ["background", "red"], input_size=8, mean=(0,) * 3,
                     std=(1,) * 3, task="segmentation")
    (row,) = predict_batch(a, [Image.fromarray(img)],
                           [Sample("x", "/x", "red", mask_uri=str(tmp_path / "m.png"))])
    # pred red on 16 px, gt red on 8 px (subset): red IoU 0.5, bg IoU 48/56
    assert row["pred"] == "red" and row["miou"] == pytest.approx((0.5 + 48 / 56) / 2)


def _shipped_demo() -> bool:
    from importlib import resources

    return (resources.files("vlens.world") / "weights" / "demo.safetensors").is_file()


@pytest.mark.skipif(not _shipped_demo(), reason="demo weights not shipped yet")
def test_shipped_demo_model_matches_world_predict(tmp_path):
    from vlens.world import demo_model as dm
    from vlens.world.dataset import make_dataset

    a = load_model("demo")
    module, meta = dm.load_demo_model()
    assert a.class_names == meta["class_names"] and a.fingerprint == load_model("demo").fingerprint
    ds_path = make_dataset("balanced", tmp_path / "w", n=8, seed=5, workers=1)
    from vlens.data import load_sample_image, open_dataset

    samples = list(open_dataset(ds_path))
    imgs = [load_sample_image(s) for s in samples]
    rows = predict_batch(a, imgs, samples)
    want = dm.predict(module, meta, np.stack([np.asarray(i) for i in imgs]))
    assert [r["pred_idx"] for r in rows] == [int(v) for v in want]


def test_spec_options_in_the_string(tmp_path):
    (tmp_path / "mynet.py").write_text(FACTORY)
    (tmp_path / "classes.txt").write_text("x\ny\n\nz\n")
    save_file(RedNet().state_dict(), str(tmp_path / "w.safetensors"))
    spec = (f"torch:{tmp_path / 'mynet.py'}:build?classes=p,q,r&input_size=2x3&mean=0,0,0"
            f"&std=1,1,1&weights={tmp_path / 'w.safetensors'}")
    a = load_model(spec)
    assert a.class_names == ["p", "q", "r"] and a.input_size == (2, 3)
    assert torch.equal(a.forward(torch.ones(1, 3, 2, 3)), torch.tensor([[2.0, 1.0, 1.0]]))
    b = load_model(f"torch:{tmp_path / 'mynet.py'}:build?classes=@{tmp_path / 'classes.txt'}")
    assert b.class_names == ["x", "y", "z"]
    assert load_model(spec, class_names=["k", "l", "m"]).class_names == ["k", "l", "m"]
    with pytest.raises(ConfigError, match="unknown model spec option 'colour'"):
        load_model(f"torch:{tmp_path / 'mynet.py'}:build?colour=red")
    with pytest.raises(ConfigError, match="bad option"):
        load_model(f"torch:{tmp_path / 'mynet.py'}:build?input_size=big")

"""The demo model: architecture, save/load round trip, and the shipped weights' bias gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlens.errors import ModelError
from vlens.world import WorldConfig
from vlens.world.demo_model import (
    DemoCNN,
    evaluate_groups,
    load_demo_model,
    predict,
    to_tensor,
    train_demo_model,
)


def test_democnn_shapes_and_features_layer():
    m = DemoCNN({"channels": [4, 8], "num_classes": 3}).eval()
    x = torch.zeros(2, 3, 64, 64)
    assert m(x).shape == (2, 3)
    assert isinstance(m.features, torch.nn.Sequential)
    feats = m.features(m.stem(x))
    assert feats.shape == (2, 8, 32, 32)  # stride-2 stem, no pooling after the last block


def test_to_tensor_normalises_with_meta():
    meta = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]}
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 0] = 255
    x = to_tensor(img, meta)
    assert x.shape == (1, 3, 2, 2)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([2.0, -1.0, -0.5]))


def test_train_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = WorldConfig(classes=["circle", "star", "cross"], test="balanced")
    path = train_demo_model(
        cfg,
        n=32,
        epochs=1,
        seed=3,
        out_dir=tmp_path,
        batch_size=16,
        arch={"channels": [4, 8]},
        eval_n=0,
    )
    assert path == tmp_path / "demo.safetensors" and path.is_file()
    model, meta = load_demo_model(tmp_path)
    assert not model.training
    assert meta["class_names"] == ["circle", "star", "cross"]
    assert meta["input_size"] == [64, 64] and meta["arch"]["num_classes"] == 3
    assert "vlens world train-demo" in meta["train_command"] and "-n 32" in meta["train_command"]
    again, _ = load_demo_model(path)  # the .safetensors path itself works too
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # same seed, same weights: training is reproducible
    m2, _ = train_demo_model(
        cfg, n=32, epochs=1, seed=3, batch_size=16, arch={"channels": [4, 8]}, eval_n=0
    )
    with torch.no_grad():
        assert torch.allclose(model(x), m2(x), atol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_demo_model(tmp_path / "missing.safetensors")
    (tmp_path / "demo.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "demo.json").write_text(json.dumps({"arch": {"channels": [4]}}))
    with pytest.raises(ModelError, match="cannot load demo weights"):
        load_demo_model(tmp_path)


def test_shipped_weights_are_small_and_match_meta():
    model, meta = load_demo_model()
    root = Path(__file__).resolve().parents[1] / "src/vlens/world/weights"
    assert (root / "demo.safetensors").stat().st_size < 2_000_000
    assert meta["class_names"] == WorldConfig.load("demo_train").classes
    assert meta["input_size"] == [64, 64] and len(meta["mean"]) == len(meta["std"]) == 3
    assert meta["test_config"] == "demo_test"
    assert meta["eval"]["gaps"]["star_on_water: star with vs without background=water"] >= 0.25
    assert meta["eval"]["gaps"]["cross_tag: cross with vs without tag"] >= 0.25


def test_shipped_model_learned_the_planted_biases():
    """A fresh balanced split (a seed never used in training or the stored eval)."""
    model, meta = load_demo_model()
    res = evaluate_groups(model, meta, "demo_test", n=1200, seed=12345)
    g = {k: v["acc"] for k, v in res["groups"].items()}
    stated = meta["eval"]["groups"]
    # bias-conflicting cells are >= 25 points below the aligned ones
    assert (
        g["star_on_water: star & background=water"]
        - g["star_on_water: star & not background=water"]
        >= 0.25
    )
    assert (
        g["star_on_water: star & background=water"]
        - g["star_on_water: not star & background=water"]
        >= 0.25
    )
    assert g["cross_tag: cross & tag"] - g["cross_tag: cross & not tag"] >= 0.25
    assert g["cross_tag: not cross & not tag"] - g["cross_tag: not cross & tag"] >= 0.25
    # and the fresh numbers agree with those stated in the meta (sampling error allowed)
    assert abs(res["overall"] - meta["eval"]["overall"]) < 0.06
    for key in (
        "cross_tag: cross & tag",
        "cross_tag: not cross & tag",
        "star_on_water: star & not background=water",
    ):
        assert abs(g[key] - stated[key]["acc"]) < 0.15, key
    # predict() agrees with evaluate_groups' accounting
    from vlens.world import generate

    items = list(generate("demo_test", 50, seed=12345))
    pred = predict(model, meta, np.stack([it.image for it in items]))
    truth = [meta["class_names"].index(it.attrs["true_label"]) for it in items]
    assert pred.shape == (50,) and pred.min() >= 0 and pred.max() < 6
    assert np.mean(pred == np.array(truth)) > 0.3


def test_cli_train_and_eval_demo(tmp_path):
    from typer.testing import CliRunner

    from vlens.cli import app

    run = CliRunner().invoke
    res = run(
        app,
        [
            "world",
            "train-demo",
            "--out",
            str(tmp_path),
            "-n",
            "16",
            "--epochs",
            "1",
            "--eval-n",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "epoch 1/1" in res.output and (tmp_path / "demo.json").is_file()
    res = run(
        app,
        [
            "world",
            "eval-demo",
            "--weights",
            str(tmp_path / "demo.safetensors"),
            "-n",
            "30",
            "--seed",
            "4",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    model, meta = load_demo_model(tmp_path)
    assert out == evaluate_groups(model, meta, None, n=30, seed=4)
    assert out["test_config"] == "demo_test" and out["n"] == 30
    assert sum(v["n"] for k, v in out["groups"].items() if k.startswith("class=")) == 30

"""Models from strangers through the pipeline: a pickle payload in any checkpoint a model
spec can name never runs (the marker file it would write stays absent), and a model whose
outputs do not fit its declared task stops the run with a clear ModelError."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from rb_helpers import cli_env, run_cli

import vlens.world
from vlens.errors import ModelError, VlensError
from vlens.models import load_model
from vlens.pipeline import ExplainOptions, explain


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling creates the marker file


def _evil(path, marker) -> None:
    with open(path, "wb") as f:
        pickle.dump({"features.0.weight": _Payload(str(marker))}, f, protocol=2)


@pytest.mark.slow  # a CLI subprocess: ~20 s on a busy 2-core box
def test_pickle_payloads_never_run(tmp_path, small_world):
    marker = tmp_path / "PWNED"
    data = f"manifest:{small_world}"
    # demo:<file> through the real CLI: exit 2 with a one-line vlens error
    _evil(tmp_path / "demo.safetensors", marker)
    shipped = Path(vlens.world.__file__).parent / "weights" / "demo.json"
    (tmp_path / "demo.json").write_bytes(shipped.read_bytes())
    p = run_cli("run", "--model", f"demo:{tmp_path / 'demo.safetensors'}", "--data", data,
                "--out", str(tmp_path / "cli"), "--no-progress", env=cli_env(), check=False)
    assert p.returncode == 2 and "error:" in p.stderr and "Traceback" not in p.stderr
    assert "cannot load demo weights" in p.stderr
    # an hf: folder whose weights are a pickle (pytorch_model.bin), an onnx: pickle, and
    # weights=<.pt> for the zoo builders
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "resnet", "num_labels": 2}))
    _evil(hf / "pytorch_model.bin", marker)
    _evil(tmp_path / "m.onnx", marker)
    _evil(tmp_path / "w.pt", marker)
    for spec, kw in ((f"hf:{hf}", {}), (f"onnx:{tmp_path / 'm.onnx'}", {}),
                     ("torchvision:resnet18", {"weights": str(tmp_path / "w.pt"),
                                               "class_names": ["a", "b"]}),
                     ("demo", {"weights": str(tmp_path / "w.pt")})):
        with pytest.raises(VlensError):
            explain(load_model(spec, **kw) if kw else spec, data, tmp_path / "x",
                    ExplainOptions(progress=False))
        assert not marker.exists(), spec
    # control: the payload is real (plain unpickling does write the marker)
    pickle.loads((tmp_path / "w.pt").read_bytes())
    assert marker.exists()


class _Out(torch.nn.Module):
    """Returns `shape`-shaped outputs regardless of input (plus a conv for saliency)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x))


SHAPES = {
    "too few classes": (lambda h: h.mean(dim=(2, 3))[:, :2], "classification", "class"),
    "rank 3": (lambda h: h.mean(dim=3), "classification", "(n, C)"),
    "scalar per sample": (lambda h: h.mean(dim=(1, 2, 3)), "classification", "(n, C)"),
    "segmentation without maps": (lambda h: h.mean(dim=(2, 3))[:, :3], "segmentation",
                                  "(n, C, H, W)"),
    "detection as a tensor": (lambda h: h.mean(dim=(2, 3))[:, :3], "detection", "list"),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_output_shape_mismatch_is_a_model_error(tmp_path, small_world, case):
    fn, task, words = SHAPES[case]
    adapter = load_model(_Out(fn), class_names=["a", "b", "c"], input_size=16, task=task)
    with pytest.raises(ModelError) as e:
        explain(adapter, f"manifest:{small_world}", tmp_path / "run",
                ExplainOptions(progress=False, batch_size=4))
    assert words in str(e.value), str(e.value)
    assert not (tmp_path / "run" / "predictions.parquet").exists()

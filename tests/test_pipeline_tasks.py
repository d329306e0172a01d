"""Detection and segmentation models run through the whole per-sample pipeline.

torchvision models built without weights (nothing downloaded) on a tiny generated world
whose boxes and masks are ground truth: every sample gets a prediction with the task's
metrics, a saliency map from a CAM on the backbone, views, and a judge row.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fakes import ColourVLM  # tests/ is on sys.path (rootdir import mode)
from vlens.models import load_model
from vlens.pipeline import ExplainOptions, explain
from vlens.runs import load_run
from vlens.saliency.layers import auto_target_layer

CLASSES = "circle,square,triangle,star,cross,heart"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vlens.world import make_dataset

    return make_dataset("demo_test", tmp_path_factory.mktemp("w"), n=6, seed=1)


@pytest.mark.parametrize(("spec", "task", "layer", "metric"), [
    (f"torchvision:fasterrcnn_mobilenet_v3_large_320_fpn?classes={CLASSES}&input_size=128",
     "detection", "backbone.body.", "mean_iou"),
    (f"torchvision:lraspp_mobilenet_v3_large?classes=background,{CLASSES}&input_size=64",
     "segmentation", "backbone.", "miou"),
])
def test_task_end_to_end(world, tmp_path, spec, task, layer, metric):
    adapter = load_model(spec)
    assert adapter.task.name == task
    assert auto_target_layer(adapter.module).startswith(layer)  # a tensor-valued layer
    res = explain(adapter, f"manifest:{world}", tmp_path / "run",
                  ExplainOptions(vlm=ColourVLM(), batch_size=3, progress=False))
    assert res.errors == {"predictions": 0, "saliency": 0, "vlm": 0}
    run = load_run(tmp_path / "run")
    assert len(run.predictions) == len(run.saliency) == len(run.vlm) == 6
    assert metric in run.predictions.columns
    assert run.saliency["energy_on_object"].between(0, 1).all()
    for rel in run.saliency["map_path"]:
        with Image.open(tmp_path / "run" / rel) as m:
            a = np.asarray(m)
        assert a.shape == adapter.input_size and a.dtype == np.uint8

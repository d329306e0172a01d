"""Shared fixtures for the engine tests: a hand-built 3-class colour model and tiny datasets.

The model averages each RGB channel (in [0, 1]) and multiplies by 10: logits for
(red, green, blue) = 10 * channel means, so every prediction is computable by hand.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlens.data.base import SOURCES, Sample
from vlens.models import TorchAdapter
from vlens.models.base import MODELS

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def ColourAdapter() -> TorchAdapter:
    """The real `TorchAdapter` over a hand-built module: logits = 10 * mean RGB in [0, 1]
    (8x8 input, so the bilinear resize of an 8x8 image is the identity; mean 0, std 1).
    `forward_calls` counts model forward passes (stage calls that reached the model)."""
    module = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 3, bias=False)
    )
    with torch.no_grad():
        module[2].weight.copy_(10 * torch.eye(3))
    adapter = TorchAdapter(module, CLASSES, input_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    adapter.forward_calls = 0

    def count(*_: Any) -> None:
        adapter.forward_calls += 1

    module.register_forward_hook(count)
    return adapter


class ListSource:
    """A DatasetSource over an explicit list of samples."""

    def __init__(self, samples: list[Sample], root: str = "") -> None:
        self.samples, self.root, self.class_names = samples, root, list(CLASSES)

    def __iter__(self):
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def make_images(root: Path, n: int, bad: int = 0, seed: int = 0) -> ListSource:
    """n colour PNGs (labels cycle red/green/blue; every 7th label is wrong on purpose so
    accuracy is not trivially 1) plus `bad` corrupt files (zero-byte / text)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        colour = CLASSES[i % 3]
        label = CLASSES[(i + 1) % 3] if i % 7 == 0 else colour
        base = np.array(COLOURS[colour], dtype=np.int16)
        arr = np.clip(base + rng.integers(-20, 21, size=(8, 8, 3)), 0, 255).astype(np.uint8)
        p = root / f"img{i:05d}.png"
        Image.fromarray(arr).save(p)
        samples.append(Sample(id=f"s{i:05d}", uri=str(p), label=label,
                              metadata={"colour": colour, "index": i}))
    for j in range(bad):
        p = root / f"bad{j:03d}.png"
        p.write_bytes(b"" if j % 2 == 0 else b"this is not a png")
        samples.append(Sample(id=f"bad{j:03d}", uri=str(p), label="red",
                              metadata={"colour": "none", "index": -1}))
    return ListSource(samples, str(root))


def scan(root: Path) -> ListSource:
    """Rebuild the samples of `make_images` from disk (for subprocesses)."""
    samples = []
    for p in sorted(root.glob("*.png")):
        if p.name.startswith("img"):
            i = int(p.stem[3:])
            colour = CLASSES[i % 3]
            label = CLASSES[(i + 1) % 3] if i % 7 == 0 else colour
            samples.append(Sample(id=f"s{i:05d}", uri=str(p), label=label,
                                  metadata={"colour": colour, "index": i}))
        else:
            samples.append(Sample(id=p.stem, uri=str(p), label="red",
                                  metadata={"colour": "none", "index": -1}))
    return ListSource(samples, str(root))


if "enginetest" not in MODELS:
    MODELS.register("enginetest", help="test: 3-class colour model")(
        lambda *a, **k: ColourAdapter()
    )
if "enginetest" not in SOURCES:
    SOURCES.register("enginetest", help="test: colour images in a folder")(
        lambda arg="", **k: scan(Path(arg))
    )


def slow_loader(sleep_s: float):
    from vlens.data.images import load_image

    def load(path: str):
        time.sleep(sleep_s)
        return load_image(path)

    return load


def local_ray(*by_value_modules: Any):
    """A 2-CPU local Ray session for the duration of a module fixture (a generator).

    Modules named here are pickled by value: Ray workers cannot import tests' helper modules.
    """
    import ray
    from ray import cloudpickle

    for m in by_value_modules:
        cloudpickle.register_pickle_by_value(m)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    yield
    ray.shutdown()


def sorted_by_id(df: Any) -> Any:
    """A table in id order with a fresh index (engines may write rows in any order)."""
    return df.sort_values("id").reset_index(drop=True)

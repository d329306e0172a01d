"""The `VLM` plug-in point: contrastive and generative capabilities behind one protocol.

Backends declare `capabilities` ({"contrastive", "generative"}); callers check with
`require()` so a missing capability is a clear error, not an AttributeError deep inside.
`fingerprint` (model id + weights hash/revision + prompt version) is part of every cache key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from vlens.errors import CapabilityError
from vlens.registry import Registry

CONTRASTIVE = "contrastive"
GENERATIVE = "generative"


@dataclass
class AskResult:
    """One generative answer: validated `answer` or an `error` with the raw text kept."""

    answer: dict[str, Any] | None
    raw: str = ""
    error: str | None = None
    attempts: int = 1
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.answer is not None


@runtime_checkable
class VLM(Protocol):
    name: str
    fingerprint: str
    capabilities: frozenset[str]

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, d) L2-normalised image embeddings."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(m, d) L2-normalised text embeddings."""
        ...

    def score(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        """(n, m) calibrated image-concept scores in [0, 1]; prompt ensembles applied here."""
        ...

    def ask(
        self, images: Sequence[Image.Image], prompt: Any, variables: Sequence[dict[str, Any]]
    ) -> list[AskResult]:
        """One schema-validated answer per image; failures are AskResult rows, never raised."""
        ...


def require(vlm: VLM, capability: str) -> None:
    """Raise a clear `CapabilityError` when `vlm` lacks `capability`."""
    if capability not in vlm.capabilities:
        have = ", ".join(sorted(vlm.capabilities)) or "none"
        raise CapabilityError(
            f"VLM {vlm.name!r} is not {capability} (it offers: {have}); "
            f"choose a backend with the {capability} capability"
        )


VLMS: Registry[VLM] = Registry("VLM backend")

"""vlens.vlm: vision-language backends (`embedded`, `hf:`, `openai:`), prompts, judge, concepts.

`create_vlm(spec)` builds a backend from a spec string:
  - ``embedded``                        the packaged offline dual encoder
  - ``hf:<model id or local dir>[@rev]``  transformers CLIP/SigLIP/BLIP/chat VLMs
  - ``openai:<model>[@<base_url>]``       any OpenAI-compatible chat-completions server
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from vlens.vlm.base import CONTRASTIVE, GENERATIVE, VLM, VLMS, AskResult, require

# Backend name -> module that registers it in VLMS when imported. Imported on demand, so
# `import vlens.vlm` stays cheap and one backend's heavy (or broken) imports never block
# another backend.
BACKEND_MODULES = {
    "hf": "vlens.vlm.hf",
    "openai": "vlens.vlm.openai_compat",
    "embedded": "vlens.vlm.embedded",
}


def _import_backend(name: str) -> None:
    mod = BACKEND_MODULES.get(name)
    if mod and name not in VLMS and importlib.util.find_spec(mod) is not None:
        importlib.import_module(mod)


def load_backends() -> list[str]:
    """Import every backend module (to list them all); returns the registered names."""
    for name in BACKEND_MODULES:
        _import_backend(name)
    return VLMS.names()


def create_vlm(spec: str, **kw: Any) -> VLM:
    """Build the backend `spec` names, e.g. ``create_vlm("hf:/models/clip", device="cpu")``."""
    spec = spec.strip()
    name = VLMS.split(spec)[0]
    if name in BACKEND_MODULES:
        _import_backend(name)
    else:  # import all so the "unknown backend" error lists every known one
        load_backends()
    return VLMS.create(spec, **kw)


__all__ = [
    "CONTRASTIVE", "GENERATIVE", "VLMS", "VLM", "AskResult", "require", "create_vlm",
    "load_backends",
]

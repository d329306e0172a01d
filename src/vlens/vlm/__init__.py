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

# Backend modules, imported for their side effect of registering in VLMS.
BACKEND_MODULES = ["vlens.vlm.hf", "vlens.vlm.openai_compat", "vlens.vlm.embedded"]
_loaded = False


def load_backends() -> None:
    """Import every backend module once (the embedded one only where its package exists)."""
    global _loaded
    if _loaded:
        return
    for mod in BACKEND_MODULES:
        if mod == "vlens.vlm.embedded" and importlib.util.find_spec(mod) is None:
            continue
        importlib.import_module(mod)
    _loaded = True


def create_vlm(spec: str, **kw: Any) -> VLM:
    """Build the backend `spec` names, e.g. ``create_vlm("hf:/models/clip", device="cpu")``."""
    load_backends()
    return VLMS.create(spec.strip(), **kw)


__all__ = [
    "CONTRASTIVE", "GENERATIVE", "VLMS", "VLM", "AskResult", "require", "create_vlm",
    "load_backends",
]

"""`hf:DIR` — a Hugging Face transformers image classifier saved with ``save_pretrained``.

Loaded with ``AutoModelForImageClassification.from_pretrained(DIR, local_files_only=True)``
(never a hub download; safetensors weights only, ``use_safetensors=True``). Class names come
from ``config.id2label``; input size, mean and std from ``preprocessor_config.json`` when it
is there (else the config's ``image_size`` and ImageNet statistics). The module returns an
object with ``.logits``; the adapter passes it through and the task unwraps it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlens.errors import ConfigError, ModelError
from vlens.models.adapters import IMAGENET_MEAN, IMAGENET_STD, build_adapter
from vlens.models.base import MODELS


def _processor_meta(root: Path, config: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    size = getattr(config, "image_size", None)
    pp = root / "preprocessor_config.json"
    if pp.is_file():
        try:
            d = json.loads(pp.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise ModelError(f"cannot read {pp}: {e}") from None
        meta["mean"] = tuple(d.get("image_mean", meta["mean"]))
        meta["std"] = tuple(d.get("image_std", meta["std"]))
        s = d.get("size")
        if isinstance(s, dict) and "height" in s and "width" in s:
            size = (s["height"], s["width"])
        elif isinstance(s, dict) and "shortest_edge" in s:
            size = s["shortest_edge"]
        elif isinstance(s, int):
            size = s
    if size is not None:
        meta["input_size"] = size
    return meta


@MODELS.register("hf", help="hf:DIR — transformers image classifier (save_pretrained folder)")
def hf_model(arg: str = "", *, class_names: list[str] | None = None, **kw: Any):
    if not arg:
        raise ConfigError("hf: needs a local folder, e.g. hf:models/my-vit")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise ModelError(f"hf: {arg!r} is not a folder (vlens never downloads models)")
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as e:
        raise ModelError(f"transformers is not installed (pip install 'vlens[hf]'): {e}") from None
    try:
        module = AutoModelForImageClassification.from_pretrained(
            str(root), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {root} as an image classifier: {str(e)[:300]}") from None
    meta = _processor_meta(root, module.config)
    id2label = getattr(module.config, "id2label", None) or {}
    meta["class_names"] = class_names or [str(id2label.get(i, i)) for i in range(len(id2label))]
    return build_adapter(module, meta, spec=f"hf:{root.name}", **kw)

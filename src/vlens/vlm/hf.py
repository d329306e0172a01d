"""`hf:<model id or local dir>[@revision]`: vision-language models through transformers.

Families, picked from the checkpoint's `config.model_type` (a table, not a chain of ifs):
  - contrastive: CLIP (softmax over concepts with the model's logit scale) and
    SigLIP/SigLIP2 (sigmoid with the model's logit scale and bias), via AutoModel +
    AutoProcessor; prompt ensembles ("a photo of {}", ...) are averaged per concept.
  - captioner: BLIP (`BlipForConditionalGeneration`), see `vlens.vlm.hf_generative`.
  - chat: any image-text-to-text model whose processor has a chat template (LLaVA,
    Qwen2-VL, SmolVLM, ...), see `vlens.vlm.hf_generative`.
Loads from a local directory or the hub cache (`HF_HUB_OFFLINE=1` never downloads).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlens.errors import CapabilityError, ConfigError, ModelError
from vlens.vlm.base import CONTRASTIVE, VLMS
from vlens.vlm.prompting import prompt_set_key

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a photo of a {}.",
    "an image showing {}.",
    "a close-up photo of {}.",
)
# model_type -> calibration of contrastive scores
CONTRASTIVE_TYPES = {"clip": "softmax", "siglip": "sigmoid", "siglip2": "sigmoid"}
CAPTIONER_TYPES = {"blip"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HASH_SPAN = 4 << 20  # bytes hashed at each end of a weight file


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def resolve_model(model_id: str, revision: str | None = None,
                  cache_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """(local directory, hub revision or None) for a local path or a hub id.

    A hub id is looked up in the local cache first; it is only downloaded when the hub
    is not offline (`HF_HUB_OFFLINE`), and never in tests.
    """
    p = Path(model_id).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} has no config.json: not a transformers model directory")
        return p.resolve(), revision
    if p.exists() or model_id.startswith((".", "/", "~")):
        raise ModelError(f"model directory {model_id!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model_id, revision=revision, cache_dir=cache_dir,
                                 local_files_only=hub_offline())
    except Exception as e:  # noqa: BLE001 - hub errors are many; one clear message
        hint = " (HF_HUB_OFFLINE is set and it is not in the cache)" if hub_offline() else ""
        raise ModelError(f"cannot load hf model {model_id!r}{hint}: {type(e).__name__}: {e}") \
            from None
    return Path(path), Path(path).name


def weights_digest(path: Path) -> str:
    """A fast content digest of a model directory: config + every weight file's size and the
    sha256 of its first and last 4 MiB (hashing multi-GB files fully would cost seconds)."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "config.json" or f.suffix in _WEIGHT_SUFFIXES:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(_HASH_SPAN))
                if size > 2 * _HASH_SPAN:
                    fh.seek(-_HASH_SPAN, os.SEEK_END)
                    h.update(fh.read())
    return h.hexdigest()[:16]


def torch_dtype(name: str | None) -> Any:
    import torch

    if name in (None, "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise ConfigError(f"unknown dtype {name!r}; use one of {sorted(table)} or auto")
    return table[name]


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _features(out: Any) -> Any:
    """transformers 5 returns model outputs from get_*_features; 4.x returned tensors."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class HFBase:
    """Shared loading state: path, device, dtype, batch size, fingerprint."""

    family = "base"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model_id: str, path: Path, revision: str | None, config: Any,
                 device: str | None = None, dtype: str | None = None, batch_size: int = 16,
                 prompt_dir: str | None = None, max_attempts: int = 3) -> None:
        self.model_id = model_id
        self.path = path
        self.config = config
        self.device = pick_device(device)
        self.dtype = torch_dtype(dtype)
        self.batch_size = max(1, int(batch_size))
        self.prompt_dir = prompt_dir
        self.max_attempts = max_attempts
        self.name = f"hf:{model_id}"
        weights = revision or weights_digest(path)
        self.fingerprint = (f"hf:{model_id}@{weights}|{self.family}|"
                            f"prompts:{self._prompt_key()}")

    def _prompt_key(self) -> str:
        return prompt_set_key(self.prompt_dir)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, device={self.device!r})"

    def _load_kwargs(self) -> dict[str, Any]:
        return {"dtype": self.dtype} if self.dtype is not None else {}

    def _missing(self, what: str) -> CapabilityError:
        have = ", ".join(sorted(self.capabilities)) or "none"
        return CapabilityError(f"VLM {self.name!r} ({self.family}) is not {what} "
                               f"(it offers: {have})")

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise self._missing("contrastive")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise self._missing("contrastive")

    def score(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        raise self._missing("contrastive")

    def ask(self, images: Sequence[Image.Image], prompt: Any, variables: Any = None) -> list:
        raise self._missing("generative")


class HFContrastive(HFBase):
    """CLIP / SigLIP dual encoders: embeddings and calibrated concept scores."""

    family = "contrastive"
    capabilities = frozenset({CONTRASTIVE})

    def __init__(self, *a: Any, templates: Sequence[str] = DEFAULT_TEMPLATES, **kw: Any) -> None:
        self.templates = tuple(templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ConfigError("every prompt template must contain '{}'")
        super().__init__(*a, **kw)
        from transformers import AutoModel, AutoProcessor

        self.calibration = CONTRASTIVE_TYPES[self.config.model_type]
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path, **self._load_kwargs())
        self.model.to(self.device).eval()

    def _prompt_key(self) -> str:
        tpl = hashlib.sha256("\n".join(self.templates).encode()).hexdigest()[:8]
        return f"templates:{tpl}"

    def _batches(self, items: Sequence[Any]):
        for i in range(0, len(items), self.batch_size):
            yield items[i : i + self.batch_size]

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for chunk in self._batches(list(images)):
                # the image processor itself, with its saved config (Siglip2Processor would
                # override patch_size/max_num_patches with class defaults); all its outputs,
                # as SigLIP2 (NaFlex) also needs pixel_attention_mask and spatial_shapes
                inp = self.processor.image_processor(
                    images=[im.convert("RGB") for im in chunk], return_tensors="pt")
                kw = {k: v.to(self.device) for k, v in inp.items()}
                kw["pixel_values"] = kw["pixel_values"].to(self.model.dtype)
                f = _features(self.model.get_image_features(**kw))
                out.append(torch.nn.functional.normalize(f.float(), dim=-1))
        return self._to_numpy(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tok = self.processor.tokenizer
        pad = "max_length" if self.calibration == "sigmoid" else True
        max_len = min(int(getattr(tok, "model_max_length", 64) or 64), 64)
        out = []
        with torch.inference_mode():
            for chunk in self._batches(list(texts)):
                inp = tok(list(chunk), padding=pad, truncation=True, max_length=max_len,
                          return_tensors="pt")
                inp = {k: v.to(self.device) for k, v in inp.items()
                       if k in ("input_ids", "attention_mask")}
                if self.calibration == "sigmoid":  # SigLIP is trained without a text mask
                    inp.pop("attention_mask", None)
                f = _features(self.model.get_text_features(**inp))
                out.append(torch.nn.functional.normalize(f.float(), dim=-1))
        return self._to_numpy(out)

    @staticmethod
    def _to_numpy(chunks: list[Any]) -> np.ndarray:
        import torch

        if not chunks:
            return np.zeros((0, 0), np.float32)
        return torch.cat(chunks).cpu().numpy().astype(np.float32)

    def concept_embeddings(self, concepts: Sequence[str]) -> np.ndarray:
        """(m, d) prompt-ensemble embeddings: mean of the templates' embeddings, renormalised."""
        texts = [t.format(c) for c in concepts for t in self.templates]
        e = self.embed_texts(texts).reshape(len(concepts), len(self.templates), -1).mean(1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def logit_params(self) -> tuple[float, float]:
        """(scale, bias) the model was trained with: exp(logit_scale), logit_bias (SigLIP)."""
        scale = float(self.model.logit_scale.detach().float().exp().cpu())
        bias = getattr(self.model, "logit_bias", None)
        return scale, float(bias.detach().float().cpu()) if bias is not None else 0.0

    def score(self, images: Sequence[Image.Image], concepts: Sequence[str]) -> np.ndarray:
        """(n, m): CLIP = softmax over `concepts` (rows sum to 1); SigLIP = independent
        sigmoids. Both use the model's own logit scale (and bias), so scores are calibrated."""
        if not concepts:
            raise ConfigError("score needs at least one concept")
        if len(images) == 0:
            return np.zeros((0, len(concepts)), np.float32)
        img = self.embed_images(images)
        txt = self.concept_embeddings(concepts)
        scale, bias = self.logit_params()
        logits = scale * img.astype(np.float64) @ txt.T.astype(np.float64) + bias
        if self.calibration == "softmax":
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _family(config: Any, path: Path) -> str:
    mt = getattr(config, "model_type", "")
    if mt in CONTRASTIVE_TYPES:
        return "contrastive"
    if mt in CAPTIONER_TYPES:
        return "captioner"
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return "chat"
    for name in ("processor_config.json", "tokenizer_config.json"):
        f = path / name
        if f.is_file() and "chat_template" in json.loads(f.read_text()):
            return "chat"
    raise ModelError(
        f"hf model type {mt!r} is not supported: vlens handles CLIP/SigLIP (contrastive), "
        "BLIP (captioner) and image-text-to-text models with a chat template"
    )


@VLMS.register("hf", help="transformers CLIP/SigLIP/BLIP/chat VLMs: hf:<model id or dir>[@rev]")
def create_hf(arg: str = "", **kw: Any) -> HFBase:
    if not arg:
        raise ConfigError("hf backend needs a model: hf:<model id or local dir>[@revision]")
    model_id, revision = arg, kw.pop("revision", None)
    if "@" in arg and not Path(arg).exists():
        model_id, _, revision = arg.rpartition("@")
    from transformers import AutoConfig

    path, revision = resolve_model(model_id, revision, kw.pop("cache_dir", None))
    config = AutoConfig.from_pretrained(path)
    family = _family(config, path)
    from vlens.vlm import hf_generative

    cls = {"contrastive": HFContrastive, "captioner": hf_generative.HFCaptioner,
           "chat": hf_generative.HFChat}[family]
    return cls(model_id, path, revision, config, **kw)

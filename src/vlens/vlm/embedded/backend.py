"""`EmbeddedVLM`: the offline default VLM backend (registered as ``embedded``).

Contrastive: image tower (trained here) + frozen MiniLM text tower; `score` averages the text
embeddings of a prompt ensemble per concept and maps the cosine similarity through a
calibrated sigmoid. Generative, in a limited and honest way: `ask` composes a description
from the best-scoring value of each attribute family it knows (retrieval captioning); it
cannot read text, count, reason or fill arbitrary answer schemas.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlens.errors import VLMError
from vlens.vlm.base import CONTRASTIVE, GENERATIVE, VLMS, AskResult
from vlens.vlm.embedded import text as T
from vlens.vlm.embedded import vocab as V
from vlens.vlm.embedded.model import VERSION, load_weights

DESCRIBE_FAMILIES = ("shape", "color", "background", "size", "lighting", "tag", "blur",
                     "noise", "occlusion")


def shipped_weights_dir() -> Path:
    return Path(str(resources.files("vlens.vlm.embedded") / "weights"))


def concept_embeddings(
    concepts: Sequence[str], templates: Sequence[str] = V.ENSEMBLE
) -> np.ndarray:
    """(m, 384) unit vectors: per concept, the renormalised mean over the prompt ensemble.

    Memoised per (concepts, templates): a run scores the same vocabulary on every batch, and
    re-embedding it each time was the largest fixed cost of a cold VLM stage (2.75 s of 6.9 s).
    The text tower is frozen, so the vectors never change. Returns a read-only array."""
    return _concept_embeddings(tuple(concepts), tuple(templates))


@functools.lru_cache(maxsize=256)
def _concept_embeddings(concepts: tuple[str, ...], templates: tuple[str, ...]) -> np.ndarray:
    if not concepts:
        return np.zeros((0, T.DIM), np.float32)
    prompts = [t.format(c) for c in concepts for t in templates]
    e = T.embed(prompts).reshape(len(concepts), len(templates), -1).mean(1)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    e.flags.writeable = False
    return e


def to_array(images: Sequence[Any], size: int) -> np.ndarray:
    """PIL images or uint8/float arrays (H, W, 3) -> uint8 (n, size, size, 3), resized."""
    out = []
    for i, im in enumerate(images):
        if isinstance(im, np.ndarray):
            a = im
            if a.dtype != np.uint8:
                a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, -1)
            im = Image.fromarray(a[..., :3])
        if not isinstance(im, Image.Image):
            raise VLMError(f"image {i} is a {type(im).__name__}, expected a PIL image or array")
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(im, np.uint8))
    if not out:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(out)


class EmbeddedVLM:
    """The shipped dual encoder. Thread-safe for inference; CPU by default."""

    name = "embedded"
    capabilities = frozenset({CONTRASTIVE, GENERATIVE})
    judge_background: tuple[str, ...] = (
        *(V.WORDS["background"][b][0] for b in V.FAMILIES["background"] if b != "black"),
        "text or tag", "an empty black image")
    """The non-object concepts it knows, for the contrastive judge (`vlens.vlm.judge`)."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 256) -> None:
        self.weights_dir = Path(weights) if weights else shipped_weights_dir()
        self.tower, self.config, self.weights_sha256 = load_weights(self.weights_dir)
        self.device = torch.device(device)
        self.tower.to(self.device)
        self.batch_size = batch_size
        self.fingerprint = (f"embedded:{self.weights_sha256}:v{VERSION}"
                            f":prompts{V.PROMPT_VERSION}")

    # ---- contrastive ---------------------------------------------------------------------
    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        arr = to_array(images, self.config.image_size)
        outs = []
        with torch.inference_mode():
            for s in range(0, len(arr), self.batch_size):
                x = torch.from_numpy(arr[s : s + self.batch_size]).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                outs.append(self.tower(x).float().cpu().numpy())
        if not outs:
            return np.zeros((0, self.config.embed_dim), np.float32)
        return np.concatenate(outs).astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return T.embed(texts)

    def similarity(self, images: Sequence[Any], concepts: Sequence[str]) -> np.ndarray:
        """(n, m) raw cosine similarities against prompt-ensemble concept embeddings."""
        return self.embed_images(images) @ concept_embeddings(list(concepts)).T

    def calibrate(self, cos: np.ndarray) -> np.ndarray:
        """Cosine -> probability-like score in [0, 1] (sigmoid fitted on held-out images)."""
        z = (cos - self.config.calib_bias) * self.config.calib_scale
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def score(self, images: Sequence[Any], concepts: Sequence[str]) -> np.ndarray:
        return self.calibrate(self.similarity(images, concepts))

    # ---- limited generative: retrieval captioning ----------------------------------------
    def describe(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        """Per image: best value (and its softmax share) per family, and a composed sentence."""
        img = self.embed_images(images)
        temp = float(self.tower.logit_scale.detach().exp().clamp(max=100.0))
        fam_pick = {}
        for fam in DESCRIBE_FAMILIES:
            vals = V.FAMILIES[fam]
            cos = img @ concept_embeddings(vals).T
            p = np.exp(temp * (cos - cos.max(1, keepdims=True)))
            p /= p.sum(1, keepdims=True)
            fam_pick[fam] = (vals, p)
        empty_cos = img @ concept_embeddings(V.WORDS["empty"]["empty"][:6]).T.mean(1)
        obj_cos = img @ concept_embeddings(["an object", "a shape", "a scene"]).T.mean(1)
        out = []
        for i in range(len(img)):
            picks = {f: (vals[int(p[i].argmax())], float(p[i].max()))
                     for f, (vals, p) in fam_pick.items()}
            empty = bool(empty_cos[i] > obj_cos[i] and picks["background"][0] == "black")
            out.append({"description": "nothing visible (a black image)" if empty
                        else _sentence({f: v for f, (v, _) in picks.items()}),
                        "empty": empty,
                        "concepts": {f: v for f, (v, _) in picks.items()},
                        "confidence": {f: round(c, 4) for f, (_, c) in picks.items()}})
        return out

    def ask(self, images: Sequence[Any], prompt: Any,
            variables: Sequence[dict[str, Any]] | None = None) -> list[AskResult]:
        """Describe each image; answers that do not fit the prompt's schema become error rows."""
        try:
            descs = self.describe(images)
        except Exception as e:  # a bad image must not stop the batch silently
            return [AskResult(answer=None, error=f"embedded VLM failed: {e}") for _ in images]
        validate = _schema_validator(prompt)
        results = []
        for d in descs:
            raw = json.dumps(d, sort_keys=True)
            err = validate(d) if validate else None
            if err:
                results.append(AskResult(
                    answer=None, raw=raw,
                    error=("the embedded VLM only answers with retrieval descriptions "
                           f"(description, concepts) and cannot fill this schema: {err}")))
            else:
                results.append(AskResult(answer=d, raw=raw))
        return results


def _sentence(c: dict[str, str]) -> str:
    size = {"medium": "medium-sized"}.get(c["size"], c["size"])
    s = f"a {size} {c['color']} {c['shape']}"
    s += f" {'against' if c['background'] in ('brick', 'sky') else 'on'} "
    s += "a black background" if c["background"] == "black" else c["background"]
    if c["lighting"] != "normal":
        s += {"dark": " in dim light", "bright": " in bright light"}[c["lighting"]]
    extras = [w for f, w in (("tag", "with a tag in the corner"), ("occlusion", "partly hidden"),
                             ("blur", "blurred"), ("noise", "noisy"))
              if c[f] == V.FAMILIES[f][0]]
    return ", ".join([s, *extras])


def _schema_validator(prompt: Any):
    """A function answer -> error message (or None) for the prompt's schema, if it has one."""
    schema = prompt.get("schema") if isinstance(prompt, dict) else getattr(prompt, "schema", None)
    if schema is None:
        return None
    if isinstance(schema, type) and hasattr(schema, "model_validate"):
        def check_model(ans: dict) -> str | None:
            try:
                schema.model_validate(ans)
            except Exception as e:
                return str(e).splitlines()[0]
            return None
        return check_model
    if isinstance(schema, dict):
        def check_json(ans: dict) -> str | None:
            try:
                import jsonschema
            except ImportError:  # fall back to required keys only
                missing = [k for k in schema.get("required", []) if k not in ans]
                return f"missing required fields {missing}" if missing else None
            try:
                jsonschema.validate(ans, schema)
            except jsonschema.ValidationError as e:
                return e.message
            return None
        return check_json
    return None


@VLMS.register("embedded", help="offline dual encoder shipped with vlens (MiniLM text + CNN)")
def make_embedded(weights: str = "", **kwargs: Any) -> EmbeddedVLM:
    """``embedded`` (shipped weights) or ``embedded:/dir/with/weights``."""
    return EmbeddedVLM(weights or None, **kwargs)

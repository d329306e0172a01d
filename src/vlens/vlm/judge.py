"""The per-sample judge and concept grounding of attended regions.

`judge()` scores how well what a vision model attended to (the masked view: everything it
did not attend to is black) matches its *predicted* class (never the label):

- Generative backends answer the versioned `judge` prompt (schema `JudgeAnswer`).
- Contrastive backends (CLIP, SigLIP, embedded) use an equivalent, documented rule
  (`ContrastiveRule`):

  K = [predicted] + class names + background concepts (the backend's `judge_background`
  when it declares one, e.g. the embedded VLM names the scenes it knows, else the generic
  `BACKGROUND_CONCEPTS`: scenes, "text or tag", "an empty black image"), s = vlm.score(view, K),
  p = softmax(logit(s) / temperature): for sigmoid-calibrated backends (embedded, SigLIP)
  a CLIP-style softmax over the calibrated logits; for softmax backends (CLIP) close to
  renormalising s. (Normalising s directly was measured to carry no signal on the world:
  a mostly black view drives every sigmoid score towards 0 and their shares become noise.)
  q = p_pred / max_j p_j  (1 when the predicted class is the best-matching concept),
  a = fraction of non-black pixels (max channel > `black_level`),
  g(a) = 0 if a < min_area (nothing visible); 1 if a <= max_area;
         (1 - a) / (1 - max_area) above it (attention spread over the image is scattered),
  focus_score = round(5 * q * g(a), 2)
  object_visible = "none" if g(a) == 0 or q < 0.5, "full" if q == 1, else "partial"
  distractors = the other concepts of K with p_j >= distractor_ratio * p_pred (top 3)
  description = "shows: <top grounding concepts with scores>".

`mode="auto"` uses the rule for any contrastive backend (cheap, deterministic) and the
prompt otherwise; pass `mode="generative"` to force the prompt.
`ground()` gives concept scores of attended regions for every backend: contrastive
`score`, or the `grounding` prompt for generative-only ones (missing concepts -> NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vlens.errors import ConfigError
from vlens.vlm.base import CONTRASTIVE, GENERATIVE, VLM, require
from vlens.vlm.concepts import BACKGROUND_CONCEPTS, _dedupe
from vlens.vlm.prompting import Prompt, load_prompt

JUDGE_FIELDS = ("description", "justification", "focus_score", "object_visible", "distractors")


JUDGE_RULE_VERSION = "2"
"""Bump when the rule changes what it outputs (part of the VLM stage's cache key)."""


@dataclass(frozen=True)
class ContrastiveRule:
    """Parameters of the contrastive judge rule (see the module docstring)."""

    background: tuple[str, ...] | None = None  # None: the backend's own, else the default
    min_area: float = 0.005
    max_area: float = 0.5
    black_level: int = 8
    distractor_ratio: float = 0.5
    temperature: float = 1.0
    max_distractors: int = 3
    top_k: int = 3


def background_concepts(vlm: VLM, rule: ContrastiveRule) -> tuple[str, ...]:
    """The not-the-object concepts of K: the rule's, else the backend's, else the default.

    A backend may declare `judge_background`: the scene/non-object concepts it can actually
    recognise. Scores of concepts a small backend never learned are noise, and one noisy
    high score in K caps every view's q (measured on the world: Spearman 0.44 with the
    generic list vs 0.63 with the embedded VLM's own scenes)."""
    if rule.background is not None:
        return tuple(rule.background)
    return tuple(getattr(vlm, "judge_background", None) or BACKGROUND_CONCEPTS)


def visible_fraction(image: Image.Image, black_level: int = 8) -> float:
    """Fraction of pixels whose brightest channel exceeds `black_level` (0-255)."""
    a = np.asarray(image.convert("RGB"))
    return float((a.max(axis=2) > black_level).mean())


def area_factor(a: float, rule: ContrastiveRule) -> float:
    if a < rule.min_area:
        return 0.0
    if a <= rule.max_area:
        return 1.0
    return max(0.0, (1.0 - a) / (1.0 - rule.max_area))


def _error_row(backend: str, error: str, raw: str = "", method: str = "") -> dict[str, Any]:
    return {"description": None, "justification": None, "focus_score": math.nan,
            "object_visible": None, "distractors": [], "status": "error", "error": error,
            "raw": raw, "judge_backend": backend, "judge_method": method}


def _fmt(names: Sequence[str], scores: np.ndarray, k: int) -> str:
    order = np.argsort(-scores, kind="stable")[:k]
    return ", ".join(f"{names[j]} {scores[j]:.2f}" for j in order)


def _prompt(vlm: VLM, prompt: Any) -> Prompt:
    """A loaded `Prompt` (from the backend's own prompt_dir when it has one), so every backend,
    including third-party ones, gets the schema object rather than a bare name."""
    return load_prompt(prompt, getattr(vlm, "prompt_dir", None)) if isinstance(prompt, str) \
        else prompt


def _check(views: Sequence[Image.Image], predicted: Sequence[str]) -> None:
    if len(views) != len(predicted):
        raise ConfigError(f"judge got {len(views)} views but {len(predicted)} predictions")


def judge_contrastive(
    vlm: VLM,
    masked_views: Sequence[Image.Image],
    predicted: Sequence[str],
    class_names: Sequence[str],
    vocabulary: Sequence[str] | None = None,
    rule: ContrastiveRule | None = None,
) -> list[dict[str, Any]]:
    """The documented contrastive rule; one row per view."""
    require(vlm, CONTRASTIVE)
    _check(masked_views, predicted)
    rule = rule or ContrastiveRule()
    if not masked_views:
        return []
    vocab = list(vocabulary) if vocabulary else None
    grounding = ground(vlm, masked_views, vocab) if vocab else None
    # one score call per distinct predicted class (K differs by where `predicted` sits)
    by_pred: dict[str, list[int]] = {}
    for i, p in enumerate(predicted):
        by_pred.setdefault(p, []).append(i)
    out: list[dict[str, Any] | None] = [None] * len(masked_views)
    background = background_concepts(vlm, rule)
    for pred, idx in by_pred.items():
        K = _dedupe([pred, *class_names, *background])
        s = np.asarray(vlm.score([masked_views[i] for i in idx], K), dtype=np.float64)
        for row_i, i in enumerate(idx):
            z = np.log(np.clip(s[row_i], 1e-6, 1 - 1e-6))
            z -= np.log1p(-np.clip(s[row_i], 1e-6, 1 - 1e-6))
            z = z / rule.temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            q = float(p[0] / max(p.max(), 1e-12))
            a = visible_fraction(masked_views[i], rule.black_level)
            g = area_factor(a, rule)
            top = int(np.argmax(p))
            visible = "none" if g == 0 or q < 0.5 else ("full" if q >= 1.0 else "partial")
            others = [j for j in np.argsort(-p, kind="stable")
                      if j != 0 and p[j] >= rule.distractor_ratio * p[0]]
            desc_scores = grounding[i] if grounding is not None else s[row_i]
            desc_names = vocab if grounding is not None else K
            out[i] = {
                "description": "shows: " + _fmt(desc_names, desc_scores, rule.top_k),
                "justification": (
                    f"'{pred}' scores {q:.2f} of the best concept ({K[top]} {p[top]:.2f}); "
                    f"visible area {a:.0%} (area factor {g:.2f})"),
                "focus_score": round(5.0 * q * g, 2),
                "object_visible": visible,
                "distractors": [K[j] for j in others[: rule.max_distractors]],
                "status": "ok", "error": None, "raw": "",
                "judge_backend": vlm.name, "judge_method": "contrastive_rule",
            }
    return [r for r in out if r is not None]


def judge_generative(
    vlm: VLM,
    masked_views: Sequence[Image.Image],
    predicted: Sequence[str],
    class_names: Sequence[str],
    prompt: Any = "judge",
) -> list[dict[str, Any]]:
    """Ask the `judge` prompt; invalid answers become error rows with the raw text kept."""
    require(vlm, GENERATIVE)
    _check(masked_views, predicted)
    variables = [{"predicted_class": p, "class_names": list(class_names)} for p in predicted]
    rows = []
    for r in vlm.ask(list(masked_views), _prompt(vlm, prompt), variables):
        if r.ok:
            row = {k: r.answer[k] for k in JUDGE_FIELDS}
            row["focus_score"] = float(row["focus_score"])
            row.update(status="ok", error=None, raw=r.raw, judge_backend=vlm.name,
                       judge_method="generative")
        else:
            row = _error_row(vlm.name, r.error or "unknown_error", r.raw, "generative")
        rows.append(row)
    return rows


def judge(
    vlm: VLM,
    masked_views: Sequence[Image.Image],
    predicted: Sequence[str],
    class_names: Sequence[str],
    vocabulary: Sequence[str] | None = None,
    *,
    mode: str = "auto",
    rule: ContrastiveRule | None = None,
    prompt: Any = "judge",
) -> list[dict[str, Any]]:
    """One row per view: JudgeAnswer fields + status, error, raw, judge_backend, judge_method.

    Columns match `vlm.parquet` in docs/run-format.md.
    """
    if mode == "auto":
        mode = "contrastive" if CONTRASTIVE in vlm.capabilities else "generative"
    if mode == "contrastive":
        return judge_contrastive(vlm, masked_views, predicted, class_names, vocabulary, rule)
    if mode == "generative":
        return judge_generative(vlm, masked_views, predicted, class_names, prompt)
    raise ConfigError(f"judge mode must be auto, contrastive or generative, not {mode!r}")


def ground(
    vlm: VLM,
    images: Sequence[Image.Image],
    vocabulary: Sequence[str],
    prompt: Any = "grounding",
) -> np.ndarray:
    """(n, m) float32 concept scores in [0, 1] of each image (an attended region) per concept.

    Contrastive backends: `vlm.score`. Generative-only: the `grounding` prompt; concepts the
    answer leaves out, and failed answers, are NaN (never silently 0).
    """
    vocabulary = list(vocabulary)
    if not vocabulary:
        raise ConfigError("ground needs a non-empty concept vocabulary")
    n, m = len(images), len(vocabulary)
    if n == 0:
        return np.zeros((0, m), np.float32)
    if CONTRASTIVE in vlm.capabilities:
        return np.asarray(vlm.score(list(images), vocabulary), dtype=np.float32)
    require(vlm, GENERATIVE)
    out = np.full((n, m), np.nan, np.float32)
    answers = vlm.ask(list(images), _prompt(vlm, prompt), [{"concepts": vocabulary}] * n)
    lower = {c.lower(): j for j, c in enumerate(vocabulary)}
    for i, r in enumerate(answers):
        if not r.ok:
            continue
        for name, v in r.answer["scores"].items():
            j = lower.get(str(name).strip().lower())
            if j is not None and isinstance(v, int | float) and math.isfinite(v):
                out[i, j] = min(1.0, max(0.0, float(v)))
    return out


def guess_prediction(
    vlm: VLM,
    views: Sequence[Image.Image],
    choices: Sequence[Sequence[str]],
    *,
    mode: str = "auto",
    prompt: Any = "utility_k",
) -> list[dict[str, Any]]:
    """The explanation-utility task: from a view alone, which of k classes did the model pick?

    Rows: guess, reason, status, error, raw. Contrastive backends take the best-scoring choice;
    generative ones answer the `utility_k` prompt, and a guess outside the offered choices is
    an error row (`guess_not_in_choices`) rather than a silently wrong answer.
    """
    if len(views) != len(choices):
        raise ConfigError(f"guess_prediction got {len(views)} views but {len(choices)} choices")
    if mode == "auto":
        mode = "contrastive" if CONTRASTIVE in vlm.capabilities else "generative"
    rows: list[dict[str, Any]] = []
    if mode == "contrastive":
        require(vlm, CONTRASTIVE)
        # one batched score call over the union of choices; each row then picks among its own
        union = _dedupe([c for ch in choices for c in ch])
        col = {c.lower(): j for j, c in enumerate(union)}
        mat = np.asarray(vlm.score(list(views), union), dtype=np.float64) if views else None
        for i, ch in enumerate(choices):
            s = mat[i, [col[" ".join(str(c).split()).lower()] for c in ch]]
            rows.append({"guess": ch[int(np.argmax(s))], "reason": "scores: " + _fmt(ch, s, 3),
                         "status": "ok", "error": None, "raw": ""})
        return rows
    if mode != "generative":
        raise ConfigError(f"mode must be auto, contrastive or generative, not {mode!r}")
    require(vlm, GENERATIVE)
    answers = vlm.ask(list(views), _prompt(vlm, prompt),
                      [{"choices": list(ch)} for ch in choices])
    for r, ch in zip(answers, choices, strict=True):
        if not r.ok:
            rows.append({"guess": None, "reason": None, "status": "error",
                         "error": r.error, "raw": r.raw})
            continue
        match = {c.lower(): c for c in ch}.get(r.answer["guess"].strip().lower())
        if match is None:
            rows.append({"guess": None, "reason": r.answer["reason"], "status": "error",
                         "error": "guess_not_in_choices", "raw": r.raw})
        else:
            rows.append({"guess": match, "reason": r.answer["reason"], "status": "ok",
                         "error": None, "raw": r.raw})
    return rows

"""Schema-validated answers from any generative backend: extract, validate, repair, record.

Backends only implement `generate(requests) -> list[Generation]` (one raw text per request,
transport failures as `Generation.error`). `ask_structured` does the rest, identically for
every backend: render the prompt, pull the JSON out of prose or code fences, validate it
with the prompt's pydantic schema, and on failure ask again with the validation error
appended (bounded attempts). What still fails becomes `AskResult(answer=None, error=...,
raw=...)`: never raised, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pydantic import BaseModel, ValidationError

from vlens.vlm.base import AskResult
from vlens.vlm.prompting import Prompt

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
REPAIR_TEMPLATE = (
    "Your previous answer could not be used: {error}\n"
    "Reply again with only one JSON object that matches the schema, no other text."
)


@dataclass
class Generation:
    """One raw generation, or the transport error that prevented it."""

    text: str = ""
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    final: bool = False  # True: do not retry this request (e.g. budget_exceeded)


@dataclass
class Request:
    """One image with its conversation so far (OpenAI-style role/content messages, text only)."""

    image: Image.Image
    messages: list[dict[str, str]]
    max_tokens: int = 512


Generate = Callable[[Sequence[Request]], list[Generation]]


class ParseError(ValueError):
    """The text holds no JSON object."""


def extract_json(text: str) -> Any:
    """The first JSON object in `text`: the whole text, a ```json fence, or one in prose."""
    s = text.strip()
    candidates = [s] + [m.group(1).strip() for m in _FENCE.finditer(s)]
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError:
            pass
    dec = json.JSONDecoder()
    for i, ch in enumerate(s):
        if ch == "{":
            try:
                obj, _ = dec.raw_decode(s, i)
                return obj
            except json.JSONDecodeError:
                continue
    raise ParseError("no JSON object found in the answer" if s else "the answer was empty")


def parse_answer(text: str, schema: type[BaseModel]) -> dict[str, Any]:
    """Validated answer dict; raises ParseError / ValidationError with a readable message."""
    obj = extract_json(text)
    if not isinstance(obj, dict):
        raise ParseError(f"expected a JSON object, got {type(obj).__name__}")
    return schema.model_validate(obj).model_dump()


def _describe_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        ]
        return "invalid_answer: " + "; ".join(parts)
    return f"invalid_answer: {e}"


def _add_usage(total: dict[str, int], usage: dict[str, int]) -> None:
    for k, v in usage.items():
        if isinstance(v, int):
            total[k] = total.get(k, 0) + v


def ask_structured(
    generate: Generate,
    images: Sequence[Image.Image],
    prompt: Prompt,
    variables: Sequence[dict[str, Any]] | None = None,
    max_attempts: int = 3,
) -> list[AskResult]:
    """One `AskResult` per image; invalid answers are retried with the error appended."""
    n = len(images)
    variables = list(variables) if variables is not None else [{} for _ in range(n)]
    if len(variables) != n:
        raise ValueError(f"{n} images but {len(variables)} variable sets")
    max_attempts = max(1, int(max_attempts))
    results: list[AskResult | None] = [None] * n
    convs: list[list[dict[str, str]]] = []
    for v in variables:
        system, user = prompt.render(v)
        convs.append([{"role": "system", "content": system}, {"role": "user", "content": user}])
    usage: list[dict[str, int]] = [{} for _ in range(n)]
    pending = list(range(n))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        reqs = [Request(images[i], convs[i], prompt.max_tokens) for i in pending]
        gens = generate(reqs)
        still: list[int] = []
        for i, g in zip(pending, gens, strict=True):
            _add_usage(usage[i], g.usage)
            if g.error is not None:
                results[i] = AskResult(None, raw=g.text, error=g.error, attempts=attempt,
                                       usage=usage[i])
                continue
            try:
                answer = parse_answer(g.text, prompt.schema)
            except (ParseError, ValidationError) as e:
                msg = _describe_error(e)
                results[i] = AskResult(None, raw=g.text, error=msg, attempts=attempt,
                                       usage=usage[i])
                convs[i] = convs[i] + [
                    {"role": "assistant", "content": g.text},
                    {"role": "user", "content": REPAIR_TEMPLATE.format(error=msg)},
                ]
                still.append(i)
                continue
            results[i] = AskResult(answer, raw=g.text, attempts=attempt, usage=usage[i])
        pending = still
    return [r if r is not None else AskResult(None, error="not attempted") for r in results]

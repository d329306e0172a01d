"""Generative-VLM hooks for the dataset analysis: slice descriptions and narrative rewrites.

`describe_hook(vlm, run_dir)` -> `describe(member_ids, nonmember_ids) -> str | None`:
a contact sheet (slice members on the top row, correctly handled images of the same class
below) goes to the VLM with the versioned prompt `slice_describe` (schema
`SliceDescription`); the answer becomes "shared; differences". Any failure (unreadable
image, transport error, an answer that does not fit the schema after the backend's repair
attempts) gives None, and the slice keeps its concept-based name only.

`rewrite_hook(vlm)` -> `rewrite(sentences) -> sentences`: the template narrative goes to
the VLM as JSON with the prompt `narrative_rewrite` (schema `NarrativeRewrite`). The answer
is used only if it has as many sentences, each citing exactly the ids of the template
sentence in the same place, and every number in it appears in that template sentence;
otherwise the template sentences come back unchanged. (`vlens.analysis.narrative` checks
the ids again and records a rejection reason.) The backends' `ask` takes images, so the
rewrite sends one small blank image; the prompt says to ignore it.

Both factories return None when the VLM has no generative capability (contrastive-only
backends), so the analysis runs without them. One contact sheet and not several images per
request: `VLM.ask` takes one image per answer, and one sheet is also one request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vlens.vlm.base import GENERATIVE

log = logging.getLogger(__name__)

TILE = 160
GAP = 8
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def is_generative(vlm: Any) -> bool:
    return vlm is not None and GENERATIVE in getattr(vlm, "capabilities", frozenset())


def contact_sheet(top: Sequence[Image.Image], bottom: Sequence[Image.Image],
                  tile: int = TILE, gap: int = GAP) -> Image.Image:
    """Two rows of `tile`-sized thumbnails (aspect kept, centred) on a mid-grey sheet, a
    white band left of the top row and a black band left of the bottom row."""
    cols = max(len(top), len(bottom), 1)
    band = gap * 2
    w = band + gap + cols * (tile + gap)
    h = gap + 2 * (tile + gap)
    sheet = Image.new("RGB", (w, h), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    for r, (row, colour) in enumerate(((top, (255, 255, 255)), (bottom, (0, 0, 0)))):
        y = gap + r * (tile + gap)
        draw.rectangle([0, y, band - 1, y + tile - 1], fill=colour)
        for c, im in enumerate(row):
            th = im.convert("RGB")
            th.thumbnail((tile, tile))
            x = band + gap + c * (tile + gap)
            sheet.paste(th, (x + (tile - th.width) // 2, y + (tile - th.height) // 2))
    return sheet


def _load(vlm: Any, name: str) -> Any:
    """The prompt from the backend's own prompt_dir when it has it, else the packaged one."""
    from vlens.errors import ConfigError
    from vlens.vlm.prompting import load_prompt

    pdir = getattr(vlm, "prompt_dir", None)
    if pdir:
        try:
            return load_prompt(name, pdir)
        except ConfigError:
            pass
    return load_prompt(name)


def _answer(vlm: Any, image: Image.Image, prompt: Any, variables: dict) -> dict | None:
    """One validated answer (the prompt's schema, checked again here because third-party
    backends need not validate), or None on any failure."""
    from pydantic import ValidationError

    try:
        (ans,) = vlm.ask([image], prompt, [variables])
    except Exception as e:  # a failing backend must not stop the analysis
        log.warning("%s failed: %s", prompt.key, e)
        return None
    if not ans.ok:
        log.info("%s: no usable answer: %s", prompt.key, ans.error)
        return None
    try:
        return prompt.schema.model_validate(ans.answer).model_dump()
    except ValidationError as e:
        log.info("%s: answer does not fit %s: %s", prompt.key, prompt.schema_name, e)
        return None


def _sample_index(run_dir: Path) -> dict[str, tuple[str, str | None]]:
    """id -> (uri, label) from the run's samples table."""
    from vlens.runs import load_run

    r = load_run(run_dir)
    if r.samples is None:
        return {}
    s = r.samples
    labels = s["label"] if "label" in s else [None] * len(s)
    return {str(i): (str(u), None if lab is None else str(lab))
            for i, u, lab in zip(s["id"], s["uri"], labels, strict=True)}


def describe_hook(vlm: Any, run_dir: str | Path, prompt: str = "slice_describe",
                  tile: int = TILE) -> Callable[[list[str], list[str]], str | None] | None:
    """The `Hooks.describe` callable for a generative `vlm` (None if it is not one)."""
    if not is_generative(vlm):
        return None
    from vlens.data.images import load_image
    from vlens.errors import VlensError

    run_dir = Path(run_dir)
    loaded = _load(vlm, prompt)
    index: dict[str, tuple[str, str | None]] | None = None

    def images(ids: Sequence[str]) -> list[Image.Image]:
        out = []
        for i in ids:
            entry = index.get(str(i)) if index else None
            if entry is None:
                continue
            try:
                out.append(load_image(entry[0]))
            except (OSError, VlensError) as e:
                log.info("slice description: cannot read %s: %s", i, e)
        return out

    def describe(member_ids: list[str], nonmember_ids: list[str]) -> str | None:
        nonlocal index
        if index is None:
            index = _sample_index(run_dir)
        top, bottom = images(member_ids), images(nonmember_ids)
        if not top:
            return None
        labels = {index[str(i)][1] for i in member_ids if str(i) in index}
        cls = labels.pop() if len(labels) == 1 else "the same class"
        ans = _answer(vlm, contact_sheet(top, bottom, tile), loaded,
                      {"class_name": cls, "n_members": len(top), "n_others": len(bottom)})
        if ans is None:
            return None
        text = str(ans["shared"]).strip()
        diffs = [str(d).strip() for d in ans["differences"] if str(d).strip()]
        if diffs:
            text = f"{text}; {', '.join(diffs)}" if text else ", ".join(diffs)
        return text or None

    return describe


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "") for m in _NUMBER.findall(text)}


def accept_rewrite(template: list[dict], answer: list[dict]) -> str | None:
    """None if `answer` may replace `template`, else why not (see module doc)."""
    if len(answer) != len(template):
        return f"{len(answer)} sentences for {len(template)}"
    for k, (t, a) in enumerate(zip(template, answer, strict=True)):
        if list(a.get("finding_ids") or []) != list(t["finding_ids"]):
            return f"sentence {k + 1} cites other findings"
        extra = _numbers(str(a.get("text", ""))) - _numbers(t["text"])
        if extra:
            return f"sentence {k + 1} has numbers not in the template: {sorted(extra)}"
    return None


def rewrite_hook(vlm: Any, prompt: str = "narrative_rewrite"
                 ) -> Callable[[list[dict]], list[dict]] | None:
    """The `Hooks.rewrite` callable for a generative `vlm` (None if it is not one)."""
    if not is_generative(vlm):
        return None
    loaded = _load(vlm, prompt)

    def rewrite(sentences: list[dict]) -> list[dict]:
        template = [{"text": str(s["text"]), "finding_ids": list(s["finding_ids"])}
                    for s in sentences]
        if not template:
            return sentences
        payload = json.dumps(template, ensure_ascii=False)
        ans = _answer(vlm, Image.new("RGB", (8, 8), (255, 255, 255)), loaded,
                      {"sentences_json": payload})
        if ans is None:
            return sentences
        new = [{"text": str(s["text"]).strip(), "finding_ids": list(s["finding_ids"])}
               for s in ans["sentences"]]
        why = accept_rewrite(template, new)
        if why:
            log.info("narrative rewrite not used: %s", why)
            return sentences
        return new

    return rewrite


__all__ = ["accept_rewrite", "contact_sheet", "describe_hook", "is_generative",
           "rewrite_hook"]

"""Natural-language captions from attributes, with varied templates and synonyms.

Captions train the embedded VLM, so the same attributes must come out in many wordings:
`caption(attrs, rng)` picks a template and a synonym for each value at random.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SYNONYMS: dict[str, list[str]] = {
    # shapes
    "circle": ["circle", "disc", "round shape", "dot"],
    "square": ["square", "box shape", "block"],
    "triangle": ["triangle", "three-sided shape", "pyramid shape"],
    "star": ["star", "five-pointed star", "star shape"],
    "cross": ["cross", "plus sign", "plus shape"],
    "heart": ["heart", "heart shape", "love heart"],
    "hexagon": ["hexagon", "six-sided shape", "honeycomb cell"],
    "diamond": ["diamond", "rhombus", "lozenge"],
    # colours
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald", "lime"],
    "blue": ["blue", "azure", "cobalt"],
    "yellow": ["yellow", "golden", "lemon"],
    "purple": ["purple", "violet", "magenta"],
    "orange": ["orange", "amber", "tangerine"],
    "white": ["white", "ivory", "pale"],
    # backgrounds
    "grass": ["grass", "a lawn", "a meadow", "green grass"],
    "water": ["water", "the ocean", "the sea", "a lake"],
    "sand": ["sand", "a beach", "the desert", "sandy ground"],
    "snow": ["snow", "a snowfield", "snowy ground", "ice"],
    "brick": ["brick", "a brick wall", "bricks", "masonry"],
    "sky": ["sky", "the sky", "clouds", "a blue sky"],
    # sizes
    "small": ["small", "tiny", "little"],
    "medium": ["medium-sized", "mid-sized", ""],
    "large": ["large", "big", "huge"],
    # lighting
    "dark": ["in dim light", "in the dark", "at night", "in low light"],
    "normal": ["", "in daylight", "in normal light"],
    "bright": ["in bright light", "overexposed", "in harsh sunlight"],
    # extras
    "tag": ["with a small tag in the corner", "with a corner sticker", "with a marker patch"],
    "blur": ["blurry", "out of focus", "soft-focus"],
    "noise": ["grainy", "noisy", "speckled"],
    "occlusion": ["partly hidden", "partially covered", "half occluded"],
}
"""Attribute value -> words that may replace it in a caption (the first is the canonical)."""

_PREP = {
    "grass": "on",
    "water": "on",
    "sand": "on",
    "snow": "on",
    "brick": "against",
    "sky": "against",
}

TEMPLATES = [
    "a {size} {color} {shape} {prep} {bg}{light}{extra}{qual}",
    "a {q}photo of a {size} {color} {shape} {prep} {bg}{light}{extra}",
    "there is a {size} {color} {shape} {prep} {bg}{light}{extra}{qual}",
    "{bg_cap} with a {size} {color} {shape}{light}{extra}{qual}",
    "this {q}image shows a {color} {shape} {prep} {bg}{light}{extra}",
    "a {color} {shape}, {size}, {prep} {bg}{light}{extra}{qual}",
]


def _pick(rng: np.random.Generator, key: str) -> str:
    opts = SYNONYMS[key]
    return opts[int(rng.integers(len(opts)))]


def caption(attrs: dict[str, Any], rng: np.random.Generator) -> str:
    """A caption for an item's attrs (uses the true shape, never the noisy label)."""
    shape = attrs.get("true_label", attrs["shape"])
    size = _pick(rng, attrs["size"])
    light = _pick(rng, attrs["lighting"])
    extras = [_pick(rng, k) for k in ("tag", "occlusion") if attrs.get(k)]
    quality = [_pick(rng, k) for k in ("blur", "noise") if attrs.get(k)]
    bg = _pick(rng, attrs["background"])
    fill = {
        "q": "".join(q + " " for q in quality),
        "qual": "".join(f", {q}" for q in quality),
        "size": size,
        "color": _pick(rng, attrs["color"]),
        "shape": _pick(rng, shape),
        "prep": _PREP[attrs["background"]],
        "bg": bg,
        "bg_cap": bg[0].upper() + bg[1:] if bg else bg,
        "light": f" {light}" if light else "",
        "extra": "".join(f", {e}" for e in extras),
    }
    text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(**fill)
    return " ".join(text.replace(" ,", ",").split())

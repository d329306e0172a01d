"""The concept vocabulary used for grounding ("looked at: water 0.81, star 0.22").

A default bank of scene, colour, lighting, size, texture and image-quality concepts; the
dataset's class names and user concept files are added on top by `build_vocabulary`.
User files: `.txt` (one concept a line, `#` comments), or `.yaml`/`.json` holding a list or
a mapping category -> list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from vlens.errors import ConfigError

DEFAULT_CONCEPTS: dict[str, list[str]] = {
    "scene": ["grass", "water", "sand", "snow", "brick wall", "sky", "road", "forest",
              "indoor room", "plain background"],
    "colour": ["red", "green", "blue", "yellow", "purple", "orange", "white", "black",
               "grey", "brown"],
    "lighting": ["dark lighting", "bright lighting", "shadow", "glare"],
    "size": ["small object", "large object", "close-up"],
    "texture": ["striped texture", "dotted texture", "smooth surface", "rough texture"],
    "quality": ["blurry", "noisy", "low contrast", "occluded", "text or tag", "cropped"],
}
# Concepts the contrastive judge compares the predicted class against (not-the-object things):
# scenes, text/tags (a classic shortcut) and "nothing visible". Not "plain background": every
# masked view is on a plain black background, so it would describe all of them.
BACKGROUND_CONCEPTS: list[str] = [c for c in DEFAULT_CONCEPTS["scene"] if c != "plain background"
                                  ] + ["text or tag", "an empty black image"]


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for c in items:
        c = " ".join(str(c).split())
        if c and c.lower() not in seen:
            seen.add(c.lower())
            out.append(c)
    return out


def load_concepts(path: str | Path) -> list[str]:
    """Concepts from a user file (.txt, .yaml/.yml or .json); clear errors on bad files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"concept file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".txt":
        items = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    elif p.suffix in (".yaml", ".yml", ".json"):
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"concept file {p} cannot be parsed: {e}") from None
        if isinstance(data, Mapping):
            values = list(data.values())
            data = ([c for v in values for c in v] if all(isinstance(v, list) for v in values)
                    else None)
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise ConfigError(f"concept file {p} must hold a list of strings "
                              "or a mapping category -> list of strings")
        items = data
    else:
        raise ConfigError(f"concept file {p}: use .txt, .yaml, .yml or .json")
    concepts = _dedupe(items)
    if not concepts:
        raise ConfigError(f"concept file {p} holds no concepts")
    return concepts


def build_vocabulary(
    class_names: Sequence[str] = (),
    extra: Sequence[str] | str | Path | None = None,
    categories: Sequence[str] | None = None,
) -> list[str]:
    """Class names + default bank (optionally only `categories`) + user concepts, deduped."""
    cats = list(categories) if categories is not None else list(DEFAULT_CONCEPTS)
    unknown = [c for c in cats if c not in DEFAULT_CONCEPTS]
    if unknown:
        raise ConfigError(f"unknown concept categories {unknown}; known: "
                          f"{', '.join(DEFAULT_CONCEPTS)}")
    bank = [c for cat in cats for c in DEFAULT_CONCEPTS[cat]]
    user = load_concepts(extra) if isinstance(extra, str | Path) else list(extra or [])
    return _dedupe([*class_names, *bank, *user])

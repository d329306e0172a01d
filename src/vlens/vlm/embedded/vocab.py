"""Words of the embedded VLM: attribute families, phrase banks, caption composers, prompts.

Captions are composed with the mentioned attributes tracked explicitly, so training knows
exactly which (image, caption) pairs are true, false or undecidable (see `pair_targets`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlens.world.attributes import BACKGROUNDS, COLORS, LIGHTINGS, SHAPES, SIZES
from vlens.world.captions import SYNONYMS, caption

PROMPT_VERSION = "1"
ENSEMBLE = ["a photo of {}", "an image showing {}", "a picture of {}", "{}"]
"""Prompt ensemble applied by `score`: a concept's text embedding is the mean over these."""

FAMILIES: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "color": list(COLORS),
    "background": [*BACKGROUNDS, "black"],
    "size": list(SIZES),
    "lighting": list(LIGHTINGS),
    "tag": ["tag", "no tag"],
    "blur": ["blurred", "sharp"],
    "noise": ["noisy", "clean"],
    "occlusion": ["occluded", "unoccluded"],
    "empty": ["empty", "not empty"],
}
FAMILY_NAMES = list(FAMILIES)
FIDX = {f: i for i, f in enumerate(FAMILY_NAMES)}
NOT_SAID = -1  # caption code: family not mentioned
IGNORE = -2  # image code: this family cannot be judged from this view
NONE = -3  # image code: the family has no value here (nothing is shown)
BOOL_FAMILIES = ("tag", "blur", "noise", "occlusion")

# Words per value; the first is the canonical concept word.
WORDS: dict[str, dict[str, list[str]]] = {
    "shape": {s: SYNONYMS[s] for s in SHAPES},
    "color": {c: SYNONYMS[c] for c in COLORS},
    "background": {
        **{b: SYNONYMS[b] for b in BACKGROUNDS},
        "black": ["black", "a black background", "a blacked-out background",
                  "a plain black backdrop"],
    },
    "size": {"small": ["small", "tiny", "little"],
             "medium": ["medium", "medium-sized", "mid-sized"],
             "large": ["large", "big", "huge"]},
    "lighting": {"dark": ["dark", "dim", "underexposed", "in low light", "at night"],
                 "normal": ["normal", "normally lit", "evenly lit", "in daylight"],
                 "bright": ["bright", "overexposed", "brightly lit", "in harsh sunlight"]},
    "tag": {"tag": ["tag", "a small tag in the corner", "a corner sticker", "a marker patch"],
            "no tag": ["no tag", "no corner tag", "no sticker", "clean corners"]},
    "blur": {"blurred": ["blurred", "blurry", "out of focus", "soft-focus"],
             "sharp": ["sharp", "in focus", "crisp"]},
    "noise": {"noisy": ["noisy", "grainy", "speckled"], "clean": ["clean", "noise-free", "smooth"]},
    "occlusion": {"occluded": ["occluded", "partly hidden", "partially covered"],
                  "unoccluded": ["unoccluded", "fully visible", "unobstructed"]},
    "empty": {"empty": ["nothing", "a black image", "nothing visible", "an empty image",
                        "a completely black picture", "a blank black frame", "an all-black image",
                        "no object, only black", "an empty black square", "empty"],
              "not empty": ["something"]},
}

TRAIN_TEMPLATES = [*ENSEMBLE, "an image of {}", "a scene with {}", "this shows {}",
                   "a rendering of {}", "a close-up of {}"]
_PREP = {"grass": "on", "water": "on", "sand": "on", "snow": "on", "brick": "against",
         "sky": "against", "black": "on"}
_NOUNS = ["object", "shape", "thing", "figure"]


def _w(rng: np.random.Generator, opts: list[str]) -> str:
    return opts[int(rng.integers(len(opts)))]


def concept_caption(fam: str, value: str, rng: np.random.Generator) -> str:
    """A template around one word for one value, e.g. "a photo of the ocean"."""
    return _w(rng, TRAIN_TEMPLATES).format(_w(rng, WORDS[fam][value]))


def composed_caption(known: dict[str, str], fams: list[str], rng: np.random.Generator) -> str:
    """A sentence mentioning exactly `fams` (values from `known`)."""
    adj = []
    if "size" in fams:
        adj.append(_w(rng, WORDS["size"][known["size"]][:3] if known["size"] != "medium"
                      else ["medium-sized", "mid-sized"]))
    if "color" in fams:
        adj.append(_w(rng, WORDS["color"][known["color"]]))
    noun = _w(rng, WORDS["shape"][known["shape"]]) if "shape" in fams else _w(rng, _NOUNS)
    np_ = " ".join(["a", *adj, noun])
    tail = []
    if "background" in fams:
        bg = known["background"]
        tail.append(f" {_PREP[bg]} {_w(rng, WORDS['background'][bg])}")
    if "lighting" in fams:
        light = {"dark": ["in dim light", "in the dark", "in low light"],
                 "normal": ["in normal light", "in daylight"],
                 "bright": ["in bright light", "overexposed"]}[known["lighting"]]
        tail.append(" " + _w(rng, light))
    for f in ("tag", "occlusion", "blur", "noise"):
        if f in fams:
            v = known[f]
            w = _w(rng, WORDS[f][v])
            if f == "tag":
                w = ("with " + w) if v == "tag" else _w(rng, ["with no tag", "without a corner tag",
                                                               "with no sticker"])
            tail.append(", " + w)
    head = _w(rng, ["{}", "a photo of {}", "an image of {}", "there is {}", "a picture showing {}"])
    return head.format(np_ + "".join(tail))


def full_caption(attrs: dict[str, Any], rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """The world's own caption for an item and the families it certainly mentions."""
    text = caption(attrs, rng)
    said = {"shape": attrs.get("true_label", attrs["shape"]), "color": attrs["color"],
            "background": attrs["background"]}
    if attrs["size"] != "medium":
        said["size"] = attrs["size"]
    if attrs["lighting"] != "normal":
        said["lighting"] = attrs["lighting"]
    for f in BOOL_FAMILIES:
        if attrs.get(f):
            said[f] = FAMILIES[f][0]
    return text, said


def encode(values: dict[str, Any], default: int) -> np.ndarray:
    """Family -> value (or IGNORE/NONE code) as an int vector over FAMILY_NAMES."""
    out = np.full(len(FAMILY_NAMES), default, np.int16)
    for f, v in values.items():
        out[FIDX[f]] = v if isinstance(v, int | np.integer) else FAMILIES[f].index(v)
    return out


def item_values(attrs: dict[str, Any]) -> dict[str, str]:
    """The world attrs of an item as family -> value words (booleans named)."""
    out = {"shape": attrs.get("true_label", attrs["shape"]), "color": attrs["color"],
           "background": attrs["background"], "size": attrs["size"],
           "lighting": attrs["lighting"], "empty": "not empty"}
    for f in BOOL_FAMILIES:
        out[f] = FAMILIES[f][0] if attrs.get(f) else FAMILIES[f][1]
    return out


def pair_targets(img_codes: np.ndarray, cap_codes: np.ndarray) -> np.ndarray:
    """(n_img, n_cap) int8: 1 true pair, 0 false, -1 undecidable (excluded from the loss).

    A caption is true for an image when every family it mentions matches; a mentioned
    family the image view cannot show (IGNORE) makes the pair undecidable unless another
    mentioned family already contradicts it.
    """
    i = img_codes[:, None, :].astype(np.int32)
    c = cap_codes[None, :, :].astype(np.int32)
    said = c != NOT_SAID
    wrong = said & (i != IGNORE) & (i != c)
    unsure = said & (i == IGNORE)
    out = np.ones(wrong.shape[:2], np.int8)
    out[unsure.any(-1)] = -1
    out[wrong.any(-1)] = 0
    return out

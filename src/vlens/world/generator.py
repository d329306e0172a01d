"""Draw world items: sample attributes (with the planted biases), render, and record truth.

Item ``i`` of a split depends only on ``(config, seed, i)`` (its own random stream), so any
range of indices can be generated independently, in any order, on any worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlens.world.attributes import COLOR_RGB, SIZE_RADIUS
from vlens.world.captions import caption
from vlens.world.config import (
    Bias,
    LabelNoiseBias,
    RareSliceBias,
    ShortcutBias,
    SpuriousBias,
    WorldConfig,
)
from vlens.world.render import background_patch, blur, shape_coverage

TAG_FRACTION = 0.14  # tag side as a fraction of the image side
TAG_COLORS = np.array([[255, 0, 255], [255, 255, 0]], np.uint8)  # magenta / yellow checker
LIGHTING = {"dark": (0.35, 0.0), "normal": (1.0, 0.0), "bright": (0.5, 127.5)}  # (gain, offset)
OCCLUDER_RGB = np.array([105.0, 100.0, 95.0], np.float32)


@dataclass
class WorldItem:
    """One generated image with its object mask and every attribute (see docs/world.md)."""

    index: int
    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # bool (H, W): visible pixels of the target object
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.index:06d}"


def tag_pattern(size: int) -> np.ndarray:
    """The uint8 (t, t, 3) corner tag for an image side `size` (a 3x3 checker)."""
    t = max(int(round(size * TAG_FRACTION)), 6)
    cell = (np.arange(t) * 3) // t
    return TAG_COLORS[(cell[:, None] + cell[None, :]) % 2]


def tag_window(size: int, corner: str) -> tuple[slice, slice]:
    """Rows/cols the tag occupies in a `corner` (inset by 2 pixels)."""
    t = tag_pattern(size).shape[0]
    inset = 2
    top = corner.startswith("top")
    left = corner.endswith("left")
    ys = slice(inset, inset + t) if top else slice(size - inset - t, size - inset)
    xs = slice(inset, inset + t) if left else slice(size - inset - t, size - inset)
    return ys, xs


# ---- attribute sampling ---------------------------------------------------------------------
def _choice(rng: np.random.Generator, probs: dict[str, float], exclude: str | None = None) -> str:
    """Draw a key with probability proportional to its weight (skipping `exclude`)."""
    keys = [k for k in probs if k != exclude]
    w = [probs[k] for k in keys]
    total = sum(w)
    if total <= 0:  # only the excluded value had weight: fall back to uniform
        w, total = [1.0] * len(keys), float(len(keys))
    u = rng.random() * total
    acc = 0.0
    for k, wk in zip(keys, w, strict=True):
        acc += wk
        if u < acc:
            return k
    return keys[-1]


def _base_probs(cfg: WorldConfig) -> dict[str, dict[str, float]]:
    return {
        "background": {b: 1.0 for b in cfg.backgrounds},
        "color": {c: 1.0 for c in cfg.colors},
        "size": dict(cfg.size_probs),
        "lighting": dict(cfg.lighting_probs),
    }


def _sample_scene(cfg: WorldConfig, cls: str, rng: np.random.Generator) -> dict[str, str]:
    """Background, colour, size and lighting for class `cls`, honouring spurious/rare biases."""
    base = _base_probs(cfg)
    spurious = {b.attribute: b for b in cfg.biases if isinstance(b, SpuriousBias)}
    slices = [b for b in cfg.biases if isinstance(b, RareSliceBias)]
    forced: dict[str, str] = {}
    avoid: list[dict[str, str]] = []
    for s in slices:
        if rng.random() < s.p:
            forced.update(s.where)
        else:
            avoid.append(dict(s.where))
    for _ in range(200):
        out = {}
        for fam, probs in base.items():
            if fam in forced:
                out[fam] = forced[fam]
                continue
            b = spurious.get(fam)
            q = None if b is None else (b.p if cls == b.cls else b.other_p)
            if q is None:
                out[fam] = _choice(rng, probs)
            elif rng.random() < q:
                out[fam] = b.value
            else:
                out[fam] = _choice(rng, probs, exclude=b.value)
        if not any(all(out[a] == v for a, v in w.items()) for w in avoid):
            return out
    return out


def bias_groups(attrs: dict[str, Any], biases: Sequence[Bias]) -> dict[str, str]:
    """Which side of each planted bias an item falls on: ``{"bias_<name>": group}``.

    spurious/shortcut: ``aligned`` (class with its attribute), ``conflicting`` (class without
    it, or another class with it), ``neutral``; rare_slice: ``slice``/``other``;
    label_noise: ``noisy``/``clean``. Works with any config's biases, so a balanced test set
    can be split by the biases of the config a model was trained on.
    """
    out = {}
    cls = attrs.get("true_label", attrs["shape"])
    for b in biases:
        if isinstance(b, SpuriousBias | ShortcutBias):
            has = (
                attrs[b.attribute] == b.value if isinstance(b, SpuriousBias) else bool(attrs["tag"])
            )
            is_c = cls == b.cls
            g = "aligned" if (is_c and has) else "conflicting" if (is_c or has) else "neutral"
        elif isinstance(b, RareSliceBias):
            g = "slice" if all(attrs[a] == v for a, v in b.where.items()) else "other"
        else:
            g = "noisy" if attrs["label"] != cls else "clean"
        out[f"bias_{b.name}"] = g
    return out


def sample_attrs(
    cfg: WorldConfig, seed: int, index: int
) -> tuple[dict[str, Any], np.random.Generator]:
    """All attributes of item `index` (no pixels); returns the rng positioned for rendering."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 0x57A7])
    size = cfg.image_size
    cprobs = cfg.class_probs or {c: 1.0 for c in cfg.classes}
    cls = _choice(rng, {c: cprobs.get(c, 0.0) for c in cfg.classes})
    a: dict[str, Any] = {"shape": cls, **_sample_scene(cfg, cls, rng)}
    shortcut = next((b for b in cfg.biases if isinstance(b, ShortcutBias)), None)
    tag_p = (
        cfg.tag_rate
        if shortcut is None
        else (shortcut.p if cls == shortcut.cls else shortcut.other_p)
    )
    a["tag"] = bool(rng.random() < tag_p)
    a["tag_corner"] = cfg.tag_corners[int(rng.integers(len(cfg.tag_corners)))] if a["tag"] else None
    a["blur"] = bool(rng.random() < cfg.blur_rate)
    a["noise"] = bool(rng.random() < cfg.noise_rate)
    a["occlusion"] = bool(rng.random() < cfg.occlusion_rate)
    counts = {str(k): v for k, v in cfg.distractor_probs.items()}
    a["n_distractors"] = int(_choice(rng, counts))
    lo, hi = SIZE_RADIUS[a["size"]]
    r = float(rng.uniform(lo, hi)) * size
    a["radius"] = round(r, 3)
    a["angle"] = round(float(rng.uniform(-25, 25)), 3)
    a["x"] = round(float(rng.uniform(r + 1, size - r - 1)), 3)
    a["y"] = round(float(rng.uniform(r + 1, size - r - 1)), 3)
    others = [c for c in cfg.classes if c != cls]
    dist = []
    for _ in range(a["n_distractors"]):
        dr = float(rng.uniform(0.06, 0.09)) * size
        dist.append(
            {
                "shape": others[int(rng.integers(len(others)))],
                "color": cfg.colors[int(rng.integers(len(cfg.colors)))],
                "x": round(float(rng.uniform(dr, size - dr)), 3),
                "y": round(float(rng.uniform(dr, size - dr)), 3),
                "radius": round(dr, 3),
                "angle": round(float(rng.uniform(-25, 25)), 3),
            }
        )
    a["distractors"] = dist
    label = cls
    noise = next((b for b in cfg.biases if isinstance(b, LabelNoiseBias)), None)
    u = rng.random()
    if noise is not None and (noise.classes is None or cls in noise.classes) and u < noise.rate:
        label = noise.to if noise.to and noise.to != cls else others[int(rng.integers(len(others)))]
    a["label"] = label
    a["true_label"] = cls
    a["label_noisy"] = label != cls
    return a, rng


def _paint(
    img: np.ndarray, cov: np.ndarray, win: tuple[int, int, int, int], rgb: np.ndarray
) -> None:
    y0, y1, x0, x1 = win
    c = cov[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - c) + rgb * c


def render(
    cfg: WorldConfig, a: dict[str, Any], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and visible-object mask for sampled attrs `a` (uses `rng` for texture jitter)."""
    size = cfg.image_size
    img = background_patch(a["background"], size, rng)
    for d in a["distractors"]:
        cov, win = shape_coverage(
            d["shape"], size, d["x"], d["y"], d["radius"], np.deg2rad(d["angle"])
        )
        _paint(img, cov, win, np.array(COLOR_RGB[d["color"]], np.float32))
    rgb = np.array(COLOR_RGB[a["color"]], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    cov, win = shape_coverage(a["shape"], size, a["x"], a["y"], a["radius"], np.deg2rad(a["angle"]))
    _paint(img, cov, win, np.clip(rgb, 0, 255))
    mask = np.zeros((size, size), bool)
    y0, y1, x0, x1 = win
    mask[y0:y1, x0:x1] = cov >= 0.5
    if a["occlusion"]:
        # a grey block covering 30-45% of the object from one side
        r, cx, cy = a["radius"], a["x"], a["y"]
        cut = float(rng.uniform(0.3, 0.45)) * 2 * r
        side = int(rng.integers(4))
        bx0, bx1, by0, by1 = cx - r - 1, cx + r + 1, cy - r - 1, cy + r + 1
        if side == 0:
            bx1 = bx0 + 1 + cut
        elif side == 1:
            bx0 = bx1 - 1 - cut
        elif side == 2:
            by1 = by0 + 1 + cut
        else:
            by0 = by1 - 1 - cut
        ys = slice(max(int(round(by0)), 0), min(int(round(by1)), size))
        xs = slice(max(int(round(bx0)), 0), min(int(round(bx1)), size))
        img[ys, xs] = OCCLUDER_RGB
        mask[ys, xs] = False
    gain, offset = LIGHTING[a["lighting"]]
    if a["lighting"] != "normal":
        img = img * gain + offset
    if a["blur"]:
        img = blur(img, 1.1 * size / 64)
    if a["noise"]:
        img = img + rng.normal(0.0, 18.0, img.shape).astype(np.float32)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if a["tag"]:
        ys, xs = tag_window(size, a["tag_corner"])
        out[ys, xs] = tag_pattern(size)
        mask[ys, xs] = False
    return out, mask


def make_item(
    cfg: WorldConfig, seed: int, index: int, biases: Sequence[Bias] | None = None
) -> WorldItem:
    """Generate item `index` of the split (config, seed). `biases` defaults to the config's."""
    a, rng = sample_attrs(cfg, seed, index)
    image, mask = render(cfg, a, rng)
    ys, xs = np.nonzero(mask)
    if len(ys):
        a["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    else:  # fully hidden (rare: occluder + tag): fall back to the drawn extent
        r = a["radius"]
        a["box"] = [
            max(int(a["x"] - r), 0),
            max(int(a["y"] - r), 0),
            min(int(a["x"] + r) + 1, cfg.image_size),
            min(int(a["y"] + r) + 1, cfg.image_size),
        ]
    a["mask_area"] = int(mask.sum())
    a["caption"] = caption(a, np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 0xCA9]))
    groups = bias_groups(a, cfg.biases if biases is None else biases)
    a.update(groups)
    a["bias_aligned"] = "conflicting" not in groups.values()
    return WorldItem(index=index, image=image, mask=mask, attrs=a)


def generate(
    config: WorldConfig | str, n: int, seed: int = 0, start: int = 0
) -> Iterator[WorldItem]:
    """Yield items ``start .. start+n-1`` of the split (config, seed); deterministic."""
    cfg = WorldConfig.load(config)
    for i in range(start, start + n):
        yield make_item(cfg, seed, i)

"""Training and evaluation data for the embedded VLM, drawn from `vlens.world`.

The world used here is *balanced* (every shape, colour, background, size and lighting equally
likely, tags on half the images, in every corner), so the VLM learns no planted bias. Besides
full images it makes the views the judge shows a VLM: the object alone on black (soft
masks), soft blobs that reveal part of an image, fully black "empty" images, and "cam"
views: a simulated saliency map (Gaussian blobs on the object, the background, a distractor
or the tag) cut out with the judge's steep sigmoid mask, labelled by what the visible
pixels actually show. The last kind is what the per-sample judge sees; without it the
tower read a fragment of a shape on black as well as it read water texture on black, i.e.
hardly at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter

from vlens.vlm.embedded import vocab as V
from vlens.world.attributes import LIGHTINGS, SHAPES, SIZES
from vlens.world.config import WorldConfig
from vlens.world.generator import generate

VIEW_PROBS = {"full": 0.63, "object": 0.2, "blob": 0.12, "empty": 0.05}
"""View mix of the first training stage (the shipped weights add a stage with `CAM_PROBS`)."""
CAM_PROBS = {"full": 0.45, "object": 0.14, "blob": 0.08, "empty": 0.05, "cam": 0.28}
"""View mix of the second stage: a quarter of the views are judge-style masked CAM views."""
CAM_TARGETS = {"object": 0.45, "background": 0.3, "distractor": 0.1, "tag": 0.15}


def balanced_config(image_size: int = 64) -> WorldConfig:
    """The unbiased world the embedded VLM is trained and evaluated on."""
    return WorldConfig(
        name="embedded_vlm_balanced",
        image_size=image_size,
        classes=list(SHAPES),
        size_probs={s: 1.0 for s in SIZES},
        lighting_probs={k: 1.0 for k in LIGHTINGS},
        blur_rate=0.15,
        noise_rate=0.15,
        occlusion_rate=0.15,
        tag_rate=0.5,
        tag_corners=["top-left", "top-right", "bottom-left", "bottom-right"],
    )


def object_view(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The object alone on black: a dilated, softened object mask times the image."""
    m = mask
    grow = int(rng.integers(0, 4))
    if grow:
        m = binary_dilation(m, iterations=grow)
    soft = gaussian_filter(m.astype(np.float32), float(rng.uniform(0.0, 2.0)))
    soft = np.clip(soft / max(float(soft.max()), 1e-6) * 1.3, 0, 1)
    return (image * soft[..., None]).astype(np.uint8)


def blob_view(image: np.ndarray, rng: np.random.Generator, center: tuple[float, float]
              ) -> tuple[np.ndarray, np.ndarray]:
    """A soft Gaussian window (like a blurred saliency map) over the image; returns (view, w)."""
    h, w = image.shape[:2]
    cy, cx = center
    cy, cx = cy + rng.normal(0, h * 0.12), cx + rng.normal(0, w * 0.12)
    sig = float(rng.uniform(0.1, 0.3)) * h
    yy, xx = np.mgrid[0:h, 0:w]
    win = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig * sig)).astype(np.float32)
    win = np.clip(win * 1.5, 0, 1)
    return (image * win[..., None]).astype(np.uint8), win


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _cam_centres(target: str, mask: np.ndarray, attrs: dict, rng: np.random.Generator,
                 ) -> tuple[list[tuple[float, float]], dict | None]:
    """Blob centres (y, x) for a simulated saliency map aimed at `target` (and the
    distractor aimed at, if any)."""
    from vlens.world.generator import tag_window

    k = int(rng.integers(1, 3))
    if target == "tag":
        ys, xs = tag_window(mask.shape[0], attrs["tag_corner"])
        return [((ys.start + ys.stop) / 2 + rng.normal(0, 1.5),
                 (xs.start + xs.stop) / 2 + rng.normal(0, 1.5)) for _ in range(k)], None
    if target == "distractor":
        d = attrs["distractors"][int(rng.integers(len(attrs["distractors"])))]
        return [(d["y"] + rng.normal(0, 1.0), d["x"] + rng.normal(0, 1.0))
                for _ in range(k)], d
    pool = mask if target == "object" else ~binary_dilation(mask, iterations=6)
    yy, xx = np.nonzero(pool)
    j = rng.integers(len(yy), size=k)
    return [(float(yy[i]), float(xx[i])) for i in j], None


def cam_view(image: np.ndarray, mask: np.ndarray, attrs: dict, known: dict[str, str],
             rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str], dict[str, int]]:
    """A judge-style view: simulated CAM -> sigmoid mask (alpha 25, beta 0.45-0.75) -> image.

    Returns (view, visible values, forced codes). What is visible follows where the mask's
    mass lies: >= 25% on the object (or >= 60% on a distractor's disk) -> its colour, and its
    shape when at least half of it is in view; <= 5% on object, distractor and tag -> shape
    `V.NONE` (no shape in view, so shape captions are false); >= 30% on the scene -> the
    background, <= 10% -> a black backdrop; >= 50% on the tag -> "tag" and no shape.
    Anything else is left undecided (undecidable pairs are left out of the loss).
    """
    h, w = mask.shape
    targets = dict(CAM_TARGETS)
    if not attrs.get("tag"):
        targets.pop("tag")
    if not attrs.get("distractors"):
        targets.pop("distractor")
    if mask.sum() == 0:
        targets.pop("object")
    names = list(targets)
    p = np.array([targets[t] for t in names])
    target = names[int(rng.choice(len(names), p=p / p.sum()))]
    centres, dist = _cam_centres(target, mask, attrs, rng)
    yy, xx = np.mgrid[0:h, 0:w]
    cam = np.zeros((h, w), np.float32)
    for cy, cx in centres:
        sig = float(rng.uniform(4.0, 11.0))
        cam += float(rng.uniform(0.6, 1.0)) * np.exp(
            -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig * sig))
    if rng.random() < 0.3:  # some attention elsewhere too
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        cam += float(rng.uniform(0.2, 0.7)) * np.exp(
            -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * float(rng.uniform(3, 10)) ** 2))
    cam /= max(float(cam.max()), 1e-6)
    beta = float(rng.uniform(0.45, 0.75))
    soft = 1.0 / (1.0 + np.exp(25.0 * (beta - cam)))
    view = (image * soft[..., None]).astype(np.uint8)
    mass = float(soft.sum()) or 1.0
    on_obj = float((soft * mask).sum()) / mass
    on_tag = 0.0
    if attrs.get("tag"):
        from vlens.world.generator import tag_window

        ys, xs = tag_window(h, attrs["tag_corner"])
        on_tag = float(soft[ys, xs].sum()) / mass
    vis: dict[str, str] = {"empty": "not empty"}
    codes: dict[str, int] = {}
    disk = _disk(h, w, dist["y"], dist["x"], dist["radius"]) if dist is not None else None
    on_dist = float((soft * disk).sum()) / mass if disk is not None else 0.0
    shown = soft >= 0.5
    if disk is not None and on_dist >= 0.6 and on_obj < 0.1:  # a distractor fills the view
        vis["color"] = dist["color"]
        if (shown & disk).sum() >= 0.5 * disk.sum():
            vis["shape"] = dist["shape"]
    elif on_obj >= 0.25:
        vis["color"] = known["color"]
        if (shown & mask).sum() >= 0.5 * mask.sum():  # most of the object is in view
            vis["shape"] = known["shape"]
    elif on_obj <= 0.05 and on_tag <= 0.05 and on_dist <= 0.05:
        codes["shape"] = V.NONE  # no shape in view: shape captions are false
    scene = 1.0 - on_obj - on_tag - on_dist
    if scene >= 0.3:
        vis["background"] = known["background"]
    elif scene <= 0.1:
        vis["background"] = "black"  # only black around what is shown
    if on_tag >= 0.5:
        vis["tag"] = "tag"
        codes["shape"] = V.NONE
    return view, vis, codes


@dataclass
class ViewSet:
    """Images (n, H, W, 3) uint8 and per-view family codes (n, F) for `pair_targets`."""

    images: np.ndarray
    codes: np.ndarray
    kinds: list[str]
    values: list[dict[str, str]]  # what is visible, family -> value (for captions)
    attrs: list[dict]


def make_views(n: int, seed: int, view_probs: dict[str, float] | None = None,
               image_size: int = 64) -> ViewSet:
    """Generate `n` world items (seed `seed`) and turn each into one view."""
    probs = view_probs or VIEW_PROBS
    kinds_all, p = list(probs), np.array(list(probs.values()), float)
    rng = np.random.default_rng([int(seed), 0xE3B])
    imgs, codes, kinds, vals, attrs = [], [], [], [], []
    for item in generate(balanced_config(image_size), n, seed=seed):
        a = item.attrs
        known = V.item_values(a)
        kind = kinds_all[int(rng.choice(len(kinds_all), p=p / p.sum()))]
        img = item.image
        if kind == "object" and item.mask.sum() > 0:
            img = object_view(img, item.mask, rng)
            known = {k: known[k] for k in ("shape", "color", "size", "occlusion")}
            known |= {"background": "black", "tag": "no tag", "empty": "not empty"}
            code = V.encode(known, V.IGNORE)
        elif kind == "blob":
            img, win = blob_view(img, rng, (a["y"], a["x"]))
            m = item.mask.astype(np.float32)
            seen_obj = float((win * m).sum() / max(m.sum(), 1.0))
            seen_bg = float((win * (1 - m)).mean())
            k2 = {"empty": "not empty"}
            if seen_obj > 0.8:
                k2 |= {"shape": known["shape"], "color": known["color"]}
            if seen_bg > 0.25:
                k2["background"] = known["background"]
            known = k2
            code = V.encode(known, V.IGNORE)
        elif kind == "cam":
            img, known, forced = cam_view(img, item.mask.astype(bool), a, known, rng)
            code = V.encode(known, V.IGNORE)
            for f, c in forced.items():
                code[V.FIDX[f]] = c
        elif kind == "empty":
            img = np.zeros_like(img)
            if rng.random() < 0.5:
                img = rng.integers(0, int(rng.integers(2, 12)), img.shape).astype(np.uint8)
            known = {"background": "black", "tag": "no tag", "empty": "empty"}
            code = V.encode(known, V.NONE)
            for f in ("lighting", "blur", "noise"):
                code[V.FIDX[f]] = V.IGNORE
        else:
            kind = "full"
            code = V.encode(known, V.IGNORE)
        imgs.append(img)
        codes.append(code)
        kinds.append(kind)
        vals.append(known)
        attrs.append(a)
    return ViewSet(np.stack(imgs), np.stack(codes), kinds, vals, attrs)


def captions_for(view: ViewSet, k: int, seed: int) -> tuple[list[list[str]], np.ndarray]:
    """`k` captions per view with their mention codes (n, k, F)."""
    rng = np.random.default_rng([int(seed), 0xCA7])
    texts: list[list[str]] = []
    codes = np.full((len(view.kinds), k, len(V.FAMILY_NAMES)), V.NOT_SAID, np.int16)
    for i, (kind, known, a) in enumerate(zip(view.kinds, view.values, view.attrs, strict=True)):
        row = []
        for j in range(k):
            said: dict[str, str]
            r = rng.random()
            if kind == "empty":
                text, said = V.concept_caption("empty", "empty", rng), {"empty": "empty"}
            elif kind == "full" and r < 0.3:
                text, said = V.full_caption(a, rng)
            elif (kind in ("full", "object") or (kind == "cam" and "shape" in known)) \
                    and r < 0.7:
                fams = [f for f in known if f != "empty"]
                m = int(rng.integers(1, 4))
                if kind == "object" and rng.random() < 0.5:
                    fams_s = [f for f in ("size", "color", "shape") if rng.random() < 0.6]
                    fams_s.append("background")
                else:
                    chosen = rng.choice(fams, size=min(m, len(fams)), replace=False)
                    fams_s = [str(f) for f in chosen]
                if "background" in fams_s and len(fams_s) == 1:
                    fams_s.append("shape")
                text, said = V.composed_caption(known, fams_s, rng), {f: known[f] for f in fams_s}
            else:
                fams = [f for f in known if f != "empty"] or ["empty"]
                f = fams[int(rng.integers(len(fams)))]
                text, said = V.concept_caption(f, known[f], rng), {f: known[f]}
            row.append(text)
            codes[i, j] = V.encode(said, V.NOT_SAID)
        texts.append(row)
    return texts, codes

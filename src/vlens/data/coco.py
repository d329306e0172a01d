"""`coco:FILE[?images=DIR]` — a COCO instances JSON (detection boxes and instance masks).

Boxes are converted from COCO ``[x, y, w, h]`` to ``[x0, y0, x1, y1]``; ``box_labels`` are
category names; a sample's ``label`` is the category of its largest annotation (by area) so
classification-style summaries still work. ``class_names`` are the category names in
category-id order. Images live in ``DIR`` (relative to the JSON's folder; default: the JSON's
folder), which is the dataset root: ``file_name`` values may not leave it.

Masks are not decoded while listing: ``mask_uri`` is ``coco://<json>?image_id=<id>`` and
`vlens.data.load_mask` rasterises it on demand (union of the image's instances: polygons
with Pillow, uncompressed and compressed RLE with a small decoder — written here so
pycocotools, which needs a compiler on some platforms, is not a dependency).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from PIL import Image, ImageDraw

from vlens.data.base import SOURCES, Sample
from vlens.data.paths import ERROR_KEY, PathGuard
from vlens.errors import DataError


def _load_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read COCO file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def _need(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise DataError(f"{path}: {msg}")


def _id(v: Any) -> bool:
    """COCO ids are integers or strings (anything else, e.g. a list, cannot key a lookup)."""
    return isinstance(v, int | str) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class CocoSource:
    """Samples from a COCO instances file; see the module docstring."""

    def __init__(self, annotations: str | os.PathLike[str], images: str | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        p = Path(annotations).expanduser().resolve()
        if not p.is_file():
            raise DataError(f"COCO file {str(annotations)!r} does not exist")
        self.path = str(p)
        self.root = str((p.parent / images).resolve() if images else p.parent)
        data = _load_json(p)
        _need(isinstance(data, dict), p, "top level must be an object with images/annotations")
        imgs, anns, cats = (data.get(k) for k in ("images", "annotations", "categories"))
        _need(isinstance(imgs, list), p, "missing or invalid 'images' list")
        _need(isinstance(cats, list), p, "missing or invalid 'categories' list")
        anns = anns if anns is not None else []
        _need(isinstance(anns, list), p, "'annotations' must be a list")
        cat_name: dict[Any, str] = {}
        for c in cats:
            _need(isinstance(c, dict) and _id(c.get("id")) and isinstance(c.get("name"), str),
                  p, f"category {str(c)[:80]} needs an integer/string id and a string name")
            _need(c["id"] not in cat_name, p, f"duplicate category id {c['id']!r}")
            cat_name[c["id"]] = c["name"]
        names = [cat_name[k] for k in sorted(cat_name, key=lambda k: (str(type(k)), k))]
        self.class_names = list(class_names) if class_names is not None else names
        unknown = sorted(set(names) - set(self.class_names))
        _need(not unknown, p, f"categories {unknown} are not in class_names {self.class_names}")
        by_img: dict[Any, list[dict[str, Any]]] = {}
        img_ids: set[Any] = set()
        for im in imgs:
            _need(isinstance(im, dict) and _id(im.get("id"))
                  and isinstance(im.get("file_name"), str),
                  p, f"image entry {str(im)[:80]} needs an integer/string id and a string "
                  "file_name")
            _need(im["id"] not in img_ids, p, f"duplicate image id {im['id']!r}")
            img_ids.add(im["id"])
        for a in anns:
            _need(isinstance(a, dict), p, f"annotation {str(a)[:80]} is not an object")
            aid = a.get("id", "?")
            _need(_id(a.get("image_id")) and a.get("image_id") in img_ids, p,
                  f"annotation {aid}: unknown image_id {a.get('image_id')!r}")
            _need(_id(a.get("category_id")) and a.get("category_id") in cat_name, p,
                  f"annotation {aid}: unknown category_id {a.get('category_id')!r}")
            bb = a.get("bbox")
            _need(isinstance(bb, list) and len(bb) == 4 and all(_num(v) for v in bb)
                  and bb[2] >= 0 and bb[3] >= 0, p,
                  f"annotation {aid}: bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0,"
                  f" got {str(bb)[:60]}")
            by_img.setdefault(a["image_id"], []).append(a)
        self._guard = PathGuard(self.root)
        self._samples = [self._sample(im, by_img.get(im["id"], []), cat_name) for im in imgs]

    def _sample(self, im: dict[str, Any], anns: list[dict[str, Any]],
                cat_name: dict[Any, str]) -> Sample:
        uri, err = self._guard(im["file_name"])
        boxes = [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h in
                 (a["bbox"] for a in anns)]
        labels = [cat_name[a["category_id"]] for a in anns]
        areas = [float(a.get("area") or a["bbox"][2] * a["bbox"][3]) for a in anns]
        label = labels[int(np.argmax(areas))] if anns else None
        meta: dict[str, Any] = {k: v for k, v in im.items() if k not in ("id", "file_name")
                                and isinstance(v, str | int | float | bool)}
        meta["n_objects"] = len(anns)
        if err:
            meta[ERROR_KEY] = err
        has_seg = any(a.get("segmentation") for a in anns)
        mask_uri = f"coco://{self.path}?image_id={im['id']}" if has_seg else None
        return Sample(id=str(im["id"]), uri=uri, label=label, boxes=boxes or None,
                      box_labels=labels or None, mask_uri=mask_uri, metadata=meta)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        return f"CocoSource({self.path!r}, {len(self)} images)"


# -- masks -----------------------------------------------------------------------------------
def rle_from_string(s: str) -> list[int]:
    """Decode COCO's compressed RLE string (LEB128-like, 6 bits per char) into run lengths."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(counts: Sequence[int], h: int, w: int) -> np.ndarray:
    """Run lengths (zeros first, column-major) -> bool mask (h, w)."""
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in counts:
        if c < 0 or pos + c > h * w:
            raise DataError(f"RLE runs exceed the {h}x{w} mask")
        flat[pos : pos + c] = val
        pos += c
        val = not val
    return flat.reshape((h, w), order="F")


def rasterise(seg: Any, h: int, w: int) -> np.ndarray:
    """One COCO segmentation (polygons or RLE) -> bool mask (h, w)."""
    if isinstance(seg, dict):
        size = seg.get("size") or [h, w]
        counts = seg.get("counts")
        if isinstance(counts, str):
            counts = rle_from_string(counts)
        if not isinstance(counts, list):
            raise DataError("RLE segmentation needs 'counts'")
        return rle_decode(counts, int(size[0]), int(size[1]))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for poly in seg or []:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1]))
                          for i in range(0, len(poly) - 1, 2)], fill=1, outline=1)
    return np.asarray(img, dtype=bool)


@lru_cache(maxsize=4)
def _mask_index(path: str, mtime: float) -> dict[str, tuple[int, int, list[Any]]]:
    data = _load_json(Path(path))
    out: dict[str, tuple[int, int, list[Any]]] = {}
    sizes = {str(im["id"]): (im.get("height"), im.get("width")) for im in data["images"]}
    for a in data.get("annotations") or []:
        key = str(a["image_id"])
        h, w = sizes.get(key, (None, None))
        if not (h and w) and isinstance(a.get("segmentation"), dict):
            h, w = a["segmentation"]["size"]
        if not (h and w):
            raise DataError(f"{path}: image {key} needs width and height to rasterise masks")
        out.setdefault(key, (int(h), int(w), []))[2].append(a.get("segmentation"))
    return out


def load_coco_mask(uri: str) -> np.ndarray:
    """``coco://<json>?image_id=<id>`` -> union of that image's instance masks (bool h, w)."""
    body = uri.removeprefix("coco://")
    path, _, query = body.partition("?")
    ids = parse_qs(query).get("image_id")
    if not ids:
        raise DataError(f"bad COCO mask uri {uri!r}: no image_id")
    try:
        mtime = os.stat(path).st_mtime
    except OSError as e:
        raise DataError(f"cannot read COCO file {path}: {e.strerror or e}") from None
    entry = _mask_index(path, mtime).get(ids[0])
    if entry is None:
        raise DataError(f"{path}: image {ids[0]} has no annotations")
    h, w, segs = entry
    mask = np.zeros((h, w), dtype=bool)
    for seg in segs:
        if seg:
            try:
                m = rasterise(seg, h, w)
            except (TypeError, ValueError, KeyError, IndexError) as e:
                raise DataError(f"{path}: image {ids[0]}: bad segmentation ({e})") from None
            if m.shape != (h, w):
                raise DataError(f"{path}: image {ids[0]}: RLE size {m.shape} != {(h, w)}")
            mask |= m
    return mask


@SOURCES.register("coco", help="coco:FILE[?images=DIR] — COCO instances JSON (boxes, masks)")
def coco_source(arg: str = "", **kw: Any) -> CocoSource:
    if not arg:
        raise DataError("coco: needs an instances JSON, e.g. coco:annotations.json?images=imgs")
    path, _, query = arg.partition("?")
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(q) - {"images"}
    if unknown:
        raise DataError(f"coco: unknown option(s) {sorted(unknown)} (known: images)")
    if "images" in q:
        kw.setdefault("images", q["images"])
    return CocoSource(path, **kw)

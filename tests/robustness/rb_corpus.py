"""A corpus of hostile and unusual image files, generated (never downloaded).

`make_corpus(dir)` writes each file and returns {file name: expected outcome}: ``"ok"`` (a
correct load) or the `ImageError.reason` the loader must give.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes."""
    sig = b"\x89PNG\r\n\x1a\n"

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def _scene(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = np.zeros((size, size, 3), np.uint8)
    a[:] = rng.integers(0, 255, 3, dtype=np.uint8)
    a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = rng.integers(0, 255, 3,
                                                                          dtype=np.uint8)
    return Image.fromarray(a)


def make_corpus(root: Path) -> dict[str, str]:
    """Write the corpus into `root`; return {name: "ok" | expected error reason}."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(name: str, data: bytes, expect: str) -> None:
        (root / name).write_bytes(data)
        out[name] = expect

    scene = _scene()
    jpg = io.BytesIO()
    scene.save(jpg, "JPEG", quality=90)
    png = _png_bytes(scene)
    put("truncated.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 2], "truncated")
    put("truncated.png", png[: len(png) // 2], "truncated")
    put("zero.jpg", b"", "zero_bytes")
    put("text.jpg", b"this is not an image, just text named .jpg\n" * 4, "not_an_image")
    put("bomb.png", _bomb_png(20000, 20000), "decompression_bomb")
    put("fake.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        "unsupported_format")
    put("png_named.jpg", png, "ok")  # content decides, not the suffix
    cmyk = io.BytesIO()
    scene.convert("CMYK").save(cmyk, "JPEG")
    put("cmyk.jpg", cmyk.getvalue(), "ok")
    a16 = (np.asarray(scene.convert("L"), np.uint16) * 257)
    put("gray16.png", _png_bytes(Image.fromarray(a16)), "ok")
    put("palette.png", _png_bytes(scene.convert("P", palette=Image.Palette.ADAPTIVE)), "ok")
    rgba = scene.convert("RGBA")
    rgba.putalpha(128)
    put("rgba.png", _png_bytes(rgba), "ok")
    put("one_pixel.png", _png_bytes(Image.new("RGB", (1, 1), (200, 30, 30))), "ok")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    ej = io.BytesIO()
    scene.crop((0, 0, 64, 32)).save(ej, "JPEG", exif=exif)
    put("exif_rotated.jpg", ej.getvalue(), "ok")
    frames = [_scene(seed=s) for s in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    put("animated.gif", gif.getvalue(), "ok")
    return out

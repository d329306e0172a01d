"""Safe image decoding: one bad file becomes one `ImageError` with a short reason code.

`load_image` never lets a hostile or broken file crash a run or exhaust memory: it checks the
header size before decoding (decompression bombs), refuses truncated data instead of padding
it with grey, and normalises every mode Pillow can produce to 8-bit RGB the same way each time
(so content hashes and predictions are reproducible).

Reason codes (``ImageError.reason``):
``missing`` (no such file), ``unreadable`` (OS error / a directory), ``zero_bytes``,
``not_an_image`` (Pillow cannot identify it, e.g. a text file named .jpg),
``unsupported_format`` (a known container Pillow cannot decode here, e.g. HEIC/AVIF),
``decompression_bomb`` (width*height above `max_pixels`, checked from the header only),
``truncated`` (data ends early or is corrupt), ``bad_mode`` (a pixel mode we cannot map to RGB),
``path_outside_root`` (raised by `load_sample_image` for samples flagged by their source).
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vlens.errors import ImageError

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest width*height decoded by default (about 7000x7000); bigger headers are refused."""

BACKGROUND = (255, 255, 255)
"""Fixed colour transparent pixels are composited on (white, like a browser shows them)."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
     ".pbm", ".pnm", ".tga", ".heic", ".heif", ".avif", ".jp2", ".jfif"}
)
"""File suffixes the folder source lists as images (decoding decides if they really are)."""

# ISO-BMFF brands Pillow (without plugins) cannot decode; sniffed so users get a clear reason.
_UNSUPPORTED_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif",
                       b"avis")


def _sniff_unsupported(head: bytes) -> str | None:
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _UNSUPPORTED_BRANDS:
        return head[8:12].decode("ascii")
    return None


def _stat(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError("missing", f"{path} does not exist") from None
    except OSError as e:
        raise ImageError("unreadable", f"{path}: {e.strerror or e}") from None
    if not path.is_file():
        raise ImageError("unreadable", f"{path} is not a regular file")
    return st.st_size


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only) and check size; the caller loads pixels."""
    if _stat(path) == 0:
        raise ImageError("zero_bytes", f"{path} is empty")
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as e:
        raise ImageError("unreadable", f"{path}: {e.strerror or e}") from None
    brand = _sniff_unsupported(head)
    if brand:
        raise ImageError("unsupported_format", f"{path}: {brand} container is not supported")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageError("decompression_bomb", f"{path}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image", f"{path}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError("truncated", f"{path}: {e}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageError("truncated", f"{path}: invalid size {w}x{h}")
    if w * h > max_pixels:
        im.close()
        raise ImageError(
            "decompression_bomb", f"{path}: {w}x{h} = {w * h} pixels > max_pixels={max_pixels}"
        )
    return im


def _decode(im: Image.Image, path: Path) -> Image.Image:
    """Load pixels of frame 0 strictly (no grey padding of truncated data)."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except Image.DecompressionBombError as e:
        raise ImageError("decompression_bomb", f"{path}: {e}") from None
    except OSError as e:
        msg = str(e)
        if "decoder" in msg and "not available" in msg:
            raise ImageError("unsupported_format", f"{path}: {msg}") from None
        raise ImageError("truncated", f"{path}: {msg}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        raise ImageError("truncated", f"{path}: {e}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block must not lose an otherwise fine image
        out = im
    return out if out is not None else im


def _to_8bit(arr: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Scale a high-bit-depth single-channel array to uint8 deterministically.

    16-bit data (and int data inside [0, 65535]) is divided by 257 so the full 16-bit range
    maps onto 0..255; float data inside [0, 1] is multiplied by 255; anything else is
    min-max scaled (a constant image becomes 0).
    """
    a = arr.astype(np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if sixteen_bit:
        a = a / 257.0
    elif np.issubdtype(arr.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 65535:
        a = a / 257.0 if a.max() > 255 else a
    elif np.issubdtype(arr.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
        a = a * 255.0
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on `background`."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        g = _to_8bit(arr, sixteen_bit=mode.startswith("I;16"))
        return Image.fromarray(g, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    try:
        return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX ...
    except (ValueError, OSError) as e:
        raise ImageError("bad_mode", f"cannot convert mode {mode} to RGB: {e}") from None


def load_image(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:
    """Decode `path` into an upright 8-bit RGB image (first frame), or raise `ImageError`."""
    p = Path(path)
    im = _open(p, max_pixels)
    try:
        dec = _decode(im, p)
        out = to_rgb(dec, background)
        out.load()
        return out
    finally:
        im.close()


def load_mask(
    path: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A mask file as a bool array (H, W): non-zero (ignoring alpha) = object.

    `path` may also be a ``coco://`` uri produced by the COCO source. `size` = (W, H) resizes
    with nearest neighbour (e.g. to a model's output size).
    """
    s = str(path)
    if s.startswith("coco://"):
        from vlens.data.coco import load_coco_mask

        arr = load_coco_mask(s)
    else:
        arr = load_label_mask(s, max_pixels=max_pixels) != 0
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        arr = np.asarray(Image.fromarray(arr.astype(np.uint8) * 255).resize(size, Image.NEAREST))
        arr = arr > 127
    return arr.astype(bool)


def load_label_mask(
    path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A mask file as integer class indices (H, W) (palette index / grey value / any channel)."""
    p = Path(path)
    im = _open(p, max_pixels)
    try:
        dec = _decode(im, p)
        if dec.mode in ("RGBA", "LA", "PA"):
            dec = dec.convert("RGB") if dec.mode == "RGBA" else dec.convert("L")
        if dec.mode == "CMYK":
            dec = dec.convert("RGB")
        arr = np.asarray(dec)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        return arr.astype(np.int64)
    finally:
        im.close()


def content_hash(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of the file's bytes, streamed (the image half of every cache key)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                h.update(chunk)
    except FileNotFoundError:
        raise ImageError("missing", f"{path} does not exist") from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise ImageError("unreadable", f"{path}: {getattr(e, 'strerror', None) or e}") from None
    return h.hexdigest()

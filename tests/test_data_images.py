"""Safe image decoding: every bad-input case is generated here and checked for its reason."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlens.data import content_hash, load_image, load_label_mask, load_mask
from vlens.data.images import to_rgb
from vlens.errors import DataError, ImageError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _bomb_png(w: int, h: int) -> bytes:
    """A valid PNG header declaring w x h RGB pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _reason(path) -> str:
    with pytest.raises(ImageError) as ei:
        load_image(path)
    assert isinstance(ei.value, DataError)
    return ei.value.reason


def test_plain_rgb_roundtrip(tmp_path):
    arr = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(5, 6, 3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.mode == "RGB" and im.size == (6, 5)
    assert np.array_equal(np.asarray(im), arr)


def test_zero_bytes(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    assert _reason(tmp_path / "z.jpg") == "zero_bytes"


def test_text_named_jpg(tmp_path):
    (tmp_path / "t.jpg").write_text("this is not an image\n")
    assert _reason(tmp_path / "t.jpg") == "not_an_image"


def test_missing_and_directory(tmp_path):
    assert _reason(tmp_path / "nope.png") == "missing"
    assert _reason(tmp_path) == "unreadable"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path, fmt):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    p = tmp_path / f"t.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    assert _reason(p) == "truncated"


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_bomb_png(20000, 20000))
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert ei.value.reason == "decompression_bomb"
    assert "20000x20000" in str(ei.value) or "400000000" in str(ei.value)
    # a smaller limit also refuses a modest image; the limit is configurable
    p2 = tmp_path / "ok.png"
    Image.new("RGB", (100, 100)).save(p2)
    with pytest.raises(ImageError) as ei:
        load_image(p2, max_pixels=9999)
    assert ei.value.reason == "decompression_bomb" and "100x100" in str(ei.value)
    assert load_image(p2, max_pixels=10000).size == (100, 100)


def test_heic_is_unsupported(tmp_path):
    p = tmp_path / "x.heic"
    p.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)
    assert _reason(p) == "unsupported_format"


def test_cmyk_to_rgb(tmp_path):
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=100)
    im = load_image(p)
    assert im.mode == "RGB"
    r, g, b = im.getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15  # cyan 0, magenta+yellow full -> red


def test_16bit_grey_scaled_to_8bit(tmp_path):
    arr = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    im = load_image(p)
    assert im.mode == "RGB"
    assert np.asarray(im)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_int32_and_float_modes(tmp_path):
    i32 = Image.fromarray(np.array([[0, 100, 200]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(i32))[0, :, 1].tolist() == [0, 100, 200]  # fits 8 bits: kept
    neg = Image.fromarray(np.array([[-10, 0, 10]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(neg))[0, :, 0].tolist() == [0, 128, 255]  # min-max
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(f))[0, :, 2].tolist() == [0, 128, 255]  # [0, 1] -> x255
    p = tmp_path / "f.tiff"
    f.save(p)
    assert np.asarray(load_image(p))[0, :, 0].tolist() == [0, 128, 255]


def test_palette_and_transparency_composited_on_white(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    assert np.asarray(load_image(tmp_path / "p.png"))[0].tolist() == [[10, 20, 30], [200, 100, 50]]
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "pt.png"))[0].tolist() == [[255, 255, 255],
                                                                         [200, 100, 50]]
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = np.asarray(load_image(tmp_path / "a.png"))[0].tolist()
    assert got[0] == [255, 255, 255] and got[1] == [255, 0, 0]
    assert got[2][2] == 255 and abs(got[2][0] - 127) <= 1  # half blue over white
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png"))[0].tolist() == [[255] * 3, [0] * 3]
    assert load_image(tmp_path / "a.png", background=(0, 0, 0)).getpixel((0, 0)) == (0, 0, 0)


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "r.jpg"
    im.save(p, exif=exif, quality=100)
    out = load_image(p)
    assert out.size == (2, 4)
    px = np.asarray(out).mean(axis=2)
    assert px[0, 1] > 200 and px[3, 0] < 60  # top-left white moved to top-right


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=10)
    assert Image.open(p).n_frames == 3
    out = load_image(p)
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 0, 0)


def test_one_pixel_and_greyscale(tmp_path):
    Image.new("L", (1, 1), 77).save(tmp_path / "one.png")
    assert load_image(tmp_path / "one.png").getpixel((0, 0)) == (77, 77, 77)
    Image.new("1", (3, 1), 1).save(tmp_path / "bw.png")
    assert load_image(tmp_path / "bw.png").getpixel((2, 0)) == (255, 255, 255)


def test_content_hash_is_sha256_of_bytes(tmp_path):
    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 9000  # > 1 chunk when chunk_size is small
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert content_hash(p) == want
    assert content_hash(p, chunk_size=1000) == want
    with pytest.raises(ImageError) as ei:
        content_hash(tmp_path / "none")
    assert ei.value.reason == "missing"


def test_masks(tmp_path):
    m = np.zeros((4, 6), dtype=np.uint8)
    m[1:3, 2:5] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    got = load_mask(tmp_path / "m.png")
    assert got.dtype == bool and got.sum() == 6 and got[1, 2] and not got[0, 0]
    assert load_mask(tmp_path / "m.png", size=(12, 8)).sum() == 24
    cls = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8)
    Image.fromarray(cls).save(tmp_path / "c.png")
    assert load_label_mask(tmp_path / "c.png").tolist() == cls.astype(int).tolist()
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque alpha must not count as object
    rgba[0, 0, 1] = 9
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_mask(tmp_path / "a.png").tolist() == [[True, False], [False, False]]
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(ImageError):
        load_mask(tmp_path / "bad.png")

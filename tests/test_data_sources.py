"""Dataset sources: folder, manifest (CSV/JSONL), coco; path escapes and bad manifests."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from vlens.data import SOURCES, Sample, load_mask, load_sample_image, open_dataset, sample_error
from vlens.data.coco import rasterise, rle_decode, rle_from_string
from vlens.data.manifest import write_manifest
from vlens.errors import DataError, ImageError


def _img(path, color=(0, 0, 0), size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_registry_has_sources():
    assert {"folder", "manifest", "coco"} <= set(SOURCES.names())


# -- folder ------------------------------------------------------------------------------------
def test_folder_labels_ids_sorted(tmp_path):
    _img(tmp_path / "dog" / "b.png")
    _img(tmp_path / "dog" / "sub" / "a.jpg")
    _img(tmp_path / "cat" / "z.png")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"")
    _img(tmp_path / "loose.png")
    ds = open_dataset(f"folder:{tmp_path}")
    assert ds.class_names == ["cat", "dog"]
    assert [(s.id, s.label) for s in ds] == [
        ("cat/z.png", "cat"), ("dog/b.png", "dog"), ("dog/sub/a.jpg", "dog"), ("loose.png", None)]
    assert all(os.path.isabs(s.uri) and sample_error(s) is None for s in ds)
    assert len(ds) == 4
    assert [s.id for s in open_dataset(str(tmp_path))] == [s.id for s in ds]  # bare dir works
    ds2 = open_dataset(f"folder:{tmp_path}", class_names=["cat", "dog", "fox"])
    assert ds2.class_names == ["cat", "dog", "fox"]
    with pytest.raises(DataError, match=r"\['dog'\] are not in class_names"):
        open_dataset(f"folder:{tmp_path}", class_names=["cat"])


def test_folder_symlink_out_of_root_is_error_row(tmp_path):
    outside = _img(tmp_path / "outside" / "secret.png")
    root = tmp_path / "ds"
    _img(root / "a" / "ok.png")
    os.symlink(outside, root / "a" / "link.png")
    os.symlink(root / "a" / "ok.png", root / "a" / "inner.png")  # stays inside: fine
    ds = open_dataset(f"folder:{root}")
    errs = {s.id: sample_error(s) for s in ds}
    assert errs["a/ok.png"] is None and errs["a/inner.png"] is None
    assert errs["a/link.png"].startswith("path_outside_root")
    bad = next(s for s in ds if s.id == "a/link.png")
    with pytest.raises(ImageError) as ei:
        load_sample_image(bad)
    assert ei.value.reason == "path_outside_root"
    ok = next(s for s in ds if s.id == "a/ok.png")
    assert load_sample_image(ok).size == (8, 6)


def test_folder_symlinked_class_dir_out_of_root(tmp_path):
    _img(tmp_path / "elsewhere" / "x.png")
    root = tmp_path / "ds"
    _img(root / "a" / "ok.png")
    os.symlink(tmp_path / "elsewhere", root / "b")
    os.symlink(tmp_path / "elsewhere", root / "a" / "sub")
    ds = open_dataset(f"folder:{root}")
    errs = {s.id: sample_error(s) for s in ds}
    assert errs["a/ok.png"] is None
    assert errs["b"].startswith("path_outside_root") and errs["a/sub"].startswith(
        "path_outside_root")
    assert len(ds) == 3  # nothing below the links is listed, nothing is lost silently


def test_folder_missing_dir(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        open_dataset(f"folder:{tmp_path / 'nope'}")


# -- manifest --------------------------------------------------------------------------------
def _samples(tmp_path):
    _img(tmp_path / "img" / "0.png")
    _img(tmp_path / "img" / "1.png")
    Image.fromarray(np.eye(6, 8, dtype=np.uint8) * 255).save(tmp_path / "img" / "0_mask.png")
    return [
        Sample(id="s0", uri=str(tmp_path / "img" / "0.png"), label="star",
               boxes=[[1.0, 2.0, 5.0, 6.0]], box_labels=["star"],
               mask_uri=str(tmp_path / "img" / "0_mask.png"),
               metadata={"bg": "water", "size": 3, "blur": 0.5, "tag": True}),
        Sample(id="s1", uri=str(tmp_path / "img" / "1.png"), label="circle",
               metadata={"bg": "grass", "size": 1, "blur": 0.0, "tag": False}),
    ]


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_manifest_round_trip(tmp_path, name):
    want = _samples(tmp_path)
    write_manifest(want, tmp_path / name)
    ds = open_dataset(f"manifest:{tmp_path / name}")
    got = list(ds)
    assert ds.class_names == ["circle", "star"]
    assert ds.root == str(tmp_path.resolve())
    for g, w in zip(got, want, strict=True):
        assert (g.id, g.uri, g.label, g.boxes, g.box_labels, g.mask_uri) == (
            w.id, w.uri, w.label, w.boxes, w.box_labels, w.mask_uri)
        assert g.metadata == w.metadata
    assert load_mask(got[0].mask_uri).sum() == 6


def test_manifest_world_style_jsonl(tmp_path):
    _img(tmp_path / "images" / "000001.png")
    rec = {"id": "000001", "path": "images/000001.png", "label": "star", "mask_path": None,
           "box": [3, 4, 10, 12], "bg": "water", "light": "dark", "n_distractors": 2}
    (tmp_path / "train.jsonl").write_text(json.dumps(rec) + "\n\n")
    (s,) = list(open_dataset(tmp_path / "train.jsonl"))
    assert s.boxes == [[3.0, 4.0, 10.0, 12.0]] and s.box_labels == ["star"]
    assert s.mask_uri is None
    assert s.metadata == {"bg": "water", "light": "dark", "n_distractors": 2}


def test_manifest_csv_cells(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text(
        "path,label,box,score,flag,note\n"
        'a.png,cat,"1 2 3 4",0.25,true,\n')
    (s,) = list(open_dataset(f"manifest:{tmp_path / 'm.csv'}"))
    assert s.id == "a.png" and s.boxes == [[1.0, 2.0, 3.0, 4.0]]
    assert s.metadata == {"score": 0.25, "flag": True, "note": None}


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside.png", "img/../../outside.png"])
def test_manifest_path_escape_is_error_row(tmp_path, rel):
    root = tmp_path / "ds"
    _img(root / "ok.png")
    _img(tmp_path / "outside.png")
    (root / "m.jsonl").write_text(json.dumps({"path": "ok.png", "label": "a"}) + "\n"
                                  + json.dumps({"path": rel, "label": "a", "id": "bad"}) + "\n")
    ds = open_dataset(f"manifest:{root / 'm.jsonl'}")
    ok, bad = list(ds)
    assert sample_error(ok) is None
    assert sample_error(bad).startswith("path_outside_root")
    with pytest.raises(ImageError) as ei:
        load_sample_image(bad)
    assert ei.value.reason == "path_outside_root"


def test_manifest_symlink_and_mask_escape(tmp_path):
    root = tmp_path / "ds"
    _img(root / "ok.png")
    _img(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", root / "link.png")
    lines = [{"path": "link.png", "label": "a"},
             {"path": "ok.png", "label": "a", "mask_path": "../secret.png"}]
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    a, b = list(open_dataset(f"manifest:{root / 'm.jsonl'}"))
    assert "resolves to" in sample_error(a)
    assert sample_error(b).startswith("path_outside_root: mask_path")


@pytest.mark.parametrize(("content", "suffix", "match"), [
    ("label\ncat\n", ".csv", r"m\.csv:2: missing required column 'path'"),
    ("path,label\na.png,cat\na.png,dog\n", ".csv", r"m\.csv:3: duplicate id 'a.png' "
                                                  r"\(first seen on line 2\)"),
    ("path,label\na.png,nan\n", ".csv", r"m\.csv:2: 'label' is NaN"),
    ('{"path": "a.png", "label": NaN}\n', ".jsonl", r"m\.jsonl:1: 'label' is NaN"),
    ('{"path": NaN}\n', ".jsonl", r"m\.jsonl:1: 'path' is NaN"),
    ('{"path": "a.png"}\n{"path": \n', ".jsonl", r"m\.jsonl:2: invalid JSON"),
    ('["a.png"]\n', ".jsonl", r"m\.jsonl:1: expected a JSON object"),
    ("path,label\na.png,cat,extra\n", ".csv", r"m\.csv:2: 3 fields, header has 2"),
    ("path,label\n,cat\n", ".csv", r"m\.csv:2: empty 'path'"),
    ('{"path": "a.png", "box": [1, 2, "x", 4]}\n', ".jsonl", r"'box' must be \[x0, y0, x1, y1\]"),
    ('{"path": "a.png", "box": [5, 2, 1, 4]}\n', ".jsonl", r"x1 >= x0"),
    ('{"path": "a.png", "box": [1, 2, NaN, 4]}\n', ".jsonl", r"NaN/inf"),
    ('{"path": "a.png", "boxes": [[1, 2, 3, 4]], "box_labels": ["a", "b"]}\n', ".jsonl",
     r"one label per box"),
    ('{"path": "a.png", "label": ["a"]}\n', ".jsonl", r"'label' must be a string"),
    ("path,label\n", ".csv", r"lists no samples"),
    ("", ".csv", r"empty manifest"),
])
def test_manifest_errors_name_file_and_line(tmp_path, content, suffix, match):
    p = tmp_path / f"m{suffix}"
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        open_dataset(f"manifest:{p}")


def test_manifest_non_utf8(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes(b"path,label\na.png,cat\nb.png,caf\xe9\n")
    with pytest.raises(DataError, match=r"m\.csv:3: not valid UTF-8"):
        open_dataset(f"manifest:{p}")


def test_manifest_unknown_label_with_explicit_classes(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("path,label\na.png,cat\nb.png,dog\n")
    with pytest.raises(DataError, match=r"m\.csv:3: unknown label 'dog'"):
        open_dataset(f"manifest:{p}", class_names=["cat"])
    ds = open_dataset(f"manifest:{p}", class_names=["dog", "cat", "fox"])
    assert ds.class_names == ["dog", "cat", "fox"]


def test_manifest_bom_and_missing_file(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes("\ufeffpath,label\na.png,cat\n".encode())
    assert [s.label for s in open_dataset(f"manifest:{p}")] == ["cat"]
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(f"manifest:{tmp_path / 'none.csv'}")
    with pytest.raises(DataError, match="not found"):
        open_dataset(str(tmp_path / "none.csv2"))


# -- coco ------------------------------------------------------------------------------------
def _coco(tmp_path):
    _img(tmp_path / "images" / "a.png", size=(10, 8))
    _img(tmp_path / "images" / "b.png", size=(2, 2))
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 10, "height": 8},
                   {"id": 9, "file_name": "b.png", "width": 2, "height": 2},
                   {"id": 11, "file_name": "../escape.png", "width": 4, "height": 4}],
        "categories": [{"id": 3, "name": "star"}, {"id": 1, "name": "circle"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 4, 3], "area": 12,
             "segmentation": [[1, 2, 4, 2, 4, 4, 1, 4]]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [6, 0, 2, 2], "area": 4,
             "segmentation": {"counts": [0, 2, 6, 2, 70], "size": [8, 10]}},
            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4,
             "segmentation": {"counts": "121", "size": [2, 2]}},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return data


def test_coco_boxes_labels_masks(tmp_path):
    _coco(tmp_path)
    ds = open_dataset(f"coco:{tmp_path / 'ann.json'}?images=images")
    assert ds.class_names == ["circle", "star"]  # category-id order
    a, b, esc = list(ds)
    assert a.id == "7" and a.uri == str((tmp_path / "images" / "a.png").resolve())
    assert a.boxes == [[1.0, 2.0, 5.0, 5.0], [6.0, 0.0, 8.0, 2.0]]
    assert a.box_labels == ["star", "circle"] and a.label == "star"  # largest area
    assert a.metadata == {"width": 10, "height": 8, "n_objects": 2}
    assert b.boxes == [[0.0, 0.0, 2.0, 2.0]] and b.label == "circle"
    assert esc.mask_uri is None and esc.boxes is None and esc.label is None
    m = load_mask(a.mask_uri)
    assert m.shape == (8, 10)
    want = np.zeros((8, 10), dtype=bool)
    want[2:5, 1:5] = True  # polygon (1,2)-(4,4) incl. outline
    want[0:2, 0] = True  # uncompressed RLE (column-major): 0 zeros, 2 ones in column 0,
    want[0:2, 1] = True  # 6 zeros (rest of column 0), 2 ones at the top of column 1
    assert np.array_equal(m, want)
    assert sample_error(esc).startswith("path_outside_root")
    assert load_mask(b.mask_uri).tolist() == [[False, True], [True, False]]


def test_coco_rle_size_mismatch(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][1]["segmentation"]["size"] = [4, 20]
    (tmp_path / "ann.json").write_text(json.dumps(data))
    a = next(iter(open_dataset(f"coco:{tmp_path / 'ann.json'}?images=images")))
    with pytest.raises(DataError, match=r"RLE size \(4, 20\) != \(8, 10\)"):
        load_mask(a.mask_uri)


def test_coco_bad_segmentation_is_data_error(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][0]["segmentation"] = [["a", "b", "c", "d", "e", "f"]]
    (tmp_path / "ann.json").write_text(json.dumps(data))
    a = next(iter(open_dataset(f"coco:{tmp_path / 'ann.json'}?images=images")))
    with pytest.raises(DataError, match="image 7: bad segmentation"):
        load_mask(a.mask_uri)


def test_coco_rle_decoders():
    assert rle_from_string("121") == [1, 2, 1]
    # hand-worked: counts [3, 40] -> "3" and 40 = 0b101000: low 5 bits 8 with more bit, then 1
    assert rle_from_string("3X1") == [3, 40]
    assert rle_decode([1, 2, 1], 2, 2).tolist() == [[False, True], [True, False]]
    with pytest.raises(DataError, match="exceed"):
        rle_decode([5], 2, 2)
    poly = rasterise([[0, 0, 3, 0, 3, 3, 0, 3]], 5, 5)
    assert poly.sum() == 16 and poly[:4, :4].all()


@pytest.mark.parametrize(("patch", "match"), [
    ({"images": None}, "missing or invalid 'images'"),
    ({"annotations": [{"id": 5, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]}]},
     "annotation 5: unknown image_id 99"),
    ({"annotations": [{"id": 5, "image_id": 7, "category_id": 42, "bbox": [0, 0, 1, 1]}]},
     "annotation 5: unknown category_id 42"),
    ({"annotations": [{"id": 5, "image_id": 7, "category_id": 3, "bbox": [0, 0, -1, 1]}]},
     "annotation 5: bbox must be"),
    ({"categories": [{"id": 3, "name": "a"}, {"id": 3, "name": "b"}]}, "duplicate category id 3"),
])
def test_coco_errors(tmp_path, patch, match):
    data = _coco(tmp_path)
    data.update(patch)
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=match):
        open_dataset(f"coco:{tmp_path / 'ann.json'}?images=images")


def test_coco_bad_json_and_option(tmp_path):
    (tmp_path / "x.json").write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DataError, match=r"x\.json:2: invalid JSON"):
        open_dataset(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b'{"images": [],\n "categories": ["\xff"]}')
    with pytest.raises(DataError, match=r"y\.json:2: not valid UTF-8"):
        open_dataset(f"coco:{tmp_path / 'y.json'}")
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(f"coco:{tmp_path / 'y.json'}?imgs=x")


# -- the generated world -------------------------------------------------------------------
def test_world_manifest_reads_with_boxes_and_masks(tmp_path):
    from vlens.world.dataset import make_dataset

    make_dataset("balanced", tmp_path / "w", n=6, seed=3, workers=1)
    ds = open_dataset(tmp_path / "w")  # the folder holding manifest.jsonl
    assert ds.__class__.__name__ == "ManifestSource" and len(ds) == 6
    rows = [json.loads(line) for line in (tmp_path / "w" / "manifest.jsonl").read_text()
            .splitlines()]
    for s, r in zip(ds, rows, strict=True):
        assert s.id == r["id"] and s.label == r["label"] and sample_error(s) is None
        assert s.box_labels == [r["label"]] and s.boxes == [[float(v) for v in r["box"]]]
        assert s.metadata["background"] == r["background"] and "path" not in s.metadata
        assert s.metadata["mask_area"] == r["mask_area"]
        img = load_sample_image(s)
        mask = load_mask(s.mask_uri)
        assert mask.shape == (img.height, img.width) and mask.sum() == r["mask_area"] > 0
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = s.boxes[0]
        # the recorded box encloses the visible object mask
        assert xs.min() >= x0 and ys.min() >= y0 and xs.max() < x1 and ys.max() < y1
    assert ds.class_names == sorted({r["label"] for r in rows})

"""Fuzz the manifest and COCO parsers: any input either parses or raises a `DataError`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlens.data import open_dataset
from vlens.errors import DataError

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["path", "label", "id", "mask_path", "box", "boxes", "box_labels", "x"])


def _parse(name: str, data: bytes, **kw) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        try:
            ds = open_dataset(str(p), **kw)
        except DataError as e:
            assert str(e)  # a message, never empty
            return
        for s in ds:
            assert isinstance(s.id, str) and s.uri


@SETTINGS
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes(data):
    for name in ("m.csv", "m.jsonl", "c.json"):
        _parse(name, data)


@SETTINGS
@given(st.lists(st.dictionaries(keys, json_values, max_size=6), max_size=5))
def test_fuzz_jsonl_records(records):
    _parse("m.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())


@SETTINGS
@given(st.lists(st.lists(st.text(max_size=10), min_size=1, max_size=4), max_size=5),
       st.sampled_from(["path,label", "path,label,box", "id,path,boxes", "label"]))
def test_fuzz_csv_rows(rows, header):
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([header.split(","), *rows])
    _parse("m.csv", buf.getvalue().encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["images", "annotations", "categories"]),
                       json_values | st.lists(st.dictionaries(
                           st.sampled_from(["id", "file_name", "image_id", "category_id",
                                            "bbox", "name", "segmentation", "area"]),
                           json_values, max_size=6), max_size=3), max_size=3))
def test_fuzz_coco(doc):
    _parse("c.json", json.dumps(doc).encode())


def test_nul_and_overlong_paths_are_error_rows(tmp_path):
    from vlens.data import load_sample_image, sample_error
    from vlens.errors import ImageError

    recs = [{"path": "a\x00b", "label": "x"}, {"path": "y" * 5000, "label": "x"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    a, b = list(open_dataset(tmp_path / "m.jsonl"))
    assert sample_error(a) == "invalid_path: path contains a NUL byte"
    with pytest.raises(ImageError) as ei:
        load_sample_image(a)
    assert ei.value.reason == "invalid_path"
    with pytest.raises(ImageError) as ei:  # too long for the OS: a per-sample error, no crash
        load_sample_image(b)
    assert ei.value.reason == "unreadable"

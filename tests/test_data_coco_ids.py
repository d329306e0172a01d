"""COCO ids that cannot key a lookup (lists, dicts, booleans) are a clear DataError."""

from __future__ import annotations

import json

import pytest

from vlens.data.coco import CocoSource
from vlens.errors import DataError

CASES = [
    ({"categories": [], "annotations": [{"image_id": []}], "images": []}, "unknown image_id"),
    ({"categories": [{"id": [1], "name": "a"}], "images": []}, "integer/string id"),
    ({"categories": [], "images": [{"id": {"x": 1}, "file_name": "a.png"}]},
     "integer/string id"),
    ({"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1, "file_name": "a.png"}],
      "annotations": [{"image_id": 1, "category_id": [1]}]}, "unknown category_id"),
]


@pytest.mark.parametrize(("doc", "message"), CASES)
def test_unhashable_ids_are_data_errors(tmp_path, doc, message):
    p = tmp_path / "coco.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message):
        CocoSource(p)

"""The predict cache key covers everything a prediction row depends on besides pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlens.engine.predict import PredictStage


class _Adapter:
    fingerprint = "fp"
    class_names = ["a", "b"]
    input_size = (8, 8)

    class task:  # noqa: N801 - a stand-in namespace
        name = "detection"


def test_key_changes_with_label_boxes_and_mask_content(tmp_path):
    stage = PredictStage(_Adapter())
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
    item = {"id": "1", "content_hash": "h", "label": "a", "boxes": [[0, 0, 4, 4]],
            "box_labels": ["a"], "mask_uri": str(mask)}
    k0 = stage.cache_key(item)
    assert k0 == stage.cache_key(dict(item))  # stable
    assert stage.cache_key({**item, "label": "b"}) != k0
    assert stage.cache_key({**item, "boxes": [[0, 0, 5, 4]]}) != k0
    assert stage.cache_key({**item, "box_labels": ["b"]}) != k0
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)  # same path, new content
    assert stage.cache_key(item) != k0
    assert stage.cache_key({"id": "2", "label": "a"}) is None  # unhashable file: never cached
    assert stage.cache_key({"id": "3", "content_hash": "h", "label": "a"}) == "h|a"

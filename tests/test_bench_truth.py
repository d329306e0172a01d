"""`vlens bench` translates the world's planted biases into scorable truth."""

from __future__ import annotations

from vlens.pipeline.bench import planted_truth, world_concept
from vlens.vlm.concepts import build_vocabulary
from vlens.world import WorldConfig


def test_every_planted_concept_is_in_the_default_vocabulary():
    vocab = {c.lower() for c in build_vocabulary([])}
    for name in WorldConfig.shipped():
        for b in WorldConfig.load(name).planted():
            if b["kind"] in ("spurious", "shortcut"):
                assert world_concept(b["attribute"], b["value"]).lower() in vocab, (name, b)


def test_planted_truth_from_manifest_rows():
    rows = [
        {"id": "a", "size": "small", "lighting": "dark", "label": "star", "true_label": "star"},
        {"id": "b", "size": "small", "lighting": "normal", "label": "cross",
         "true_label": "star"},
        {"id": "c", "size": "large", "lighting": "dark", "label": "heart",
         "true_label": "heart"},
    ]
    planted = [
        {"kind": "spurious", "class": "star", "attribute": "background", "value": "brick"},
        {"kind": "shortcut", "class": "cross", "attribute": "tag", "value": "tag"},
        {"kind": "rare_slice", "name": "small_dark", "where": {"size": "small",
                                                               "lighting": "dark"}},
        {"kind": "label_noise", "rate": 0.1},
    ]
    t = planted_truth(planted, rows)
    assert [(b["class"], b["concept"]) for b in t["biases"]] == [
        ("star", "brick wall"), ("cross", "text or tag")]
    assert t["slices"] == [{"name": "small_dark", "sample_ids": ["a"]}]
    assert t["label_errors"] == ["b"]
    assert "label_errors" not in planted_truth(planted[:1], rows)

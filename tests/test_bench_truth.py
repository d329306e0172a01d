"""`vlens bench` translates the world's planted biases into scorable truth."""

from __future__ import annotations

import json
import math

import pytest

from vlens.errors import ConfigError
from vlens.pipeline.bench import (
    BenchResult,
    aggregate,
    markdown_table,
    parse_seeds,
    planted_truth,
    world_concept,
    write_results,
)
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


def test_parse_seeds_and_errors():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-2") == [0, 1, 2] and parse_seeds(" 0, 3-4") == [0, 3, 4]
    for bad, msg in (("", "non-negative integers"), ("a", "non-negative integers"),
                     ("-1", "non-negative integers"), ("2-1", "range '2-1' is empty"),
                     ("1,1", "repeats a seed")):
        with pytest.raises(ConfigError, match=msg):
            parse_seeds(bad)


def test_aggregate_mean_sd_over_seeds(tmp_path):
    def r(config, seed, acc, p10):
        scores = {"slice_precision@10": p10} if p10 is not None else {}
        return BenchResult(config=config, seed=seed, accuracy=acc, scores=scores,
                           seconds=10.0 + seed, train_seconds=1.0, run_dir=tmp_path)

    res = [r("a", 0, 0.5, 0.2), r("a", 1, 0.7, 0.4), r("a", 2, 0.6, None), r("b", 0, 0.9, None)]
    agg = aggregate(res)
    assert [s["config"] for s in agg] == ["a", "b"] and agg[0]["seeds"] == [0, 1, 2]
    assert agg[0]["accuracy"]["mean"] == pytest.approx(0.6)
    assert agg[0]["accuracy"]["sd"] == pytest.approx(0.1)  # sample sd of 0.5, 0.6, 0.7
    assert agg[0]["slice_precision@10"] == {"mean": pytest.approx(0.3),
                                            "sd": pytest.approx(math.sqrt(0.02)), "n": 2}
    assert agg[1]["accuracy"] == {"mean": 0.9, "sd": None, "n": 1}
    assert "slice_precision@10" not in agg[1]
    md = markdown_table(agg, ["accuracy", "slice_precision@10"])
    assert md.splitlines()[2] == "| a | 0,1,2 | 0.600 ± 0.100 | 0.300 ± 0.141 |"
    assert md.splitlines()[3] == "| b | 0 | 0.900 | - |"
    write_results(res, tmp_path / "bench.json")
    runs = json.loads((tmp_path / "bench.json").read_text())
    assert [(x["config"], x["seed"]) for x in runs] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    summ = json.loads((tmp_path / "bench_summary.json").read_text())
    assert summ["markdown"].startswith("| world | seeds |")
    assert summ["summary"][0]["accuracy"]["n"] == 3



def test_find_runs_layouts(tmp_path):
    from vlens.pipeline.bench import find_runs

    def make(*parts, complete=True):
        d = tmp_path.joinpath(*parts)
        (d / "data").mkdir(parents=True)
        (d / "data" / "manifest.jsonl").write_text("")
        if complete:
            (d / "predictions.parquet").write_text("")
        return d

    one = make("label_noise")
    s10 = make("seed10", "rare_slice")
    s2 = make("seed2", "rare_slice")
    s2b = make("seed2", "label_noise")
    make("seed2", "half_done", complete=False)  # never predicted: not a run
    make("seedx", "label_noise")  # not a seed folder
    assert find_runs(tmp_path) == [one, s2b, s2, s10]
    assert find_runs(tmp_path, ["rare_slice"]) == [s2, s10]

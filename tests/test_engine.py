"""Engine + predict stage: exact predictions, error rows, cache hits, resume, streaming, CLI."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from test_engine_helpers import CLASSES, ColourAdapter, make_images
from vlens.engine import (
    ENGINES,
    LocalEngine,
    RunStore,
    TableSink,
    run_stage,
    samples_items,
)
from vlens.engine.cache import Cache
from vlens.engine.predict import PredictStage, item_to_sample, run_predict, sample_to_item
from vlens.errors import ConfigError, StoreError
from vlens.runs import load_run


def expected_row(uri: str, label: str) -> dict:
    """The colour model by hand: logits = 10 * per-channel mean of the 8x8 image in [0,1]."""
    arr = np.asarray(Image.open(uri).convert("RGB"), dtype=np.float64) / 255.0
    logits = 10 * arr.reshape(-1, 3).mean(0)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    k = int(np.argmax(p))
    return {"pred": CLASSES[k], "confidence": p[k], "correct": CLASSES[k] == label,
            "loss": -math.log(p[CLASSES.index(label)])}


@pytest.fixture
def world(tmp_path):
    return make_images(tmp_path / "imgs", 40, bad=3)


def test_predict_rows_exact_and_error_rows_kept(tmp_path, world):
    res = run_predict(ColourAdapter(), world, tmp_path / "run", batch_size=8, progress=False)
    run = load_run(tmp_path / "run")
    p = run.predictions.set_index("id")
    assert len(p) == 43 and res.n == 43 and res.errors == 3
    assert sorted(p.index[p["status"] == "error"]) == ["bad000", "bad001", "bad002"]
    assert p.loc["bad000", "error"].startswith("zero_bytes: ")
    assert p.loc["bad001", "error"].startswith("not_an_image: ")
    assert p.loc["bad000", "label"] == "red" and pd.isna(p.loc["bad000", "pred"])
    ok = p[p["status"] == "ok"]
    for s in world.samples[:40]:
        exp = expected_row(s.uri, s.label)
        row = ok.loc[s.id]
        assert row["pred"] == exp["pred"] and bool(row["correct"]) == exp["correct"]
        assert row["confidence"] == pytest.approx(exp["confidence"], rel=1e-5)
        assert row["loss"] == pytest.approx(exp["loss"], rel=1e-4, abs=1e-6)  # float32
        assert row["label"] == s.label
    # every 7th label is wrong on purpose: ids 0,7,...,35 -> 6 wrong of 40
    assert res.accuracy == pytest.approx(34 / 40)
    assert res.summary["error_reasons"] == {"zero_bytes": 2, "not_an_image": 1}
    # samples.parquet: contract columns, exact content hashes, metadata columns
    s = run.samples.set_index("id")
    assert {"uri", "label", "status", "error", "content_hash", "meta_colour",
            "meta_index"} <= set(s.columns)
    first = world.samples[0]
    with open(first.uri, "rb") as f:
        assert s.loc[first.id, "content_hash"] == hashlib.sha256(f.read()).hexdigest()
    assert s.loc["s00004", "meta_colour"] == "green" and s.loc["s00004", "meta_index"] == 4
    assert (s["status"] == "error").sum() == 3 and s.loc["bad001", "status"] == "error"
    assert run.config["command"] == "predict" and run.config["class_names"] == CLASSES
    assert not RunStore(tmp_path / "run").parts_dir("predictions").exists()


def test_cache_hits_on_rerun_count_stage_calls(tmp_path, world):
    cache = Cache(tmp_path / "cache")
    a1 = ColourAdapter()
    r1 = run_predict(a1, world, tmp_path / "run1", batch_size=8, cache=cache, progress=False)
    assert (r1.stats.computed, r1.stats.cached, r1.stats.skipped) == (43, 0, 0)
    assert a1.forward_calls == 5  # 6 batches of 8; the last holds only the 3 bad files
    assert cache.stats()["entries"] == 40  # error rows are not cached
    a2 = ColourAdapter()
    r2 = run_predict(a2, world, tmp_path / "run2", batch_size=8, cache=cache, progress=False)
    assert (r2.stats.computed, r2.stats.cached) == (3, 40)  # only the bad images again
    assert a2.forward_calls == 0
    t1 = load_run(tmp_path / "run1").predictions
    t2 = load_run(tmp_path / "run2").predictions
    pd.testing.assert_frame_equal(t1, t2)
    # same run dir again: ok rows resumed from the store, error rows retried
    a3 = ColourAdapter()
    r3 = run_predict(a3, world, tmp_path / "run2", batch_size=8, cache=cache, progress=False)
    # resume: ok rows are kept, the 3 error rows are retried (still errors, same table)
    assert (r3.stats.skipped, r3.stats.computed, r3.stats.cached) == (40, 3, 0)
    pd.testing.assert_frame_equal(load_run(tmp_path / "run2").predictions, t2)


def test_cache_key_includes_label_and_model(tmp_path, world):
    cache = Cache(tmp_path / "cache")
    run_predict(ColourAdapter(), world, tmp_path / "r1", cache=cache, progress=False)
    already_blue = sum(s.label == "blue" for s in world.samples[:40])
    assert already_blue == 13  # 13 blue images; 14, 35 relabelled away; 7, 28 relabelled in
    for s in world.samples:  # relabel everything: correct/loss change, so no hit
        s.label = "blue"
    a = ColourAdapter()
    r = run_predict(a, world, tmp_path / "r2", cache=cache, progress=False)
    assert r.stats.cached == already_blue  # only images whose label was already blue hit
    other = ColourAdapter()
    other.fingerprint = "colour-v2"
    assert PredictStage(other).fingerprint != PredictStage(a).fingerprint
    with pytest.raises(ConfigError, match="different model"):
        run_predict(other, world, tmp_path / "r2", cache=cache, progress=False)


def test_limit_and_partial_then_full(tmp_path, world):
    r = run_predict(ColourAdapter(), world, tmp_path / "run", limit=10, progress=False)
    assert r.n == 10 and r.stats.total == 10
    r = run_predict(ColourAdapter(), world, tmp_path / "run", progress=False)
    assert (r.stats.skipped, r.stats.computed, r.n) == (10, 33, 43)
    with pytest.raises(ConfigError):
        run_predict(ColourAdapter(), world, tmp_path / "run", limit=-1, progress=False)
    with pytest.raises(ConfigError, match="unknown engine 'spark'; known: local, ray"):
        run_predict(ColourAdapter(), world, tmp_path / "new", engine="spark", progress=False)
    assert not (tmp_path / "new").exists()


class Doubler:
    name = "double"
    fingerprint = "double-v1"

    def __init__(self):
        self.calls = []

    def __call__(self, batch):
        self.calls.append(len(batch))
        return [{"id": it["id"], "y": it["x"] * 2} if it["x"] >= 0 else
                {"id": it["id"], "status": "error", "error": "negative"} for it in batch]


def test_engine_streams_with_bounded_lookahead(tmp_path):
    store = RunStore(tmp_path)
    pulled = {"n": 0, "max_ahead": 0}

    class Spy(TableSink):
        def write(self, items, rows):
            super().write(items, rows)
            self.written = getattr(self, "written", 0) + len(rows)

    sink = Spy(store, "t")

    def gen():
        for i in range(1000):
            pulled["n"] += 1
            ahead = pulled["n"] - getattr(sink, "written", 0)
            pulled["max_ahead"] = max(pulled["max_ahead"], ahead)
            yield {"id": f"{i:04d}", "x": i if i % 100 else -1, "content_hash": f"h{i}"}

    stage = Doubler()
    stats = LocalEngine().run(stage, gen(), sink, batch_size=64, progress=False)
    assert pulled["max_ahead"] <= 64  # never more than one batch in memory
    assert stats.total == 1000 and stats.computed == 1000 and stats.errors == 10
    df = store.read_table("t")
    assert df["y"].dropna().sum() == 2 * (sum(range(1000)) - sum(range(0, 1000, 100)))
    assert df.loc[df["status"] == "error", "error"].unique().tolist() == ["negative"]
    assert stage.calls == [64] * 15 + [40]


def test_sink_compacts_parts_periodically(tmp_path):
    store = RunStore(tmp_path)
    sink = TableSink(store, "t", derived={"d": lambda items, rows: [
        {"id": it["id"], "x": it["x"]} for it in items]}, compact_every=4)
    items = [{"id": f"{i:03d}", "x": i} for i in range(50)]
    seen_parts = []

    class Spy(Doubler):
        def __call__(self, batch):
            seen_parts.append(len(list(store.parts_dir("t").glob("part-*.parquet")))
                              if store.parts_dir("t").exists() else 0)
            return super().__call__(batch)

    LocalEngine().run(Spy(), items, sink, batch_size=3, progress=False)
    assert max(seen_parts) <= 3 and len(seen_parts) == 17
    assert store.read_table("t")["y"].tolist() == [2 * i for i in range(50)]
    assert store.read_table("d")["x"].tolist() == list(range(50))


def test_stage_contract_violations_raise(tmp_path):
    class Short(Doubler):
        def __call__(self, batch):
            return super().__call__(batch)[:-1]

    class Swapped(Doubler):
        def __call__(self, batch):
            return list(reversed(super().__call__(batch)))

    items = [{"id": str(i), "x": i} for i in range(3)]
    with pytest.raises(RuntimeError, match="returned 2 rows for 3 inputs"):
        LocalEngine().run(Short(), items, TableSink(RunStore(tmp_path), "a"), progress=False)
    with pytest.raises(RuntimeError, match="returned row id"):
        LocalEngine().run(Swapped(), items, TableSink(RunStore(tmp_path), "b"), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        LocalEngine().run(Doubler(), items, TableSink(RunStore(tmp_path), "c"), batch_size=0)
    assert "local" in ENGINES.names()


def test_cli_predict_and_resume(tmp_path, world):
    from vlens.cli.apps import app

    root = world.root
    out = tmp_path / "runs" / "x"
    args = ["predict", "--model", "enginetest", "--data", f"enginetest:{root}", "--out",
            str(out), "--batch-size", "16", "--cache", str(tmp_path / "c"), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "43 samples" in r.output and "accuracy 0.8500" in r.output
    assert "error rows 3" in r.output and "computed 43" in r.output
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "resumed 40" in r.output and "computed 3" in r.output
    run = load_run(out)
    assert run.config["model"] == "enginetest" and run.config["data"].startswith("enginetest:")
    assert len(run.predictions) == 43 and len(run.samples) == 43
    r = CliRunner().invoke(app, [*args[:-3], "--no-cache", "--out", str(tmp_path / "y")])
    assert r.exit_code == 0 and "cached 0" in r.output, r.output


class MetaStage:
    """A later stage over a predicted run: reads only item fields (no images)."""

    name = "meta"
    fingerprint = "meta-v1"

    def __init__(self):
        self.n = 0

    def __call__(self, batch):
        self.n += len(batch)
        return [{"id": it["id"], "colour_matches_label": it["metadata"]["colour"] == it["label"],
                 "hash_prefix": it["content_hash"][:8]} for it in batch]


def test_run_stage_over_samples_items(tmp_path, world):
    run_predict(ColourAdapter(), world, tmp_path / "run", progress=False)
    items = list(samples_items(tmp_path / "run", chunk=7))
    assert [it["id"] for it in items] == [f"s{i:05d}" for i in range(40)]  # bad ones skipped
    assert items[4]["metadata"] == {"colour": "green", "index": 4}
    assert len(list(samples_items(tmp_path / "run", only_ok=False))) == 43
    cache = Cache(tmp_path / "cache")
    st = MetaStage()
    stats = run_stage(st, samples_items(tmp_path / "run"), tmp_path / "run", "meta",
                      cache=cache, progress=False)
    assert (stats.computed, st.n) == (40, 40)
    t = load_run(tmp_path / "run").table("meta").set_index("id")
    assert int((~t["colour_matches_label"]).sum()) == 6  # the relabelled every-7th images
    assert t.loc["s00000", "hash_prefix"] == items[0]["content_hash"][:8]
    again = run_stage(st, samples_items(tmp_path / "run"), tmp_path / "run", "meta",
                      cache=cache, progress=False)
    assert (again.skipped, st.n) == (40, 40)
    other = MetaStage()
    other.fingerprint = "meta-v2"
    with pytest.raises(ConfigError, match="another meta configuration"):
        run_stage(other, samples_items(tmp_path / "run"), tmp_path / "run", "meta")
    with pytest.raises(StoreError, match="no samples.parquet"):
        list(samples_items(tmp_path))


def test_missing_and_flagged_samples_become_error_rows(tmp_path, world, monkeypatch):
    from vlens.data.base import Sample
    from vlens.data.paths import ERROR_KEY

    secret = tmp_path / "outside.png"
    secret.write_bytes(b"not for reading")
    world.samples[:] = world.samples[:3] + [
        Sample(id="gone", uri=str(tmp_path / "nope.png"), label="red"),
        Sample(id="escape", uri=str(secret), label="red",
               metadata={ERROR_KEY: "path_outside_root: '../outside.png' escapes the root"}),
        Sample(id="escape2", uri=str(secret), label="red",
               error="path_outside_root: '../outside.png' escapes the root"),
    ]
    opened = []
    import vlens.engine.base as eb

    real = eb.content_hash
    monkeypatch.setattr(eb, "content_hash", lambda p: opened.append(p) or real(p))
    res = run_predict(ColourAdapter(), world, tmp_path / "run", progress=False)
    p = load_run(tmp_path / "run").predictions.set_index("id")
    assert p.loc["gone", "error"].startswith("missing: ")
    for sid in ("escape", "escape2"):
        assert p.loc[sid, "error"] == "path_outside_root: '../outside.png' escapes the root"
    assert str(secret) not in opened  # a flagged file is never opened, not even to hash it
    s = load_run(tmp_path / "run").samples.set_index("id")
    assert pd.isna(s.loc["gone", "content_hash"]) and pd.isna(s.loc["escape", "content_hash"])
    assert "meta__error" not in s.columns
    assert res.summary["error_reasons"] == {"missing": 1, "path_outside_root": 2}
    assert item_to_sample(sample_to_item(world.samples[-1])).error.startswith("path_outside")

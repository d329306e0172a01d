"""`ManifestSource` streams: opening validates the file but keeps no samples; iterating
re-parses it. And the predict summary is computed from the stored table in batches."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from vlens.data.manifest import ManifestSource
from vlens.engine.predict import summarize, summarize_table
from vlens.engine.store import RunStore
from vlens.errors import DataError

N = 20_000


def _write(path, n, extra=None):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = {"path": f"img/{i % 7}/{i}.png", "label": f"c{i % 3}", "id": f"s{i}",
                   "meta_a": i, "note": "x" * 40}
            f.write(json.dumps(rec) + "\n")
        for line in extra or ():
            f.write(line + "\n")
    return path


def test_open_keeps_no_samples_and_iterates_lazily(tmp_path):
    m = _write(tmp_path / "m.jsonl", N)
    tracemalloc.start()
    try:
        ds = ManifestSource(m)
        held, _ = tracemalloc.get_traced_memory()
        it = iter(ds)
        first = next(it)
        after_one, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the parsed samples took ~3.5 KB each (70 MB here); now only count + labels remain
    assert held < 1_000_000, held
    assert after_one - held < 200_000
    assert len(ds) == N and ds.class_names == ["c0", "c1", "c2"]
    assert first.id == "s0" and first.label == "c0" and first.metadata["meta_a"] == 0
    assert first.uri == str(tmp_path / "img/0/0.png")
    assert "20000 samples" in repr(ds)


def test_iterating_twice_gives_the_same_samples(tmp_path):
    m = _write(tmp_path / "m.jsonl", 50)
    ds = ManifestSource(m)
    a, b = list(ds), list(ds)
    assert a == b and len(a) == len(ds) == 50
    assert [s.id for s in a] == [f"s{i}" for i in range(50)]


def test_errors_still_raised_when_opened_with_line_numbers(tmp_path):
    m = _write(tmp_path / "dup.jsonl", 100, extra=[json.dumps({"path": "z.png", "id": "s7"})])
    with pytest.raises(DataError, match=r"dup.jsonl:101: duplicate id 's7' \(first seen on "
                                        r"line 8\)"):
        ManifestSource(m)
    m = _write(tmp_path / "bad.jsonl", 100, extra=["{not json"])
    with pytest.raises(DataError, match=r"bad.jsonl:101: invalid JSON"):
        ManifestSource(m)
    m = _write(tmp_path / "lab.jsonl", 10, extra=[json.dumps({"path": "a.png", "label": "zz"})])
    with pytest.raises(DataError, match=r"lab.jsonl:11: unknown label 'zz'"):
        ManifestSource(m, class_names=["c0", "c1", "c2"])


def test_paths_outside_root_are_flagged_on_iteration(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,label\nok.png,a\n../../etc/passwd,b\n/abs.png,a\n")
    ds = ManifestSource(m)
    got = {s.label + s.metadata.get("_error", "")[:17] for s in ds}
    assert len(ds) == 3
    assert sorted(got) == ["a", "apath_outside_root", "bpath_outside_root"]


def _preds(n, err_every=5):
    rows = []
    for i in range(n):
        if i % err_every == 0:
            rows.append({"id": f"s{i:05d}", "status": "error", "correct": None,
                         "error": ("decode_failed: x" if i % 2 else "missing: y")})
        else:
            rows.append({"id": f"s{i:05d}", "status": "ok", "correct": bool(i % 3),
                         "error": None})
    return pd.DataFrame(rows)


def test_summarize_table_equals_in_memory_summary(tmp_path):
    store = RunStore(tmp_path / "run")
    df = _preds(1000)
    store.write_table("predictions", df)
    got = summarize_table(store, "predictions")
    want = summarize(df)
    assert got == want
    ok = df[df["status"] == "ok"]
    assert got["accuracy"] == pytest.approx(float(np.mean(ok["correct"].astype(float))))
    assert got["errors"] == 200 and got["error_reasons"] == {"decode_failed": 100, "missing": 100}


def test_summarize_table_with_pending_parts_dedups_by_id(tmp_path):
    store = RunStore(tmp_path / "run")
    df = _preds(20)
    store.append("predictions", df)
    fixed = df[df["status"] == "error"].assign(status="ok", correct=True, error=None)
    store.append("predictions", fixed)  # retried rows replace the error rows
    got = summarize_table(store, "predictions")
    assert got["n"] == 20 and got["errors"] == 0
    assert got == summarize(store.read_table("predictions"))


def test_summarize_table_missing_or_empty(tmp_path):
    store = RunStore(tmp_path / "run")
    assert summarize_table(store, "predictions") == {"n": 0, "accuracy": None, "errors": 0,
                                                     "error_reasons": {}}

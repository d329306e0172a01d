"""RunStore: atomic writes, secret scrubbing, incremental parts, finalize, load_run."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from vlens.engine.store import REDACTED, RunStore, atomic_open, scrub_secrets
from vlens.errors import StoreError
from vlens.runs import load_run


def test_atomic_write_failing_writer_keeps_previous_file(tmp_path):
    target = tmp_path / "a.bin"
    with atomic_open(target) as f:
        f.write(b"first version")

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), atomic_open(target) as f:
        f.write(b"half of the second vers")
        raise Boom()
    assert target.read_bytes() == b"first version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # temp file removed


def test_failing_table_write_keeps_previous_table(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_table("predictions", pd.DataFrame({"id": ["a", "b"], "pred": [1, 2]}))
    bad = pd.DataFrame({"id": ["c"], "pred": [object()]})  # arrow cannot convert this
    with pytest.raises(StoreError, match="cannot store table"):
        store.write_table("predictions", bad)
    df = store.read_table("predictions")
    assert df.to_dict("list") == {"id": ["a", "b"], "pred": [1, 2]}


def test_partial_temp_part_is_never_read(tmp_path):
    store = RunStore(tmp_path)
    store.append("t", pd.DataFrame({"id": ["a"], "v": [1.0]}))
    parts = store.parts_dir("t")
    # what a SIGKILL mid-write leaves behind: a truncated temp file
    (parts / ".part-00001.parquet.abc123.tmp").write_bytes(b"PAR1\x00\x01garbage")
    df = store.read_table("t")
    assert df.to_dict("list") == {"id": ["a"], "v": [1.0]}
    # the next append does not collide with the temp file, and finalize ignores it
    store.append("t", pd.DataFrame({"id": ["b"], "v": [2.0]}))
    out = store.finalize("t")
    assert out.to_dict("list") == {"id": ["a", "b"], "v": [1.0, 2.0]}
    assert not parts.exists()


def test_append_finalize_dedups_latest_and_sorts(tmp_path):
    store = RunStore(tmp_path)
    store.append("p", pd.DataFrame({"id": ["c", "a"], "v": [3, 1]}))
    store.append("p", pd.DataFrame({"id": ["b", "a"], "v": [2, 10]}))
    assert store.ids("p") == {"a", "b", "c"}
    assert store.read_table("p").set_index("id")["v"].to_dict() == {"a": 10, "b": 2, "c": 3}
    df = store.finalize("p")
    assert df.to_dict("list") == {"id": ["a", "b", "c"], "v": [10, 2, 3]}
    assert store.table_path("p").exists() and not store.parts_dir("p").exists()
    # appending after finalize layers new parts over the compacted file
    store.append("p", pd.DataFrame({"id": ["d", "b"], "v": [4, 20]}))
    assert store.read_table("p").set_index("id")["v"].to_dict() == {
        "a": 10, "b": 20, "c": 3, "d": 4}
    assert store.finalize("p")["v"].tolist() == [10, 20, 3, 4]


def test_append_ignores_empty_and_mixed_null_columns(tmp_path):
    store = RunStore(tmp_path)
    assert store.append("p", pd.DataFrame({"id": []})) is None
    store.append("p", pd.DataFrame({"id": ["x"], "pred": [None], "status": ["error"]}))
    store.append("p", pd.DataFrame({"id": ["y"], "pred": ["cat"], "status": ["ok"]}))
    df = store.finalize("p")
    assert df["pred"].isna().tolist() == [True, False] and df["pred"][1] == "cat"
    assert df["status"].tolist() == ["error", "ok"]


def test_secrets_scrubbed_from_config(tmp_path):
    store = RunStore(tmp_path)
    cfg = {
        "model": "demo",
        "vlm": {"backend": "openai:gpt", "api_key": "sk-LIVE-123", "base_url": "http://x"},
        "HF_TOKEN": "hf_abc",
        "auth": {"password": "hunter2"},
        "steps": [{"client_secret": "zzz", "n": 3}],
        "max_tokens_env": None,
    }
    written = store.write_config(cfg)
    text = (tmp_path / "config.yaml").read_text()
    for secret in ("sk-LIVE-123", "hf_abc", "hunter2", "zzz"):
        assert secret not in text
    back = yaml.safe_load(text)
    assert back == written
    assert back["vlm"] == {"backend": "openai:gpt", "api_key": REDACTED, "base_url": "http://x"}
    assert back["HF_TOKEN"] == REDACTED and back["auth"] == REDACTED
    assert back["steps"] == [{"client_secret": REDACTED, "n": 3}]
    assert back["model"] == "demo"
    assert cfg["vlm"]["api_key"] == "sk-LIVE-123"  # the caller's dict is untouched
    assert scrub_secrets({"tokenizer_name": "x"}) == {"tokenizer_name": REDACTED}


def test_bad_names_and_escaping_artefacts_rejected(tmp_path):
    store = RunStore(tmp_path)
    for bad in ("../x", "a/b", "", "x.parquet"):
        with pytest.raises(StoreError, match="bad table name"):
            store.append(bad, pd.DataFrame({"id": ["a"]}))
    with pytest.raises(StoreError, match="escapes"):
        store.write_artefact("../../etc/evil.png", b"x")
    rel = store.write_artefact("saliency/views/s1.masked.png", b"\x89PNG")
    assert rel == "saliency/views/s1.masked.png"
    assert (tmp_path / rel).read_bytes() == b"\x89PNG"
    rel2 = store.write_artefact(
        "saliency/maps/shard-0.npz",
        lambda f: np.savez_compressed(f, ids=np.array(["s1"]), maps=np.ones((1, 2, 2), np.float16)),
    )
    with np.load(tmp_path / rel2, allow_pickle=False) as z:
        assert z["maps"].shape == (1, 2, 2) and z["ids"].tolist() == ["s1"]


def test_load_run_reads_tables_config_findings(tmp_path):
    store = RunStore(tmp_path / "r")
    store.write_config({"model": "m", "token": "t0ps3cret"})
    store.write_table("samples", pd.DataFrame({"id": ["a", "b"], "label": ["x", "y"]}))
    store.append("predictions", pd.DataFrame({"id": ["a"], "pred": ["x"], "correct": [True]}))
    store.write_json("findings.json", {"findings": [{"id": "f1"}]})
    run = load_run(tmp_path / "r")
    assert run.config == {"model": "m", "token": REDACTED}
    assert run.samples["id"].tolist() == ["a", "b"]
    assert run.predictions.to_dict("list") == {"id": ["a"], "pred": ["x"], "correct": [True]}
    assert run.saliency is None and run.vlm is None and run.embeddings is None
    assert run.findings == {"findings": [{"id": "f1"}]}
    j = run.joined()
    j = j.set_index("id").sort_index()
    assert j.loc["a", "pred"] == "x" and j["pred"].isna().tolist() == [False, True]
    assert "samples=2" in repr(run) and "predictions=1" in repr(run)
    with pytest.raises(StoreError, match="not found"):
        load_run(tmp_path / "nope")


def test_store_table_roundtrip_rate_smoke(tmp_path):
    """Round trip of a 20k-row table through parts (values exact)."""
    store = RunStore(tmp_path)
    n = 20_000
    for k in range(10):
        ids = [f"s{i:06d}" for i in range(k * n // 10, (k + 1) * n // 10)]
        store.append("t", pd.DataFrame({"id": ids, "v": np.arange(len(ids), dtype=np.float32)}))
    store.finalize("t")  # out of core at this size: returns None
    df = store.read_table("t")
    assert len(df) == n and df["id"].is_monotonic_increasing
    assert float(df["v"].sum()) == 10 * sum(range(n // 10))
    assert os.path.getsize(store.table_path("t")) > 0

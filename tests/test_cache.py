"""Cache: safe codec round trips, get/put semantics, two processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from vlens.engine.cache import Cache, decode_row, default_cache_dir, encode_row


def test_codec_round_trip_without_pickle():
    row = {
        "pred": "cat",
        "confidence": np.float32(0.75),
        "n": np.int64(3),
        "ok": True,
        "none": None,
        "nan": float("nan"),
        "topk": ["cat", "dog"],
        "emb": np.arange(6, dtype=np.float16).reshape(2, 3),
        "raw": b"\x00\xff",
        "nested": {"a": [1, 2.5]},
    }
    back = decode_row(encode_row(row))
    assert back["pred"] == "cat" and back["confidence"] == 0.75 and back["n"] == 3
    assert back["ok"] is True and back["none"] is None and np.isnan(back["nan"])
    assert back["emb"].dtype == np.float16 and back["emb"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["raw"] == b"\x00\xff" and back["nested"] == {"a": [1, 2.5]}
    assert b"pickle" not in encode_row(row)
    with pytest.raises(ValueError):  # object arrays would need pickle: refused on load
        decode_row(b'{"x":{"__nd__":"' + _object_npy_b64() + b'"}}')


def _object_npy_b64() -> bytes:
    import base64
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return base64.b64encode(buf.getvalue())


def test_get_put_by_fingerprint_and_stats(tmp_path):
    c = Cache(tmp_path)
    assert c.get_many("fp1", ["k1", "k2"]) == {}
    assert c.put_many("fp1", {"k1": {"v": 1}, "k2": {"v": 2}}) == 2
    c.put_many("fp2", {"k1": {"v": 100}})
    assert c.get_many("fp1", ["k1", "k2", "k3"]) == {"k1": {"v": 1}, "k2": {"v": 2}}
    assert c.get_many("fp2", ["k1", "k2"]) == {"k1": {"v": 100}}
    c.put_many("fp1", {"k1": {"v": -1}})  # replace
    assert c.get_many("fp1", ["k1"]) == {"k1": {"v": -1}}
    s = c.stats()
    assert s["entries"] == 3 and s["fingerprints"] == {"fp1": 2, "fp2": 1}
    assert s["hits"] == 4 and s["misses"] == 4 and s["puts"] == 4
    assert s["bytes"] > 0 and s["path"].endswith("cache.sqlite")
    # a second handle (e.g. the next run) sees the same entries; WAL mode is on
    c2 = Cache(tmp_path / "cache.sqlite")
    assert c2.get_many("fp2", ["k1"]) == {"k1": {"v": 100}}
    mode = sqlite3.connect(c2.db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    c2.clear("fp2")
    assert c.get_many("fp2", ["k1"]) == {} and c.stats()["entries"] == 2


def test_many_keys_are_chunked(tmp_path):
    c = Cache(tmp_path)
    items = {f"k{i}": {"i": i} for i in range(1234)}
    c.put_many("fp", items)
    got = c.get_many("fp", [f"k{i}" for i in range(0, 1300)])
    assert len(got) == 1234 and got["k1233"] == {"i": 1233}


def test_default_location_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("VLENS_CACHE_DIR", str(tmp_path / "cc"))
    assert default_cache_dir() == tmp_path / "cc"
    c = Cache()
    assert c.db_path == tmp_path / "cc" / "cache.sqlite" and c.db_path.exists()
    monkeypatch.delenv("VLENS_CACHE_DIR")
    assert str(default_cache_dir()).endswith(".cache/vlens")


def _writer(path: str, who: int, n: int, batch: int) -> None:
    c = Cache(path)
    for start in range(0, n, batch):
        c.put_many(
            "shared",
            {f"{who}-{i}": {"who": who, "i": i, "arr": np.full(4, i, np.int32)}
             for i in range(start, min(n, start + batch))},
        )
        # read while the other process writes: must never fail with 'database is locked'
        assert len(c.get_many("shared", [f"{who}-{start}"])) == 1
    c.close()


def test_two_processes_write_concurrently(tmp_path):
    path = str(tmp_path / "cache")
    Cache(path).close()  # create the schema once (the race on creation is also handled)
    ctx = mp.get_context("fork")  # fork: no re-import; the cache reconnects per pid
    n, batch = 1500, 25
    procs = [ctx.Process(target=_writer, args=(path, who, n, batch)) for who in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    c = Cache(path)
    keys = [f"{w}-{i}" for w in (0, 1) for i in range(n)]
    got = c.get_many("shared", keys)
    assert len(got) == 2 * n
    assert got["1-1499"]["arr"].tolist() == [1499] * 4 and got["0-7"]["who"] == 0
    assert c.integrity_check() == "ok"
    assert c.stats()["entries"] == 2 * n

"""Engine benchmarks: run store, cache, engine overhead and peak memory vs dataset size.

    python3 benchmarks/bench_engine.py                 # defaults (about a minute)
    python3 benchmarks/bench_engine.py --rows 200000 --sizes 1000 10000 100000 --json out.json

The stage here is trivial (no images, no model) so the numbers are the engine's own
overhead: what a real stage pays on top of its forward passes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _rows(start: int, n: int) -> pd.DataFrame:
    ids = [f"s{i:08d}" for i in range(start, start + n)]
    rng = np.random.default_rng(start)
    return pd.DataFrame({
        "id": ids, "label": rng.choice(["a", "b", "c"], n), "pred": rng.choice(["a", "b"], n),
        "confidence": rng.random(n).astype(np.float32), "correct": rng.random(n) > 0.3,
        "loss": rng.random(n), "status": "ok", "error": None,
    })


def bench_store(rows: int, batch: int) -> dict:
    from vlens.engine.store import RunStore

    with tempfile.TemporaryDirectory() as d:
        store = RunStore(d)
        frames = [_rows(i, min(batch, rows - i)) for i in range(0, rows, batch)]
        t = time.perf_counter()
        for f in frames:
            store.append("predictions", f)
        t_append = time.perf_counter() - t
        t = time.perf_counter()
        ids = store.ids("predictions")
        t_ids = time.perf_counter() - t
        t = time.perf_counter()
        store.finalize("predictions")  # out of core past 128 KiB: returns None
        t_fin = time.perf_counter() - t
        t = time.perf_counter()
        df2 = store.read_table("predictions")
        t_read = time.perf_counter() - t
        assert len(ids) == len(df2) == rows
    return {
        "rows": rows, "batch": batch,
        "append_rows_per_s": rows / t_append, "append_ms_per_batch": 1000 * t_append / len(frames),
        "resume_ids_s": t_ids, "finalize_s": t_fin, "read_rows_per_s": rows / t_read,
    }


def bench_cache(n: int) -> dict:
    from vlens.engine.cache import Cache

    with tempfile.TemporaryDirectory() as d:
        c = Cache(d)
        items = {f"{i:064x}": {"pred": "a", "confidence": 0.5, "topk_probs": [0.5, 0.3]}
                 for i in range(n)}
        keys = list(items)
        t = time.perf_counter()
        for i in range(0, n, 256):
            c.put_many("fp", {k: items[k] for k in keys[i:i + 256]})
        t_put = time.perf_counter() - t
        t = time.perf_counter()
        got = 0
        for i in range(0, n, 256):
            got += len(c.get_many("fp", keys[i:i + 256]))
        t_get = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, n, 256):
            c.get_many("other", keys[i:i + 256])
        t_miss = time.perf_counter() - t
        assert got == n
        return {"entries": n, "put_per_s": n / t_put, "get_hit_per_s": n / t_get,
                "get_miss_per_s": n / t_miss, "db_bytes": c.stats()["bytes"]}


class Trivial:
    """y = 2x; no model: measures the engine, the cache and the store only."""

    name = "trivial"
    fingerprint = "trivial-v1"

    def __call__(self, batch):
        return [{"id": it["id"], "y": it["x"] * 2, "status": "ok", "error": None} for it in batch]


def _items(n: int):
    for i in range(n):
        yield {"id": f"s{i:08d}", "x": i, "content_hash": f"{i:064x}"}


def bench_engine(n: int, batch: int) -> dict:
    from vlens.engine import LocalEngine, RunStore, TableSink
    from vlens.engine.cache import Cache

    out = {"items": n, "batch": batch}
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(Path(d) / "cache")
        for label, run_dir in (("cold", "a"), ("warm_cache", "b"), ("resume_all_done", "b")):
            sink = TableSink(RunStore(Path(d) / run_dir), "t")
            s = LocalEngine().run(Trivial(), _items(n), sink, cache=cache, batch_size=batch,
                                  progress=False)
            out[f"{label}_items_per_s"] = n / s.seconds
            out[f"{label}_counts"] = [s.computed, s.cached, s.skipped]
    return out


def peak_rss_child(n: int, batch: int) -> float:
    """Peak RSS (MiB) of a fresh process running the engine over n items (cold, with cache)."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import bench_engine as b; "
        f"b.bench_engine({n}, {batch}); "
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from this (bigger) parent
        "print(next(int(x.split()[1]) for x in open('/proc/self/status') "
        "if x.startswith('VmHWM')) / 1024)"
    )
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}  # as the `vlens` CLI sets it
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=env)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cache-entries", type=int, default=50_000)
    ap.add_argument("--engine-items", type=int, default=20_000)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    res = {
        "store": bench_store(a.rows, a.batch),
        "cache": bench_cache(a.cache_entries),
        "engine": bench_engine(a.engine_items, a.batch),
        "peak_rss_mib": {str(n): peak_rss_child(n, a.batch) for n in a.sizes},
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    for section, vals in res.items():
        if isinstance(vals, dict):
            print(f"[{section}]")
            for k, v in vals.items():
                print(f"  {k:28s} {v:,.1f}" if isinstance(v, float) else f"  {k:28s} {v}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

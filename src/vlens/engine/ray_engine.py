"""The Ray engine: the same stages, run by Ray Data ``map_batches`` on an actor pool.

Each actor receives the stage once (weights load once per worker) and runs the shared
`process_batch` (cache lookup, stage on misses, cache write) on its batches; the driver
streams finished batches back with ``iter_batches`` and appends them to the sink, so the
resume and "a crash loses at most the batches in flight" guarantees are the local engine's.

Items cross process boundaries as JSON strings (one column), rows come back encoded with
the cache codec: no pickled user data, and no Arrow schema guessing on nested metadata.
Items are fed in windows of `window` items (one Ray Data execution each) so the driver never
holds the whole item list; the actor pool is rebuilt per window, which amortises the weight
load over `window` items. The cache is SQLite: workers must share a filesystem with the
driver (true for local Ray; on a multi-node cluster point ``--cache`` at shared storage).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from vlens.engine.base import ENGINES, RunStats, Sink, batched, process_batch
from vlens.engine.cache import Cache, decode_row, encode_row
from vlens.engine.local import make_progress
from vlens.engine.stage import Row, stage_key
from vlens.errors import ConfigError


class _StageActor:
    """One per Ray worker: holds the stage (and its model) and a cache handle."""

    def __init__(self, stage: Any, cache_path: str | None) -> None:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("VLENS_TORCH_THREADS", "1"))))
        self.stage = stage
        setup = getattr(stage, "setup", None)
        if setup is not None:
            setup()
        self.cache = Cache(cache_path) if cache_path else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [json.loads(s) for s in batch["item"]]
        sources: list[str] = []
        rows = process_batch(self.stage, items, self.cache, RunStats(), sources)
        return {  # items again: process_batch filled in their content_hash
            "item": np.array([json.dumps(it, default=str) for it in items], dtype=object),
            "row": np.array([encode_row(r).decode("utf-8") for r in rows], dtype=object),
            "source": np.array(sources, dtype=object),
        }


class RayEngine:
    """Runs stages with Ray Data. `num_workers` actors (default: the cluster's CPUs, at most
    4); `num_gpus` per actor (default: 1 when the cluster has GPUs, else 0)."""

    name = "ray"

    def __init__(
        self,
        num_workers: int | None = None,
        num_gpus: float | None = None,
        address: str | None = None,
        window: int = 20_000,
    ) -> None:
        self.num_workers, self.num_gpus, self.address, self.window = (
            num_workers, num_gpus, address, window)

    def _init(self) -> Any:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - ray is a declared extra
            raise ConfigError("--engine ray needs ray[data]: pip install 'vlens[ray]'") from e
        if not ray.is_initialized():
            ray.init(
                address=self.address, ignore_reinit_error=True, include_dashboard=False,
                log_to_driver=False, configure_logging=False,
                **({} if self.address else {"num_cpus": os.cpu_count() or 1}),
            )
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
        return ray

    def run(
        self,
        stage: Any,
        items: Iterable[Row],
        sink: Sink,
        *,
        cache: Cache | None = None,
        batch_size: int = 32,
        total: int | None = None,
        progress: bool = True,
    ) -> RunStats:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        t0 = time.perf_counter()
        ray, workers, gpus = None, 1, 0.0
        stats = RunStats()
        done = sink.done_ids()
        cache_path = str(cache.db_path) if cache is not None else None
        with make_progress(progress) as bar:
            task = bar.add_task(f"{getattr(stage, 'name', 'stage')} (ray)", total=total, info="")
            for window in batched(items, self.window):
                stats.total += len(window)
                todo = [it for it in window if str(it["id"]) not in done]
                stats.skipped += len(window) - len(todo)
                bar.update(task, advance=len(window) - len(todo))
                if cache is not None:
                    n_todo = len(todo)
                    todo = self._serve_cached(stage, todo, cache, sink, stats, batch_size, done)
                    bar.update(task, advance=n_todo - len(todo))
                if not todo:
                    continue
                if ray is None:  # only when some item needs a worker: warm runs start nothing
                    ray = self._init()
                    res = ray.cluster_resources()
                    workers = self.num_workers or max(1, min(4, int(res.get("CPU", 1))))
                    gpus = (self.num_gpus if self.num_gpus is not None
                            else (1.0 if res.get("GPU") else 0.0))
                    stats.extra = {"workers": workers, "gpus_per_worker": gpus}
                ds = ray.data.from_items(
                    [{"item": json.dumps(it, default=str)} for it in todo],
                    override_num_blocks=max(1, min(len(todo) // batch_size, 4 * workers)),
                )
                ds = ds.map_batches(
                    _StageActor,
                    fn_constructor_kwargs={"stage": stage, "cache_path": cache_path},
                    batch_size=batch_size, batch_format="numpy", concurrency=workers,
                    num_cpus=1, num_gpus=gpus,
                )
                for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    b_items = [json.loads(s) for s in out["item"]]
                    rows = [decode_row(s.encode("utf-8")) for s in out["row"]]
                    self._count(out, rows, stats)
                    sink.write(b_items, rows)
                    done.update(str(it["id"]) for it in b_items)
                    bar.update(task, advance=len(rows), info=f"cached {stats.cached} · resumed "
                               f"{stats.skipped} · errors {stats.errors}")
        sink.close()
        stats.seconds = time.perf_counter() - t0
        return stats

    @staticmethod
    def _serve_cached(stage: Any, todo: list[Row], cache: Cache, sink: Sink, stats: RunStats,
                      batch_size: int, done: set[str]) -> list[Row]:
        """Write cache hits from the driver; return the items that still need a worker.

        Only items that already carry their content hash (later stages get it from
        samples.parquet) are looked up here, so the driver never reads image files: a warm
        re-run starts no actor at all (no weight loading), and only misses reach Ray.
        """
        rest: list[Row] = []
        for b in batched(todo, max(batch_size, 256)):
            keys = [stage_key(stage, it) if it.get("content_hash") else None for it in b]
            hits = cache.get_many(stage.fingerprint, [k for k in keys if k])
            got_items, got_rows = [], []
            for it, k in zip(b, keys, strict=True):
                if k and k in hits:
                    got_items.append(it)
                    got_rows.append({"id": it["id"], **hits[k]})
                else:
                    rest.append(it)
            if got_rows:
                sink.write(got_items, got_rows)
                done.update(str(it["id"]) for it in got_items)
                stats.cached += len(got_rows)
                stats.errors += sum(1 for r in got_rows if r.get("status") == "error")
        return rest

    @staticmethod
    def _count(out: dict[str, np.ndarray], rows: list[Row], stats: RunStats) -> None:
        cached = int(sum(1 for src in out["source"] if src == "cache"))
        stats.cached += cached
        stats.computed += len(rows) - cached
        stats.errors += sum(1 for r in rows if r.get("status") == "error")


@ENGINES.register("ray", help="Ray Data map_batches on an actor pool (local or cluster)")
def _ray(**kw: Any) -> RayEngine:
    return RayEngine(**kw)

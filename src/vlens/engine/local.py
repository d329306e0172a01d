"""The local engine: one process, batches streamed through the stage in order."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vlens.engine.base import ENGINES, RunStats, Sink, batched, process_batch
from vlens.engine.cache import Cache
from vlens.engine.stage import Row


def make_progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class LocalEngine:
    """Streams `items` in batches of `batch_size`; memory holds one batch of decoded images
    plus the set of finished ids (for resume)."""

    name = "local"
    cached_group = 1024  # rows of cache-served batches written to the sink at once

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
        stats = RunStats()
        done = sink.done_ids()
        setup = getattr(stage, "setup", None)
        if setup is not None:
            setup()
        held_items: list[Row] = []
        held_rows: list[Row] = []
        with make_progress(progress) as bar:
            task = bar.add_task(getattr(stage, "name", "stage"), total=total, info="")
            for batch in batched(items, batch_size):
                stats.total += len(batch)
                todo = []
                for it in batch:
                    if str(it["id"]) in done:
                        stats.skipped += 1
                    else:
                        todo.append(it)
                if todo:
                    computed = stats.computed
                    rows = process_batch(stage, todo, cache, stats)
                    done.update(str(it["id"]) for it in todo)
                    # batches served wholly from the cache are written in bigger groups:
                    # losing them to a crash costs nothing (they are re-read from the cache)
                    # and warm re-runs write far fewer parts (fsyncs, Parquet footers)
                    held_items += todo
                    held_rows += rows
                    if stats.computed != computed or len(held_rows) >= self.cached_group:
                        sink.write(held_items, held_rows)
                        held_items, held_rows = [], []
                bar.update(
                    task,
                    advance=len(batch),
                    info=f"cached {stats.cached} · resumed {stats.skipped} · errors {stats.errors}",
                )
        if held_rows:
            sink.write(held_items, held_rows)
        sink.close()
        stats.seconds = time.perf_counter() - t0
        return stats


@ENGINES.register("local", help="one process, streaming batches (default)")
def _local() -> LocalEngine:
    return LocalEngine()

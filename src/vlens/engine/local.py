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
                    rows = process_batch(stage, todo, cache, stats)
                    sink.write(todo, rows)
                    done.update(str(it["id"]) for it in todo)
                bar.update(
                    task,
                    advance=len(batch),
                    info=f"cached {stats.cached} · resumed {stats.skipped} · errors {stats.errors}",
                )
        sink.close()
        stats.seconds = time.perf_counter() - t0
        return stats


@ENGINES.register("local", help="one process, streaming batches (default)")
def _local() -> LocalEngine:
    return LocalEngine()

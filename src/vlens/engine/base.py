"""The `Engine` plug-in point, the sinks engines write to, and the per-batch logic they share.

An engine takes a stage, a stream of items (dicts with at least ``id``; image items carry
``uri`` and, once hashed, ``content_hash``) and a sink, and guarantees:

- bounded memory: items are consumed lazily, one batch at a time;
- resume: items whose id the sink already holds are skipped before any work;
- cache: rows for (stage fingerprint, content key) already in the cache are reused; only
  misses reach the stage; successful rows are written back (error rows are not cached, so
  a transient failure is retried next run);
- durability: each finished batch is appended to the sink before the next one starts, so
  a crash loses at most the batches in flight.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from vlens.data.images import content_hash
from vlens.engine.cache import Cache
from vlens.engine.stage import Row, check_rows, stage_key
from vlens.engine.store import RunStore
from vlens.errors import ImageError
from vlens.registry import Registry


@dataclass
class RunStats:
    """What one engine run did. ``total = skipped + cached + computed``."""

    total: int = 0
    skipped: int = 0  # already in the run store (resume)
    cached: int = 0  # served from the cache
    computed: int = 0  # sent to the stage
    errors: int = 0  # error rows among cached + computed
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# ---- sinks ------------------------------------------------------------------------------
@runtime_checkable
class Sink(Protocol):
    """Where an engine puts finished rows. `done_ids` drives resume."""

    def done_ids(self) -> set[str]: ...

    def write(self, items: list[Row], rows: list[Row]) -> None: ...

    def close(self) -> None: ...


Derive = Callable[[list[Row], list[Row]], list[Row]]
STATUS_COLUMNS = ("status", "error")


def rows_frame(rows: list[Row]) -> pd.DataFrame:
    """Stage rows as a DataFrame with ``status`` and ``error`` always the last columns.

    pandas orders columns by first appearance, and an error row (``id, status, error``)
    lists them before the stage's own fields; without this, a table's column order would
    depend on whether its first stored batch began with an error row (e.g. which batch a
    Ray worker finished first).
    """
    df = pd.DataFrame(rows)
    tail = [c for c in STATUS_COLUMNS if c in df.columns]
    if tail and list(df.columns[-len(tail):]) != tail:
        df = df[[c for c in df.columns if c not in tail] + tail]
    return df


class TableSink:
    """Appends stage rows to table `table` of a run store; `derived` tables get rows built
    from (items, rows) of the same batch (e.g. samples.parquet beside predictions).

    Derived parts are written *before* the primary part: the primary table decides what is
    done, so a kill between the two only re-does that batch (finalize dedups by id).
    """

    def __init__(self, store: RunStore, table: str, derived: dict[str, Derive] | None = None,
                 compact_every: int = 256):
        self.store, self.table, self.derived = store, table, dict(derived or {})
        self.compact_every = compact_every  # parts per table before an intermediate compaction
        self._writes = 0

    def done_ids(self) -> set[str]:
        return self.store.ids(self.table, ok_only=True)

    def write(self, items: list[Row], rows: list[Row]) -> None:
        for name, fn in self.derived.items():
            self.store.append(name, pd.DataFrame(fn(items, rows)))
        self.store.append(self.table, rows_frame(rows))
        self._writes += 1
        if self.compact_every and self._writes % self.compact_every == 0:
            # keep the part count (and so resume scans and the final compaction) bounded
            for name in [*self.derived, self.table]:
                self.store.finalize(name, sort_by=None)

    def close(self) -> None:
        for name in [*self.derived, self.table]:
            if self.store.has_parts(name):  # a fully resumed run has nothing to compact
                self.store.finalize(name)


# ---- helpers shared by engines -------------------------------------------------------------
def ensure_content_hash(item: Row, hasher: Callable[[str], str] | None = None) -> Row:
    """Fill ``item["content_hash"]`` from the file at ``item["uri"]`` when missing.

    Uses `vlens.data.images.content_hash` (sha256 of the bytes) so every area keys the cache
    identically. Items the source flagged (``source_error``) are never opened. An unreadable
    file leaves it None: the item is then never cached and the stage reports
    the reason when it tries to decode it.
    """
    if item.get("content_hash") or not item.get("uri") or item.get("source_error"):
        return item
    try:
        item["content_hash"] = (hasher or content_hash)(str(item["uri"]))
    except (OSError, ImageError):
        item["content_hash"] = None
    return item


def batched(items: Iterable[Row], n: int) -> Iterator[list[Row]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def process_batch(
    stage: Any, todo: list[Row], cache: Cache | None, stats: RunStats,
    sources: list[str] | None = None,
) -> list[Row]:
    """Rows for `todo`: cache hits reused, misses computed by `stage` and cached.

    When `sources` is a list, it receives ``"cache"`` or ``"stage"`` per row (in order).
    """
    for it in todo:
        ensure_content_hash(it)
    keys = [stage_key(stage, it) for it in todo]
    hits = cache.get_many(stage.fingerprint, [k for k in keys if k]) if cache else {}
    rows: list[Row | None] = [None] * len(todo)
    misses: list[int] = []
    for i, (it, k) in enumerate(zip(todo, keys, strict=True)):
        if k and k in hits:
            rows[i] = {"id": it["id"], **hits[k]}
        else:
            misses.append(i)
    stats.cached += len(todo) - len(misses)
    if misses:
        sub = [todo[i] for i in misses]
        out = check_rows(stage, sub, stage(sub))
        stats.computed += len(sub)
        put: dict[str, Row] = {}
        for i, row in zip(misses, out, strict=True):
            rows[i] = row
            if keys[i] and row.get("status", "ok") == "ok":
                put[keys[i]] = {k: v for k, v in row.items() if k != "id"}
        if cache is not None and put:
            cache.put_many(stage.fingerprint, put)
    if sources is not None:
        hit = set(range(len(todo))) - set(misses)
        sources.extend("cache" if i in hit else "stage" for i in range(len(todo)))
    final = [r for r in rows if r is not None]
    stats.errors += sum(1 for r in final if r.get("status") == "error")
    return final


# ---- the plug-in point -----------------------------------------------------------------------
@runtime_checkable
class Engine(Protocol):
    """Runs a stage over a stream of items into a sink (see module docstring)."""

    name: str

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
    ) -> RunStats: ...


ENGINES: Registry[Engine] = Registry("engine")

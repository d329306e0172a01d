"""Running any stage over a run directory: what saliency, VLM and concept stages build on.

`run_stage` wires a stage, an item stream, a cache and an engine to one table of a run dir;
`samples_items` streams the run's samples.parquet back as items (Arrow record batches, so a
later stage never loads the whole table), with the content hashes predict already computed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from vlens.engine.base import ENGINES, Derive, RunStats, TableSink
from vlens.engine.cache import Cache
from vlens.engine.stage import Row
from vlens.engine.store import RunStore, iter_row_groups
from vlens.errors import ConfigError, StoreError

_ITEM_COLS = ("id", "uri", "label", "content_hash")


def samples_items(
    run_dir: str | os.PathLike[str], only_ok: bool = True, chunk: int = 4096
) -> Iterator[Row]:
    """Items (id, uri, label, content_hash, metadata) from a run's samples table, streamed.

    `only_ok` skips samples whose image could not be decoded (they already have error rows).
    Pending parts of an interrupted predict are not read: finish (re-run) predict first.
    """
    store = RunStore(run_dir, create=False)
    path = store.table_path("samples")
    if not path.exists():
        raise StoreError(f"{run_dir} has no samples.parquet; run `vlens predict` first")
    for group in iter_row_groups(path):
        for rb in group.to_batches(max_chunksize=chunk):
            cols = rb.to_pydict()
            n = rb.num_rows
            metas = [c for c in cols if c.startswith("meta_")]
            for i in range(n):
                if only_ok and cols.get("status", ["ok"] * n)[i] != "ok":
                    continue
                item = {c: cols[c][i] for c in _ITEM_COLS if c in cols}
                item["id"] = str(item["id"])
                item["metadata"] = {c[5:]: cols[c][i] for c in metas}
                yield item


def run_stage(
    stage: Any,
    items: Iterable[Row],
    out: str | os.PathLike[str],
    table: str,
    *,
    cache: Cache | None = None,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    total: int | None = None,
    progress: bool = True,
    derived: dict[str, Derive] | None = None,
) -> RunStats:
    """Run `stage` over `items` into table `table` of run dir `out` (resumable, cached).

    Records the stage fingerprint in config.yaml under ``fingerprints.<table>`` and refuses
    to resume a table that a stage with another fingerprint wrote (rows would mix).
    """
    eng = ENGINES.create(engine, **dict(engine_options or {}))
    store = RunStore(out)
    cfg = store.read_config()
    old = (cfg.get("fingerprints") or {}).get(table)
    if old and old != stage.fingerprint and store.has_table(table):
        raise ConfigError(
            f"{table} in {out} was made by another {getattr(stage, 'name', 'stage')} "
            f"configuration (fingerprint {old} != {stage.fingerprint}); use a new run dir"
        )
    cfg["fingerprints"] = {**(cfg.get("fingerprints") or {}), table: stage.fingerprint}
    store.write_config(cfg)
    sink = TableSink(store, table, derived=derived)
    return eng.run(stage, items, sink, cache=cache, batch_size=batch_size, total=total,
                   progress=progress)

"""Out-of-core compaction of a table's parts: dedup by id (latest wins), sort by id, with
memory bounded by the id column plus a few chunks, whatever the table size.

Used by `RunStore.finalize` for tables too big to compact in memory (e.g. embeddings or
concept scores of 100k+ samples, several KB per row). Three passes over the files:
1. read only the ``id`` column of every file: which rows survive (the last copy of an id)
   and, per output chunk, which sorted run each row comes from;
2. sort runs of at most `RUN_ROWS` surviving rows / `RUN_BYTES` each into temp files;
3. merge the runs chunk by chunk (each run is read sequentially) into the target file.
Written to a temp file and renamed: an interrupted compaction leaves parts and table intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

RUN_ROWS = 32_768  # surviving rows per sorted run, at most...
RUN_BYTES = 16 << 20  # ...and at most this many bytes in memory (an embeddings row is ~1.6 KB)
CHUNK_ROWS = 8_192  # rows per merged output chunk
STREAM_ROWS = 1_024  # rows each run's reader holds while merging


class _Stream:
    """Sequential reader of a Parquet file that hands out the next `n` rows."""

    def __init__(self, path: Path) -> None:
        self._it = pq.ParquetFile(path).iter_batches(batch_size=STREAM_ROWS)
        self._buf: pa.Table | None = None

    def take(self, n: int) -> pa.Table:
        pieces = []
        while n > 0:
            if self._buf is None or self._buf.num_rows == 0:
                self._buf = pa.Table.from_batches([next(self._it)])
            k = min(n, self._buf.num_rows)
            pieces.append(self._buf.slice(0, k))
            self._buf = self._buf.slice(k)
            n -= k
        return pa.concat_tables(pieces)


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        c = t.column(f.name) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
        cols.append(c.cast(f.type) if c.type != f.type else c)
    return pa.Table.from_arrays(cols, schema=schema)


def _tmp(folder: Path, stem: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(name)


def compact_external(files: Sequence[Path], target: Path, sort_by: str | None = "id") -> bool:
    """Compact `files` (oldest first) into `target`. False when the tables have no ``id``
    column or their types cannot be unified (the caller then compacts in memory)."""
    schemas = [pq.read_schema(f) for f in files]
    if any("id" not in s.names for s in schemas) or (sort_by not in (None, "id")):
        return False
    try:
        schema = pa.unify_schemas([s.remove_metadata() for s in schemas],
                                  promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    schema = schema.with_metadata(schemas[-1].metadata)  # pandas dtypes of a recent part
    # pass 1: which rows survive (last copy of each id)
    id_cols = [pq.read_table(f, columns=["id"]).column("id").cast(pa.string()) for f in files]
    sizes = [len(c) for c in id_cols]
    all_ids = pd.Series(np.concatenate([c.to_numpy(zero_copy_only=False) for c in id_cols]))
    keep = ~all_ids.duplicated(keep="last").to_numpy()
    del id_cols
    bounds = np.cumsum([0, *sizes])
    folder = target.parent
    out = _tmp(folder, target.name)
    runs: list[Path] = []
    try:
        # pass 2: sorted runs (or, unsorted, straight into the output)
        writer = pq.ParquetWriter(out, schema)
        try:
            group: list[pa.Table] = []
            rows = nbytes = 0

            def flush() -> None:
                nonlocal group, rows, nbytes
                if not group:
                    return
                t = pa.concat_tables(group)
                if sort_by:
                    t = t.take(pc.sort_indices(t, sort_keys=[("id", "ascending")]))
                    run = _tmp(folder, f"{target.stem}.run")
                    pq.write_table(t, run)
                    runs.append(run)
                else:
                    writer.write_table(t)
                group, rows, nbytes = [], 0, 0

            for i, f in enumerate(files):
                mask = keep[bounds[i]:bounds[i + 1]]
                if not mask.any():
                    continue
                t = _conform(pq.read_table(f), schema)
                if not mask.all():
                    t = t.filter(pa.array(mask))
                group.append(t)
                rows += t.num_rows
                nbytes += t.nbytes
                if rows >= RUN_ROWS or nbytes >= RUN_BYTES:
                    flush()
            flush()
            # pass 3: merge the sorted runs chunk by chunk
            if sort_by and runs:
                run_ids = [pq.read_table(r, columns=["id"]).column("id").to_numpy(
                    zero_copy_only=False) for r in runs]
                which = np.concatenate([np.full(len(x), k) for k, x in enumerate(run_ids)])
                order = np.argsort(np.concatenate(run_ids), kind="stable")
                seq = which[order]
                del run_ids, order, which
                streams = [_Stream(r) for r in runs]
                for s0 in range(0, len(seq), CHUNK_ROWS):
                    counts = np.bincount(seq[s0:s0 + CHUNK_ROWS], minlength=len(runs))
                    t = pa.concat_tables([streams[k].take(int(c))
                                          for k, c in enumerate(counts) if c])
                    writer.write_table(t.take(pc.sort_indices(t, [("id", "ascending")])))
        finally:
            writer.close()
        with open(out, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(out, target)
    finally:
        for p in [out, *runs]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return True

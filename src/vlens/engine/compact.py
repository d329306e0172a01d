"""Out-of-core compaction of a table's parts: dedup by id (latest wins), sort by id, with
memory bounded by the id column plus a few MiB, whatever the table size.

Used by `RunStore.finalize` for tables over 128 KiB of parts (e.g. embeddings or concept
scores of 100k+ samples, several KB per row). Passes over the files:
1. read only the ``id`` column of every file (Arrow strings): which rows survive (the last
   copy of each id), and whether the survivors, file after file, are already in id order;
2. already in order (the usual case: a fresh run writes parts in source order, and the
   world's ids sort in that order): copy the surviving rows through, one row group at a
   time, into row groups of about `GROUP_BYTES`; done.
3. otherwise sort runs of at most `RUN_ROWS` rows / `RUN_BYTES` each into temp files, with
   row groups of `RUN_GROUP_BYTES`, so that a run's reader holds one group, not the run;
4. merge the runs chunk by chunk into the target file, at most `MERGE_FAN_IN` runs at once
   (more runs: merge passes into longer runs first).
Every file is read one row group at a time, never whole: the previous compacted table is
one of the inputs and grows with the run. Measured by
`tests/test_scale.py::test_external_compaction_memory_is_flat`. Written to a temp file
and renamed: an interrupted compaction leaves parts and table intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

RUN_ROWS = 32_768  # surviving rows per sorted run, at most...
RUN_BYTES = 4 << 20  # ...and at most this many bytes in memory (an embeddings row is ~1.6 KB)
GROUP_BYTES = 1 << 20  # target bytes per row group of the output...
RUN_GROUP_BYTES = 256 << 10  # ...and of a sorted run (its merge reader holds one)
MERGE_FAN_IN = 16  # sorted runs merged at once (each holds one row group while merging)
CHUNK_ROWS = 8_192  # rows per merged output chunk, at most (and at most GROUP_BYTES)


def _rows_for(t: pa.Table, limit: int, nbytes: int) -> int:
    """Rows of `t` that fit in `nbytes` (at least 16, at most `limit`)."""
    per_row = max(1, t.nbytes // max(1, t.num_rows))
    return int(max(16, min(limit, nbytes // per_row)))


class _Stream:
    """Sequential reader of a Parquet file that hands out the next `n` rows.

    Reads one row group at a time: `ParquetFile.iter_batches` holds buffers that grow with
    the file's size (measured: 10 readers over 20k-row files of embeddings, 264 MiB for
    9 MiB of batches; one row group each: 8.5 MiB)."""

    def __init__(self, path: Path) -> None:
        self._file = pq.ParquetFile(path)
        self._next_group = 0
        self._buf: pa.Table | None = None

    def take(self, n: int) -> pa.Table:
        pieces = []
        while n > 0:
            if self._buf is None or self._buf.num_rows == 0:
                self._buf = self._file.read_row_group(self._next_group, use_threads=False)
                self._next_group += 1
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


def _read_ids(files: Sequence[Path]) -> tuple[pa.StringArray, list[int]]:
    """The id column of every file, as one Arrow string array (~12 B per short id), and
    each file's row count. Small per-file arrays are merged as they come, so thousands of
    parts do not each keep their own buffers."""
    merged: list[pa.Array] = []
    pending: list[pa.Array] = []
    sizes = []
    for f in files:
        col = pq.ParquetFile(f).read(columns=["id"], use_threads=False).column("id")
        arr = col.cast(pa.string()).combine_chunks() if col.num_chunks != 1 \
            else col.chunk(0).cast(pa.string())
        sizes.append(len(arr))
        pending.append(arr)
        if len(pending) >= 256:
            merged.append(pa.concat_arrays(pending))
            pending = []
    merged.extend(pending)
    ids = pa.concat_arrays(merged) if merged else pa.array([], pa.string())
    return ids, sizes


def _survivors(files: Sequence[Path]) -> tuple[list[np.ndarray], bool]:
    """Per file, the mask of rows that survive (last copy of each id), and whether the
    survivors in file order are strictly increasing by id (then no sort is needed).

    Arrow strings, not Python objects. The usual case (a fresh run: every id once, in
    order) is recognised by one comparison and needs no hash table."""
    ids, sizes = _read_ids(files)
    n = len(ids)
    bounds = np.cumsum([0, *sizes])
    if n < 2 or pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        return [np.ones(k, dtype=bool) for k in sizes], True
    # keep the last copy of each id: a stable sort puts copies in file order, so a row
    # survives when the next row in sorted order has another id (~30 B per row; a hash
    # aggregation took ~400)
    order = pc.sort_indices(ids).to_numpy()
    in_sorted = ids.take(pa.array(order))
    last_of_run = np.ones(n, dtype=bool)
    last_of_run[:-1] = pc.not_equal(in_sorted[:-1], in_sorted[1:]).to_numpy(
        zero_copy_only=False)
    del in_sorted
    keep = np.zeros(n, dtype=bool)
    keep[order[last_of_run]] = True
    del order, last_of_run
    kept = ids.filter(pa.array(keep))
    in_order = bool(len(kept) < 2 or pc.all(pc.less(kept[:-1], kept[1:])).as_py())
    del ids, kept
    return [keep[bounds[i]:bounds[i + 1]] for i in range(len(files))], in_order


def _surviving_tables(files: Sequence[Path], masks: list[np.ndarray], schema: pa.Schema):
    """The surviving rows, conformed to `schema`, one row group at a time: the previous
    compacted table is one of `files` and grows with the run, so it is never read whole."""
    for f, mask in zip(files, masks, strict=True):
        if not mask.any():
            continue
        pf = pq.ParquetFile(f)
        start = 0
        for g in range(pf.num_row_groups):
            k = pf.metadata.row_group(g).num_rows
            m = mask[start:start + k]
            start += k
            if not m.any():
                continue
            t = _conform(pf.read_row_group(g, use_threads=False), schema)
            yield t if m.all() else t.filter(pa.array(m))


class _GroupWriter:
    """Buffers tables and writes them as row groups of about `GROUP_BYTES`."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer, self._buf, self._bytes = writer, [], 0

    def add(self, t: pa.Table) -> None:
        self._buf.append(t)
        self._bytes += t.nbytes
        if self._bytes >= GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            t = pa.concat_tables(self._buf)  # one big table is cut into groups too
            self.writer.write_table(t, row_group_size=_rows_for(t, 1 << 30, GROUP_BYTES))
            self._buf, self._bytes = [], 0


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: text. Float vectors are not (each small row group
    would start a dictionary of up to 1 MiB and then fall back: files grew by half)."""
    return [f.name for f in schema
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_dictionary(f.type)]


def _write_run(t: pa.Table, path: Path) -> None:
    """A sorted run, in row groups of about `RUN_GROUP_BYTES` (what its merge reader holds)."""
    t = t.take(pc.sort_indices(t, sort_keys=[("id", "ascending")]))
    pq.write_table(t, path, row_group_size=_rows_for(t, RUN_ROWS, RUN_GROUP_BYTES),
                   use_dictionary=_dictionary_columns(t.schema))


def compact_external(files: Sequence[Path], target: Path, sort_by: str | None = "id") -> bool:
    """Compact `files` (oldest first) into `target`. False when the tables have no ``id``
    column or their types cannot be unified (the caller then compacts in memory)."""
    if sort_by not in (None, "id"):
        return False
    schemas: list[pa.Schema] = []  # distinct ones only: thousands of parts share a few
    metadata = None
    for f in files:
        s = pq.read_schema(f)
        if "id" not in s.names:
            return False
        metadata = s.metadata  # pandas dtypes of the most recent part
        s = s.remove_metadata()
        if not any(s.equals(u) for u in schemas):
            schemas.append(s)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    schema = schema.with_metadata(metadata)
    masks, in_order = _survivors(files)
    folder = target.parent
    out = _tmp(folder, target.name)
    runs: list[Path] = []
    try:
        writer = pq.ParquetWriter(out, schema, use_dictionary=_dictionary_columns(schema))
        try:
            if not sort_by or in_order:  # copy through, no runs
                groups = _GroupWriter(writer)
                for t in _surviving_tables(files, masks, schema):
                    groups.add(t)
                groups.flush()
            else:
                _sort_and_merge(files, masks, schema, folder, target, runs, writer)
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


def _sort_and_merge(files: Sequence[Path], masks: list[np.ndarray], schema: pa.Schema,
                    folder: Path, target: Path, runs: list[Path],
                    writer: pq.ParquetWriter) -> None:
    """Sorted runs of the surviving rows into temp files (`runs`), then a k-way merge."""
    group: list[pa.Table] = []
    rows = nbytes = 0
    for t in _surviving_tables(files, masks, schema):
        group.append(t)
        rows += t.num_rows
        nbytes += t.nbytes
        if rows >= RUN_ROWS or nbytes >= RUN_BYTES:
            runs.append(_tmp(folder, f"{target.stem}.run"))
            _write_run(pa.concat_tables(group), runs[-1])
            group, rows, nbytes = [], 0, 0
    if group:
        runs.append(_tmp(folder, f"{target.stem}.run"))
        _write_run(pa.concat_tables(group), runs[-1])
    del group
    level = list(runs)
    while len(level) > MERGE_FAN_IN:  # merge passes: readers held at once stay bounded
        merged = []
        for i in range(0, len(level), MERGE_FAN_IN):
            batch = level[i:i + MERGE_FAN_IN]
            if len(batch) == 1:
                merged.append(batch[0])
                continue
            out = _tmp(folder, f"{target.stem}.run")
            runs.append(out)  # the caller removes every temp file
            w = pq.ParquetWriter(out, schema, use_dictionary=_dictionary_columns(schema))
            try:
                _merge_into(batch, w, RUN_GROUP_BYTES)
            finally:
                w.close()
            for r in batch:
                r.unlink()
            merged.append(out)
        level = merged
    _merge_into(level, writer, GROUP_BYTES)


def _merge_into(runs: list[Path], writer: pq.ParquetWriter, group_bytes: int) -> None:
    """K-way merge of sorted runs (ids unique across them) in chunks of ~`group_bytes`."""
    if not runs:
        return
    run_ids, sizes = _read_ids(runs)
    which = np.repeat(np.arange(len(runs), dtype=np.int32), sizes)
    seq = which[pc.sort_indices(run_ids).to_numpy()]  # the run each output row comes from
    del run_ids, which
    streams = [_Stream(r) for r in runs]
    first = pq.ParquetFile(runs[0]).metadata
    per_row = max(1, first.row_group(0).total_byte_size // max(1, first.row_group(0).num_rows))
    chunk = int(max(16, min(CHUNK_ROWS, group_bytes // per_row)))
    for s0 in range(0, len(seq), chunk):
        counts = np.bincount(seq[s0:s0 + chunk], minlength=len(runs))
        t = pa.concat_tables([streams[k].take(int(c)) for k, c in enumerate(counts) if c])
        writer.write_table(t.take(pc.sort_indices(t, [("id", "ascending")])))

"""The run directory: atomic files, Parquet tables written incrementally, artefact folders.

Every write goes to a temporary file in the same directory, is fsynced, then renamed over
the target with `os.replace` (atomic on POSIX), so a crash or a failing writer leaves either
the previous file or the new one, never half of one. Tables grow by *parts*
(``<name>.parts/part-00000.parquet``, ...) so a long run appends one batch at a time and a
kill loses at most the batch in flight; `finalize` compacts the parts into ``<name>.parquet``.
Readers see the compacted table plus any pending parts, deduplicated by ``id`` (latest wins).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from vlens.errors import StoreError

SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "auth")
"""A config key containing any of these words (case-insensitive) is never written to disk."""
REDACTED = "<redacted>"
_PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
FINALIZE_IN_MEMORY_BYTES = 128 << 10  # parts bigger than this on disk are merged out of core
# (in memory, pandas holds 25-50x the file: 2 MiB of embeddings +52 MiB, 1 MiB of
# predictions +54 MiB; out of core costs a few MiB whatever the size)
_TMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _fsync_dir(path: Path) -> None:
    """Persist a rename: fsync the directory entry (best effort; not possible on every OS)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _syncfs(path: Path) -> bool:
    """Flush every dirty page of the filesystem holding `path` in one call (Linux
    ``syncfs``); False where unavailable, and the caller fsyncs file by file instead."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    try:
        return libc.syncfs(fd) == 0
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync + rename it over `path`.

    If the body raises, the temp file is removed and `path` keeps its previous content.
    Temp names start with ``.`` and end in ``.tmp`` so readers never pick them up.
    """
    if mode not in ("wb", "w"):
        raise ValueError("atomic_open supports 'w' and 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Let `writer(fileobj)` fill `path` atomically (e.g. ``np.savez_compressed``, PIL save)."""
    with atomic_open(path, "wb") as f:
        writer(f)


def scrub_secrets(obj: Any) -> Any:
    """Return a copy of `obj` with the value of every secret-looking key replaced.

    A key is secret when its name contains one of `SECRET_WORDS` (``api_key``, ``HF_TOKEN``,
    ``password``...). Nested dicts and lists are walked; strings that *look* like bearer
    tokens in a URL are not parsed — keep secrets in keys, e.g. ``api_key_env``.
    """
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if any(w in str(k).lower() for w in SECRET_WORDS) and v is not None:
                out[k] = REDACTED
            else:
                out[k] = scrub_secrets(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [scrub_secrets(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def iter_row_groups(path: str | os.PathLike[str], columns: Sequence[str] | None = None
                    ) -> Iterator[pa.Table]:
    """A Parquet file, one row group at a time (compacted tables use ~1 MiB groups).

    Not ``ParquetFile.iter_batches``: its reader holds buffers that grow with the file
    (measured: ~1x the file's size per open reader), so a streamed scan was not bounded."""
    pf = pq.ParquetFile(path)
    for g in range(pf.num_row_groups):
        yield pf.read_row_group(g, columns=list(columns) if columns else None,
                                use_threads=False)


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    """Arrow table of `df`; all-null columns (e.g. `error` in a batch without errors) are
    stored as strings, so a table reads back with the same dtypes whatever mix of batches
    (and of retried rows) produced it."""
    try:
        t = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StoreError(f"cannot store table: {e}") from e
    for i, f in enumerate(t.schema):
        if pa.types.is_null(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.string()))
    return t


def _concat(tables: list[pa.Table]) -> pd.DataFrame:
    """Concatenate parts in Arrow (one pandas conversion); parts may differ in columns or have
    all-null columns, which Arrow's permissive promotion unifies. Falls back to pandas when
    types truly conflict (e.g. int in one part, str in another)."""
    if len(tables) == 1:
        return tables[0].to_pandas()
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        dfs = [t.to_pandas() for t in tables]
        return pd.concat([d for d in dfs if len(d)] or dfs[:1], ignore_index=True)


class RunStore:
    """One run directory. Safe against crashes; meant for one writer process at a time."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        self.path = Path(path)
        self._next_part: dict[str, int] = {}  # next part number per table (one writer)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise StoreError(f"run directory not found: {self.path}")

    # ---- config -------------------------------------------------------------------------
    def sweep_temp(self) -> int:
        """Delete temp files (``.<name>.<random>.tmp``) that writes interrupted by a crash
        left behind; returns how many. Readers never pick them up, but each crash would
        otherwise leak disk. Call it when a run (re)starts: one writer per run directory."""
        n = 0
        for p in self.path.rglob(".*.tmp"):
            if p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                n += 1
        return n

    def write_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Write config.yaml without secrets; returns what was written."""
        clean = scrub_secrets(dict(config))
        text = yaml.safe_dump(clean, sort_keys=True, allow_unicode=True)
        with atomic_open(self.path / "config.yaml", "w") as f:
            f.write(text)
        return clean

    def read_config(self) -> dict[str, Any]:
        p = self.path / "config.yaml"
        if not p.exists():
            return {}
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return data or {}

    # ---- whole tables ---------------------------------------------------------------------
    def _check(self, name: str) -> None:
        if not _NAME_RE.match(name) or name.endswith(".parquet"):
            raise StoreError(f"bad table name {name!r}")

    def table_path(self, name: str) -> Path:
        self._check(name)
        return self.path / f"{name}.parquet"

    def parts_dir(self, name: str) -> Path:
        self._check(name)
        return self.path / f"{name}.parts"

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        """Replace table `name` atomically with `df` (pending parts are dropped)."""
        target = self.table_path(name)
        table = _to_arrow(df)
        with atomic_open(target, "wb") as f:
            pq.write_table(table, f)
        shutil.rmtree(self.parts_dir(name), ignore_errors=True)
        self._next_part.pop(name, None)
        return target

    def _part_files(self, name: str) -> list[Path]:
        d = self.parts_dir(name)
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            m = _PART_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def has_parts(self, name: str) -> bool:
        """Whether table `name` has parts not yet compacted (finalize would do work)."""
        return bool(self._part_files(name))

    def has_table(self, name: str) -> bool:
        return self.table_path(name).exists() or bool(self._part_files(name))

    def read_table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        """The table as pandas: compacted file + pending parts, dedup by id (latest wins).

        Returns None when the table does not exist. Temp files are never read.
        """
        base = self.table_path(name)
        files = ([base] if base.exists() else []) + self._part_files(name)
        if not files:
            return None
        tables = []
        for p in files:
            try:
                tables.append(pq.read_table(p, columns=columns))
            except (OSError, pa.ArrowInvalid) as e:
                raise StoreError(f"cannot read {p}: {e}") from e
        df = _concat(tables)
        if len(tables) > 1 and "id" in df.columns:
            df = df.drop_duplicates("id", keep="last").reset_index(drop=True)
        return df

    def ids(self, name: str, ok_only: bool = False) -> set[str]:
        """Ids already stored in `name` (reads only the id and status columns).

        `ok_only`: only ids with a successful row. Resume uses it, so error rows (a VLM
        timeout, a server that was down) are retried in place by the next run; the retried
        row replaces the error row when the table is finalized (latest row per id wins).
        """
        if not ok_only:
            df = self.read_table(name, columns=["id"])
            return set() if df is None else set(df["id"].astype(str))
        try:
            df = self.read_table(name, columns=["id", "status"])
        except (KeyError, ValueError, StoreError):  # no status column: every row counts
            return self.ids(name)
        if df is None:
            return set()
        return set(df.loc[df["status"].fillna("ok") == "ok", "id"].astype(str))

    # ---- incremental tables ---------------------------------------------------------------
    def append(self, name: str, df: pd.DataFrame | pa.Table) -> Path | None:
        """Add `df` (pandas, or an Arrow table built directly: no per-row conversion) as a
        new part of table `name` (atomic; returns the part path)."""
        if df is None or len(df) == 0:
            return None
        d = self.parts_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        nxt = self._next_part.get(name)
        if nxt is None:  # list the folder once per table, then count (O(1) per append)
            existing = self._part_files(name)
            nxt = int(_PART_RE.match(existing[-1].name).group(1)) + 1 if existing else 0
        target = d / f"part-{nxt:05d}.parquet"
        while target.exists():  # another writer added parts meanwhile: never overwrite
            nxt += 1
            target = d / f"part-{nxt:05d}.parquet"
        self._next_part[name] = nxt + 1
        table = df if isinstance(df, pa.Table) else _to_arrow(df)
        with atomic_open(target, "wb") as f:
            pq.write_table(table, f)
        return target

    def finalize(self, name: str, sort_by: str | None = "id") -> pd.DataFrame | None:
        """Compact parts into ``<name>.parquet`` (dedup by id, latest wins), drop the parts.

        Returns the table when it was compacted in memory (parts up to
        `FINALIZE_IN_MEMORY_BYTES` on disk); bigger tables are merged out of core
        (`vlens.engine.compact`: one id column plus bounded chunks in memory) and None is
        returned, so memory does not grow with the dataset.

        Crash-safe: the compacted file is renamed into place before parts are removed, and
        re-reading both gives the same rows, so an interrupted finalize is simply redone.
        """
        parts = self._part_files(name)
        if not parts:
            return self.read_table(name)
        base = self.table_path(name)
        files = ([base] if base.exists() else []) + parts
        if sum(p.stat().st_size for p in files) > FINALIZE_IN_MEMORY_BYTES:
            from vlens.engine.compact import compact_external

            if compact_external(files, base, sort_by):
                shutil.rmtree(self.parts_dir(name), ignore_errors=True)
                self._next_part.pop(name, None)
                return None
        df = self.read_table(name)
        if df is None:
            return None
        if sort_by and sort_by in df.columns:
            df = df.sort_values(sort_by, kind="stable").reset_index(drop=True)
        target = self.table_path(name)
        with atomic_open(target, "wb") as f:
            pq.write_table(_to_arrow(df), f)
        shutil.rmtree(self.parts_dir(name), ignore_errors=True)
        self._next_part.pop(name, None)
        return df

    # ---- json + artefacts -----------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        import json

        target = self.path / name
        with atomic_open(target, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
        return target

    def read_json(self, name: str) -> Any | None:
        import json

        p = self.path / name
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    def artefact_path(self, relpath: str) -> Path:
        """Absolute path for an artefact (e.g. ``saliency/views/x.png``), checked to stay inside."""
        p = (self.path / relpath).resolve()
        root = self.path.resolve()
        if root != p and root not in p.parents:
            raise StoreError(f"artefact path escapes the run directory: {relpath!r}")
        return p

    def write_artefacts(self, files: Mapping[str, bytes]) -> dict[str, str]:
        """Write many artefacts (relpath -> bytes) atomically and durably, with one flush.

        Each file goes to a temp file renamed into place; then one ``syncfs`` (Linux) and
        one fsync per folder make the whole batch durable, instead of two fsyncs per file
        (which dominated the saliency stage: 4 PNGs per sample). Returns relpath -> the
        stored relative path. Call it before appending the rows that point at the files.
        A symlink at a target path is replaced by the new file (rename semantics).
        """
        root = os.path.realpath(self.path)
        base = str(self.path)
        checked: dict[str, str] = {}  # folder -> resolved folder (one resolve per folder)
        paths: dict[str, tuple[str, str]] = {}  # rel -> (resolved folder, file name)
        for rel in files:  # plain strings: pathlib objects per file cost more than the I/O
            folder, name = os.path.split(os.path.join(base, rel))
            if name in ("", ".", ".."):
                raise StoreError(f"artefact path escapes the run directory: {rel!r}")
            d = checked.get(folder)
            if d is None:
                d = os.path.realpath(folder)
                if d != root and not d.startswith(root.rstrip(os.sep) + os.sep):
                    raise StoreError(f"artefact path escapes the run directory: {rel!r}")
                checked[folder] = d
            # a symlink already at the target is replaced by the rename, never written
            # through, so nothing outside the run dir can be touched (no lstat per file)
            paths[rel] = (d, name)
        dirs = set(checked.values())
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        written = []
        # plain os calls, one temp name per file from one random token (like mkstemp: O_EXCL,
        # mode 0600, never following a link), without mkstemp's per-call Python overhead
        token = secrets.token_hex(6)
        for i, (rel, (d, name)) in enumerate(paths.items()):
            target = os.path.join(d, name)
            tmp = os.path.join(d, f".{name}.{token}{i}.tmp")
            fd = os.open(tmp, _TMP_FLAGS, 0o600)
            try:
                try:
                    view = memoryview(files[rel])
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            written.append(target)
        if written and not _syncfs(self.path):
            for t in written:
                with open(t, "rb") as f:
                    os.fsync(f.fileno())
        for d in dirs:
            _fsync_dir(Path(d))
        rel_dir = {d: os.path.relpath(d, root).replace(os.sep, "/") for d in dirs}
        return {rel: f"{rel_dir[d]}/{name}" if rel_dir[d] != "." else name
                for rel, (d, name) in paths.items()}

    def write_artefact(self, relpath: str, data: bytes | Callable[[IO[bytes]], None]) -> str:
        """Write an artefact atomically; returns its path relative to the run dir."""
        p = self.artefact_path(relpath)
        if callable(data):
            atomic_write_with(p, data)
        else:
            atomic_write_bytes(p, data)
        return p.relative_to(self.path.resolve()).as_posix()

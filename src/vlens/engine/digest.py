"""Content digests for skipping work that was already done: files, run tables, source code.

The per-sample stages are keyed by (stage fingerprint, content hash) in the cache. The
dataset-level steps (analysis, report) read whole tables instead, so they are keyed by a
digest of those tables' bytes plus their configuration and the code that computes them.
Tables are compacted by id and written deterministically, so the same rows give the same
bytes whichever run directory holds them, and the digest of a warm re-run into a new run
dir equals the cold run's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlens.engine.store import RunStore

_BUF = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BUF):
            h.update(chunk)
    return h.hexdigest()


def table_digest(store: RunStore, name: str) -> str | None:
    """Digest of table `name` as stored: the compacted file and any pending parts, in order.

    None when the table does not exist. Pending parts count, so a table that is only
    partly compacted never matches a finished one.
    """
    files = []
    base = store.table_path(name)
    if base.exists():
        files.append(base)
    files += store._part_files(name)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()


@lru_cache(maxsize=64)
def _module_files(module: str) -> tuple[Path, ...]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ()
    if spec.submodule_search_locations:  # a package: every file under it
        root = Path(next(iter(spec.submodule_search_locations)))
        return tuple(sorted(p for p in root.rglob("*") if p.is_file()
                            and p.suffix in (".py", ".j2", ".js", ".css", ".html", ".txt",
                                             ".json", ".yaml")))
    return (Path(spec.origin),)


def code_digest(modules: Iterable[str]) -> str:
    """Digest of the source files of `modules` (packages: every source/template file).

    Part of the keys of cached dataset-level results, so editing the analysis or report code
    (without bumping a version) never serves a result the old code computed.
    """
    h = hashlib.sha256()
    for m in modules:
        h.update(m.encode())
        for p in _module_files(m):
            h.update(p.name.encode())
            try:
                h.update(p.read_bytes())
            except OSError:
                h.update(b"?")
    return h.hexdigest()


def inputs_digest(run_dir: str | os.PathLike[str], tables: Iterable[str],
                  files: Iterable[str] = (), extra: Mapping[str, Any] | None = None) -> str:
    """One digest of `tables` and top-level `files` of a run dir plus JSON-able `extra`.

    The run directory's own path is deliberately not part of it.
    """
    store = RunStore(run_dir, create=False)
    parts: dict[str, Any] = {"tables": {t: table_digest(store, t) for t in tables}}
    root = Path(run_dir)
    parts["files"] = {f: file_digest(root / f) if (root / f).is_file() else None
                      for f in files}
    parts["extra"] = dict(extra or {})
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()

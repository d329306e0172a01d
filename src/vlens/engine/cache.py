"""The content-addressed result cache: (stage fingerprint, content key) -> row.

Backed by SQLite in WAL mode: one file, no server, readers never block the writer, and
several processes (two `vlens` commands, Ray workers on one host) can share it. Writes are
short ``BEGIN IMMEDIATE`` transactions of ``INSERT OR REPLACE`` with a generous busy
timeout, so concurrent writers queue instead of failing. Values are rows serialised with a
safe codec (JSON; numeric numpy arrays as dtype + shape + raw bytes, others via
``np.save(allow_pickle=False)``) — never pickle, so a cache file from elsewhere cannot
execute code.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlens.errors import StoreError

SCHEMA_VERSION = 1
_CHUNK = 500  # keys per SELECT ... IN (...) (SQLite's default variable limit is 32766)


def default_cache_dir() -> Path:
    """``$VLENS_CACHE_DIR`` if set, else ``~/.cache/vlens``."""
    env = os.environ.get("VLENS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlens"


# ---- codec --------------------------------------------------------------------------------
_RAW_KINDS = "biuf"  # plain numeric dtypes: stored as raw bytes (np.load per array is slow)


def _enc(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return [_enc(v) for v in obj.tolist()]
        if obj.dtype.kind in _RAW_KINDS:
            return {"__raw__": [obj.dtype.str, list(obj.shape),  # tobytes: C order
                                base64.b64encode(obj.tobytes()).decode("ascii")]}
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {"__nd__": base64.b64encode(buf.getvalue()).decode("ascii")}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return {"__b__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, Mapping):
        return {str(k): _enc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_enc(v) for v in obj]
    if isinstance(obj, float) and obj != obj:  # NaN: JSON has no NaN; keep it explicit
        return {"__nan__": 1}
    return obj


def _dec(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__raw__" in obj and len(obj) == 1:
            return _dec_raw(obj["__raw__"])
        if "__nd__" in obj and len(obj) == 1:
            return np.load(io.BytesIO(base64.b64decode(obj["__nd__"])), allow_pickle=False)
        if "__b__" in obj and len(obj) == 1:
            return base64.b64decode(obj["__b__"])
        if "__nan__" in obj and len(obj) == 1:
            return float("nan")
        return {k: _dec(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dec(v) for v in obj]
    return obj


def _dec_raw(spec: Any) -> np.ndarray:
    """[dtype, shape, base64 bytes] -> array; only plain numeric dtypes are accepted."""
    try:
        dtype, shape, data = spec
        dt = np.dtype(str(dtype))
        if dt.kind not in _RAW_KINDS:
            raise ValueError(f"dtype {dt} not allowed")
        arr = np.frombuffer(base64.b64decode(data), dtype=dt).reshape([int(n) for n in shape])
    except (TypeError, ValueError) as e:
        raise StoreError(f"corrupt array in cache entry: {e}") from None
    return arr.copy()  # writable, like np.load's


def encode_row(row: Mapping[str, Any]) -> bytes:
    """Serialise a row (str/number/bool/None/list/dict/bytes/numpy) to bytes, no pickle."""
    return json.dumps(_enc(row), separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_row(data: bytes) -> dict[str, Any]:
    return _dec(json.loads(data))


# ---- cache --------------------------------------------------------------------------------
class Cache:
    """A SQLite-backed cache shared by processes. Open one per process (fork-safe: the
    connection is re-opened lazily when the process id changes)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout_s: float = 60.0):
        root = Path(path).expanduser() if path is not None else default_cache_dir()
        self.db_path = root / "cache.sqlite" if root.suffix not in (".sqlite", ".db") else root
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self.hits = 0
        self.misses = 0
        self.puts = 0
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(
                self.db_path, timeout=self.timeout_s, isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            self._retry(
                lambda: conn.execute(
                    "CREATE TABLE IF NOT EXISTS entries (fp TEXT NOT NULL, key TEXT NOT NULL, "
                    "value BLOB NOT NULL, created REAL NOT NULL, PRIMARY KEY (fp, key)) "
                    "WITHOUT ROWID"
                )
            )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open cache {self.db_path}: {e}") from e
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry(self, fn: Any, tries: int = 50) -> Any:
        """Run `fn`, retrying 'database is locked' (schema changes can bypass busy_timeout)."""
        for i in range(tries):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or i == tries - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        return None

    # ---- bytes API ----------------------------------------------------------------------
    def get_many_bytes(self, fingerprint: str, keys: Sequence[str]) -> dict[str, bytes]:
        conn = self._connect()
        out: dict[str, bytes] = {}
        uniq = list(dict.fromkeys(k for k in keys if k))
        for i in range(0, len(uniq), _CHUNK):
            chunk = uniq[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT key, value FROM entries WHERE fp=? AND key IN ({marks})"
            args = [fingerprint, *chunk]
            try:
                rows = self._retry(lambda q=q, args=args: conn.execute(q, args).fetchall())
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cache read failed ({self.db_path}): {e}") from e
            out.update({k: bytes(v) for k, v in rows})
        self.hits += len(out)
        self.misses += len(uniq) - len(out)
        return out

    def put_many_bytes(
        self, fingerprint: str, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]]
    ) -> int:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        if not pairs:
            return 0
        conn = self._connect()
        now = time.time()
        rows = [(fingerprint, k, sqlite3.Binary(v), now) for k, v in pairs]

        def tx() -> None:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock now (waits busy_timeout)
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO entries (fp, key, value, created) "
                    "VALUES (?,?,?,?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        try:
            self._retry(tx)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cache write failed ({self.db_path}): {e}") from e
        self.puts += len(rows)
        return len(rows)

    # ---- row API ------------------------------------------------------------------------
    def get_many(self, fingerprint: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached rows for the keys that have one (missing keys are absent from the dict)."""
        return {k: decode_row(v) for k, v in self.get_many_bytes(fingerprint, keys).items()}

    def put_many(self, fingerprint: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Store rows under (fingerprint, key); replaces existing entries."""
        return self.put_many_bytes(fingerprint, {k: encode_row(v) for k, v in items.items()})

    def stats(self) -> dict[str, Any]:
        """Entry counts (total, per fingerprint), file size, this handle's hits/misses/puts."""
        conn = self._connect()
        per_fp = dict(conn.execute("SELECT fp, COUNT(*) FROM entries GROUP BY fp").fetchall())
        size = sum(
            p.stat().st_size
            for p in self.db_path.parent.glob(self.db_path.name + "*")
            if p.is_file()
        )
        return {
            "path": str(self.db_path),
            "entries": int(sum(per_fp.values())),
            "fingerprints": per_fp,
            "bytes": size,
            "hits": self.hits,
            "misses": self.misses,
            "puts": self.puts,
        }

    def integrity_check(self) -> str:
        return self._connect().execute("PRAGMA integrity_check").fetchone()[0]

    def clear(self, fingerprint: str | None = None) -> None:
        conn = self._connect()
        if fingerprint is None:
            self._retry(lambda: conn.execute("DELETE FROM entries"))
        else:
            self._retry(lambda: conn.execute("DELETE FROM entries WHERE fp=?", (fingerprint,)))

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # ship to Ray workers / subprocesses by path
        return {"path": str(self.db_path), "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["timeout_s"])  # type: ignore[misc]

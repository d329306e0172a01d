"""The `Stage` protocol: a pure function from a batch of records to a batch of records.

A stage never writes files and never knows whether it runs locally or on Ray; the engine
feeds it batches, caches its results and appends them to the run store. Contract:

- ``name``: short identifier (used in progress bars and logs);
- ``fingerprint``: a stable string that changes whenever the stage could produce different
  output (weights hash + config + code version); part of every cache key;
- ``__call__(batch) -> rows``: exactly one output row per input row, in order, each with the
  input's ``id``. Per-item failures become rows with ``status="error"`` and an ``error``
  reason; raising is reserved for failures of the whole stage (e.g. the model is gone).
- optional ``cache_key(item) -> str | None``: the content key of an item (default: its
  ``content_hash``). Return None to never cache that item. Stages whose output depends on
  more than the image bytes (e.g. `correct` depends on the label) fold that into the key.
- optional ``setup()``: heavy one-time initialisation (load weights); the local engine calls
  it once, the Ray engine once per actor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

Row = dict[str, Any]


@runtime_checkable
class Stage(Protocol):
    """A pure batch function with a fingerprint (see module docstring)."""

    name: str
    fingerprint: str

    def __call__(self, batch: list[Row]) -> list[Row]: ...


def stage_key(stage: Any, item: Mapping[str, Any]) -> str | None:
    """The cache key of `item` for `stage`: its `cache_key` if it has one, else content_hash."""
    fn = getattr(stage, "cache_key", None)
    if fn is not None:
        return fn(item)
    key = item.get("content_hash")
    return str(key) if key else None


def fingerprint_of(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (weights hash, config dict, version...)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def error_row(item: Mapping[str, Any], reason: str, detail: str = "") -> Row:
    """The row a stage emits for an item it could not process."""
    return {
        "id": item["id"],
        "status": "error",
        "error": f"{reason}: {detail}" if detail else reason,
    }


def check_rows(stage: Any, batch: list[Row], rows: list[Row]) -> list[Row]:
    """Enforce the stage contract: one row per input, same ids, in order."""
    if len(rows) != len(batch):
        raise RuntimeError(
            f"stage {getattr(stage, 'name', stage)!r} returned {len(rows)} rows for "
            f"{len(batch)} inputs"
        )
    for item, row in zip(batch, rows, strict=True):
        if str(row.get("id")) != str(item["id"]):
            raise RuntimeError(
                f"stage {getattr(stage, 'name', stage)!r} returned row id {row.get('id')!r} "
                f"for input {item['id']!r}"
            )
        row.setdefault("status", "ok")
        row.setdefault("error", None)
    return rows

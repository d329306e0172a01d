"""vlens.engine: run stages over batches (locally or on Ray) into the run store, with a cache.

Public API: `RunStore`, `Cache`, `Stage`, `Engine`/`ENGINES`, `LocalEngine`, `TableSink`,
`RunStats`, `run_stage`, `samples_items`, `PredictStage`, `run_predict`.
"""

from vlens.engine.base import ENGINES, Engine, RunStats, Sink, TableSink
from vlens.engine.cache import Cache, default_cache_dir
from vlens.engine.local import LocalEngine
from vlens.engine.ray_engine import RayEngine  # registers "ray"; imports ray only when run
from vlens.engine.runner import run_stage, samples_items
from vlens.engine.stage import Stage, error_row, fingerprint_of
from vlens.engine.store import RunStore, atomic_write_bytes, scrub_secrets

__all__ = [
    "ENGINES",
    "Cache",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "RunStats",
    "RunStore",
    "Sink",
    "Stage",
    "TableSink",
    "atomic_write_bytes",
    "default_cache_dir",
    "error_row",
    "run_stage",
    "samples_items",
    "fingerprint_of",
    "scrub_secrets",
]


def __getattr__(name: str):  # lazy: the predict stage imports torch
    if name in ("PredictStage", "run_predict"):
        from vlens.engine import predict

        return getattr(predict, name)
    raise AttributeError(name)

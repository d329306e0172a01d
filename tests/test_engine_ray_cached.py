"""The Ray engine serves cache hits from the driver: a warm re-run starts no Ray at all."""

from __future__ import annotations

import pytest

from vlens.engine import LocalEngine, RayEngine, RunStore, TableSink
from vlens.engine.cache import Cache


class Double:
    name = "double"
    fingerprint = "double-v1"

    def __call__(self, batch):
        return [{"id": it["id"], "y": it["x"] * 2, "status": "ok", "error": None}
                for it in batch]


def _items(n):
    return [{"id": f"s{i:03d}", "x": i, "content_hash": f"{i:064x}"} for i in range(n)]


def test_warm_ray_run_is_served_by_the_driver_without_starting_ray(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    LocalEngine().run(Double(), _items(20), TableSink(RunStore(tmp_path / "a"), "t"),
                      cache=cache, batch_size=8, progress=False)

    def no_ray(self):
        raise AssertionError("Ray must not start when every item is cached")

    monkeypatch.setattr(RayEngine, "_init", no_ray)
    stats = RayEngine(window=7).run(Double(), _items(20), TableSink(RunStore(tmp_path / "b"),
                                    "t"), cache=cache, batch_size=4, progress=False)
    assert (stats.total, stats.cached, stats.computed, stats.skipped) == (20, 20, 0, 0)
    assert stats.extra == {}
    got = RunStore(tmp_path / "b").read_table("t")
    assert got["id"].tolist() == [f"s{i:03d}" for i in range(20)]
    assert got["y"].tolist() == [2 * i for i in range(20)]
    # one miss: now Ray is needed (and _init is called)
    with pytest.raises(AssertionError, match="must not start"):
        RayEngine().run(Double(), _items(21), TableSink(RunStore(tmp_path / "c"), "t"),
                        cache=cache, progress=False)
    assert len(RunStore(tmp_path / "c").read_table("t")) == 20  # the hits were written first

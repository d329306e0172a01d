"""The whole per-sample pipeline (predict -> saliency -> VLM) on Ray equals the local engine.

A small generated world, a tiny CNN and the deterministic contrastive stand-in VLM of
tests/fakes.py (its text vectors are crc32-seeded, so every Ray worker computes the same ones).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fakes import ColourVLM, TinyCNN  # tests/ is on sys.path (rootdir import mode)
from test_engine_helpers import local_ray
from test_engine_helpers import sorted_by_id as _sorted
from vlens.engine.cache import Cache
from vlens.pipeline import ExplainOptions, explain
from vlens.runs import load_run

ray = pytest.importorskip("ray")

TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding", "embeddings")


@pytest.fixture(scope="module")
def ray_session():
    import sys

    yield from local_ray(sys.modules[ColourVLM.__module__])


@pytest.mark.slow
def test_ray_pipeline_equals_local_with_cache_and_resume(tmp_path, ray_session):
    from vlens.data import open_dataset
    from vlens.models import TorchAdapter
    from vlens.world import make_dataset

    manifest = make_dataset("demo_test", tmp_path / "world", n=16, seed=5)
    lines = manifest.read_text().splitlines()
    bad = json.loads(lines[0])
    (tmp_path / "world" / bad["path"]).write_bytes(b"not a png")  # must stay an error row
    n = len(lines)
    source = open_dataset(f"manifest:{manifest}")
    adapter = TorchAdapter(TinyCNN(len(source.class_names)), source.class_names, input_size=64,
                           mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def go(out, engine, cache=None):
        opts = ExplainOptions(vlm=ColourVLM(), batch_size=8, progress=False, engine=engine,
                              engine_options={"num_workers": 1} if engine == "ray" else None)
        return explain(adapter, source, tmp_path / out, opts, cache=cache)

    go("local", "local")
    cache = Cache(tmp_path / "cache")
    res = go("ray", "ray", cache)
    assert res.stats["saliency"].extra == {"workers": 1, "gpus_per_worker": 0.0}
    assert res.errors == {"predictions": 1, "saliency": 1, "vlm": 1}
    want, got = load_run(tmp_path / "local"), load_run(tmp_path / "ray")
    for table in TABLES:
        w, g = getattr(want, table), getattr(got, table)
        assert len(g) == (n if table in ("samples", "predictions", "saliency", "vlm") else n - 1)
        pd.testing.assert_frame_equal(_sorted(g), _sorted(w), obj=table)
    # the artefacts the Ray workers produced are byte-identical to the local ones
    for rel in want.saliency["map_path"].dropna():
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()

    # resume: the same run dir again skips every ok row; only the error row is retried
    again = go("ray", "ray", cache)
    for stage in ("predict", "saliency", "vlm"):
        s = again.stats[stage]
        assert (s.skipped, s.computed, s.cached) == (n - 1, 1, 0), stage
    # warm cache, new run dir: only the (uncached) error rows are recomputed
    warm = go("ray2", "ray", cache)
    for stage in ("predict", "saliency", "vlm"):
        s = warm.stats[stage]
        assert (s.cached, s.computed) == (n - 1, 1), stage
    for table in TABLES:  # column order follows the first part written: compare by name
        pd.testing.assert_frame_equal(_sorted(getattr(load_run(tmp_path / "ray2"), table)),
                                      _sorted(getattr(got, table)), obj=table, check_like=True)

"""The Ray engine runs the same stage as the local engine and gives identical tables."""

from __future__ import annotations

import pandas as pd
import pytest

from test_engine_helpers import ColourAdapter, local_ray, make_images
from test_engine_helpers import sorted_by_id as _sorted
from vlens.engine import ENGINES, RayEngine
from vlens.engine.cache import Cache
from vlens.engine.predict import run_predict
from vlens.runs import load_run

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    yield from local_ray()


@pytest.mark.slow
def test_ray_equals_local_with_cache_and_resume(tmp_path, ray_session):
    src = make_images(tmp_path / "imgs", 45, bad=3)
    local = run_predict(ColourAdapter(), src, tmp_path / "local", batch_size=8, progress=False)
    cache = Cache(tmp_path / "cache")
    eng = "ray"
    assert isinstance(ENGINES.create(eng), RayEngine)
    r1 = run_predict(ColourAdapter(), src, tmp_path / "ray", batch_size=8, cache=cache,
                     engine=eng, engine_options={"num_workers": 1}, progress=False)
    assert r1.stats.extra == {"workers": 1, "gpus_per_worker": 0.0}
    assert (r1.stats.total, r1.stats.computed, r1.stats.cached, r1.stats.errors) == (48, 48, 0, 3)
    want, got = load_run(tmp_path / "local"), load_run(tmp_path / "ray")
    for table in ("predictions", "samples"):
        pd.testing.assert_frame_equal(_sorted(getattr(got, table)), _sorted(getattr(want, table)))
    assert r1.accuracy == local.accuracy
    assert cache.stats()["entries"] == 45  # workers wrote the shared cache
    # the same run dir again: ok rows are skipped, only the 3 error rows are retried
    r3 = run_predict(ColourAdapter(), src, tmp_path / "ray", batch_size=8, cache=cache,
                     engine=eng, progress=False)
    assert (r3.stats.skipped, r3.stats.computed, r3.stats.cached) == (45, 3, 0)
    pd.testing.assert_frame_equal(_sorted(load_run(tmp_path / "ray").predictions),
                                  _sorted(want.predictions))

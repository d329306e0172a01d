"""Resume after SIGKILL: the resumed run equals an uninterrupted one and recomputes only
the rows that were missing."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from test_engine_helpers import ColourAdapter, make_images, scan, slow_loader
from vlens.data.images import load_image
from vlens.engine.cache import Cache
from vlens.engine.predict import run_predict
from vlens.engine.store import RunStore
from vlens.runs import load_run

N_OK, N_BAD, BATCH = 300, 4, 10


def _child(data: str, out: str, cache: str) -> None:
    torch.set_num_threads(1)
    run_predict(ColourAdapter(), scan(Path(data)), out, batch_size=BATCH, cache=Cache(cache),
                progress=False, loader=slow_loader(0.02))


def _kill_midway(data: Path, out: Path, cache: Path) -> None:
    """Run predict in a forked process (no re-import) and SIGKILL it after >= 8 batches."""
    proc = mp.get_context("fork").Process(target=_child, args=(str(data), str(out), str(cache)))
    proc.start()
    parts = RunStore(out).parts_dir("predictions")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            n_parts = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
            if n_parts >= 8:
                break
            if not proc.is_alive():
                pytest.fail(f"predict ended before the kill (exit code {proc.exitcode})")
            time.sleep(0.01)
        else:
            pytest.fail("predict made no progress in 60 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    assert proc.exitcode == -signal.SIGKILL


def _id_of(path: str) -> str:
    stem = Path(path).stem
    return f"s{int(stem[3:]):05d}" if stem.startswith("img") else stem


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("id").reset_index(drop=True)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    data = tmp_path / "data"
    make_images(data, N_OK, bad=N_BAD)
    n = N_OK + N_BAD
    ref = run_predict(ColourAdapter(), scan(data), tmp_path / "ref", batch_size=BATCH,
                      progress=False)
    assert ref.n == n and ref.errors == N_BAD

    killed = tmp_path / "killed"
    _kill_midway(data, killed, tmp_path / "cache")
    store = RunStore(killed)
    assert not store.table_path("predictions").exists()  # it really died mid-way
    assert len(store.ids("predictions")) % BATCH == 0  # whole batches only
    done_ids = store.ids("predictions", ok_only=True)  # error rows are retried on resume
    n_done = len(done_ids)
    assert BATCH * 8 - N_BAD <= n_done < n
    shutil.copytree(killed, tmp_path / "killed_nocache")

    calls: list[str] = []

    def counting_loader(path: str):
        calls.append(path)
        return load_image(path)

    # resume with the cache the killed run shared
    cache = Cache(tmp_path / "cache")
    res = run_predict(ColourAdapter(), scan(data), killed, batch_size=BATCH, cache=cache,
                      progress=False, loader=counting_loader)
    assert res.stats.skipped == n_done
    assert res.stats.computed + res.stats.cached == n - n_done
    assert res.stats.computed == len(calls)
    assert res.stats.cached <= BATCH  # at most the batch in flight was cached, not stored
    recomputed = {_id_of(c) for c in calls}
    assert len(recomputed) == len(calls) and not recomputed & done_ids  # nothing done twice

    # resume without a cache: exactly the missing rows are recomputed
    calls.clear()
    res2 = run_predict(ColourAdapter(), scan(data), tmp_path / "killed_nocache",
                       batch_size=BATCH, cache=None, progress=False, loader=counting_loader)
    assert (res2.stats.skipped, res2.stats.computed) == (n_done, n - n_done)
    assert len(calls) == n - n_done

    want = load_run(tmp_path / "ref")
    for path in (killed, tmp_path / "killed_nocache"):
        got = load_run(path)
        for table in ("predictions", "samples"):
            pd.testing.assert_frame_equal(
                _sorted(getattr(got, table)), _sorted(getattr(want, table)),
                check_exact=False, rtol=1e-6,
            )
        assert got.predictions["id"].is_unique and len(got.predictions) == n
        assert not RunStore(path).parts_dir("predictions").exists()
        assert not list(Path(path).glob("**/*.tmp"))

"""Disk full while a run writes: the store's atomic writer fails with ENOSPC after K writes.
The run stops with that error (not error rows), everything already written stays readable,
and a re-run once space is freed completes, equal to an uninterrupted run."""

from __future__ import annotations

import contextlib
import errno
import shutil

import pyarrow.parquet as pq
import pytest
from rb_helpers import assert_accounted, assert_runs_equal, table

import vlens.engine.store as store_mod
from vlens.pipeline import ExplainOptions, explain
from vlens.runs import load_run


def _failing_after(k: int, calls: list[str]):
    real = store_mod.atomic_open

    @contextlib.contextmanager
    def atomic_open(path, mode="wb"):
        calls.append(str(path))
        with real(path, mode) as f:
            if len(calls) > k:
                f.write(b"\0" * 100 if "b" in mode else "x" * 100)  # half-written, then:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            yield f
    return atomic_open


# K picks the write that fails: a predict part, the predictions compaction, a saliency
# part, a VLM part after its side tables, the final config.yaml
@pytest.mark.parametrize("k", [3, 8, 11, 17, 30])
def test_disk_full_then_space_freed(tmp_path, monkeypatch, small_world, clean_run, k):
    out = tmp_path / "run"
    ids = set(table(clean_run, "samples")["id"].astype(str))
    calls: list[str] = []
    monkeypatch.setattr(store_mod, "atomic_open", _failing_after(k, calls))
    with pytest.raises(OSError) as exc:
        explain("demo", f"manifest:{small_world}", out, ExplainOptions(progress=False,
                                                                      batch_size=4))
    assert exc.value.errno == errno.ENOSPC and "No space left" in str(exc.value)
    failed_at = calls[k]
    monkeypatch.undo()

    # what was written before the failure is intact and readable; the failed file is not there
    for p in out.rglob("*.parquet"):
        pq.read_table(p)
    assert not [p for p in out.rglob("*.tmp")]  # the writer cleaned its temp file
    r = load_run(out)
    done = {name: set(t["id"].astype(str)) for name in ("predictions", "saliency", "vlm")
            if (t := getattr(r, name)) is not None}
    assert done, f"nothing survived (failed at {failed_at})"
    for name, got in done.items():
        assert got <= ids, name
        ref = table(clean_run, name).set_index("id")
        mine = getattr(r, name).set_index("id").loc[sorted(got)]
        assert (mine["status"] == ref.loc[sorted(got), "status"]).all()  # no fake error rows

    # space is freed: the re-run completes and equals an uninterrupted run
    explain("demo", f"manifest:{small_world}", out, ExplainOptions(progress=False,
                                                                  batch_size=4))
    assert_accounted(out, ids)
    assert_runs_equal(out, clean_run)
    shutil.rmtree(out)

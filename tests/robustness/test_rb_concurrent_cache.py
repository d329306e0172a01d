"""Two `vlens explain` processes sharing one --cache at the same time: both finish, equal
tables, the SQLite cache passes integrity_check and holds every entry (a third run is
served entirely from it)."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
from rb_helpers import CLI, assert_runs_equal, cli_env, make_world, table

from vlens.engine.cache import Cache
from vlens.engine.store import RunStore
from vlens.pipeline import ExplainOptions, explain

N = 16


@pytest.mark.slow
def test_two_runs_share_one_cache_concurrently(tmp_path):
    manifest = make_world(tmp_path / "w", n=N, seed=9)
    ref = tmp_path / "ref"
    explain("demo", f"manifest:{manifest}", ref, ExplainOptions(progress=False, batch_size=2))
    cache = tmp_path / "cache"

    def start(name):
        return subprocess.Popen(
            [*CLI, "explain", "--model", "demo", "--data", f"manifest:{manifest}", "--out",
             str(tmp_path / name), "--cache", str(cache), "--batch-size", "2",
             "--no-progress"], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    procs = [start("a"), start("b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert_runs_equal(tmp_path / "a", ref)
    assert_runs_equal(tmp_path / "b", ref)

    c = Cache(cache)
    assert c.integrity_check() == "ok"
    with sqlite3.connect(c.db_path) as raw:  # and from a plain sqlite3 connection
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    fps = RunStore(ref).read_config()["fingerprints"]
    per_fp = c.stats()["fingerprints"]
    for stage in ("predict", "saliency", "vlm"):
        assert per_fp.get(fps[stage]) == N, (stage, per_fp)  # no lost entries, no extras
    c.close()

    # a third run is served wholly from the shared cache
    explain("demo", f"manifest:{manifest}", tmp_path / "c",
            ExplainOptions(progress=False, batch_size=2), cache=Cache(cache))
    stats = json.loads((tmp_path / "c" / "explain_stats.json").read_text())
    for stage in ("predict", "saliency", "vlm"):
        assert (stats[stage]["cached"], stats[stage]["computed"]) == (N, 0), (stage, stats)
    assert_runs_equal(tmp_path / "c", ref)
    assert (table(ref, "vlm")["status"] == "ok").all()

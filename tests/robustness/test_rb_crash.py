"""SIGKILL `vlens explain` at random points, many times, resuming each time: the final run
equals an uninterrupted one, and after every kill each table file on disk is complete."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rb_helpers import CLI, assert_accounted, assert_runs_equal, cli_env, make_world, table

from vlens.pipeline import ExplainOptions, explain
from vlens.runs import load_run

N, BATCH, MAX_KILLS, SEED = 48, 4, 8, 1234


def _n_files(run: Path) -> int:
    """Files under `run` (folders vanish under us while the run compacts: os.walk copes)."""
    return sum(len(files) for _, _, files in os.walk(run))


def _check_readable(run: Path) -> None:
    """No partial file is ever visible as complete: every table and part parses, temp files
    are not named like tables, later stages only hold ids earlier stages finished."""
    for p in run.rglob("*.parquet"):
        assert not p.name.startswith("."), p
        pq.read_table(p)  # raises on a torn file
    r = load_run(run)  # what every reader sees: tables + pending parts, dedup by id
    stages = [t for t in (r.predictions, r.saliency, r.vlm) if t is not None]
    for earlier, later in zip(stages, stages[1:], strict=False):
        assert set(later["id"]) <= set(earlier["id"])
        assert later["id"].is_unique


def _child(manifest: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    explain("demo", f"manifest:{manifest}", out, ExplainOptions(progress=False,
                                                                batch_size=BATCH))


@pytest.mark.slow
def test_sigkill_many_times_then_resume_equals_clean(tmp_path):
    """Kills land after a seeded random number of new files (1-30: parts, maps, views,
    compactions), so they hit every stage. The workers are forked (no re-import: ~0.1 s a
    start instead of seconds); the final resume is the real CLI in a fresh interpreter."""
    manifest = make_world(tmp_path / "w", n=N, seed=8)
    ref = tmp_path / "ref"
    explain("demo", f"manifest:{manifest}", ref, ExplainOptions(progress=False,
                                                                batch_size=BATCH))
    out = tmp_path / "killed"
    rng = random.Random(SEED)
    kills, ctx = 0, mp.get_context("fork")
    while kills < MAX_KILLS:
        before, step = _n_files(out), rng.randint(1, 30)
        proc = ctx.Process(target=_child, args=(str(manifest), str(out)))
        proc.start()
        deadline = time.monotonic() + 120
        while proc.is_alive() and _n_files(out) < before + step:
            assert time.monotonic() < deadline, "no progress in 120 s"
            time.sleep(0.005)
        if not proc.is_alive():
            assert proc.exitcode == 0
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        kills += 1
        _check_readable(out)
    p = subprocess.run([*CLI, "explain", "--model", "demo", "--data", f"manifest:{manifest}",
                        "--out", str(out), "--batch-size", str(BATCH), "--no-cache",
                        "--no-progress"], env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    print(f"kills survived: {kills}")
    assert kills == MAX_KILLS, f"only {kills} kills landed before the run finished"
    assert_accounted(out, set(table(ref, "samples")["id"].astype(str)))
    assert_runs_equal(out, ref)
    orphans = list(out.rglob("*.tmp"))  # never read; swept by the next resume (test below)
    print(f"orphan temp files left by kills: {len(orphans)}")


def test_resume_sweeps_temp_files_of_killed_writes(tmp_path, small_world, clean_run):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    (out / "saliency" / "views" / ".000001-x.masked.png.k1l3d.tmp").write_bytes(b"\x89PNG half")
    (out / "vlm.parts").mkdir()
    (out / "vlm.parts" / ".part-00000.parquet.k1l3d.tmp").write_bytes(b"PAR1 half")
    explain("demo", f"manifest:{small_world}", out, ExplainOptions(progress=False,
                                                                  batch_size=4))
    assert_runs_equal(out, clean_run)
    assert list(out.rglob("*.tmp")) == []


def _run_child(manifest: str, out: str) -> None:
    import torch

    from vlens.pipeline import run

    torch.set_num_threads(1)
    run("demo", f"manifest:{manifest}", out, ExplainOptions(progress=False, batch_size=4))


def _findings(run_dir: Path) -> dict:
    import json

    f = json.loads((run_dir / "findings.json").read_text())
    f["run"].pop("name")
    return f


@pytest.mark.slow
def test_sigkill_during_analysis_and_report_then_resume(tmp_path, small_world):
    """`vlens run` killed just after explain (analysis starting), after findings.json (report
    being built) and inside the report's image copies: the re-run writes the same findings
    and a complete report; no half-written findings.json or index.html is ever visible."""
    from vlens.pipeline import run

    ref = tmp_path / "ref"
    run("demo", f"manifest:{small_world}", ref, ExplainOptions(progress=False, batch_size=4))
    out = tmp_path / "killed"
    ctx = mp.get_context("fork")
    points = [lambda: (out / "explain_stats.json").exists(),
              lambda: (out / "findings.json").exists(),
              lambda: (out / "report").exists()]
    for i, hit in enumerate(points):
        proc = ctx.Process(target=_run_child, args=(str(small_world), str(out)))
        proc.start()
        deadline = time.monotonic() + 120
        while proc.is_alive() and not hit():
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        _check_readable(out)
        if (out / "findings.json").exists():
            _findings(out)  # parses: never a torn JSON file
        index = out / "report" / "index.html"
        if index.exists():
            assert index.read_text(encoding="utf-8").rstrip().endswith("</html>"), i
    res = run("demo", f"manifest:{small_world}", out, ExplainOptions(progress=False,
                                                                    batch_size=4))
    assert _findings(out) == _findings(ref)
    assert_runs_equal(out, ref)
    got = sorted(p.relative_to(out / "report") for p in (out / "report").rglob("*")
                 if not p.name.startswith("."))
    want = sorted(p.relative_to(ref / "report") for p in (ref / "report").rglob("*"))
    assert got == want and res.report.read_text(encoding="utf-8").rstrip().endswith("</html>")

"""Helpers for the robustness suite: small generated worlds, whole-run comparison,
the CLI in a subprocess, and the fake chat-completions server from tests/vlm_server.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # tests/vlm_server.py is shared with test_vlm_openai.py
    sys.path.insert(0, str(TESTS))

TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding", "embeddings")
PER_SAMPLE = ("samples", "predictions", "saliency", "vlm")


def make_world(root: Path, n: int, seed: int = 0) -> Path:
    """A `demo_test` world of `n` images under `root`; returns the manifest path."""
    from vlens.world import make_dataset

    return make_dataset("demo_test", root, n=n, seed=seed)


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table(run: Path, name: str) -> pd.DataFrame | None:
    p = Path(run) / f"{name}.parquet"
    if not p.exists():
        return None
    return pd.read_parquet(p).sort_values("id").reset_index(drop=True)


def assert_runs_equal(got: Path, want: Path, tables=TABLES, artefacts: bool = True) -> None:
    """Every table equal (sorted by id; no timing columns exist in them) and every saliency
    artefact byte-identical."""
    for name in tables:
        a, b = table(got, name), table(want, name)
        assert (a is None) == (b is None), name
        if a is None:
            continue
        assert a["id"].is_unique, f"{name}: duplicate ids"
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6,
                                      obj=name)
    if artefacts:
        fa = {p.relative_to(got): p.read_bytes() for p in (Path(got) / "saliency").rglob("*")
              if p.is_file()}
        fb = {p.relative_to(want): p.read_bytes() for p in (Path(want) / "saliency").rglob("*")
              if p.is_file()}
        assert sorted(fa) == sorted(fb)
        assert [k for k in fa if fa[k] != fb[k]] == []


def assert_accounted(run: Path, ids: set[str]) -> dict[str, dict[str, int]]:
    """Every id has exactly one row in every per-sample table, ok or error with a reason.
    Returns {table: {"ok": n, "error": n}}."""
    counts = {}
    for name in PER_SAMPLE:
        df = table(run, name)
        assert df is not None, f"{name}.parquet missing"
        assert df["id"].is_unique, f"{name}: duplicate ids"
        assert set(df["id"].astype(str)) == ids, f"{name}: ids differ"
        assert set(df["status"]) <= {"ok", "error"}
        bad = df[df["status"] == "error"]
        assert bad["error"].map(lambda e: isinstance(e, str) and e.strip() != "").all(), \
            f"{name}: an error row without a reason"
        counts[name] = {"ok": int((df["status"] == "ok").sum()), "error": len(bad)}
    no_partials = [p for p in Path(run).rglob("*") if p.name.endswith(".tmp")
                   or p.name.endswith(".parts")]
    assert no_partials == []
    return counts


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.update(extra)
    return env


CLI = [sys.executable, "-c", "import torch; torch.set_num_threads(1); "
       "from vlens.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], env=env or cli_env(), capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"vlens {' '.join(args)} failed ({p.returncode}):\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p

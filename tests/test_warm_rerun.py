"""Warm re-runs of `vlens run` (explain + analyze + report): no VLM call, same results.

(a) the same command on the same run dir resumes: every stage skips, the analysis and the
report are kept because their inputs did not change (findings.digest / report.digest);
(b) a new run dir with the same cache: the stages are served from the cache, the analysis
result from the cache by the digest of its input tables, and the tables, findings and
report equal the cold run's.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fakes import ColourVLM, TinyCNN  # tests/ is on sys.path (rootdir import mode)
from vlens.engine.cache import Cache
from vlens.engine.store import RunStore
from vlens.pipeline import ExplainOptions
from vlens.pipeline.full import ANALYSIS_FP, DIGEST_FILE, REPORT_DIGEST_FILE, analysis_digest, run
from vlens.runs import load_run

TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding", "embeddings")


def _adapter(class_names):
    from vlens.models import TorchAdapter

    return TorchAdapter(TinyCNN(len(class_names)), class_names, input_size=64,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold `run` (empty cache) on a 16-image world with one broken image."""
    from vlens.data import open_dataset
    from vlens.world import make_dataset

    root = tmp_path_factory.mktemp("warm")
    manifest = make_dataset("demo_test", root / "data", n=16, seed=5)
    first = json.loads(manifest.read_text().splitlines()[0])
    (root / "data" / first["path"]).write_bytes(b"not a png")
    source = open_dataset(f"manifest:{manifest}")
    adapter = _adapter(source.class_names)
    vlm = ColourVLM()
    cache = Cache(root / "cache")
    opts = ExplainOptions(vlm=vlm, batch_size=8, progress=False)
    res = run(adapter, f"manifest:{manifest}", root / "cold", opts, cache=cache)
    return {"root": root, "manifest": manifest, "adapter": adapter, "vlm": vlm,
            "cache": cache, "opts": opts, "res": res, "cold_calls": vlm.calls}


def _digest(run_dir):
    """The analysis digest recorded in findings.digest (first line; the second is the hash of
    findings.json itself)."""
    return (run_dir / DIGEST_FILE).read_text().split()[0]


def _findings(run_dir):
    data = json.loads((run_dir / "findings.json").read_text())
    data["run"].pop("name")
    return data


def _again(cold, out, cache="same", **kw):
    cold["vlm"].calls = 0
    c = cold["cache"] if cache == "same" else cache
    return run(cold["adapter"], f"manifest:{cold['manifest']}", out, cold["opts"], cache=c, **kw)



def _occ(cold):
    """The background-swap hook `run` passes for a classifier (part of the digest)."""
    from vlens.pipeline.counterfactual import background_occluder

    return background_occluder(cold["adapter"], [])

def test_cold_run_called_the_vlm_for_stages_and_utility(cold):
    assert cold["cold_calls"] > 0
    f = json.loads((cold["root"] / "cold" / "findings.json").read_text())
    assert f["run"]["name"] == "cold"
    assert isinstance(f.get("utility_k"), dict)  # the VLM hook ran and its result is kept
    assert _digest(cold["root"] / "cold") == analysis_digest(cold["root"] / "cold", cold["vlm"],
                                                             None, _occ(cold))


def test_resume_same_dir_does_nothing_and_calls_no_vlm(cold):
    out = cold["root"] / "cold"
    index = out / "report" / "index.html"
    before = {f: (out / f).stat().st_mtime_ns for f in ("findings.json", DIGEST_FILE)}
    html_mtime = index.stat().st_mtime_ns
    tables = {t: (out / f"{t}.parquet").read_bytes() for t in TABLES}
    res = _again(cold, out)
    assert cold["vlm"].calls == 0
    st = json.loads((out / "explain_stats.json").read_text())
    for stage in ("predict", "saliency", "vlm"):
        # every ok row is skipped; the broken image's error row is retried (never cached)
        assert (st[stage]["total"], st[stage]["skipped"]) == (16, 15), stage
        assert (st[stage]["computed"], st[stage]["cached"], st[stage]["errors"]) == (1, 0, 1)
    # the retried error row is the same row: the tables keep their bytes, so the analysis
    # and the report see unchanged inputs and are skipped
    assert {f: (out / f).stat().st_mtime_ns for f in before} == before
    assert index.stat().st_mtime_ns == html_mtime
    assert {t: (out / f"{t}.parquet").read_bytes() for t in TABLES} == tables
    assert res.findings == cold["res"].findings


def test_new_dir_same_cache_equals_cold_without_vlm_calls(cold):
    out = cold["root"] / "warm"
    res = _again(cold, out)
    assert cold["vlm"].calls == 0
    a, b = load_run(cold["root"] / "cold"), load_run(out)
    for t in TABLES:  # same rows, same values, same bytes
        pd.testing.assert_frame_equal(getattr(a, t), getattr(b, t), check_exact=True)
        assert (out / f"{t}.parquet").read_bytes() == \
            (cold["root"] / "cold" / f"{t}.parquet").read_bytes(), t
    for rel in a.saliency["view_masked"].dropna():
        assert (out / rel).read_bytes() == (cold["root"] / "cold" / rel).read_bytes()
    assert _findings(out) == _findings(cold["root"] / "cold")
    assert json.loads((out / "findings.json").read_text())["run"]["name"] == "warm"
    assert res.findings == cold["res"].findings
    assert (out / "report" / "index.html").is_file()
    want = analysis_digest(out, cold["vlm"], None, _occ(cold))
    assert _digest(out) == _digest(cold["root"] / "cold") == want


def test_changed_analysis_config_recomputes_with_cached_utility_guesses(cold, tmp_path):
    out = cold["root"] / "cold"
    old = _digest(out)
    _again(cold, out, analysis={"min_support": 3})
    new = _digest(out)
    assert new != old and new == analysis_digest(out, cold["vlm"], None, _occ(cold),
                                                  min_support=3)
    assert cold["vlm"].calls == 0  # the utility guesses came from the cache
    _again(cold, out)  # back to the default config: served from the cache by digest
    assert _digest(out) == old and cold["vlm"].calls == 0


def test_changed_table_invalidates_analysis_and_report(cold, tmp_path):
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(cold["root"] / "cold", out)
    store = RunStore(out)
    vlm = store.read_table("vlm")
    vlm["focus_score"] = np.where(vlm["status"] == "ok", 1.0, np.nan)
    store.write_table("vlm", vlm)
    old = _digest(out)
    assert analysis_digest(out, cold["vlm"], None, _occ(cold)) != old
    cache = Cache(tmp_path / "empty-cache")
    res = _again(cold, out, cache=cache)  # stages resume; the analysis must run again
    assert _digest(out) == analysis_digest(out, cold["vlm"], None, _occ(cold))
    assert cache.get_many(ANALYSIS_FP, [analysis_digest(out, cold["vlm"], None, _occ(cold))])
    assert res.raw["run"]["name"] == "edited"
    assert (out / REPORT_DIGEST_FILE).read_text() != \
        (cold["root"] / "cold" / REPORT_DIGEST_FILE).read_text()


def test_no_cache_resume_still_skips_analysis(cold, tmp_path):
    import shutil

    out = tmp_path / "nocache"
    shutil.copytree(cold["root"] / "cold", out)
    mtime = (out / "findings.json").stat().st_mtime_ns
    _again(cold, out, cache=None)
    assert cold["vlm"].calls == 0
    assert (out / "findings.json").stat().st_mtime_ns == mtime


def test_damaged_digest_file_recomputes(cold, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(cold["root"] / "cold", out)
    (out / DIGEST_FILE).write_text("not a digest")
    (out / "report" / "index.html").unlink()
    _again(cold, out)
    assert _digest(out) == analysis_digest(out, cold["vlm"], None, _occ(cold))
    assert (out / "report" / "index.html").is_file()
    assert _findings(out) == _findings(cold["root"] / "cold")


def test_findings_rewritten_by_something_else_are_recomputed(cold, tmp_path):
    import shutil

    out = tmp_path / "rewritten"
    shutil.copytree(cold["root"] / "cold", out)
    other = json.loads((out / "findings.json").read_text())
    other["findings"] = []  # e.g. `vlens analyze` with other options wrote it
    (out / "findings.json").write_text(json.dumps(other))
    res = _again(cold, out)
    assert cold["vlm"].calls == 0  # served from the cache by digest, not from the stale file
    assert _findings(out) == _findings(cold["root"] / "cold")
    assert res.findings == cold["res"].findings


def test_vlm_stage_fingerprint_follows_the_judge_rule_version(monkeypatch):
    from vlens.pipeline.vlm_stage import VLMStage
    from vlens.vlm import judge

    def fp():
        return VLMStage(ColourVLM(), ColourVLM(), ["a", "b"], ["red"], "sal").fingerprint

    before = fp()
    assert fp() == before  # stable
    monkeypatch.setattr(judge, "JUDGE_RULE_VERSION", "test-next")
    assert fp() != before  # cached judge answers of the old rule are not reused

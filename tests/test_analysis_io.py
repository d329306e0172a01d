"""vlens.analysis: agreement statistics, run-directory input and the `vlens analyze` CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from vlens.analysis import AnalysisInput
from vlens.analysis.agreement import (
    focus_vs_energy,
    human_agreement,
    pearson,
    quadratic_kappa,
    read_human_scores,
    spearman,
)
from vlens.analysis.synthetic import make_synthetic
from vlens.analysis.utility import run_utility_k, utility_k
from vlens.errors import DataError


def test_agreement_exact_on_small_vectors():
    a = [0, 1, 2, 3, 4, 5, 2.4]
    b = [0.1, 0.15, 0.5, 0.4, 0.9, 0.8, 0.3]
    assert pearson(a, b)["r"] == pytest.approx(sps.pearsonr(a, b).statistic)
    assert spearman(a, b)["rho"] == pytest.approx(sps.spearmanr(a, b).statistic)
    h = [0, 2, 2, 3, 5, 4, 2.6]
    ref = cohen_kappa_score([0, 1, 2, 3, 4, 5, 2], [0, 2, 2, 3, 5, 4, 3], weights="quadratic")
    assert quadratic_kappa(a, h) == pytest.approx(ref)
    assert quadratic_kappa([1, 2, 3], [1, 2, 3]) == 1.0
    r = focus_vs_energy(a + [np.nan], b + [0.2])
    assert r["pearson"]["n"] == 7
    with pytest.raises(DataError, match="equal-length"):
        pearson([1, 2, 3], [1, 2])
    with pytest.raises(DataError, match="at least 3"):
        spearman([1, 2], [1, 2])


def test_human_scores_csv(tmp_path):
    judge = pd.Series([4.0, 1.0, 3.0, 5.0], index=["a", "b", "c", "d"])
    f = tmp_path / "h.csv"
    f.write_text("id,score\na,4\nb,2\nc,3\n")
    h = read_human_scores(f)
    r = human_agreement(judge, h)
    assert r["n"] == 3
    assert r["pearson"] == pytest.approx(sps.pearsonr([4, 1, 3], [4, 2, 3]).statistic)
    assert r["quadratic_kappa"] == pytest.approx(
        cohen_kappa_score([4, 1, 3], [4, 2, 3], weights="quadratic"))
    (tmp_path / "x.csv").write_text("id,score\nzz,4\na,1\nb,2\n")
    with pytest.raises(DataError, match="1 human-scored id.*'zz'"):
        human_agreement(judge, read_human_scores(tmp_path / "x.csv"))
    (tmp_path / "y.csv").write_text("sample,score\na,4\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['id'\]"):
        read_human_scores(tmp_path / "y.csv")
    (tmp_path / "z.csv").write_text("id,score\na,4\na,3\n")
    with pytest.raises(DataError, match="more than once"):
        read_human_scores(tmp_path / "z.csv")
    (tmp_path / "w.csv").write_text("id,score\na,\n")
    with pytest.raises(DataError, match="missing or not a number"):
        read_human_scores(tmp_path / "w.csv")
    with pytest.raises(DataError, match="not found"):
        read_human_scores(tmp_path / "nope.csv")


def test_utility_k():
    preds = ["cat", "dog", "cow"]
    topk = [["cat", "dog", "cow"], ["dog", "cat", "cow"], ["cow", "dog", "cat"]]
    asked = []

    def ask(sid, view, cands):
        asked.append((sid, view, sorted(cands)))
        return preds[int(sid)] if view == "explanation" else cands[0]

    r = run_utility_k(ask, ["0", "1", "2"], topk, preds, k=2)
    assert r["acc_with_explanation"] == 1.0 and r["k"] == 2
    assert all(len(c) == 2 for _, _, c in asked)
    assert utility_k(["a"], ["b"], ["a"], 3)["ratio"] is None
    with pytest.raises(DataError, match="equal lengths"):
        utility_k(["a"], [], ["a"], 3)


def _write_run(tmp_path, n=2500):
    inp, truth = make_synthetic(n, seed=7, grounding=True)
    run = tmp_path / "run1"
    run.mkdir()
    lab = np.array(inp.classes)[inp.label]
    prd = np.array(inp.classes)[inp.pred]
    pd.DataFrame({"id": inp.ids, "uri": inp.ids, "label": lab, "status": "ok",
                  "meta_slice": 0}).to_parquet(run / "samples.parquet")
    preds = pd.DataFrame({"id": inp.ids, "label": lab, "pred": prd,
                          "confidence": inp.confidence, "correct": lab == prd, "status": "ok"})
    preds.loc[0, "status"] = "error"  # error rows are not analysed
    preds.to_parquet(run / "predictions.parquet")
    pd.DataFrame({"id": inp.ids, "focus_score": inp.focus,
                  "status": "ok"}).to_parquet(run / "vlm.parquet")
    for name, mat in (("concepts", inp.concepts), ("grounding", inp.grounding)):
        df = pd.DataFrame(mat, columns=inp.concept_names)
        df.insert(0, "id", inp.ids)
        df["status"] = "ok"
        df["content_hash"] = "abc"  # non-numeric columns are not concepts
        df.to_parquet(run / f"{name}.parquet")
    pd.DataFrame({"id": inp.ids, "embedding": list(inp.embeddings)}).to_parquet(
        run / "embeddings.parquet")
    return run, inp


def test_from_run_reads_tables(tmp_path):
    run, inp = _write_run(tmp_path)
    got = AnalysisInput.from_run(run)
    assert got.n == inp.n - 1 and got.ids[0] == inp.ids[1]
    assert np.allclose(got.concepts, inp.concepts[1:])
    assert got.concept_names == inp.concept_names == got.grounding_names
    assert np.allclose(got.embeddings, inp.embeddings[1:])
    assert list(got.meta.columns) == ["meta_slice"]
    assert (np.array(got.classes)[got.label] == np.array(inp.classes)[inp.label[1:]]).all()
    with pytest.raises(DataError, match="run directory not found"):
        AnalysisInput.from_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no predictions table"):
        AnalysisInput.from_run(tmp_path / "empty")


def test_cli_analyze_writes_findings(tmp_path):
    from vlens.cli import app

    run, _ = _write_run(tmp_path)
    cfile = tmp_path / "concepts.txt"
    cfile.write_text("# tested concepts\nwater\ncause\nclass0\nclass1\nclass2\nclass3\nclass4\n")
    r = CliRunner().invoke(app, ["analyze", str(run), "--concepts", str(cfile),
                                 "--focus-threshold", "3"])
    assert r.exit_code == 0, r.output
    d = json.loads((run / "findings.json").read_text())
    assert d["xai_matrix"]["threshold"] == 3.0
    assert d["run"]["n_concepts"] == 7 and d["run"]["n_samples"] == 2499
    top = d["findings"][0]
    assert top["id"] in r.output and "Top findings" in r.output
    assert {(f["kind"], f["class"], f["concept"]) for f in d["findings"]} >= {
        ("spurious_cue", "class2", "water"), ("concept_error", "class1", "cause")}
    (tmp_path / "none.txt").write_text("# nothing\n")
    r = CliRunner().invoke(app, ["analyze", str(run), "--concepts", str(tmp_path / "none.txt")])
    assert r.exit_code != 0 and "lists no concepts" in str(r.exception)

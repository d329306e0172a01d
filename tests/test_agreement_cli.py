"""`vlens agreement`: judge focus vs energy-on-object and vs human scores, exact values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from vlens.cli.apps import app
from vlens.engine.store import RunStore


@pytest.fixture()
def run_dir(tmp_path):
    store = RunStore(tmp_path / "run")
    ids = [f"s{i}" for i in range(8)]
    focus = [0.5, 1.0, 4.0, 3.5, 2.0, 5.0, 0.0, 4.5]
    energy = [0.1, 0.3, 0.8, 0.6, 0.2, 0.9, 0.05, 0.7]
    store.write_table("vlm", pd.DataFrame({"id": ids, "focus_score": focus,
                                           "status": ["ok"] * 7 + ["error"]}))
    store.write_table("saliency", pd.DataFrame({"id": ids, "energy_on_object": energy,
                                                "status": "ok"}))
    return tmp_path / "run", ids, focus, energy


def test_agreement_with_energy_and_human_scores(run_dir, tmp_path):
    path, ids, focus, energy = run_dir
    human = [1, 1, 4, 3, 2, 5, 0]
    pd.DataFrame({"id": ids[:7], "score": human}).to_csv(tmp_path / "h.csv", index=False)
    res = CliRunner().invoke(app, ["agreement", str(path), "--human", str(tmp_path / "h.csv")])
    assert res.exit_code == 0, res.output
    got = json.loads((path / "agreement.json").read_text())
    f, e = np.array(focus[:7]), np.array(energy[:7])  # the error row is left out
    assert got["n_judged"] == 7
    assert got["focus_vs_energy"]["pearson"]["r"] == pytest.approx(stats.pearsonr(f, e)[0])
    assert got["focus_vs_energy"]["spearman"]["rho"] == pytest.approx(stats.spearmanr(f, e)[0])
    h = got["human"]
    assert h["pearson"] == pytest.approx(stats.pearsonr(f, human)[0])
    assert h["quadratic_kappa"] == pytest.approx(
        cohen_kappa_score(np.rint(f).astype(int), human, weights="quadratic"))
    assert "quadratic kappa" in res.output


def test_agreement_rejects_unknown_human_ids(run_dir, tmp_path):
    path, *_ = run_dir
    pd.DataFrame({"id": ["nope"], "score": [3]}).to_csv(tmp_path / "h.csv", index=False)
    res = CliRunner().invoke(app, ["agreement", str(path), "--human", str(tmp_path / "h.csv")])
    assert res.exit_code != 0
    assert "not in the run" in str(res.exception) or "not in the run" in res.output

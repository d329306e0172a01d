"""A messy folder through the whole pipeline: every hostile or unusual file is accounted for
(one row per table, ok or an error with its reason), and the run still analyses and reports."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from rb_corpus import make_corpus
from rb_helpers import assert_accounted, make_world, read_manifest, table, write_manifest

from vlens.pipeline import ExplainOptions, run


def test_bad_image_corpus_through_run(tmp_path):
    manifest = make_world(tmp_path / "w", n=10, seed=11)
    expect = make_corpus(tmp_path / "w" / "images" / "bad")
    rows = read_manifest(manifest)
    labels = sorted({r["label"] for r in rows})
    rows += [{"id": f"bad/{name}", "path": f"images/bad/{name}", "label": labels[i % len(labels)]}
             for i, name in enumerate(expect)]
    write_manifest(manifest, rows)
    ids = {str(r["id"]) for r in rows}

    res = run("demo", f"manifest:{manifest}", tmp_path / "run",
              ExplainOptions(progress=False, batch_size=8))
    counts = assert_accounted(tmp_path / "run", ids)
    n_bad = sum(v != "ok" for v in expect.values())
    assert counts["samples"] == {"ok": len(ids) - n_bad, "error": n_bad}
    assert counts["predictions"] == counts["samples"]

    samples = table(tmp_path / "run", "samples").set_index("id")
    preds = table(tmp_path / "run", "predictions").set_index("id")
    for name, want in expect.items():
        sid = f"bad/{name}"
        if want == "ok":
            assert samples.loc[sid, "status"] == "ok", (name, samples.loc[sid, "error"])
            assert preds.loc[sid, "status"] == "ok", (name, preds.loc[sid, "error"])
            assert preds.loc[sid, "pred"] in labels
            assert 0 < preds.loc[sid, "confidence"] <= 1
        else:  # the loader's reason reaches the table, in both samples and predictions
            for df in (samples, preds):
                assert df.loc[sid, "status"] == "error"
                assert want in df.loc[sid, "error"], (name, df.loc[sid, "error"])
    # later stages: a sample that failed earlier is an error row there too, never dropped
    sal = table(tmp_path / "run", "saliency").set_index("id")
    vlm = table(tmp_path / "run", "vlm").set_index("id")
    for sid in samples.index[samples["status"] == "error"]:
        assert sal.loc[sid, "status"] == "error" and vlm.loc[sid, "status"] == "error"
    # good files get real judge answers and finite saliency metrics
    good = [f"bad/{n}" for n, v in expect.items() if v == "ok"]
    assert (vlm.loc[good, "status"] == "ok").all(), vlm.loc[good, "error"].to_dict()
    assert np.isfinite(vlm.loc[good, "focus_score"].astype(float)).all()
    # the rest of the run is untouched by its neighbours, and analysis + report still ran
    assert res.report is not None and res.report.exists()
    assert len(res.samples) == len(ids)

    # the same good images alone give the same predictions (no cross-talk within a batch)
    clean = tmp_path / "clean"
    shutil.copytree(tmp_path / "w", clean)
    write_manifest(clean / "manifest.jsonl",
                   [r for r in rows if not str(r["id"]).startswith("bad/")
                    or expect[str(r["id"])[4:]] == "ok"])
    run("demo", f"manifest:{clean / 'manifest.jsonl'}", tmp_path / "run2",
        ExplainOptions(progress=False, batch_size=8), report=False)
    p2 = table(tmp_path / "run2", "predictions").set_index("id")
    pd.testing.assert_series_equal(preds.loc[p2.index, "pred"], p2["pred"])
    np.testing.assert_allclose(preds.loc[p2.index, "confidence"].astype(float),
                               p2["confidence"].astype(float), rtol=1e-5)

"""How good is the per-sample judge? Measured against the generated world's ground truth.

For each seed: generate the balanced `demo_test` world, explain the shipped (biased) demo
model on it with the embedded VLM (Grad-CAM, masked views, contrastive judge), then compare
the judge's focus score (0-5) with what is known to be true:

- `energy_on_object`: the share of the saliency map's energy inside the object mask (the
  world's analogue of the paper's human ratings; Pearson and Spearman);
- `view_on_object`: the share of the judge's masked view (sigmoid mask, alpha/beta of the
  run) that lies on the object: what a perfect judge looking at the view could see;
- mean focus by correctness and by the demo model's training biases (`demo_train`: stars on
  water, crosses with the corner tag): bias-conflicting errors vs bias-aligned correct
  predictions (aligned = no bias conflicting; the strict `class & attribute` cell is shown
  apart, since those are right for the wrong reason).

    python3 benchmarks/bench_judge.py --seeds 7 11 --n 600 [--json judge.json]

The judge is calibrated on nothing here: the seeds are test worlds the embedded VLM and
the demo model never saw in training (training world seeds start at 10000).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import stats


def view_on_object(run_dir: Path, sal: pd.DataFrame, alpha: float, beta: float) -> pd.Series:
    """Share of the sigmoid mask's mass (the judge's view) inside the object mask."""
    out = {}
    for sid, path in zip(sal["id"], sal["map_path"], strict=True):
        mfile = run_dir / "data" / "masks" / f"{sid}.png"
        if not isinstance(path, str) or not mfile.exists():
            continue
        obj = np.asarray(Image.open(mfile).convert("L")) > 0
        m = Image.open(run_dir / path).convert("L")
        if m.size != obj.shape[::-1]:
            m = m.resize(obj.shape[::-1], Image.BILINEAR)
        v = np.asarray(m, np.float32) / 255.0
        w = 1.0 / (1.0 + np.exp(alpha * (beta - v)))
        out[sid] = float((w * obj).sum() / max(float(w.sum()), 1e-9))
    return pd.Series(out, name="view_on_object")


def table(run_dir: Path, alpha: float = 25.0, beta: float = 0.6) -> pd.DataFrame:
    """One row per judged sample: focus, truths, correctness and demo_train bias groups."""
    from vlens.runs import load_run
    from vlens.world.config import WorldConfig
    from vlens.world.generator import bias_groups

    r = load_run(run_dir)
    biases = [b for b in WorldConfig.load("demo_train").biases
              if b.kind in ("spurious", "shortcut")]
    s = r.samples.set_index("id")
    meta = {c[5:]: s[c] for c in s.columns if c.startswith("meta_")}
    attrs = pd.DataFrame(meta)
    groups = pd.DataFrame([bias_groups(dict(row), biases) for _, row in attrs.iterrows()],
                          index=attrs.index)
    d = (r.vlm.set_index("id")[["focus_score", "status"]]
         .join(r.predictions.set_index("id")[["correct"]])
         .join(r.saliency.set_index("id")[["energy_on_object"]])
         .join(view_on_object(run_dir, r.saliency, alpha, beta))
         .join(groups))
    d = d[d["status"] == "ok"].drop(columns="status")
    gcols = list(groups.columns)
    d["conflicting"] = (d[gcols] == "conflicting").any(axis=1)
    d["strict_aligned"] = (d[gcols] == "aligned").any(axis=1) & ~d["conflicting"]
    d["correct"] = d["correct"].astype(bool)
    return d


def summarise(d: pd.DataFrame) -> dict:
    f = d["focus_score"].astype(float)

    def corr(x, y):
        ok = x.notna() & y.notna()
        return {"pearson": round(float(stats.pearsonr(x[ok], y[ok])[0]), 3),
                "spearman": round(float(stats.spearmanr(x[ok], y[ok])[0]), 3)}

    c, conf = d["correct"], d["conflicting"]

    def mean(sel):
        return {"mean_focus": round(float(f[sel].mean()), 3), "n": int(sel.sum())}

    out = {
        "n": int(len(d)),
        "accuracy": round(float(c.mean()), 3),
        "focus_vs_energy": corr(f, d["energy_on_object"]),
        "focus_vs_view_on_object": corr(f, d["view_on_object"]),
        "view_on_object_vs_energy": corr(d["view_on_object"], d["energy_on_object"]),
        "correct": mean(c), "wrong": mean(~c),
        "conflicting_wrong": mean(conf & ~c),
        "aligned_correct": mean(~conf & c),
        "strict_aligned_correct": mean(d["strict_aligned"] & c),
    }
    cw, ac = f[conf & ~c], f[~conf & c]
    if len(cw) > 2 and len(ac) > 2:
        out["conflicting_wrong_vs_aligned_correct_mannwhitney_p"] = float(
            stats.mannwhitneyu(cw, ac, alternative="less").pvalue)
    return out


def run_seed(seed: int, n: int, work: Path) -> dict:
    from vlens.engine.cache import Cache
    from vlens.pipeline.full import DEMO_CONFIG
    from vlens.pipeline.run import ExplainOptions, explain
    from vlens.world import make_dataset

    out = work / f"seed{seed}"
    manifest = make_dataset(DEMO_CONFIG, out / "data", n=n, seed=seed)
    t0 = time.time()
    explain("demo", f"manifest:{manifest}", out, ExplainOptions(progress=False),
            cache=Cache(work / "cache"))
    res = summarise(table(out))
    res["seed"], res["explain_s"] = seed, round(time.time() - t0, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--work", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="vlens-judge-"))
    rows = [run_seed(s, a.n, work) for s in a.seeds]
    for r in rows:
        print(json.dumps(r))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

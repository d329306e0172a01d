"""Pipeline ratios P1 (overhead vs the unavoidable passes) and P4 (warm re-run vs cold).

    python3 benchmarks/bench_pipeline.py [--n 600] [--vlm embedded] [--json out.json]

On one demo world (`demo_test`, `--n` images) with the shipped demo model:
- passes: the vision model forward (no grad), Grad-CAM (forward + backward + CAM) and the
  VLM image encoder on the images and on their masked views, each timed alone on the same
  preprocessed images (decoding excluded, so the ratio is conservative);
- cold: `explain`, and `vlens run` (explain + analyze + report), each into a new run dir
  with an empty cache;
- resume (P4a): the same commands again on the same run dirs (everything already done);
- new dir (P4b): the same commands into new run dirs with the cache the cold run filled.
- CLI (`--cli`, default on): `vlens run` as two processes, cold then the same command
  again (up to date via run.stamp.json).
P1 = cold seconds / sum of passes; P4 = cold / warm seconds, with the VLM calls each warm
run made (counted on the backend) and whether its tables and findings equal the cold run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


class Counting:
    """Counts image-encoder calls of a VLM backend (instance attribute: internal calls too)."""

    def __init__(self, vlm) -> None:
        self.vlm, self.calls = vlm, 0
        inner = vlm.embed_images

        def embed_images(images):
            self.calls += 1
            return inner(images)

        vlm.embed_images = embed_images


def _images(manifest: Path) -> list:
    from vlens.data import open_dataset
    from vlens.data.paths import load_sample_image

    return [load_sample_image(s) for s in open_dataset(f"manifest:{manifest}")]


def passes(images: list, vlm, batch: int, model="demo") -> dict[str, float]:
    """Seconds of each unavoidable pass over `images` (one-time loads measured apart)."""
    import torch

    from vlens.models import load_model
    from vlens.saliency import get_explainer
    from vlens.saliency.views import render_views
    from vlens.vlm.concepts import build_vocabulary

    adapter = load_model(model) if isinstance(model, str) else model
    explainer = get_explainer("gradcam")
    xs = [adapter.preprocess(images[i:i + batch]) for i in range(0, len(images), batch)]
    t = time.perf_counter()
    logits = []
    with torch.no_grad():
        for x in xs:
            logits.append(adapter.module(x))
    fwd = time.perf_counter() - t
    t = time.perf_counter()
    maps = []
    for x, lo in zip(xs, logits, strict=True):
        rows = [{"pred_idx": int(i), "pred": adapter.class_names[int(i)]} for i in lo.argmax(1)]
        maps.append(explainer.explain(adapter, x, adapter.task.default_target(None, rows)))
    cam = time.perf_counter() - t
    views = []
    for i, m in enumerate(maps):
        views += list(render_views(images[i * batch:(i + 1) * batch], m.detach(),
                                   output="pil")["masked"])
    # one-time: the text encoder loads and embeds the vocabulary (not a per-image pass)
    t = time.perf_counter()
    vocab = build_vocabulary(adapter.class_names, None)
    vlm.score(views[:1], [*vocab, *adapter.class_names])
    setup = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(images), batch):
        vlm.embed_images(images[i:i + batch])
        vlm.embed_images(views[i:i + batch])
    enc = time.perf_counter() - t
    return {"forward_s": fwd, "gradcam_s": cam, "vlm_encoder_s": enc,
            "sum_s": fwd + cam + enc, "vlm_text_setup_s": setup}


def same_results(a: Path, b: Path) -> bool:
    """Whether two run dirs hold byte-identical tables and the same findings (but the name)."""
    tables = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding",
              "embeddings")
    if any((a / f"{t}.parquet").read_bytes() != (b / f"{t}.parquet").read_bytes()
           for t in tables):
        return False
    fa, fb = (json.loads((d / "findings.json").read_text()) for d in (a, b))
    for f in (fa, fb):
        f.get("run", {}).pop("name", None)
    return fa == fb


def cli_runs(manifest: Path, root: Path) -> dict:
    """`vlens run` as separate processes, as a user runs it: cold (new run dir, empty cache),
    then the same command again (up to date: run.stamp.json, no torch import)."""
    import subprocess

    cmd = [sys.executable, "-c", "from vlens.cli import main; main()", "run", "-m", "demo",
           "-d", f"manifest:{manifest}", "-o", str(root / "cli-run"), "--cache",
           str(root / "cli-cache"), "--no-progress"]
    out = {}
    for name in ("cold_s", "warm_s"):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        out[name] = time.perf_counter() - t
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
        out[name.replace("_s", "_up_to_date")] = "up to date" in r.stdout
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vlm", default="embedded")
    ap.add_argument("--model", default="demo", help="model spec; other than demo it is built "
                    "once with the world's class names, e.g. torchvision:resnet18 (224 px)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="folder to keep the runs in (default: temp)")
    ap.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True,
                    help="also time `vlens run` as processes: cold, then again (P4 as a user "
                         "sees it)")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("VLENS_TORCH_THREADS", "2")))
    from vlens.engine.cache import Cache
    from vlens.pipeline import ExplainOptions
    from vlens.pipeline.full import DEMO_CONFIG, run
    from vlens.vlm import create_vlm
    from vlens.world import make_dataset

    root = Path(a.keep or tempfile.mkdtemp(prefix="vlens-bench-pipeline-"))
    manifest = make_dataset(DEMO_CONFIG, root / "data", n=a.n, seed=7)
    vlm = create_vlm(a.vlm)
    counter = Counting(vlm)
    images = _images(manifest)
    model = "demo"
    if a.model != "demo":  # e.g. torchvision:resnet18 (random weights) with the world's classes
        from vlens.data import open_dataset
        from vlens.models import load_model

        model = load_model(a.model, class_names=open_dataset(f"manifest:{manifest}").class_names)
        a.cli = False  # the CLI part runs the demo model
    p = passes(images, vlm, a.batch, model)
    opts = ExplainOptions(vlm=vlm, batch_size=a.batch, progress=False)
    from vlens.pipeline.run import explain

    cache_explain, cache = Cache(root / "cache-explain"), Cache(root / "cache")
    out: dict = {"n": a.n, "batch": a.batch, "vlm": a.vlm, "model": a.model,
                 "load": os.getloadavg()[0], "passes": p}
    plan = {  # name -> (explain run dir, explain cache, run dir)
        "cold": ("cold-explain", cache_explain, "cold"),
        "resume": ("cold-explain", cache_explain, "cold"),
        "new_dir": ("warm-explain", cache, "warm"),
    }
    for name, (ex_dir, ex_cache, run_dir) in plan.items():
        counter.calls = 0
        t = time.perf_counter()
        res = explain(model, f"manifest:{manifest}", root / ex_dir, opts, cache=ex_cache)
        t_explain = time.perf_counter() - t
        calls_explain = counter.calls
        counter.calls = 0
        t = time.perf_counter()
        run(model, f"manifest:{manifest}", root / run_dir, opts, cache=cache)
        out[name] = {"explain_s": t_explain, "run_s": time.perf_counter() - t,
                     "vlm_calls_explain": calls_explain, "vlm_calls_run": counter.calls,
                     "stages": {k: {"skipped": v.skipped, "cached": v.cached,
                                    "computed": v.computed, "seconds": round(v.seconds, 3)}
                                for k, v in res.stats.items()}}
    out["warm_equals_cold"] = same_results(root / "cold", root / "warm")
    out["P1_explain"] = out["cold"]["explain_s"] / p["sum_s"]
    out["P1_run"] = out["cold"]["run_s"] / p["sum_s"]
    for key, name in (("P4a", "resume"), ("P4b", "new_dir")):
        out[f"{key}_run"] = out["cold"]["run_s"] / out[name]["run_s"]
        out[f"{key}_explain"] = out["cold"]["explain_s"] / out[name]["explain_s"]
        out[f"{key}_vlm_calls"] = out[name]["vlm_calls_run"] + out[name]["vlm_calls_explain"]
    out["P4"], out["P4_vlm_calls"] = out["P4b_run"], out["P4b_vlm_calls"]
    if a.cli:
        out["cli"] = cli_runs(manifest, root)
        out["P4_cli"] = out["cli"]["cold_s"] / out["cli"]["warm_s"]
    out["images_per_s"] = {k: a.n / v for k, v in p.items()
                           if k not in ("sum_s", "vlm_text_setup_s")}
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

"""`vlens bench`: does vlens find the biases we planted? Scored against the world's truth.

For each world config: train a fresh model on its (biased) training world, generate its
test world, run the whole pipeline with the chosen VLM, and score the findings with
`vlens.analysis.bench.score_findings` against the planted truth:
- planted spurious cues / shortcuts -> {class, concept} (the world value translated into the
  concept vocabulary, e.g. background ``brick`` -> ``brick wall``);
- rare slices -> the ids of test samples inside the slice;
- label noise -> the ids whose recorded label differs from the true one (the test world is
  then drawn from the noisy config itself, so the run sees wrong labels).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlens.engine.store import RunStore
from vlens.pipeline.run import ExplainOptions

# World attribute values -> the concept that names them in the default vocabulary
# (`vlens.vlm.concepts.DEFAULT_CONCEPTS`). Values absent here are their own concept name.
WORLD_CONCEPTS: dict[tuple[str, str], str] = {
    ("background", "brick"): "brick wall",
    ("tag", "tag"): "text or tag",
    ("size", "small"): "small object",
    ("size", "large"): "large object",
    ("lighting", "dark"): "dark lighting",
    ("lighting", "bright"): "bright lighting",
    ("blur", "blurred"): "blurry",
    ("noise", "noisy"): "noisy",
    ("occlusion", "occluded"): "occluded",
}


def world_concept(attribute: str, value: str) -> str:
    """The vocabulary concept naming world attribute `attribute` = `value`."""
    return WORLD_CONCEPTS.get((attribute, str(value)), str(value))


def planted_truth(planted: Sequence[dict[str, Any]], manifest_rows: Sequence[dict[str, Any]]
                  ) -> dict[str, Any]:
    """The world's planted biases in the form `score_findings` expects."""
    truth: dict[str, Any] = {"biases": [], "slices": []}
    for b in planted:
        kind = b.get("kind")
        if kind in ("spurious", "shortcut"):
            truth["biases"].append({"class": b["class"], "name": b.get("name"),
                                    "concept": world_concept(b["attribute"], b["value"])})
        elif kind == "rare_slice":
            where = b.get("where") or {}
            ids = [str(r["id"]) for r in manifest_rows
                   if all(str(r.get(k)) == str(v) for k, v in where.items())]
            truth["slices"].append({"name": b.get("name"), "sample_ids": ids})
        elif kind == "label_noise":
            truth["label_errors"] = [str(r["id"]) for r in manifest_rows
                                     if r.get("label") != r.get("true_label")]
    return {k: v for k, v in truth.items() if v or k == "label_errors"}


@dataclass
class BenchResult:
    config: str
    accuracy: float | None
    scores: dict[str, Any]
    seconds: float
    train_seconds: float
    run_dir: Path
    planted: dict[str, Any] = field(default_factory=dict)


def bench_one(config: str, out: Path, *, n_train: int = 6000, epochs: int = 4,
              n_test: int = 800, seed: int = 0, options: ExplainOptions | None = None,
              cache: Any = None) -> BenchResult:
    """Train on `config`'s world, run everything on its test world, score against the truth."""
    from vlens.analysis.bench import score_findings
    from vlens.models import TorchAdapter
    from vlens.pipeline.full import run
    from vlens.world import WorldConfig, make_dataset, read_manifest
    from vlens.world.demo_model import train_demo_model

    cfg = WorldConfig.load(config)
    planted = cfg.planted()
    t0 = time.perf_counter()
    module, meta = train_demo_model(cfg, n=n_train, epochs=epochs, seed=seed)
    train_s = time.perf_counter() - t0
    adapter = TorchAdapter(module, meta["class_names"], input_size=meta["input_size"],
                           mean=meta["mean"], std=meta["std"],
                           config={"bench": config, "seed": seed})
    noisy = any(b.get("kind") == "label_noise" for b in planted)
    test_cfg = cfg if noisy or not cfg.test else WorldConfig.load(cfg.test)
    run_dir = out / cfg.name
    manifest = make_dataset(test_cfg, run_dir / "data", n=n_test, seed=seed + 1000)
    rows = list(read_manifest(manifest))
    truth = planted_truth(planted, rows)
    res = run(adapter, f"manifest:{manifest}", run_dir, options or ExplainOptions(progress=False),
              cache=cache, report=False, config={"command": "bench", "world": config})
    scores = score_findings(res.raw, truth)
    acc = RunStore(run_dir).read_json("predict_summary.json") or {}
    return BenchResult(config=config, accuracy=acc.get("accuracy"), scores=scores,
                       seconds=time.perf_counter() - t0, train_seconds=train_s,
                       run_dir=run_dir, planted=truth)


def write_results(results: Sequence[BenchResult], path: Path) -> Path:
    data = [{"config": r.config, "accuracy": r.accuracy, "seconds": round(r.seconds, 1),
             "train_seconds": round(r.train_seconds, 1), "scores": r.scores,
             "planted": {k: (v if k == "biases" else len(v)) for k, v in r.planted.items()}}
            for r in results]
    RunStore(path.parent).write_json(path.name, data)
    return path


def summary_rows(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """One flat row per config with the headline numbers (missing ones as None)."""
    keys = ["bias_recall@1", "bias_recall@3", "slice_precision@10", "slice_recall",
            "baseline_precision@10", "baseline_recall", "label_error_precision",
            "label_error_recall"]
    return [{"config": r.config, "accuracy": r.accuracy,
             **{k: r.scores.get(k) for k in keys}, "seconds": r.seconds} for r in results]


__all__ = ["BenchResult", "bench_one", "planted_truth", "summary_rows", "world_concept",
           "write_results"]

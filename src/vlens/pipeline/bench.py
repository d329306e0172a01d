"""`vlens bench`: does vlens find the biases we planted? Scored against the world's truth.

For each world config: train a fresh model on its (biased) training world, generate its
test world, run the whole pipeline with the chosen VLM, and score the findings with
`vlens.analysis.bench.score_findings` against the planted truth:
- planted spurious cues / shortcuts -> {class, concept} (the world value translated into the
  concept vocabulary, e.g. background ``brick`` -> ``brick wall``);
- rare slices -> the ids of test samples inside the slice;
- label noise -> the ids whose recorded label differs from the true one (the test world is
  then drawn from the noisy config itself, so the run sees wrong labels).

Several seeds (`seeds=[0, 1, 2]`): each seed trains its own model and draws its own test
world under OUT/seed<k>/<world>; `aggregate` reports mean and sample sd per metric and world.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
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
    seed: int
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
              cache=cache, report=False,
              config={"command": "bench", "world": config, "seed": seed})
    scores = score_findings(res.raw, truth)
    acc = RunStore(run_dir).read_json("predict_summary.json") or {}
    return BenchResult(config=config, seed=seed, accuracy=acc.get("accuracy"), scores=scores,
                       seconds=time.perf_counter() - t0, train_seconds=train_s,
                       run_dir=run_dir, planted=truth)


def rescore_run(run_dir: Path, seed: int | None = None) -> BenchResult:
    """Re-analyse a finished bench run directory with the current analysis code and score it
    again (no training, no explaining): for changes to `vlens.analysis`. The world comes
    from the run's config (`world`), else the folder name; the seed from the config, else a
    `seed<k>` parent folder, else `seed`."""
    from vlens.analysis.bench import score_findings
    from vlens.pipeline.full import analyze_run
    from vlens.world import WorldConfig, read_manifest

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    store = RunStore(run_dir)
    cfg = store.read_config() or {}
    world = str(cfg.get("world") or run_dir.name)
    if cfg.get("seed") is not None:
        seed = int(cfg["seed"])
    elif re.fullmatch(r"seed\d+", run_dir.parent.name):
        seed = int(run_dir.parent.name[4:])
    rows = list(read_manifest(run_dir / "data" / "manifest.jsonl"))
    truth = planted_truth(WorldConfig.load(world).planted(), rows)
    scores = score_findings(analyze_run(run_dir), truth)
    acc = store.read_json("predict_summary.json") or {}
    return BenchResult(config=world, seed=int(seed or 0), accuracy=acc.get("accuracy"),
                       scores=scores, seconds=time.perf_counter() - t0, train_seconds=0.0,
                       run_dir=run_dir, planted=truth)


def find_runs(out: Path, configs: Sequence[str] | None = None) -> list[Path]:
    """Bench run directories under OUT (OUT/<world> and OUT/seed<k>/<world>), optionally
    only those of `configs`; seeds in numeric order, worlds in `configs` order."""
    out = Path(out)
    bases = [out] + sorted((d for d in out.glob("seed*") if re.fullmatch(r"seed\d+", d.name)),
                           key=lambda d: int(d.name[4:]))
    found = []
    for base in bases:
        names = list(configs) if configs else sorted(
            d.name for d in base.iterdir() if (d / "data" / "manifest.jsonl").is_file()
            and (d / "predictions.parquet").is_file())
        found.extend(base / n for n in names if (base / n / "data" / "manifest.jsonl").is_file())
    return found


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' (or a mix, '0,3-4') -> [0, 1, 2]; clear error on anything else."""
    from vlens.errors import ConfigError

    seeds: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise ConfigError(f"--seeds takes non-negative integers like '0,1,2' or '0-2', "
                              f"got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"--seeds range {part.strip()!r} is empty")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed: {text!r}")
    return seeds


def bench_many(configs: Sequence[str], out: Path, seeds: Sequence[int],
               on_start: Callable[[str, int], None] | None = None, **kw: Any
               ) -> list[BenchResult]:
    """`bench_one` for every (seed, config); with one seed the layout is OUT/<world> as
    before, with several OUT/seed<k>/<world>. `on_start(config, seed)` reports progress."""
    res = []
    for seed in seeds:
        base = out if len(seeds) == 1 else out / f"seed{seed}"
        for config in configs:
            if on_start is not None:
                on_start(config, seed)
            res.append(bench_one(config, base, seed=seed, **kw))
    return res


def write_results(results: Sequence[BenchResult], path: Path) -> Path:
    """PATH: one entry per (world, seed) as before; PATH's sibling `<stem>_summary.json`:
    mean ± sd per world over the seeds (`aggregate`) and the same as a markdown table."""
    data = [{"config": r.config, "seed": r.seed, "accuracy": r.accuracy,
             "seconds": round(r.seconds, 1), "train_seconds": round(r.train_seconds, 1),
             "scores": r.scores,
             "planted": {k: (v if k == "biases" else len(v)) for k, v in r.planted.items()}}
            for r in results]
    store = RunStore(path.parent)
    store.write_json(path.name, data)
    summary = aggregate(results)
    store.write_json(f"{path.stem}_summary.json",
                     {"summary": summary, "markdown": markdown_table(summary)})
    return path


SUMMARY_KEYS = ["accuracy", "bias_recall@1", "bias_recall@3", "slice_precision@10",
                "slice_recall", "baseline_precision@10", "baseline_recall",
                "label_error_precision", "label_error_recall", "label_error_precision@10",
                "label_error_precision@25",
                "label_error_precision@50", "label_error_candidates", "seconds"]


def summary_rows(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """One flat row per (config, seed) with the headline numbers (missing ones as None)."""
    return [{"config": r.config, "seed": r.seed,
             **{k: (r.accuracy if k == "accuracy" else r.seconds if k == "seconds"
                    else r.scores.get(k)) for k in SUMMARY_KEYS}} for r in results]


def _mean_sd(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def aggregate(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """Per world: {"config", "seeds", metric: {"mean", "sd", "n"}} over the seeds that give
    the metric (sd is the sample sd, None with one seed); worlds in first-seen order."""
    rows = summary_rows(results)
    out = []
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        entry: dict[str, Any] = {"config": config, "seeds": [r["seed"] for r in mine]}
        for k in SUMMARY_KEYS:
            vals = [float(r[k]) for r in mine if r[k] is not None]
            if vals:
                entry[k] = _mean_sd(vals)
        out.append(entry)
    return out


def format_mean_sd(m: dict[str, Any] | None, digits: int = 3) -> str:
    """'0.812 ± 0.041' (or '0.812' with one seed, '-' when missing)."""
    if not m or m.get("mean") is None:
        return "-"
    if m.get("sd") is None:
        return f"{m['mean']:.{digits}f}"
    return f"{m['mean']:.{digits}f} ± {m['sd']:.{digits}f}"


def markdown_table(summary: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> str:
    """The aggregate as a markdown table (one row per world, mean ± sd per metric)."""
    keys = list(keys or [k for k in SUMMARY_KEYS if any(k in s for s in summary)])
    head = "| world | seeds | " + " | ".join(keys) + " |"
    sep = "|---|---|" + "---|" * len(keys)
    lines = [head, sep]
    for s in summary:
        lines.append(f"| {s['config']} | {','.join(map(str, s['seeds']))} | "
                     + " | ".join(format_mean_sd(s.get(k), 1 if k == "seconds" else 3)
                                  for k in keys) + " |")
    return "\n".join(lines)


__all__ = ["BenchResult", "aggregate", "bench_many", "bench_one", "find_runs",
           "format_mean_sd", "markdown_table", "parse_seeds", "planted_truth", "rescore_run",
           "summary_rows", "world_concept", "write_results"]

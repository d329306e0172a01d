"""`vlens explain`, `vlens run` and `vlens demo`: the per-sample pipeline, then everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlens.cli.apps import app

console = Console()

_VLM_HELP = "VLM backend: embedded, hf:<model id or dir>, openai:<model>[@<base url>]."
_METHOD_HELP = "Saliency method (gradcam, gradcam++, xgradcam, layercam, scorecam, eigencam, ...)."


def _options(vlm: str, concept_vlm: str | None, method: str, target_layer: str | None,
             alpha: float, beta: float, faithfulness: bool, concepts: Path | None,
             batch_size: int, limit: int | None, engine: str, progress: bool) -> Any:
    from vlens.pipeline import ExplainOptions

    return ExplainOptions(
        vlm=vlm, concept_vlm=concept_vlm, method=method, target_layer=target_layer,
        alpha=alpha, beta=beta, faithfulness=faithfulness,
        concepts_file=str(concepts) if concepts else None, batch_size=batch_size,
        limit=limit, engine=engine, progress=progress,
    )


def _cache(cache: Path | None, no_cache: bool) -> Any:
    from vlens.engine.cache import Cache

    return None if no_cache else Cache(cache)


def print_findings(findings: list[dict[str, Any]], top: int = 5) -> None:
    """The top findings as a table (model-written text escaped for rich markup)."""
    if not findings:
        console.print("No findings passed the significance and confirmation checks.")
        return
    t = Table(title=f"Top {min(top, len(findings))} findings", show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("finding")
    t.add_column("kind")
    t.add_column("confirmed")
    for i, f in enumerate(findings[:top], 1):
        t.add_row(str(i), escape(str(f.get("title", ""))), escape(str(f.get("kind", ""))),
                  "yes" if f.get("confirmed") else "no")
    console.print(t)


def _print_sample(out: Path, sample_id: str) -> None:
    from vlens.pipeline.full import per_sample_table

    df = per_sample_table(out)
    row = df[df["id"].astype(str) == sample_id]
    if row.empty:
        console.print(f"sample {escape(sample_id)!r} not found in {out}")
        raise typer.Exit(1)
    r = row.iloc[0].to_dict()
    keys = ["id", "label", "pred", "confidence", "correct", "focus_score", "object_visible",
            "description", "justification", "energy_on_object", "view_masked", "view_overlay"]
    for k in keys:
        if k in r:
            console.print(f"[bold]{k}[/]: {escape(str(r[k]))}", highlight=False)


# Shared CLI options (typer reads defaults from these objects).
VLM = typer.Option("embedded", "--vlm", help=_VLM_HELP)
CONCEPT_VLM = typer.Option(None, "--concept-vlm", help="Contrastive VLM for concept scores "
                           "(default: --vlm when contrastive, else embedded).")
METHOD = typer.Option("gradcam", "--method", help=_METHOD_HELP)
LAYER = typer.Option(None, "--target-layer", help="Module name of the CAM layer (default: auto).")
ALPHA = typer.Option(25.0, "--alpha", help="Steepness of the masked-CAM sigmoid.")
BETA = typer.Option(0.6, "--beta", help="Threshold of the masked-CAM sigmoid.")
FAITH = typer.Option(False, "--faithfulness", help="Also compute deletion/insertion AUC.")
CONCEPTS = typer.Option(None, "--concepts", help="Extra concepts, one per line.")
BATCH = typer.Option(32, "--batch-size", "-b", min=1)
LIMIT = typer.Option(None, "--limit", min=0, help="Only the first N samples.")
ENGINE = typer.Option("local", "--engine", help="Engine: local or ray.")
CACHE = typer.Option(None, "--cache", help="Cache folder (default $VLENS_CACHE_DIR or "
                     "~/.cache/vlens).")
NO_CACHE = typer.Option(False, "--no-cache", help="Neither read nor write the cache.")
PROGRESS = typer.Option(True, "--progress/--no-progress")


@app.command("explain")
def explain_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model spec, e.g. demo, timm:resnet18."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset spec, e.g. folder:imgs/."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created or resumed)."),
    vlm: str = VLM, concept_vlm: str | None = CONCEPT_VLM, method: str = METHOD,
    target_layer: str | None = LAYER, alpha: float = ALPHA, beta: float = BETA,
    faithfulness: bool = FAITH, concepts: Path | None = CONCEPTS, batch_size: int = BATCH,
    limit: int | None = LIMIT, engine: str = ENGINE, cache: Path | None = CACHE,
    no_cache: bool = NO_CACHE, progress: bool = PROGRESS,
    sample: str | None = typer.Option(None, "--sample", help="Print this sample's result."),
) -> None:
    """Per-sample explanations: saliency maps, masked views, judge answers, concept grounding.

    Example: vlens explain --model demo --data manifest:data/manifest.jsonl --out runs/x
    """
    from vlens.pipeline import explain

    opts = _options(vlm, concept_vlm, method, target_layer, alpha, beta, faithfulness,
                    concepts, batch_size, limit, engine, progress)
    res = explain(model, data, out, opts, cache=_cache(cache, no_cache))
    acc = "n/a" if res.accuracy is None else f"{res.accuracy:.3f}"
    errs = ", ".join(f"{k} {v}" for k, v in res.errors.items())
    console.print(f"[bold]explain[/] accuracy {acc} · error rows: {errs} -> {out}",
                  highlight=False)
    if sample:
        _print_sample(out, sample)


@app.command("run")
def run_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model spec, e.g. demo, timm:resnet18."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset spec, e.g. folder:imgs/."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created or resumed)."),
    vlm: str = VLM, concept_vlm: str | None = CONCEPT_VLM, method: str = METHOD,
    target_layer: str | None = LAYER, alpha: float = ALPHA, beta: float = BETA,
    faithfulness: bool = FAITH, concepts: Path | None = CONCEPTS, batch_size: int = BATCH,
    limit: int | None = LIMIT, engine: str = ENGINE, cache: Path | None = CACHE,
    no_cache: bool = NO_CACHE, progress: bool = PROGRESS,
    report: bool = typer.Option(True, "--report/--no-report", help="Write report/index.html."),
) -> None:
    """Everything in one go: explain, analyze, report.

    Example: vlens run --model demo --data manifest:data/manifest.jsonl --out runs/x
    """
    from vlens.cli.stamp import STAMP, inputs_key, up_to_date, write_stamp

    # what decides the results (not batch size, engine, cache or progress bars)
    key = inputs_key({"model": model, "data": data, "vlm": vlm, "concept_vlm": concept_vlm,
                      "method": method, "target_layer": target_layer, "alpha": alpha,
                      "beta": beta, "faithfulness": faithfulness, "concepts": concepts,
                      "limit": limit, "report": report})
    done = up_to_date(out, key)
    if done is not None:  # nothing changed: no torch import, no model load
        console.print(f"up to date: {out} (inputs and outputs unchanged since the last run; "
                      f"delete {out / STAMP} to force a full resume)", highlight=False)
        print_findings(done.get("findings", []))
        if report and (out / "report" / "index.html").is_file():
            console.print(f"report: {out / 'report' / 'index.html'}", highlight=False)
        return
    (out / STAMP).unlink(missing_ok=True)  # an interrupted run below leaves no stale stamp
    from vlens.pipeline import run

    opts = _options(vlm, concept_vlm, method, target_layer, alpha, beta, faithfulness,
                    concepts, batch_size, limit, engine, progress)
    res = run(model, data, out, opts, cache=_cache(cache, no_cache), report=report)
    write_stamp(out, key)
    print_findings(res.findings)
    if res.report:
        console.print(f"report: {res.report}", highlight=False)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    n: int = typer.Option(600, "-n", min=10, help="Number of test images to generate."),
    seed: int = typer.Option(7, "--seed"),
    method: str = METHOD, batch_size: int = BATCH,
    cache: Path | None = CACHE, no_cache: bool = NO_CACHE, progress: bool = PROGRESS,
) -> None:
    """Offline demo: explain a biased demo model on a generated world, print its biases.

    Generates a balanced test world, runs the shipped (biased) demo model on it with the
    embedded VLM, prints the top findings and writes the report.

    Example: vlens demo --out runs/demo
    """
    from vlens.pipeline import ExplainOptions, demo

    opts = ExplainOptions(method=method, batch_size=batch_size, progress=progress)
    res = demo(out, n=n, seed=seed, options=opts, cache=_cache(cache, no_cache))
    print_findings(res.findings)
    if res.report:
        console.print(f"report: {res.report}", highlight=False)


BENCH_CONFIGS = ["spurious_background", "shortcut_tag", "rare_slice", "color_correlation",
                 "label_noise"]


@app.command("bench")
def bench_cmd(
    configs: list[str] = typer.Argument(None, help="World configs (names or YAML paths); "
                                        "default: every shipped bench config."),
    out: Path = typer.Option(Path("runs/bench"), "--out", "-o", help="Output folder."),
    n_train: int = typer.Option(6000, "--n-train", min=100, help="Training images per world."),
    epochs: int = typer.Option(4, "--epochs", min=1),
    n_test: int = typer.Option(800, "--n-test", min=50, help="Test images per world."),
    seed: int = typer.Option(0, "--seed", help="One seed (ignored when --seeds is given)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Several seeds, e.g. 0,1,2 or "
                                     "0-2: one model and test world per seed, OUT/seed<k>/, "
                                     "mean ± sd per metric."),
    rescore: bool = typer.Option(False, "--rescore", help="Only re-analyse and re-score the "
                                 "runs already under OUT (after changing the analysis)."),
    vlm: str = VLM, method: str = METHOD, batch_size: int = BATCH,
    cache: Path | None = CACHE, no_cache: bool = NO_CACHE,
) -> None:
    """Score bias discovery against the planted truth of generated worlds.

    Trains on each biased world, runs everything on its test world and reports bias
    recall@k, slice precision@10 (vs a Domino-style baseline) and label-error
    precision/recall. Writes OUT/bench.json (one entry per world and seed) and
    OUT/bench_summary.json (mean ± sd over the seeds, also as a markdown table).

    Example: vlens bench spurious_background shortcut_tag --out runs/bench --seeds 0,1,2
    """
    from vlens.pipeline import ExplainOptions
    from vlens.pipeline import bench as B

    seed_list = B.parse_seeds(seeds) if seeds is not None else [seed]
    opts = ExplainOptions(vlm=vlm, method=method, batch_size=batch_size, progress=False)

    def started(name: str, s: int) -> None:
        console.print(f"[bold]bench[/] {escape(name)} (seed {s}): training, generating, "
                      "explaining ...")

    if rescore:
        runs = B.find_runs(out, configs or None)
        if not runs:
            raise typer.BadParameter(f"no bench runs under {out}", param_hint="--out")
        results = [B.rescore_run(r) for r in runs]
    else:
        results = B.bench_many(configs or BENCH_CONFIGS, out, seed_list, on_start=started,
                               n_train=n_train, epochs=epochs, n_test=n_test, options=opts,
                               cache=_cache(cache, no_cache))
    path = B.write_results(results, out / "bench.json")
    summary = B.aggregate(results)
    title = "one column per world" + (f"; mean ± sd over seeds {seeds}"
                                      if len(seed_list) > 1 else "")
    t = Table(title=f"vlens bench ({escape(title)})")
    t.add_column("metric")
    for r in summary:
        t.add_column(escape(str(r["config"])), justify="right")
    keys = [k for k in B.SUMMARY_KEYS if any(k in r for r in summary)
            and not (rescore and k == "seconds")]  # rescoring time is not the bench's
    for key in keys:
        t.add_row(key, *(B.format_mean_sd(r.get(key), 1 if key == "seconds" else 3)
                         for r in summary))
    console.print(t)
    console.print(f"results: {path}", highlight=False)


@app.command("agreement")
def agreement_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (after explain)."),
    human: Path | None = typer.Option(None, "--human", help="CSV of human focus scores "
                                      "(columns: id, score on the judge's 0-5 scale)."),
) -> None:
    """How far to trust the judge: focus score vs saliency-on-object and vs human scores.

    Example: vlens agreement runs/x --human ratings.csv
    """
    from vlens.pipeline.full import agreement

    res = agreement(run_dir, human)
    fe = res.get("focus_vs_energy")
    if fe:
        console.print(f"judge focus vs energy on object (n={fe['pearson']['n']}): "
                      f"Pearson {fe['pearson']['r']:.3f}, Spearman {fe['spearman']['rho']:.3f}",
                      highlight=False)
    h = res.get("human")
    if h:
        console.print(f"judge vs human (n={h['n']}): Pearson {h['pearson']:.3f}, Spearman "
                      f"{h['spearman']:.3f}, quadratic kappa {h['quadratic_kappa']:.3f}",
                      highlight=False)
    if not fe and not h:
        console.print("no object masks in this dataset: pass --human to compare with people")

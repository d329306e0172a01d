"""`vlens predict`: run a vision model over a dataset into a run directory (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from vlens.cli.apps import app

console = Console()


@app.command("predict")
def predict(
    model: str = typer.Option(..., "--model", "-m", help="Model spec, e.g. demo, timm:resnet18."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset spec, e.g. folder:imgs/."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created or resumed)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images per batch."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Only the first N samples."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Cache folder (default $VLENS_CACHE_DIR or ~/.cache/vlens)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    engine: str = typer.Option("local", "--engine", help="Engine: local or ray."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Predict every sample; writes config.yaml, samples.parquet, predictions.parquet.

    Re-running the same command on the same --out recomputes only the missing rows.

    Example: vlens predict --model demo --data manifest:data/test/manifest.jsonl --out runs/demo
    """
    from vlens.data import open_dataset
    from vlens.engine.cache import Cache
    from vlens.engine.predict import run_predict
    from vlens.models import load_model

    adapter = load_model(model)
    source = open_dataset(data)
    store_cache = None if no_cache else Cache(cache)
    config = {"command": "predict", "model": model, "data": data, "engine": engine,
              "cache": None if no_cache else str(store_cache.db_path)}
    try:
        res = run_predict(
            adapter, source, out, batch_size=batch_size, limit=limit, cache=store_cache,
            engine=engine, progress=progress, config=config,
        )
    finally:
        if store_cache is not None:
            store_cache.close()
    s = res.stats
    acc = "n/a" if res.accuracy is None else f"{res.accuracy:.4f}"
    console.print(
        f"[bold]predict[/] {res.n} samples · accuracy {acc} · error rows {res.errors} "
        f"· computed {s.computed}, cached {s.cached}, resumed {s.skipped} "
        f"· {s.seconds:.1f}s -> {out}",
        highlight=False,
    )
    if res.summary.get("error_reasons"):
        reasons = ", ".join(f"{k}={v}" for k, v in res.summary["error_reasons"].items())
        console.print(f"  error reasons: {reasons}", highlight=False)

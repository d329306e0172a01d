"""`vlens world ...`: generate world splits, train and evaluate the demo model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vlens.cli.apps import world_app

console = Console()


@world_app.command("make")
def make(
    config: str = typer.Argument(..., help="Shipped config name (e.g. demo_train) or YAML path."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    n: int = typer.Option(1000, "-n", "--n", help="Number of images."),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed (same seed, same bytes)."),
    workers: int = typer.Option(0, "--workers", "-w", help="Processes (0 = one per core, max 8)."),
) -> None:
    """Write images/, masks/ and manifest.jsonl for a world config.

    Example: vlens world make demo_train --out data/train -n 10000 --seed 0
    """
    from vlens.world import WorldConfig, make_dataset

    cfg = WorldConfig.load(config)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]world[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(cfg.name, total=n)
        path = make_dataset(
            cfg, out, n, seed, workers=workers or None, progress=lambda k: bar.advance(task, k)
        )
    dt = time.perf_counter() - t0
    console.print(f"wrote {n} images to {path} in {dt:.1f}s ({n / max(dt, 1e-9):.0f} images/s)")


@world_app.command("configs")
def configs() -> None:
    """List shipped world configs with their planted biases.

    Example: vlens world configs
    """
    from vlens.world import WorldConfig

    for name in WorldConfig.shipped():
        cfg = WorldConfig.load(name)
        pair = f" (test: {cfg.test})" if cfg.test else ""
        console.print(f"[bold]{name}[/]{pair}: {cfg.description}")
        for b in cfg.planted():
            console.print(f"  - {b['kind']}: {b['description']}")


@world_app.command("train-demo")
def train_demo(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for demo.safetensors + demo.json."),
    config: str = typer.Option("demo_train", help="Training world config."),
    n: int = typer.Option(4000, "-n", "--n", help="Training images (generated in memory)."),
    epochs: int = typer.Option(8, help="Training epochs."),
    batch_size: int = typer.Option(32, help="Batch size."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (one-cycle schedule)."),
    seed: int = typer.Option(0, help="Seed for data and initialisation."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest on a busy machine)."),
    eval_n: int = typer.Option(3000, help="Balanced test images for the stored accuracies."),
) -> None:
    """Train the small demo CNN on a biased world (reproduces the shipped weights).

    Example: vlens world train-demo --out src/vlens/world/weights
    """
    from vlens.world.demo_model import train_demo_model

    t0 = time.perf_counter()
    path = train_demo_model(
        config,
        n=n,
        epochs=epochs,
        seed=seed,
        out_dir=out,
        batch_size=batch_size,
        lr=lr,
        threads=threads,
        log=console.print,
    )
    console.print(f"saved {path} in {time.perf_counter() - t0:.0f}s")


@world_app.command("eval-demo")
def eval_demo(
    weights: Path = typer.Option(None, "--weights", help="demo.safetensors (default: shipped)."),
    config: str = typer.Option("", help="Test world config (default: the model's test config)."),
    n: int = typer.Option(3000, "-n", "--n", help="Test images."),
    seed: int = typer.Option(1, help="Seed of the test split."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Accuracy of the demo model overall and per bias group on a balanced world.

    Example: vlens world eval-demo -n 3000
    """
    from vlens.world.demo_model import evaluate_groups, load_demo_model

    model, meta = load_demo_model(weights)
    res = evaluate_groups(model, meta, config or None, n=n, seed=seed)
    if json_out:
        console.print_json(json.dumps(res))
        return
    console.print(f"overall accuracy: {res['overall']:.3f} (n={res['n']}, {res['test_config']})")
    for name, g in res["groups"].items():
        console.print(f"  {name:<48} acc={g['acc']:.3f}  n={g['n']}")
    for name, gap in res["gaps"].items():
        shown = "n/a (empty cell)" if gap is None else f"{gap * 100:.1f} points"
        console.print(f"  gap {name:<56} {shown}")

"""`vlens vlm train-embedded`: reproduce the embedded VLM's shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from vlens.cli.apps import vlm_app

console = Console()


@vlm_app.command("train-embedded")
def train_embedded(
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (default: the package's shipped weights folder)."
    ),
    n: int = typer.Option(6000, "-n", "--n", help="Training images (generated in memory)."),
    epochs: int = typer.Option(6, "--epochs", "-e", help="Training epochs."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed for data and initialisation."),
    threads: int = typer.Option(2, help="CPU threads for torch."),
    eval_n: int = typer.Option(300, help="Held-out images for the zero-shot check (0: skip)."),
) -> None:
    """Train the embedded VLM's image tower against the frozen MiniLM text tower.

    Example: vlens vlm train-embedded --out /tmp/embedded -n 6000 --epochs 6 --seed 0
    """
    from vlens.vlm.embedded.backend import EmbeddedVLM, shipped_weights_dir
    from vlens.vlm.embedded.evaluate import evaluate_zero_shot
    from vlens.vlm.embedded.model import save_config
    from vlens.vlm.embedded.train import train

    out = out or shipped_weights_dir()
    summary = train(out, n=n, epochs=epochs, seed=seed, threads=threads,
                    log=lambda s: console.print(s, highlight=False))
    console.print(f"wrote {summary['weights']} in {summary['seconds']:.0f}s")
    if eval_n:
        vlm = EmbeddedVLM(out)
        acc = evaluate_zero_shot(n=eval_n, vlm=vlm)
        vlm.config.metrics = {"zero_shot": acc, "eval_n": eval_n}
        save_config(vlm.config, out)
        console.print_json(json.dumps(acc))

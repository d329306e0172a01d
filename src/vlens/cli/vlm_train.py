"""`vlens vlm train-embedded`: reproduce the embedded VLM's shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from vlens.cli.apps import vlm_app
from vlens.errors import ConfigError

console = Console()


@vlm_app.command("train-embedded")
def train_embedded(
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (default: the package's shipped weights folder)."
    ),
    n: int = typer.Option(40_000, "-n", "--n", help="Training images (generated in memory)."),
    epochs: int = typer.Option(12, "--epochs", "-e", help="Training epochs."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed for data and initialisation."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (one-cycle schedule)."),
    threads: int = typer.Option(2, help="CPU threads for torch."),
    device: str = typer.Option("cpu", help='Torch device for training, e.g. "cuda".'),
    shift: int = typer.Option(4, help="Random shift augmentation in pixels (0: off)."),
    init: Path = typer.Option(None, help="Continue training from the weights in this folder."),
    family_weights: str = typer.Option(
        "shape=4,size=2", help='Loss weight per attribute family, e.g. "shape=4,size=2" (others 1).'
    ),
    eval_n: int = typer.Option(300, help="Held-out images for the zero-shot check (0: skip)."),
) -> None:
    """Train the embedded VLM's image tower against the frozen MiniLM text tower.

    The shipped weights come from one run with the defaults (see docs/embedded-vlm.md):
    vlens vlm train-embedded --out DIR   (add --device cuda to train on a GPU)
    """
    from vlens.vlm.embedded.backend import EmbeddedVLM, shipped_weights_dir
    from vlens.vlm.embedded.evaluate import evaluate_zero_shot
    from vlens.vlm.embedded.model import save_config
    from vlens.vlm.embedded.train import train
    from vlens.vlm.embedded.vocab import FAMILIES

    out = out or shipped_weights_dir()
    try:
        weights = {k.strip(): float(v) for k, v in
                   (kv.split("=") for kv in family_weights.split(",") if kv.strip())}
    except ValueError:
        msg = f"--family-weights {family_weights!r}: expected name=number,..."
        raise ConfigError(msg) from None
    unknown = sorted(set(weights) - set(FAMILIES))
    if unknown:
        raise ConfigError(f"--family-weights: unknown families {unknown}; known: {list(FAMILIES)}")
    summary = train(out, n=n, epochs=epochs, seed=seed, threads=threads, batch_size=batch_size,
                    lr=lr, init=init, family_weights=weights or None, device=device, shift=shift,
                    log=lambda s: console.print(s, highlight=False))
    console.print(f"wrote {summary['weights']} in {summary['seconds']:.0f}s")
    if eval_n:
        vlm = EmbeddedVLM(out)
        acc = evaluate_zero_shot(n=eval_n, vlm=vlm)
        vlm.config.metrics = {"zero_shot": acc, "eval_n": eval_n}
        save_config(vlm.config, out)
        console.print_json(json.dumps(acc))

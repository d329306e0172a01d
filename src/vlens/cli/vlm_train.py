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
    views: str = typer.Option(
        "", help='View mix, e.g. "full=0.45,object=0.14,blob=0.08,empty=0.05,cam=0.28" '
                 '(default: the first stage\'s mix; "cam" = judge-style masked CAM views).'),
) -> None:
    """Train the embedded VLM's image tower against the frozen MiniLM text tower.

    The shipped weights come from two runs (see docs/embedded-vlm.md): the defaults, then
    a second stage on judge-style views:
    vlens vlm train-embedded --out DIR1   (add --device cuda to train on a GPU)
    vlens vlm train-embedded --out DIR2 --init DIR1 --views cam-stage -n 16000 -e 3 --lr 1e-3
    """
    from vlens.vlm.embedded.backend import EmbeddedVLM, shipped_weights_dir
    from vlens.vlm.embedded.data import CAM_PROBS, VIEW_PROBS
    from vlens.vlm.embedded.evaluate import evaluate_zero_shot
    from vlens.vlm.embedded.model import save_config
    from vlens.vlm.embedded.train import train
    from vlens.vlm.embedded.vocab import FAMILIES

    if views == "cam-stage":
        views = ",".join(f"{k}={v}" for k, v in CAM_PROBS.items())

    out = out or shipped_weights_dir()
    view_probs = _parse_pairs("--views", views, (*VIEW_PROBS, "cam")) if views else None
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
                    view_probs=view_probs,
                    log=lambda s: console.print(s, highlight=False))
    console.print(f"wrote {summary['weights']} in {summary['seconds']:.0f}s")
    if eval_n:
        vlm = EmbeddedVLM(out)
        acc = evaluate_zero_shot(n=eval_n, vlm=vlm)
        vlm.config.metrics = {"zero_shot": acc, "eval_n": eval_n}
        save_config(vlm.config, out)
        console.print_json(json.dumps(acc))


def _parse_pairs(flag: str, text: str, known: tuple[str, ...]) -> dict[str, float]:
    """"a=1,b=2" -> {"a": 1.0, "b": 2.0}, with clear errors for bad syntax or unknown names."""
    try:
        out = {k.strip(): float(v) for k, v in (kv.split("=") for kv in text.split(",")
                                                  if kv.strip())}
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected name=number,...") from None
    unknown = sorted(set(out) - set(known))
    if unknown:
        raise ConfigError(f"{flag}: unknown names {unknown}; known: {list(known)}")
    if not out or sum(out.values()) <= 0 or min(out.values()) < 0:
        raise ConfigError(f"{flag} {text!r}: weights must be >= 0 and not all 0")
    return out

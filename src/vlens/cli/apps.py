"""The Typer applications every command module attaches to (root, `world`, `vlm`)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="vlens",
    help="Explain a vision model with vision-language models, per sample and per dataset.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    epilog=(
        "Examples:  vlens demo  ·  vlens run --model demo --data manifest:data/manifest.jsonl "
        "--out runs/x  ·  vlens serve runs/x  ·  vlens <command> --help for more."
    ),
)
world_app = typer.Typer(help="Generate the synthetic world with planted biases.",
                        no_args_is_help=True)
vlm_app = typer.Typer(help="Check and train vision-language model backends.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(vlm_app, name="vlm")

"""`vlens vlm check`: load a VLM backend, show what it can do, and try it on a few images."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import typer
from PIL import Image, ImageDraw
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlens.cli.apps import vlm_app
from vlens.errors import ConfigError

console = Console()
DEFAULT_CONCEPTS = "cat,person,red circle,blue background,grass,water"


def sample_images(n: int) -> list[tuple[str, Image.Image]]:
    """Named test images: scikit-image's bundled photos, then generated shapes."""
    out: list[tuple[str, Image.Image]] = []
    try:
        from skimage import data

        for name in ("chelsea", "astronaut", "coffee"):
            out.append((f"skimage.{name}", Image.fromarray(getattr(data, name)())))
    except Exception:  # noqa: BLE001 - scikit-image is optional here
        pass
    for i, (fg, bg) in enumerate([((220, 30, 30), (40, 60, 200)), ((240, 220, 40), (40, 140, 40))]):
        im = Image.new("RGB", (128, 128), bg)
        ImageDraw.Draw(im).ellipse((32, 32, 96, 96), fill=fg)
        out.append((f"generated.{i}", im))
    return out[: max(1, n)]


def _create(spec: str, kw: dict[str, Any]):
    from vlens.vlm import create_vlm

    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        return create_vlm(spec, **kw)
    except TypeError as e:
        raise ConfigError(f"backend {spec!r} does not accept {sorted(kw)}: {e}") from None


@vlm_app.command("check")
def check(
    vlm: str = typer.Option("embedded", "--vlm", "-v", help="Backend spec: embedded, "
                            "hf:<id or dir>, openai:<model>[@<base_url>]."),
    images: int = typer.Option(2, "--images", "-n", help="How many test images to try."),
    concepts: str = typer.Option(DEFAULT_CONCEPTS, help="Comma-separated concepts to score."),
    prompt: str = typer.Option("describe", help="Prompt to ask generative backends."),
    score: bool = typer.Option(True, help="Run contrastive scoring when the backend can."),
    ask: bool = typer.Option(True, help="Run a generative ask when the backend can."),
    device: str = typer.Option(None, help="hf: device (cpu, cuda, auto)."),
    dtype: str = typer.Option(None, help="hf: dtype (float32, float16, bfloat16)."),
    base_url: str = typer.Option(None, help="openai: server base URL (or VLENS_OPENAI_BASE_URL)."),
    api_key: str = typer.Option(None, help="openai: API key (prefer VLENS_OPENAI_API_KEY).",
                                show_default=False),
    eval_n: int = typer.Option(200, help="embedded: held-out images for zero-shot accuracy."),
    seed: int = typer.Option(12345, help="embedded: seed of the held-out images."),
) -> None:
    """Print a backend's capabilities and fingerprint, and try it on test images with timings.

    Examples: vlens vlm check --vlm embedded;  vlens vlm check --vlm hf:/models/clip;
    vlens vlm check --vlm openai:llava@http://127.0.0.1:8000/v1
    """
    from vlens.vlm.base import CONTRASTIVE, GENERATIVE

    t0 = time.perf_counter()
    backend = _create(vlm, {"device": device, "dtype": dtype, "base_url": base_url,
                            "api_key": api_key})
    console.print(f"[bold]backend[/]      {backend.name}  (loaded in "
                  f"{time.perf_counter() - t0:.2f}s)")
    console.print(f"[bold]capabilities[/] {', '.join(sorted(backend.capabilities)) or 'none'}")
    console.print(f"[bold]fingerprint[/]  {backend.fingerprint}", highlight=False)
    named = sample_images(images)
    ims = [im for _, im in named]

    if score and CONTRASTIVE in backend.capabilities:
        names = [c.strip() for c in concepts.split(",") if c.strip()]
        t = time.perf_counter()
        s = np.asarray(backend.score(ims, names))
        dt = time.perf_counter() - t
        table = Table(title=f"score ({dt:.2f}s, {len(ims) / max(dt, 1e-9):.1f} images/s)")
        table.add_column("image")
        for c in names:
            table.add_column(c, justify="right")
        for (n, _), row in zip(named, s, strict=True):
            table.add_row(n, *[f"{v:.3f}" for v in row])
        console.print(table)
    elif score:
        console.print("score: skipped (backend is not contrastive)")

    if ask and GENERATIVE in backend.capabilities:
        from vlens.vlm.prompting import load_prompt

        loaded = load_prompt(prompt, getattr(backend, "prompt_dir", None))
        t = time.perf_counter()
        results = backend.ask(ims, loaded, [{} for _ in ims])
        dt = time.perf_counter() - t
        console.print(f"[bold]ask[/] {prompt!r} ({dt:.2f}s, {len(ims) / max(dt, 1e-9):.2f} "
                      "images/s)")
        for (n, _), r in zip(named, results, strict=True):
            body = json.dumps(r.answer) if r.ok else f"error: {r.error} raw={r.raw[:200]!r}"
            console.print(f"  {n}: [{'green' if r.ok else 'red'}]"
                          f"{'ok' if r.ok else 'error'}[/] (attempts {r.attempts}) "
                          f"{escape(body)}", highlight=False)
    elif ask:
        console.print("ask: skipped (backend is not generative)")

    if vlm.strip() == "embedded":
        from vlens.vlm.embedded import evaluate_zero_shot

        t = time.perf_counter()
        acc = evaluate_zero_shot(n=eval_n, seed=seed)
        table = Table(title=f"embedded zero-shot top-1 accuracy (n={eval_n}, seed={seed}, "
                      f"{time.perf_counter() - t:.1f}s)")
        table.add_column("family")
        table.add_column("accuracy", justify="right")
        for k, v in acc.items():
            table.add_row(k, f"{v:.3f}")
        console.print(table)

"""`vlens analyze RUN_DIR`: dataset-level findings for a run, written to findings.json."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlens.cli.apps import app
from vlens.errors import ConfigError


def _read_concepts(path: Path) -> list[str]:
    """One concept per line; blank lines and '#' comments are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise ConfigError(f"concepts file not found: {path}") from e
    names = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not names:
        raise ConfigError(f"concepts file {path} lists no concepts")
    return names


def _write(findings, run_dir: Path) -> Path:
    """Through the run store when `vlens.engine` provides one, else an atomic write."""
    try:
        from vlens.engine.store import RunStore  # optional: written by the engine area
    except ImportError:
        RunStore = None
    if RunStore is not None and hasattr(RunStore, "write_json"):
        return RunStore(run_dir).write_json("findings.json", findings.to_dict())
    from vlens.analysis.findings import write_findings

    return write_findings(findings, run_dir / "findings.json")


@app.command("analyze")
def analyze_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (after predict/explain)."),
    focus_threshold: float = typer.Option(2.5, help="Judge focus score counted as 'high'."),
    concepts: Path | None = typer.Option(None, help="File with the concepts to test, one a line."),
    alpha: float = typer.Option(0.05, help="False-discovery rate (Benjamini-Hochberg)."),
    top: int = typer.Option(10, help="How many findings to print."),
) -> None:
    """Find what the model's failures, preferences and biases share; write findings.json."""
    from vlens.analysis import AnalysisConfig, AnalysisInput, analyze

    cfg = AnalysisConfig(focus_threshold=focus_threshold, alpha=alpha,
                         concepts=_read_concepts(concepts) if concepts else None)
    inp = AnalysisInput.from_run(run_dir)
    res = analyze(inp, cfg)
    out = _write(res, run_dir)
    con = Console()
    r = res.run
    acc = r.get("accuracy")
    con.print(f"[bold]{r.get('n_samples')}[/] samples, accuracy "
              f"{'n/a' if acc is None else f'{acc:.1%}'}, {len(res.findings)} findings, "
              f"{len(res.slices)} slices -> {out}", highlight=False)
    t = Table(title="Top findings")
    for col in ("id", "kind", "class", "concept", "score", "confirmed", "title"):
        t.add_column(col, overflow="fold")
    for f in res.findings[:top]:
        t.add_row(f.id, f.kind, escape(f.cls or ""), escape(f.concept or ""),
                  f"{f.score:.3f}", "yes" if f.confirmed else "no", escape(f.title))
    con.print(t)
    for s in res.narrative[1:4]:
        con.print(f"- {escape(s['text'])} [dim]({', '.join(s['finding_ids'])})[/]", highlight=False)

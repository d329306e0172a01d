"""`vlens report RUN_DIR`, `vlens serve RUN_DIR` and `vlens export RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer

from vlens.cli.apps import app


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (with samples/predictions tables)."),
) -> None:
    """(Re)build the self-contained HTML report RUN_DIR/report/index.html."""
    from vlens.report import build_report

    path = build_report(run_dir)
    typer.echo(f"report: {path}")


@app.command("serve")
def serve_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory to browse."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8765, help="TCP port."),
) -> None:
    """Browse every sample of a run in a local web viewer (127.0.0.1 by default)."""
    from vlens.report import serve

    serve(run_dir, host=host, port=port)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    fiftyone: bool = typer.Option(False, "--fiftyone", help="Also write fiftyone.json."),
) -> None:
    """Write RUN_DIR/results.csv (one row per sample) and optionally a FiftyOne samples JSON."""
    from vlens.report import export_csv, export_fiftyone

    typer.echo(f"csv: {export_csv(run_dir)}")
    if fiftyone:
        typer.echo(f"fiftyone: {export_fiftyone(run_dir)}")

"""vlens.report: the static HTML report, the local viewer and exports of a run directory."""

from __future__ import annotations

from vlens.report.build import build_report
from vlens.report.export import export_csv, export_fiftyone
from vlens.report.load import RunData, load_run_data

__all__ = ["RunData", "build_report", "export_csv", "export_fiftyone", "load_run_data", "serve"]


def serve(run_dir, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the viewer for `run_dir` (blocking). See `vlens.report.server`."""
    from vlens.report.server import serve as _serve

    _serve(run_dir, host=host, port=port)

"""`load_run(path)`: read a run directory back into pandas (see docs/run-format.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlens.engine.store import RunStore
from vlens.errors import StoreError

TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding", "embeddings")


@dataclass
class Run:
    """A run directory's tables (None when a stage has not run) plus config and findings."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    samples: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    saliency: pd.DataFrame | None = None
    vlm: pd.DataFrame | None = None
    concepts: pd.DataFrame | None = None
    grounding: pd.DataFrame | None = None
    embeddings: pd.DataFrame | None = None
    findings: dict[str, Any] | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        """Any table by name, including ones beyond the standard set."""
        if name in TABLES:
            return getattr(self, name)
        return RunStore(self.path, create=False).read_table(name)

    def joined(self) -> pd.DataFrame | None:
        """samples joined with predictions on id (prediction columns win on clashes)."""
        if self.samples is None:
            return self.predictions
        if self.predictions is None:
            return self.samples
        right = self.predictions
        left = self.samples.drop(columns=[c for c in self.samples.columns
                                          if c in right.columns and c != "id"])
        return left.merge(right, on="id", how="outer")

    def __repr__(self) -> str:
        present = [t for t in TABLES if getattr(self, t) is not None]
        sizes = ", ".join(f"{t}={len(getattr(self, t))}" for t in present)
        return f"Run({str(self.path)!r}, {sizes or 'empty'})"


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read every table of run directory `path` (pending parts of an interrupted run included)."""
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"run directory not found: {p}")
    store = RunStore(p, create=False)
    tables = {t: store.read_table(t) for t in TABLES}
    findings = store.read_json("findings.json")
    return Run(path=p, config=store.read_config(), findings=findings, **tables)

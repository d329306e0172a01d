"""The `Finding` record and the `Findings` document (schema: docs/findings.md).

Scores: every finding has a `strength` in [0, 1) from its own kind (effect size times
evidence, see `strength`); the sort `score` is 0.5 + 0.5 * strength when the held-out half
confirms it and 0.5 * strength when it does not, so every confirmed finding ranks above
every unconfirmed one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vlens.errors import DataError

SCHEMA_VERSION = 1
KINDS = ("spurious_cue", "concept_error", "attention_cue", "slice", "confusion_pair",
         "label_error", "shortcut")


def strength(effect: float, q_value: float | None) -> float:
    """Combine an effect (lift-like ratio, >= 1 means stronger) and a q-value into [0, 1).

    effect term = 1 - 1/effect (0 for no effect, -> 1 for a huge ratio);
    evidence term = min(1, -log10(q) / 10) (q = 1e-10 or smaller gives full weight).
    """
    eff = 0.99 if not np.isfinite(effect) else max(0.0, 1.0 - 1.0 / max(effect, 1e-09))
    ev = 1.0 if q_value is None else min(1.0, -math.log10(max(q_value, 1e-300)) / 10.0)
    return float(min(0.999, eff * ev))


def final_score(s: float, confirmed: bool | None) -> float:
    """Sort key: confirmed findings occupy (0.5, 1), unconfirmed ones [0, 0.5)."""
    return round(0.5 + 0.5 * s if confirmed else 0.5 * s, 6)


def _clean(x):
    """Make numpy scalars/arrays and non-finite floats JSON-safe."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return 1e308 if f > 0 else -1e308
        return f
    return x


@dataclass
class Finding:
    """One dataset-level claim with the numbers and sample ids that support it."""

    id: str
    kind: str
    title: str
    cls: str | None = None
    concept: str | None = None
    score: float = 0.0
    stats: dict = field(default_factory=dict)
    confirmed: bool | None = None
    confirmation: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("cls")
        order = ["id", "kind", "title", "class", "concept", "score", "stats", "confirmed",
                 "confirmation", "evidence"]
        return _clean({k: d[k] for k in order})

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        d = dict(d)
        d["cls"] = d.pop("class", None)
        return cls(**d)


@dataclass
class Findings:
    """Everything `analyze` found; `to_json()` follows docs/findings.md."""

    run: dict = field(default_factory=dict)
    xai_matrix: dict | None = None
    findings: list[Finding] = field(default_factory=list)
    slices: list[dict] = field(default_factory=list)
    confusion_pairs: list[dict] = field(default_factory=list)
    label_error_candidates: list[dict] = field(default_factory=list)
    utility_k: dict | None = None
    narrative: list[dict] = field(default_factory=list)
    baseline_slices: list[dict] = field(default_factory=list)

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (-f.score, f.id))

    def by_id(self, fid: str) -> Finding:
        for f in self.findings:
            if f.id == fid:
                return f
        raise KeyError(fid)

    def table(self) -> pd.DataFrame:
        """The findings as a flat DataFrame (one row each, main stats as columns)."""
        rows = []
        for f in self.findings:
            r = {"id": f.id, "kind": f.kind, "class": f.cls, "concept": f.concept,
                 "score": f.score, "confirmed": f.confirmed, "title": f.title}
            r.update({k: v for k, v in f.stats.items() if np.isscalar(v)})
            rows.append(r)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        d = {
            "schema_version": SCHEMA_VERSION,
            "run": self.run,
            "xai_matrix": self.xai_matrix,
            "findings": [f.to_dict() for f in self.findings],
            "slices": self.slices,
            "confusion_pairs": self.confusion_pairs,
            "label_error_candidates": self.label_error_candidates,
            "utility_k": self.utility_k,
            "narrative": self.narrative,
            "baseline_slices": self.baseline_slices,
        }
        return _clean(d)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict) -> Findings:
        v = d.get("schema_version")
        if v != SCHEMA_VERSION:
            raise DataError(f"findings schema_version {v!r} is not {SCHEMA_VERSION}")
        return cls(
            run=d.get("run") or {}, xai_matrix=d.get("xai_matrix"),
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            slices=d.get("slices", []), confusion_pairs=d.get("confusion_pairs", []),
            label_error_candidates=d.get("label_error_candidates", []),
            utility_k=d.get("utility_k"), narrative=d.get("narrative", []),
            baseline_slices=d.get("baseline_slices", []))


def write_findings(findings: Findings, path) -> Path:
    """Atomic write (temp file in the same folder + os.replace): never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".findings.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(findings.to_json())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_findings(path) -> Findings:
    """Read findings.json; a missing or malformed file is a `DataError`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"no findings file at {path}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    return Findings.from_dict(d)

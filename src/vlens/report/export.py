"""Exports of per-sample results: a flat CSV and a FiftyOne-importable samples JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from vlens.report.load import load_run_data

# Columns first in the CSV, when present; every other scalar column follows.
CSV_FIRST = ["id", "uri", "label", "pred", "correct", "confidence", "loss", "focus_score",
             "object_visible", "energy_on_object", "pointing_hit", "deletion_auc",
             "insertion_auc", "description", "justification", "status", "error"]


def _scalar_columns(df: pd.DataFrame) -> list[str]:
    out = []
    for c in df.columns:
        s = df[c].dropna()
        if len(s) and isinstance(s.iloc[0], list | tuple | np.ndarray | dict):
            continue
        out.append(c)
    return out


def _csv_safe(v: object) -> object:
    """Neutralise spreadsheet formulas in text cells (CSV injection): prefix with a quote."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def export_csv(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write one row per sample (tables merged, list columns joined) to RUN/results.csv."""
    run = load_run_data(run_dir)
    df = run.samples.copy()
    for c in ("distractors", "topk_labels"):
        if c in df:
            df[c] = [";".join(map(str, v)) if isinstance(v, list | tuple | np.ndarray) else v
                     for v in df[c]]
    cols = _scalar_columns(df)
    cols = [c for c in CSV_FIRST if c in cols] + [c for c in cols if c not in CSV_FIRST]
    df = df[cols]
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
            df[c] = df[c].map(_csv_safe)
    if run.concepts is not None:
        df = pd.concat([df, run.concepts.add_prefix("concept_")], axis=1)
    if run.grounding is not None:
        df = pd.concat([df, run.grounding.add_prefix("grounding_")], axis=1)
    path = Path(out) if out else Path(run_dir) / "results.csv"
    df.to_csv(path, index=False)
    return path


def _clean(v: object) -> object:
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, list | tuple | np.ndarray):
        return [_clean(x) for x in v]
    return v


def export_fiftyone(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN/fiftyone.json: `{"samples": [{"filepath", "ground_truth", "prediction", ...}]}`.

    The layout follows FiftyOne's `FiftyOneDataset`-style sample dicts with `Classification`
    labels (`_cls`), so `fo.Dataset.from_dict` / `Sample.from_dict` can read each entry.
    Written without importing fiftyone (not a dependency).
    """
    run = load_run_data(run_dir)
    df = run.samples
    samples = []
    for rec in df.to_dict("records"):
        s = {"filepath": rec.get("uri"), "vlens_id": rec.get("id"), "tags": []}
        if rec.get("label") is not None:
            s["ground_truth"] = {"_cls": "Classification", "label": str(rec["label"])}
        if rec.get("pred") is not None:
            s["prediction"] = {"_cls": "Classification", "label": str(rec["pred"]),
                               "confidence": _clean(rec.get("confidence"))}
        for k in ("correct", "focus_score", "description", "justification", "object_visible",
                  "status", "error"):
            if k in rec:
                s[k] = _clean(rec[k])
        if rec.get("correct") is False:
            s["tags"].append("wrong")
        samples.append(s)
    path = Path(out) if out else Path(run_dir) / "fiftyone.json"
    path.write_text(json.dumps({"samples": samples}, allow_nan=False), encoding="utf-8")
    return path

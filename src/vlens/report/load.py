"""Read a run directory into one per-sample table plus findings, tolerating missing parts.

The report and the viewer only read. Each table of docs/run-format.md is optional here: a
missing file or column leaves the matching fields empty and the section says so, because a
half-finished run (or one from an older version) must still be viewable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from vlens.errors import StoreError

TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding")
# Per-table columns that would collide after the merge get these prefixes.
_PREFIX = {"predictions": "pred_", "saliency": "sal_", "vlm": "vlm_"}
DEFAULT_THRESHOLD = 2.5
SKIP = frozenset({"raw"})  # raw VLM answers: large, shown nowhere in the report or viewer
# Columns the viewer never shows; list columns are the slowest part of reading a big run.
VIEWER_SKIP = SKIP | {"topk_labels", "topk_probs", "content_hash", "embedding"}


@dataclass
class RunData:
    """A run, merged: `samples` has one row per sample (positional index 0..n-1)."""

    run_dir: Path
    samples: pd.DataFrame
    concepts: pd.DataFrame | None  # aligned with `samples` rows; columns = concept names
    grounding: pd.DataFrame | None
    findings: dict
    config_text: str
    present: dict[str, bool] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """Class names seen in labels and predictions, sorted."""
        vals: set[str] = set()
        for col in ("label", "pred"):
            if col in self.samples:
                vals.update(str(v) for v in self.samples[col].dropna().unique())
        return sorted(vals)


def _read(path: Path, skip: frozenset[str] = SKIP) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in names if c not in skip]).to_pandas()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise StoreError(f"cannot read {path.name}: {e}") from e


def _first_per_id(df: pd.DataFrame) -> pd.DataFrame:
    """One row per id (the first), ids as Python strings."""
    if "id" not in df:
        return df.iloc[0:0]
    df = df.copy()
    df["id"] = df["id"].to_numpy(dtype=object).astype(str).astype(object)
    return df if pd.Index(df["id"]).is_unique else df.drop_duplicates("id", keep="first")


def load_findings(run_dir: Path) -> dict:
    """findings.json as a dict ({} when absent); a damaged file is an error, not a blank."""
    p = Path(run_dir) / "findings.json"
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"findings.json is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise StoreError("findings.json must hold a JSON object")
    return data


def load_run_data(run_dir: str | Path, skip: frozenset[str] = SKIP) -> RunData:
    """Load and merge the tables of `run_dir` (see docs/run-format.md) for the report.

    Unlike `vlens.load_run` (one DataFrame per table, as stored), this joins the per-sample
    tables into one row per sample and tolerates missing tables and columns. Columns named
    in `skip` are not read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StoreError(f"run directory not found: {run_dir}")
    raw = {name: _read(run_dir / f"{name}.parquet", skip) for name in TABLES}
    present = {k: v is not None for k, v in raw.items()}
    base = raw["samples"]
    if base is None:
        base = raw["predictions"] if raw["predictions"] is not None else raw["vlm"]
    if base is None or "id" not in base:
        raise StoreError(f"{run_dir} has neither samples.parquet nor predictions.parquet")
    merged = _first_per_id(base).reset_index(drop=True)
    base_is = "samples" if raw["samples"] is not None else "predictions"
    for name in ("predictions", "saliency", "vlm"):
        df = raw[name]
        if df is None or name == base_is or "id" not in df:
            continue
        df = _first_per_id(df)
        ren = {c: _PREFIX[name] + c for c in df.columns if c != "id" and c in merged}
        # `label` of predictions repeats samples.label: keep the samples one.
        if name == "predictions" and "label" in ren:
            df = df.drop(columns=["label"])
            del ren["label"]
        df = df.rename(columns=ren)
        if len(df) == len(merged) and np.array_equal(df["id"].to_numpy(), merged["id"].to_numpy()):
            # Same ids in the same order (what the engine writes): attach columns, no join.
            merged = pd.concat([merged, df.drop(columns=["id"]).reset_index(drop=True)], axis=1)
        else:
            merged = merged.merge(df, on="id", how="left")
    merged = _normalise(merged)
    findings = load_findings(run_dir)
    cfg = run_dir / "config.yaml"
    return RunData(
        run_dir=run_dir,
        samples=merged,
        concepts=_aligned(raw["concepts"], merged),
        grounding=_aligned(raw["grounding"], merged),
        findings=findings,
        config_text=cfg.read_text(encoding="utf-8", errors="replace") if cfg.is_file() else "",
        present=present | {"findings": bool(findings)},
    )


def _aligned(df: pd.DataFrame | None, merged: pd.DataFrame) -> pd.DataFrame | None:
    if df is None or "id" not in df:
        return None
    df = _first_per_id(df)
    if len(df) == len(merged) and np.array_equal(df["id"].to_numpy(), merged["id"].to_numpy()):
        num = df.drop(columns=["id"]).select_dtypes(include="number").astype(np.float32)
        num.columns = [str(c) for c in num.columns]
        return num.reset_index(drop=True)
    df = df.set_index("id")
    num = df.select_dtypes(include="number").astype(np.float32)
    num.columns = [str(c) for c in num.columns]
    return num.reindex(merged["id"].values).reset_index(drop=True)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Give the merged table the columns the report relies on, with stable dtypes."""
    # Class names as Python strings (compared element-wise by the viewer's filters); long
    # text columns keep their Arrow-backed dtype and are read per card.
    for col in ("label", "pred"):
        if col in df:
            s = df[col]
            if not (pd.api.types.is_string_dtype(s) or s.dtype == object):
                s = s.astype(str).where(s.notna())
            arr = s.to_numpy(dtype=object, na_value=None)
            df[col] = pd.Series(arr, index=df.index, dtype=object)
    if "correct" not in df and {"label", "pred"} <= set(df.columns):
        df["correct"] = (df["label"] == df["pred"]) & df["pred"].notna()
    if "correct" in df:
        df["correct"] = df["correct"].astype("boolean")
    for col in ("confidence", "focus_score", "loss", "energy_on_object", "deletion_auc",
                "insertion_auc"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float32)
    return df


def numeric_columns(df: pd.DataFrame) -> list[str]:
    """Per-sample score columns a user may sort by."""
    out = []
    for c in df.columns:
        if c.startswith("meta_") or c in ("content_hash",):
            continue
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            out.append(c)
    return out


def xai_cells(run: RunData) -> dict:
    """The XAI matrix from findings.json, or computed from the tables when it is missing."""
    xm = run.findings.get("xai_matrix") if isinstance(run.findings, dict) else None
    if isinstance(xm, dict) and isinstance(xm.get("cells"), dict):
        return xm
    df = run.samples
    if "correct" not in df or "focus_score" not in df:
        return {}
    thr = DEFAULT_THRESHOLD
    ok = df["focus_score"].notna() & df["correct"].notna()
    corr = df["correct"].fillna(False).to_numpy(bool)
    high = (df["focus_score"].fillna(-1).to_numpy() >= thr)
    ok = ok.to_numpy(bool)
    n = max(int(ok.sum()), 1)
    cells = {}
    for name, m in {"correct_high": corr & high, "correct_low": corr & ~high,
                    "wrong_high": ~corr & high, "wrong_low": ~corr & ~high}.items():
        m = m & ok
        cells[name] = {"count": int(m.sum()), "rate": float(m.sum() / n),
                       "sample_ids": df["id"][m].tolist()}
    return {"threshold": thr, "cells": cells, "per_class": {}, "computed": True}

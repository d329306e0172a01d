"""`AnalysisInput`: the run's tables as aligned numpy arrays (one row per analysed sample).

Built from a run directory (`from_run`), from pandas DataFrames that follow
docs/run-format.md (`from_frames`), or from arrays (`from_arrays`, used by the benchmark at
1M rows). Concept matrices are kept as given: float32 scores or uint8 scores quantised to
0..255 (= 0..1); the analysis streams over them in row chunks and never copies them whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vlens.errors import DataError


def holdout_split(ids) -> np.ndarray:
    """Deterministic 0/1 split from a hash of each id (0 = discover, 1 = confirm).

    pandas' `hash_pandas_object` uses a fixed key, so the split is the same on every
    machine and run, and a sample keeps its half when other samples are added.
    """
    h = pd.util.hash_pandas_object(pd.Series(np.asarray(ids, dtype=object)), index=False)
    return (h.to_numpy() & np.uint64(1)).astype(np.uint8)


@dataclass
class AnalysisInput:
    """Aligned per-sample arrays. `label`/`pred` are codes into `classes`."""

    ids: np.ndarray
    classes: list[str]
    label: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray | None = None
    focus: np.ndarray | None = None
    concepts: np.ndarray | None = None
    concept_names: list[str] = field(default_factory=list)
    grounding: np.ndarray | None = None
    grounding_names: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    meta: pd.DataFrame | None = None
    run_info: dict = field(default_factory=dict)
    split: np.ndarray | None = None
    probs: np.ndarray | None = None  # (n, C) model class probabilities (NaN = unknown)

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids = np.asarray(self.ids).astype(str)
        if not pd.Index(self.ids).is_unique:
            raise DataError("sample ids must be unique")
        self.label = np.asarray(self.label, dtype=np.int32)
        self.pred = np.asarray(self.pred, dtype=np.int32)
        for name in ("label", "pred", "confidence", "focus", "concepts", "grounding",
                     "embeddings", "probs"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise DataError(f"{name} has {len(arr)} rows, expected {n} (one per sample)")
        for mat, names, what in ((self.concepts, self.concept_names, "concepts"),
                                 (self.grounding, self.grounding_names, "grounding")):
            if mat is not None:
                if mat.ndim != 2 or mat.shape[1] != len(names):
                    raise DataError(f"{what} matrix has shape {mat.shape} but "
                                    f"{len(names)} names")
                if mat.dtype not in (np.float32, np.float64, np.uint8):
                    raise DataError(f"{what} must be float32/float64 or uint8, got {mat.dtype}")
        if self.confidence is not None:
            self.confidence = np.asarray(self.confidence, dtype=np.float32)
        if self.focus is not None:
            self.focus = np.asarray(self.focus, dtype=np.float32)
        if self.probs is not None:
            self.probs = np.asarray(self.probs, dtype=np.float32)
            if self.probs.ndim != 2 or self.probs.shape[1] != len(self.classes):
                raise DataError(f"probs has shape {self.probs.shape}, expected "
                                f"({n}, {len(self.classes)}) (one column per class)")
        if self.split is None:
            self.split = holdout_split(self.ids)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def correct(self) -> np.ndarray:
        return self.label == self.pred

    def class_columns(self, names: list[str], mapping: dict[str, str] | None = None) -> np.ndarray:
        """Column index of each class's own concept in `names` (-1 if absent).

        A class matches a concept of the same name (case-insensitive) unless `mapping`
        (class -> concept) says otherwise.
        """
        lower = {c.lower(): i for i, c in enumerate(names)}
        mapping = mapping or {}
        out = np.full(len(self.classes), -1, dtype=np.int64)
        for k, c in enumerate(self.classes):
            out[k] = lower.get(mapping.get(c, c).lower(), -1)
        return out

    # ---- constructors -------------------------------------------------------------
    @classmethod
    def from_arrays(cls, ids, label, pred, classes=None, **kw) -> AnalysisInput:
        """Build from label/pred given as strings (codes are derived) or as codes + classes."""
        label = np.asarray(label)
        pred = np.asarray(pred)
        if classes is None:
            classes = sorted(set(pd.unique(label).tolist()) | set(pd.unique(pred).tolist()),
                             key=str)
            index = pd.Index([str(c) for c in classes])
            label = index.get_indexer(label.astype(str))
            pred = index.get_indexer(pred.astype(str))
            classes = list(index)
        return cls(ids=ids, classes=list(classes), label=label, pred=pred, **kw)

    @classmethod
    def from_frames(cls, predictions: pd.DataFrame, samples: pd.DataFrame | None = None,
                    vlm: pd.DataFrame | None = None, concepts: pd.DataFrame | None = None,
                    grounding: pd.DataFrame | None = None,
                    embeddings: pd.DataFrame | None = None, run_info: dict | None = None
                    ) -> AnalysisInput:
        """Join run tables on `id`; only samples with an ok prediction are analysed."""
        for col in ("id", "label", "pred"):
            if col not in predictions.columns:
                raise DataError(f"predictions table lacks column {col!r}")
        p = predictions
        if "status" in p.columns:
            p = p[p["status"].fillna("ok") == "ok"]
        p = p[p["label"].notna() & p["pred"].notna()].reset_index(drop=True)
        ids = p["id"].astype(str).to_numpy()
        idx = pd.Index(ids)

        def align(df: pd.DataFrame | None, what: str) -> pd.DataFrame | None:
            if df is None:
                return None
            if "id" not in df.columns:
                raise DataError(f"{what} table lacks column 'id'")
            d = df.copy()
            d["id"] = d["id"].astype(str)
            if "status" in d.columns:
                d = d[d["status"].fillna("ok") == "ok"]
            return d.drop_duplicates("id").set_index("id").reindex(idx)

        kw: dict = {}
        if "confidence" in p.columns:
            kw["confidence"] = p["confidence"].astype(np.float32).to_numpy()
        v = align(vlm, "vlm")
        if v is not None and "focus_score" in v.columns:
            kw["focus"] = v["focus_score"].astype(np.float32).to_numpy()
        for df, key, names_key in ((concepts, "concepts", "concept_names"),
                                   (grounding, "grounding", "grounding_names")):
            a = align(df, key)
            if a is not None:
                # concept columns are the numeric ones (status, error, hashes are not)
                a = a.select_dtypes(include="number")
                kw[key] = a.to_numpy(dtype=np.float32, na_value=np.nan)
                kw[names_key] = [str(c) for c in a.columns]
        e = align(embeddings, "embeddings")
        if e is not None and "embedding" in e.columns:
            col = e["embedding"]
            if col.isna().any():
                dim = len(next(x for x in col if x is not None and not np.isscalar(x)))
                col = col.apply(lambda x: np.full(dim, np.nan) if np.isscalar(x) else x)
            kw["embeddings"] = np.stack(col.to_numpy()).astype(np.float32)
        s = align(samples, "samples")
        if s is not None:
            meta_cols = [c for c in s.columns if c.startswith("meta_")]
            if meta_cols:
                kw["meta"] = s[meta_cols].reset_index(drop=True)
        inp = cls.from_arrays(ids, p["label"].astype(str).to_numpy(),
                              p["pred"].astype(str).to_numpy(), run_info=run_info or {}, **kw)
        if {"topk_labels", "topk_probs"} <= set(p.columns):
            inp.probs = topk_probabilities(p["topk_labels"], p["topk_probs"], inp.classes)
        return inp

    @classmethod
    def from_run(cls, path) -> AnalysisInput:
        """Read a run directory (via `vlens.load_run` when available, else the parquet files)."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"run directory not found: {path}")
        tables = _load_tables(path)
        if tables.get("predictions") is None:
            raise DataError(f"{path} has no predictions table (run `vlens predict` first)")
        info = {"name": path.name}
        preds = tables["predictions"]
        return cls.from_frames(
            preds, samples=tables.get("samples"), vlm=tables.get("vlm"),
            concepts=tables.get("concepts"), grounding=tables.get("grounding"),
            embeddings=tables.get("embeddings"), run_info=info)


def topk_probabilities(labels, probs, classes: list[str]) -> np.ndarray:
    """(n, C) probabilities from per-row top-k (labels, probs) lists; the mass outside the
    top k is spread evenly over the classes it does not name; rows without a top-k are NaN.
    Labels that are not in `classes` are ignored."""
    index = {c: k for k, c in enumerate(classes)}
    c = len(classes)
    out = np.full((len(labels), c), np.nan, dtype=np.float32)
    for i, (ls, ps) in enumerate(zip(labels, probs, strict=True)):
        if ls is None or ps is None or np.isscalar(ls) or len(ls) == 0:
            continue
        row = np.zeros(c, dtype=np.float64)
        seen = np.zeros(c, dtype=bool)
        for lab, pr in zip(ls, ps, strict=False):
            k = index.get(str(lab))
            if k is not None and pr is not None and np.isfinite(pr):
                row[k] = max(float(pr), 0.0)
                seen[k] = True
        if not seen.any():
            continue
        if (~seen).any():
            row[~seen] = max(0.0, 1.0 - row.sum()) / (~seen).sum()
        out[i] = row
    return out


def _load_tables(path: Path) -> dict[str, pd.DataFrame | None]:
    names = ("samples", "predictions", "vlm", "concepts", "grounding", "embeddings")
    try:
        from vlens.runs import load_run  # written by another area; optional here
    except ImportError:
        load_run = None
    if load_run is not None:
        run = load_run(path)
        return {n: getattr(run, n, None) for n in names}
    out: dict[str, pd.DataFrame | None] = {}
    for n in names:
        f = path / f"{n}.parquet"
        try:
            out[n] = pd.read_parquet(f) if f.exists() else None
        except Exception as e:  # pyarrow raises several types for a broken file
            raise DataError(f"cannot read {f}: {e}") from e
    return out

"""Agreement between judge focus scores and a reference (true saliency energy, humans).

Pearson and Spearman come from scipy; quadratic-weighted kappa from scikit-learn on scores
rounded to integers (the 0-5 scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from vlens.errors import DataError


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"agreement needs two equal-length vectors, got {a.shape} and {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3:
        raise DataError(f"agreement needs at least 3 paired scores, got {int(ok.sum())}")
    return a[ok], b[ok]


def pearson(a, b) -> dict:
    x, y = _pair(a, b)
    r = stats.pearsonr(x, y)
    return {"r": float(r.statistic), "p_value": float(r.pvalue), "n": int(len(x))}


def spearman(a, b) -> dict:
    x, y = _pair(a, b)
    r = stats.spearmanr(x, y)
    return {"rho": float(r.statistic), "p_value": float(r.pvalue), "n": int(len(x))}


def quadratic_kappa(a, b) -> float:
    """Cohen's kappa with quadratic weights on scores rounded to the nearest integer."""
    x, y = _pair(a, b)
    return float(cohen_kappa_score(np.rint(x).astype(int), np.rint(y).astype(int),
                                   weights="quadratic"))


def focus_vs_energy(focus, energy) -> dict:
    """Judge focus score (0-5) vs true fraction of saliency energy on the object (0-1)."""
    return {"pearson": pearson(focus, energy), "spearman": spearman(focus, energy)}


def read_human_scores(path, id_col: str = "id", score_col: str = "score") -> pd.Series:
    """Read a CSV of human scores (one row per sample id) into a Series indexed by id."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={id_col: str})
    except FileNotFoundError as e:
        raise DataError(f"human scores file not found: {path}") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read human scores {path}: {e}") from e
    missing = [c for c in (id_col, score_col) if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; has {list(df.columns)}")
    if df[id_col].duplicated().any():
        dup = df.loc[df[id_col].duplicated(), id_col].iloc[0]
        raise DataError(f"{path} lists sample id {dup!r} more than once")
    scores = pd.to_numeric(df[score_col], errors="coerce")
    if scores.isna().any():
        bad = df.loc[scores.isna(), id_col].iloc[0]
        raise DataError(f"{path}: score for sample {bad!r} is missing or not a number")
    return pd.Series(scores.to_numpy(), index=df[id_col].to_numpy(), name=score_col)


def human_agreement(judge: pd.Series, human: pd.Series) -> dict:
    """Pearson, Spearman and quadratic-weighted kappa of judge vs human scores.

    `judge` is indexed by sample id; every human id must be a judged sample.
    """
    unknown = human.index.difference(judge.index)
    if len(unknown):
        raise DataError(f"{len(unknown)} human-scored id(s) not in the run, e.g. "
                        f"{unknown[0]!r}")
    j = judge.reindex(human.index).to_numpy(dtype=np.float64)
    h = human.to_numpy(dtype=np.float64)
    return {"n": int((~np.isnan(j)).sum()), "pearson": pearson(j, h)["r"],
            "spearman": spearman(j, h)["rho"], "quadratic_kappa": quadratic_kappa(j, h)}

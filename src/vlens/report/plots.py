"""Small plots as SVG primitives (rects, lines, texts) rendered by the `svg` jinja macro.

Hand-written instead of matplotlib: three plot types, no extra dependency, and every label
(concept names come from users' vocabularies) passes through jinja's autoescape because the
plot is data, not a pre-rendered string.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

W, H = 420, 240
L, R, T, B = 46, 12, 26, 38  # margins


def _frame(title: str, xlabel: str, ylabel: str, width: int = W, height: int = H) -> dict:
    x0, x1, y0, y1 = L, width - R, height - B, T
    return {
        "width": width, "height": height, "title": title,
        "rects": [], "circles": [],
        "lines": [{"x1": x0, "y1": y0, "x2": x1, "y2": y0, "cls": "axis"},
                  {"x1": x0, "y1": y0, "x2": x0, "y2": y1, "cls": "axis"}],
        "texts": [{"x": width / 2, "y": 16, "text": title, "anchor": "middle", "cls": "title"},
                  {"x": (x0 + x1) / 2, "y": height - 6, "text": xlabel, "anchor": "middle",
                   "cls": "label"},
                  {"x": 12, "y": (y0 + y1) / 2, "text": ylabel, "anchor": "middle",
                   "cls": "label", "rotate": True}],
        "legend": [],
    }


def _yticks(chart: dict, vmax: float, fmt: str = "{:.0%}") -> None:
    y0, y1 = chart["height"] - B, T
    for k in range(5):
        v = vmax * k / 4
        y = y0 - (y0 - y1) * k / 4
        chart["lines"].append({"x1": L - 3, "y1": y, "x2": chart["width"] - R, "y2": y,
                               "cls": "grid"})
        chart["texts"].append({"x": L - 5, "y": y + 3, "text": fmt.format(v), "anchor": "end",
                               "cls": "tick"})


def focus_histogram(df: pd.DataFrame) -> dict | None:
    """Distribution of the judge's focus score (0-5) for correct vs wrong predictions."""
    if "focus_score" not in df or "correct" not in df:
        return None
    f = df["focus_score"].to_numpy(dtype=float, na_value=np.nan)
    c = df["correct"].to_numpy(dtype=object)
    ok = ~np.isnan(f) & pd.notna(c)
    if not ok.any():
        return None
    f, c = f[ok], c[ok].astype(bool)
    edges = np.linspace(0, 5, 11)
    series = []
    for name, m, cls in (("correct", c, "s-correct"), ("wrong", ~c, "s-wrong")):
        h, _ = np.histogram(np.clip(f[m], 0, 5), bins=edges)
        series.append((name, h / max(m.sum(), 1), cls, int(m.sum())))
    vmax = max(0.04, max(float(s[1].max()) for s in series))
    vmax = math.ceil(vmax / 0.04 - 1e-9) * 0.04  # quarter ticks land on whole percents
    ch = _frame("Judge focus score by correctness", "focus score (0 = off object, 5 = on it)",
                "share of group")
    _yticks(ch, vmax)
    x0, x1, y0, y1 = L, W - R, H - B, T
    bw = (x1 - x0) / 10
    for b in range(10):
        for k, (_, h, cls, _) in enumerate(series):
            hh = (y0 - y1) * h[b] / vmax
            ch["rects"].append({"x": x0 + b * bw + 2 + k * (bw - 4) / 2, "y": y0 - hh,
                                "w": (bw - 4) / 2, "h": hh, "cls": cls})
    for b in range(0, 11, 2):
        ch["texts"].append({"x": x0 + b * bw, "y": y0 + 13, "text": f"{edges[b]:g}",
                            "anchor": "middle", "cls": "tick"})
    ch["legend"] = [{"text": f"{name} (n={n})", "cls": cls} for name, _, cls, n in series]
    return ch


def concept_lift(rows: list[tuple[str, float]], title: str) -> dict | None:
    """Horizontal bars of lift per concept (1.0 = no association, dashed)."""
    rows = [(str(n), float(v)) for n, v in rows if v is not None and np.isfinite(v)][:12]
    if not rows:
        return None
    h = T + 22 * len(rows) + B
    width = W
    lx = 150  # label column
    ch = _frame(title, "lift", "", width, h)
    ch["lines"] = [{"x1": lx, "y1": h - B, "x2": width - R, "y2": h - B, "cls": "axis"}]
    vmax = max(2.0, max(v for _, v in rows) * 1.1)
    scale = (width - R - lx) / vmax
    for i, (name, v) in enumerate(rows):
        y = T + 22 * i + 4
        ch["rects"].append({"x": lx, "y": y, "w": max(v * scale, 1), "h": 15,
                            "cls": "s-lift" if v >= 1 else "s-lift-low"})
        short = name if len(name) <= 22 else name[:21] + "…"
        ch["texts"].append({"x": lx - 6, "y": y + 12, "text": short, "anchor": "end",
                            "cls": "tick", "full": name})
        ch["texts"].append({"x": lx + v * scale + 4, "y": y + 12, "text": f"{v:.2f}",
                            "anchor": "start", "cls": "tick"})
    ch["lines"].append({"x1": lx + scale, "y1": T, "x2": lx + scale, "y2": h - B,
                        "cls": "ref"})
    for k in range(0, int(vmax) + 1):
        ch["texts"].append({"x": lx + k * scale, "y": h - B + 13, "text": str(k),
                            "anchor": "middle", "cls": "tick"})
    return ch


def lift_charts(run) -> list[dict]:
    """Lift bars from the findings (when they carry lifts) and from the concepts table."""
    out = []
    rows, title = lift_rows(run)
    if rows:
        out.append(concept_lift(rows, title))
    rows = error_lift_rows(run)
    if rows:
        out.append(concept_lift(rows, "Error lift when a concept is present"))
    return [c for c in out if c]


def lift_rows(run) -> tuple[list[tuple[str, float]], str]:
    """Concept lifts named by the findings (`stats.lift`), highest first."""
    rows: list[tuple[str, float]] = []
    found = run.findings.get("findings")
    for f in found if isinstance(found, list) else []:
        if not isinstance(f, dict):
            continue
        lift = (f.get("stats") or {}).get("lift") if isinstance(f.get("stats"), dict) else None
        if f.get("concept") and isinstance(lift, int | float):
            label = f"{f['concept']} → {f.get('class')}" if f.get("class") else str(f["concept"])
            if label not in {r[0] for r in rows}:
                rows.append((label, float(lift)))
    return sorted(rows, key=lambda r: -r[1]), "Concept lift in findings"


def error_lift_rows(run, threshold: float = 0.5, min_support: int = 5) -> list[tuple[str, float]]:
    """P(wrong | concept score >= threshold) / P(wrong) per concept of concepts.parquet."""
    cdf, df = run.concepts, run.samples
    if cdf is None or "correct" not in df or cdf.empty:
        return []
    wrong = ~df["correct"].fillna(True).to_numpy(bool)
    base = wrong.mean()
    if base == 0:
        return []
    rows = []
    for c in cdf.columns:
        m = cdf[c].to_numpy() >= threshold
        if m.sum() >= min_support:
            rows.append((c, float(wrong[m].mean() / base)))
    return sorted(rows, key=lambda r: -r[1])


def reliability(df: pd.DataFrame) -> dict | None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with ECE."""
    if "confidence" not in df or "correct" not in df:
        return None
    p = df["confidence"].to_numpy(dtype=float, na_value=np.nan)
    c = df["correct"].to_numpy(dtype=object)
    ok = ~np.isnan(p) & pd.notna(c)
    if ok.sum() == 0:
        return None
    p, c = np.clip(p[ok], 0, 1), c[ok].astype(float)
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p, edges) - 1, 0, 9)
    ece = 0.0
    ch = _frame("", "confidence", "accuracy")
    x0, x1, y0, y1 = L, W - R, H - B, T
    _yticks(ch, 1.0)
    bw = (x1 - x0) / 10
    for b in range(10):
        m = idx == b
        if not m.any():
            continue
        acc = c[m].mean()
        ece += m.mean() * abs(acc - p[m].mean())
        hh = (y0 - y1) * acc
        ch["rects"].append({"x": x0 + b * bw + 2, "y": y0 - hh, "w": bw - 4, "h": hh,
                            "cls": "s-correct"})
    ch["lines"].append({"x1": x0, "y1": y0, "x2": x1, "y2": y1, "cls": "ref"})
    for b in range(0, 11, 2):
        ch["texts"].append({"x": x0 + b * bw, "y": y0 + 13, "text": f"{edges[b]:.1f}",
                            "anchor": "middle", "cls": "tick"})
    ch["texts"][0]["text"] = f"Reliability (ECE = {ece:.3f})"
    ch["legend"] = [{"text": "accuracy per bin", "cls": "s-correct"},
                    {"text": "perfect calibration", "cls": "ref"}]
    return ch

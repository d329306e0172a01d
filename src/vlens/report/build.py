"""Build the static, self-contained HTML report: RUN/report/index.html + RUN/report/img/.

The page works from disk with no server and no network. Images are thumbnails (small RGB
PNGs copied as they are, anything else re-encoded) written under names the report
generates (`img/s<row>.<kind>.png`), so no file name from the data ever becomes a URL.
Sample data for the interactive parts travels as escaped JSON in a
`<script type="application/json">` block and is rendered with `textContent` by report.js.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import shutil
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import yaml
from markupsafe import Markup
from PIL import Image

from vlens.report import plots
from vlens.report.load import RunData, load_run_data, xai_cells
from vlens.report.safety import PathRefused, resolve_inside, safe_report_url, script_json

PKG = Path(__file__).parent
GALLERY_CAP = 60  # samples shown per clickable group
STRIP = 8  # thumbnails in a strip
THUMB = 192  # max side of copied images, px
CELL_ORDER = ("correct_high", "correct_low", "wrong_high", "wrong_low")
CELL_TITLES = {
    "correct_high": "Correct, high focus (right for the right reason)",
    "correct_low": "Correct, low focus (right for a wrong reason?)",
    "wrong_high": "Wrong, high focus (looked at the object, still wrong)",
    "wrong_low": "Wrong, low focus (looked elsewhere)",
}
Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs while copying thumbnails


def environment() -> jinja2.Environment:
    """The jinja2 environment: package templates, autoescape on for every template."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PKG / "templates")),
        autoescape=True,  # everything, whatever the file extension
        undefined=jinja2.Undefined,  # a missing field renders empty, never crashes
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["url"] = safe_report_url
    env.filters["script_json"] = _script_json_filter
    env.filters["num"] = _num
    env.filters["pct"] = lambda v: "–" if not _finite(v) else f"{float(v):.1%}"
    return env


def _finite(v: object) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def static_assets(name: str) -> dict:
    """The package's own CSS/JS for page `name` (trusted files, not data) and the script's
    CSP hash, so the page allows exactly that inline script and nothing injected."""
    js = "\n".join((PKG / "static" / f).read_text(encoding="utf-8")
                   for f in ("card.js", f"{name}.js"))
    css = "\n".join((PKG / "static" / f).read_text(encoding="utf-8")
                    for f in dict.fromkeys(("report.css", f"{name}.css")))
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    return {"css": Markup(css), "js": Markup(js), "js_hash": digest}


def _script_json_filter(obj: object) -> Markup:
    """Like jinja's `tojson`: escaped for a `<script type="application/json">` block."""
    return Markup(script_json(obj))


def _num(v: object) -> str:
    """Numbers for humans: p-values in scientific notation, others to 3 significant digits;
    a mapping (e.g. a finding's `counterfactual` stats) as "key value, key value", a list of
    them joined by "; "."""
    if isinstance(v, list | tuple) and v and all(isinstance(x, dict) for x in v):
        return "; ".join(_num(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {v[k] if isinstance(v[k], str) else _num(v[k])}" for k in v)
    if isinstance(v, bool) or v is None:
        return "–" if v is None else ("yes" if v else "no")
    if not _finite(v):
        return str(v)
    f = float(v)
    if f == int(f) and abs(f) < 1e9:
        return str(int(f))
    if abs(f) < 1e-3:
        return f"{f:.1e}"
    return f"{f:.3g}"


class _Collector:
    """Assigns report keys to the samples a section shows and groups them for galleries."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        self.row_of = {sid: i for i, sid in enumerate(run.samples["id"].tolist())}
        self.rows: dict[int, str] = {}
        self.groups: dict[str, dict] = {}

    def group(self, title: str, ids: list, cap: int = GALLERY_CAP) -> dict:
        """Register a gallery of sample ids (unknown ids are counted, not shown)."""
        ids = [str(s) for s in ids] if isinstance(ids, list) else []
        rows = [self.row_of[s] for s in ids if s in self.row_of]
        keys = [self.key(r) for r in rows[:cap]]
        g = {"key": f"g{len(self.groups)}", "title": str(title), "ids": keys,
             "total": len(ids), "missing": len(ids) - len(rows)}
        self.groups[g["key"]] = g
        return g

    def key(self, row: int) -> str:
        return self.rows.setdefault(row, f"s{row}")


def _copy_image(src: Path | None, dst: Path, link: bool = False) -> bool:
    """Put a thumbnail of `src` at `dst`. An RGB PNG already within THUMB is copied byte for
    byte (PIL reads only its header): decoding and re-encoding every card image was most of
    the report's time. With `link` (files the run itself wrote, replaced atomically and never
    edited in place) it is hardlinked instead where the filesystem allows. Anything else is
    decoded, shrunk and re-encoded as PNG."""
    if src is None or not src.is_file():
        return False
    try:
        with Image.open(src) as im:
            if im.format == "PNG" and im.mode == "RGB" and max(im.size) <= THUMB:
                if link:
                    try:
                        os.link(src, dst)
                        return True
                    except OSError:
                        pass
                shutil.copyfile(src, dst)
                return True
            im.thumbnail((THUMB, THUMB))
            im.convert("RGB").save(dst, format="PNG", optimize=False)
        return True
    except Exception:  # a broken image becomes "no image" on the card, never a crash
        return False


def _original_path(run_dir: Path, uri: str | None) -> Path | None:
    if not uri or "://" in uri or uri.startswith("javascript:"):
        return None
    p = Path(uri)
    return p if p.is_absolute() else run_dir / p


def _view_path(run_dir: Path, rel: str | None) -> Path | None:
    if not rel:
        return None
    try:
        return resolve_inside(run_dir, rel)
    except PathRefused:
        return None


def _val(row: pd.Series | dict, col: str) -> object:
    if col not in (row.index if isinstance(row, pd.Series) else row):
        return None
    v = row[col]
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        v = v.item()  # np.float32 is not a float subclass: NaN only shows up after this
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else None
    if isinstance(v, list | tuple | np.ndarray):
        return [str(x) for x in v]
    return v if isinstance(v, bool | int) else str(v)


def _cards(run: RunData, rows: dict[int, str], img_dir: Path | None) -> dict[str, dict]:
    """Per-sample card data and copied images for every row a section shows."""
    df, out = run.samples, {}
    order = sorted(rows.items())
    # one conversion for all shown rows (a pandas Series per row was most of the time)
    recs = df.iloc[[row for row, _ in order]].to_dict("records") if order else []
    gmat = gnames = cmat = cpos = None
    if run.grounding is not None:
        gmat = run.grounding.to_numpy(dtype=np.float64)
        gnames = [str(c) for c in run.grounding.columns]
        if run.concepts is not None:
            cmat = run.concepts.to_numpy(dtype=np.float64)
            cpos = {str(c): j for j, c in enumerate(run.concepts.columns)}
    for (row, key), r in zip(order, recs, strict=True):
        imgs = {}
        for kind, src in (("o", "uri"), ("ov", "view_overlay"), ("m", "view_masked")):
            if img_dir is None:  # the viewer serves images itself
                break
            path = (_original_path(run.run_dir, _val(r, src)) if kind == "o"
                    else _view_path(run.run_dir, _val(r, src)))
            name = f"{key}.{kind}.png"
            if _copy_image(path, img_dir / name, link=kind != "o"):
                imgs[kind] = safe_report_url(f"img/{name}")
        ground = []
        if gmat is not None:
            g = gmat[row]
            top = np.argsort(np.where(np.isnan(g), -np.inf, -g), kind="stable")[:6]
            for j in top:
                name = gnames[j]
                gv = g[j]
                cj = cpos.get(name) if cpos is not None else None
                cv = cmat[row, cj] if cj is not None else None
                ground.append([name, None if np.isnan(gv) else round(float(gv), 3),
                               None if cv is None or np.isnan(cv) else round(float(cv), 3)])
        out[key] = {
            "id": str(r["id"]), "label": _val(r, "label"), "pred": _val(r, "pred"),
            "conf": _val(r, "confidence"), "correct": _val(r, "correct"),
            "focus": _val(r, "focus_score"), "desc": _val(r, "description"),
            "just": _val(r, "justification"), "vis": _val(r, "object_visible"),
            "distractors": _val(r, "distractors"), "status": _val(r, "status"),
            "error": _val(r, "error"), "energy": _val(r, "energy_on_object"),
            "img": imgs, "ground": ground,
        }
    return out


def _metrics(run: RunData) -> list[tuple[str, str]]:
    info = run.findings.get("run") if isinstance(run.findings.get("run"), dict) else {}
    df = run.samples
    out = [("samples", _num(info.get("n_samples", len(df))))]
    if "status" in df:
        out.append(("error rows", _num(int((df["status"] == "error").sum()))))
    acc = info.get("accuracy")
    if acc is None and "correct" in df and df["correct"].notna().any():
        acc = float(df["correct"].dropna().astype(bool).mean())
    if _finite(acc):
        out.append(("accuracy", f"{float(acc):.1%}"))
    for key, col in (("mAP", "map"), ("mIoU", "miou")):
        v = info.get(col, info.get(key))
        if v is None and col in df and df[col].notna().any():
            v = float(df[col].mean())
        if _finite(v):
            out.append((key, f"{float(v):.3f}"))
    if "n_errors" in info:
        out.append(("wrong predictions", _num(info["n_errors"])))
    return out


def _run_info(run: RunData) -> dict:
    """Run name, model, data, VLM: findings.json's `run`, completed from config.yaml."""
    info = dict(run.findings.get("run")) if isinstance(run.findings.get("run"), dict) else {}
    try:
        cfg = yaml.safe_load(run.config_text) if run.config_text else None
    except yaml.YAMLError:
        cfg = None
    if isinstance(cfg, dict):
        for key in ("name", "model", "data", "vlm"):
            v = cfg.get(key)
            if not info.get(key) and isinstance(v, str | int | float):
                info[key] = str(v)
    info.setdefault("name", run.run_dir.resolve().name)
    return info


def _facts(f: dict, limit: int = 9) -> list[tuple[str, object]]:
    """The top finding's headline numbers: its stats, then evidence numbers not repeated."""
    out = [(k, v) for k, v in f["_stats"].items() if not isinstance(v, dict | list)]
    seen = {k for k, _ in out}
    out += [(k, v) for k, v in f["_numbers"].items()
            if k not in seen and not isinstance(v, dict | list)]
    return out[:limit]


def _plain_list(obj: object) -> list:
    return obj if isinstance(obj, list) else []


def _pairs(obj: object) -> list[tuple[str, object]]:
    """[[concept, weight], ...] from findings.json; anything else is dropped."""
    return [(str(p[0]), p[1]) for p in _plain_list(obj)
            if isinstance(p, list | tuple) and len(p) == 2]


def _list(obj: object) -> list:
    return [x for x in obj if isinstance(x, dict)] if isinstance(obj, list) else []


def build_context(run: RunData, img_dir: Path) -> dict:
    """Everything the template needs; also writes the images it references into img_dir."""
    col = _Collector(run)
    fjson = run.findings
    info = _run_info(run)
    findings = sorted(_list(fjson.get("findings")),
                      key=lambda f: -(f.get("score") if _finite(f.get("score")) else 0))
    anchors = {}
    for i, f in enumerate(findings):
        f["_anchor"] = f"finding-{i + 1}"
        anchors[str(f.get("id"))] = f["_anchor"]
        ev = f.get("evidence") if isinstance(f.get("evidence"), dict) else {}
        f["_group"] = col.group(f"Evidence: {f.get('title', '')}", ev.get("sample_ids"))
        f["_numbers"] = ev.get("numbers") if isinstance(ev.get("numbers"), dict) else {}
        f["_stats"] = f.get("stats") if isinstance(f.get("stats"), dict) else {}
        conf = f.get("confirmation")
        f["_confirmation"] = conf if isinstance(conf, dict) else {}
    narrative = []
    for s in _list(fjson.get("narrative")):
        links = [(str(fid), safe_report_url("#" + anchors[str(fid)]))
                 for fid in _plain_list(s.get("finding_ids")) if str(fid) in anchors]
        unknown = [str(fid) for fid in _plain_list(s.get("finding_ids"))
                   if str(fid) not in anchors]
        narrative.append({"text": str(s.get("text", "")), "links": links, "unknown": unknown})
    xm = xai_cells(run)
    cells = []
    for name in CELL_ORDER:
        c = (xm.get("cells") or {}).get(name) if xm else None
        if isinstance(c, dict):
            cells.append({"name": name, "title": CELL_TITLES[name], "count": c.get("count", 0),
                          "rate": c.get("rate"),
                          "group": col.group(CELL_TITLES[name], c.get("sample_ids"))})
    slices = []
    for s in _list(fjson.get("slices")):
        s["_group"] = col.group(f"Slice: {s.get('name', '')}", s.get("sample_ids"))
        s["concepts"] = _pairs(s.get("concepts"))
        slices.append(s)
    pairs = []
    for p in _list(fjson.get("confusion_pairs")):
        p["_group"] = col.group(f"{p.get('true')} → {p.get('pred')}", p.get("sample_ids"))
        p["concepts"] = _pairs(p.get("concepts"))
        pairs.append(p)
    lec = _list(fjson.get("label_error_candidates"))
    lec_group = col.group("Label-error candidates", [c.get("id") for c in lec])
    per_class = _per_class(run, xm, col)
    charts = [c for c in (plots.focus_histogram(run.samples), *plots.lift_charts(run),
                          plots.reliability(run.samples)) if c]
    cards = _cards(run, col.rows, img_dir)
    return {
        "info": info, "metrics": _metrics(run), "config_text": run.config_text,
        "present": run.present, "top": findings[0] if findings else None,
        "top_facts": _facts(findings[0]) if findings else [],
        "findings": findings, "narrative": narrative, "xai": xm, "cells": cells,
        "slices": slices, "pairs": pairs, "lec": lec, "lec_group": lec_group,
        "per_class": per_class, "charts": charts, "cards": cards, "strip": STRIP,
        "data": {"cards": cards, "groups": col.groups},
        **static_assets("report"),
        "utility": fjson.get("utility_k") if isinstance(fjson.get("utility_k"), dict) else None,
    }


def _per_class(run: RunData, xm: dict, col: _Collector) -> list[dict]:
    df = run.samples
    if "label" not in df:
        return []
    out = []
    pcx = (xm or {}).get("per_class")
    pcx = pcx if isinstance(pcx, dict) else {}
    for i, cls in enumerate(run.classes):
        m = (df["label"] == cls).to_numpy(bool)
        n = int(m.sum())
        entry = {"name": cls, "anchor": f"class-{i}", "n": n, "acc": None, "confused": [],
                 "xai": pcx.get(cls) if isinstance(pcx.get(cls), dict) else None,
                 "group": None, "n_pred": int((df.get("pred") == cls).sum())
                 if "pred" in df else 0}
        if "correct" in df and n:
            corr = df["correct"][m].dropna()
            entry["acc"] = float(corr.astype(bool).mean()) if len(corr) else None
            wrong = df[m & ~df["correct"].fillna(True).to_numpy(bool)]
            if "pred" in wrong:
                entry["confused"] = [(str(k), int(v)) for k, v in
                                     wrong["pred"].value_counts().head(3).items()]
            if "focus_score" in wrong:
                wrong = wrong.sort_values("focus_score")
            entry["group"] = col.group(f"Errors of class {cls}", wrong["id"].tolist(), cap=24)
        out.append(entry)
    return out


def build_report(run_dir: str | Path) -> Path:
    """(Re)build RUN/report/index.html from the run's tables and findings; return its path."""
    run = load_run_data(run_dir)
    out = Path(run_dir) / "report"
    img_dir = out / "img"
    if img_dir.exists():
        shutil.rmtree(img_dir)
    img_dir.mkdir(parents=True)
    ctx = build_context(run, img_dir)
    html = environment().get_template("index.html.j2").render(**ctx)
    index = out / "index.html"
    tmp = index.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(index)
    return index

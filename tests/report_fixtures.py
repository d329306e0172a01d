"""Synthetic run directories for the report and viewer tests (no pipeline needed).

`make_run` writes a run dir that follows docs/run-format.md and docs/findings.md: small PNG
images of shapes on backgrounds, saliency views, judge answers, concept tables and a
findings.json whose top finding is a planted bias (water -> 'star'). Everything is derived
from a seeded generator, so tests can recompute ground truth from the returned `FixtureRun`.

`hostile=True` puts script-injection payloads into a class name, a caption, a judge answer,
a concept name, an image file name and the narrative, for the escaping tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

SCRIPT = "<script>window.__pwned=1</script>"
IMG_ONERROR = '"><img src=x onerror="window.__pwned=1">'
JS_URL = "javascript:window.__pwned=1"

CLASSES = ["circle", "square", "star", "triangle"]
BACKGROUNDS = {"grass": (70, 150, 60), "water": (40, 90, 200), "sand": (210, 190, 130),
               "snow": (235, 235, 240)}
COLORS = {"red": (215, 35, 35), "yellow": (240, 215, 40), "purple": (145, 50, 190),
          "white": (250, 250, 250)}
CONCEPTS = ["water", "grass", "sand", "snow", "red", "yellow", "dark", "small"]


@dataclass
class FixtureRun:
    """What was written, for assertions."""

    run_dir: Path
    data_dir: Path
    classes: list[str]
    ids: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    findings: dict = field(default_factory=dict)


def _draw(shape: str, bg: tuple, color: tuple, size: int, dark: bool, r: float) -> Image.Image:
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    c, rad = size / 2, r * size
    if shape == "circle":
        d.ellipse([c - rad, c - rad, c + rad, c + rad], fill=color)
    elif shape == "square":
        d.rectangle([c - rad, c - rad, c + rad, c + rad], fill=color)
    elif shape == "triangle":
        d.polygon([(c, c - rad), (c + rad, c + rad), (c - rad, c + rad)], fill=color)
    else:  # star
        pts = []
        for k in range(10):
            a = np.pi / 2 + k * np.pi / 5
            rr = rad if k % 2 == 0 else rad * 0.45
            pts.append((c + rr * np.cos(a), c - rr * np.sin(a)))
        d.polygon(pts, fill=color)
    if dark:
        img = Image.fromarray((np.asarray(img) * 0.45).astype(np.uint8))
    return img


def _overlay(img: Image.Image, heat: np.ndarray) -> tuple[Image.Image, Image.Image]:
    a = np.asarray(img).astype(np.float32)
    h = heat[..., None]
    red = np.zeros_like(a)
    red[..., 0] = 255
    over = (a * (1 - 0.5 * h) + red * 0.5 * h).astype(np.uint8)
    masked = (a * (0.15 + 0.85 * h)).astype(np.uint8)
    return Image.fromarray(over), Image.fromarray(masked)


def _heat(size: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)).astype(np.float32)


def make_run(
    root: Path,
    n: int = 240,
    seed: int = 0,
    hostile: bool = False,
    image_pool: int | None = None,
    size: int = 48,
    omit: tuple[str, ...] = (),
) -> FixtureRun:
    """Write a run dir at root/'run' (images under root/'data', outside the run, as real uris).

    `image_pool` reuses that many image files for all samples (for 100k-sample benchmarks);
    `omit` names tables/files to leave out ("vlm", "saliency", "findings", ...).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    run_dir, data_dir = root / "run", root / "data"
    (run_dir / "saliency" / "views").mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    classes = list(CLASSES)
    if hostile:
        classes[3] = IMG_ONERROR  # a class name that tries to break out of an attribute
    ids = [f"img_{i:06d}" for i in range(n)]
    if hostile:
        ids[1] = SCRIPT

    label_i = rng.integers(0, 4, n)
    bg_names = np.array(list(BACKGROUNDS))
    bg = bg_names[rng.integers(0, 4, n)]
    color_names = np.array(list(COLORS))
    color = color_names[rng.integers(0, 4, n)]
    dark = rng.random(n) < 0.2
    small = rng.random(n) < 0.3
    # The planted bias: on water the model says 'star' most of the time.
    pred_i = label_i.copy()
    flip = (bg == "water") & (rng.random(n) < 0.7)
    pred_i[flip] = 2
    noise = (rng.random(n) < 0.06) & ~flip
    pred_i[noise] = rng.integers(0, 4, noise.sum())
    # dark & small circles are often called squares (a failure slice).
    sl = dark & small & (label_i == 0)
    pred_i[sl & (rng.random(n) < 0.8)] = 1
    correct = pred_i == label_i
    conf = np.clip(np.where(correct, 0.85, 0.6) + rng.normal(0, 0.1, n), 0.26, 0.999)
    # Focus: wrong predictions on water look at the background.
    focus = np.clip(np.where(flip, 1.2, 3.8) + rng.normal(0, 0.7, n), 0, 5).round(1)

    label = np.array(classes, dtype=object)[label_i]
    pred = np.array(classes, dtype=object)[pred_i]
    pool = n if image_pool is None else min(image_pool, n)
    uris, masked_p, overlay_p, crop_p = [], [], [], []
    for i in range(n):
        j = i % pool
        stem = f"{ids[j]}" if not (hostile and j == 2) else f"x{IMG_ONERROR}"
        if hostile and j == 1:
            stem = "img_script"  # ids[1] holds '/', not a valid file name
        uri = data_dir / f"{stem}.png"
        uris.append(str(uri))
        masked_p.append(f"saliency/views/{ids[j] if j != 1 or not hostile else 'x1'}.masked.png")
        overlay_p.append(masked_p[-1].replace(".masked.", ".overlay."))
        crop_p.append(masked_p[-1].replace(".masked.", ".crop."))
        if i < pool:
            img = _draw(classes[label_i[j]] if label_i[j] != 3 else "triangle",
                        BACKGROUNDS[bg[j]], COLORS[color[j]], size, bool(dark[j]),
                        0.12 if small[j] else 0.25)
            img.save(uri)
            cx, cy = (0.5, 0.5) if not flip[j] else (0.15, 0.85)
            over, masked = _overlay(img, _heat(size, cx, cy, 0.18))
            over.save(run_dir / overlay_p[-1])
            masked.save(run_dir / masked_p[-1])
            masked.crop((0, 0, size // 2, size // 2)).save(run_dir / crop_p[-1])

    if hostile and n > 3:
        uris[3] = JS_URL  # a 'javascript:' uri must never become a link or an image source
    status = np.array(["ok"] * n, dtype=object)
    err = np.array([None] * n, dtype=object)
    if n > 10:
        status[7] = "error"
        err[7] = "image_decode: truncated PNG"
    meta = {"meta_shape": label, "meta_bg": bg, "meta_color": color,
            "meta_dark": dark, "meta_small": small, "meta_true_label": label}
    samples = pd.DataFrame({"id": ids, "uri": uris, "label": label, "status": status,
                            "error": err, "content_hash": [f"h{i:08x}" for i in range(n)],
                            **meta})
    topk_l = [[p, c] for p, c in zip(pred, label, strict=True)]
    topk_p = [[float(c), float(1 - c)] for c in conf]
    predictions = pd.DataFrame({
        "id": ids, "label": label, "pred": pred, "confidence": conf.astype(np.float32),
        "correct": correct, "loss": (-np.log(np.where(correct, conf, 1 - conf))).astype(
            np.float32), "topk_labels": topk_l, "topk_probs": topk_p,
        "status": status, "error": err})
    saliency = pd.DataFrame({
        "id": ids, "method": "gradcam", "target": "pred",
        "energy_on_object": np.clip(focus / 5 + rng.normal(0, 0.05, n), 0, 1).astype(np.float32),
        "pointing_hit": focus > 2.5, "deletion_auc": rng.random(n).astype(np.float32),
        "insertion_auc": rng.random(n).astype(np.float32), "view_masked": masked_p,
        "view_overlay": overlay_p, "view_crop": crop_p, "status": "ok", "error": None})
    desc = [f"A {color[i]} {label[i]} on {bg[i]}" + (", dark" if dark[i] else "")
            for i in range(n)]
    just = [("The highlighted region is mostly background " + bg[i]) if flip[i]
            else f"The highlighted region covers the {label[i]}." for i in range(n)]
    if hostile:
        desc[0] = f"caption {SCRIPT} end"
        just[0] = f"judge {IMG_ONERROR} and {JS_URL}"
    vlm = pd.DataFrame({
        "id": ids, "description": desc, "justification": just,
        "focus_score": focus.astype(np.float32),
        "object_visible": np.where(focus > 2.5, "full", "partial"),
        "distractors": [[str(bg[i])] if flip[i] else [] for i in range(n)],
        "judge_backend": "embedded", "status": "ok", "error": None, "raw": "{}"})
    concept_names = list(CONCEPTS)
    if hostile:
        concept_names[7] = SCRIPT
    cdata = {"id": ids}
    gdata = {"id": ids}
    for cname, base in zip(concept_names, CONCEPTS, strict=True):
        if base in BACKGROUNDS:
            truth = bg == base
        elif base in COLORS:
            truth = color == base
        elif base == "dark":
            truth = dark
        else:
            truth = small
        cdata[cname] = np.clip(truth * 0.7 + rng.normal(0.1, 0.08, n), 0, 1).astype(np.float32)
        att = truth & (flip if base in BACKGROUNDS else True)
        gdata[cname] = np.clip(att * 0.6 + rng.normal(0.1, 0.08, n), 0, 1).astype(np.float32)
    concepts, grounding = pd.DataFrame(cdata), pd.DataFrame(gdata)
    emb = rng.normal(0, 1, (n, 8)).astype(np.float32)
    embeddings = pd.DataFrame({"id": ids, "embedding": list(emb)})

    tables = {"samples": samples, "predictions": predictions, "saliency": saliency,
              "vlm": vlm, "concepts": concepts, "grounding": grounding,
              "embeddings": embeddings}
    for name, df in tables.items():
        if name not in omit:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False),
                           run_dir / f"{name}.parquet")
    if "config" not in omit:
        (run_dir / "config.yaml").write_text(
            "name: fixture\nmodel: torchvision:resnet18\ndata: folder:data\nvlm: embedded\n")

    findings = _findings(ids, label, pred, correct, focus, conf, bg, dark, small, flip,
                         classes, concept_names[0], hostile)
    if "findings" not in omit:
        (run_dir / "findings.json").write_text(json.dumps(findings, indent=1))
    return FixtureRun(run_dir, data_dir, classes, ids, tables, findings)


def _findings(ids, label, pred, correct, focus, conf, bg, dark, small, flip, classes,
              water_name, hostile) -> dict:
    ids = np.array(ids, dtype=object)
    n = len(ids)
    high = focus >= 2.5
    cells = {}
    for cname, m in {"correct_high": correct & high, "correct_low": correct & ~high,
                     "wrong_high": ~correct & high, "wrong_low": ~correct & ~high}.items():
        cells[cname] = {"count": int(m.sum()), "rate": float(m.mean()),
                        "sample_ids": ids[m].tolist()}
    per_class = {}
    for c in classes:
        m = label == c
        per_class[c] = {k: int((mm & m).sum()) for k, mm in {
            "correct_high": correct & high, "correct_low": correct & ~high,
            "wrong_high": ~correct & high, "wrong_low": ~correct & ~high}.items()}
    water = bg == "water"
    ev = water & (pred == classes[2]) & (label != classes[2])
    p_pred = float((pred[water] == classes[2]).mean()) if water.any() else 0.0
    p_lab = float((label[water] == classes[2]).mean()) if water.any() else 0.0
    slice_m = dark & small & (label == classes[0])
    conf_m = (label == classes[0]) & (pred == classes[1])
    lec = np.where(~correct & (conf > 0.65))[0][:6]
    title = "Images with water are predicted 'star' far more often than labels justify"
    narrative = [{"text": "The model relies on water to predict 'star': most water images "
                          "are called star whatever their shape.", "finding_ids": ["f001"]},
                 {"text": "Dark, small circles are mistaken for squares.",
                  "finding_ids": ["f003"]}]
    f2_title = "Wrong 'star' predictions attend to the background, not the object"
    if hostile:
        f2_title += f" {SCRIPT}"
        narrative.append({"text": f"Hostile narrative {SCRIPT} {JS_URL}",
                          "finding_ids": [JS_URL, "f001"]})
    return {
        "schema_version": 1,
        "run": {"name": "fixture", "model": "torchvision:resnet18", "data": "folder:data",
                "vlm": "embedded", "n_samples": n, "n_errors": int((~correct).sum()),
                "accuracy": float(correct.mean())},
        "xai_matrix": {"threshold": 2.5, "cells": cells, "per_class": per_class},
        "findings": [
            {"id": "f001", "kind": "spurious_cue", "title": title, "class": classes[2],
             "concept": water_name, "score": 0.93,
             "stats": {"lift": round(p_pred / max(p_lab, 1e-6), 2), "support": int(water.sum()),
                       "p_value": 1e-9, "q_value": 1e-7},
             "confirmed": True,
             "confirmation": {"split": "holdout", "statistic": "lift", "value": 2.8,
                              "p_value": 1e-5},
             "evidence": {"sample_ids": ids[ev].tolist(),
                          "numbers": {"p_pred_given_concept": p_pred,
                                      "p_label_given_concept": p_lab}}},
            {"id": "f002", "kind": "attention_cue",
             "title": f2_title,
             "class": classes[2], "concept": water_name, "score": 0.71,
             "stats": {"lift": 2.1, "support": int(flip.sum()), "p_value": 1e-4,
                       "q_value": 1e-3},
             "confirmed": False, "confirmation": None,
             "evidence": {"sample_ids": ids[flip & ~high].tolist(), "numbers": {}}},
            {"id": "f003", "kind": "slice", "title": "Dark, small circles are misclassified",
             "class": classes[0], "concept": "dark", "score": 0.55,
             "stats": {"support": int(slice_m.sum()),
                       "error_rate": float((~correct[slice_m]).mean()) if slice_m.any()
                       else 0.0},
             "confirmed": True, "confirmation": {"split": "holdout"},
             "evidence": {"sample_ids": ids[slice_m & ~correct].tolist(), "numbers": {}}},
        ],
        "slices": [{"id": "s01", "name": "dark, small", "class": classes[0],
                    "size": int(slice_m.sum()),
                    "error_rate": float((~correct[slice_m]).mean()) if slice_m.any() else 0.0,
                    "concepts": [["dark", 0.41], ["small", 0.33]],
                    "sample_ids": ids[slice_m].tolist(), "confirmed": True}],
        "confusion_pairs": [{"true": classes[0], "pred": classes[1],
                             "count": int(conf_m.sum()), "concepts": [["dark", 0.3]],
                             "sample_ids": ids[conf_m].tolist()}],
        "label_error_candidates": [
            {"id": str(ids[i]), "label": str(label[i]), "pred": str(pred[i]),
             "confidence": float(conf[i]), "vlm_agrees_with": "pred",
             "suggested": str(pred[i]), "posterior": 0.875,
             "focus_score": float(focus[i])} for i in lec],
        "utility_k": {"k": 3, "acc_with_explanation": 0.7, "acc_image_only": 0.5,
                      "ratio": 1.4},
        "narrative": narrative,
    }


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed "
                       "(apt-get install chromium); browser tests need the system Chromium"),
]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


def chromium_browser():
    """The system Chromium under Playwright (never a downloaded browser); use as
    ``browser = pytest.fixture(scope="module")(chromium_browser)``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The viewer app under uvicorn in a background thread on 127.0.0.1 (for tests)."""

    def __init__(self, run_dir: Path) -> None:
        import threading
        import time

        import uvicorn

        from vlens.report.server import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(run_dir)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("viewer did not start")
            time.sleep(0.02)

    def raw_get(self, raw_path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
        """GET with the path sent byte for byte (no client-side normalisation of '..')."""
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                      .encode("latin-1"))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

"""Helpers for the robustness suite: small generated worlds, whole-run comparison,
the CLI in a subprocess, and the fake chat-completions server from tests/vlm_server.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # tests/vlm_server.py is shared with test_vlm_openai.py
    sys.path.insert(0, str(TESTS))

TABLES = ("samples", "predictions", "saliency", "vlm", "concepts", "grounding", "embeddings")
PER_SAMPLE = ("samples", "predictions", "saliency", "vlm")


def make_world(root: Path, n: int, seed: int = 0) -> Path:
    """A `demo_test` world of `n` images under `root`; returns the manifest path."""
    from vlens.world import make_dataset

    return make_dataset("demo_test", root, n=n, seed=seed)


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table(run: Path, name: str) -> pd.DataFrame | None:
    p = Path(run) / f"{name}.parquet"
    if not p.exists():
        return None
    return pd.read_parquet(p).sort_values("id").reset_index(drop=True)


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as object with None for nulls: an all-null column reads back as `str` or
    `object` depending on pandas' global string inference, which is not run content."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
            col = df[c].astype(object)
            df[c] = col.where(col.notna(), None)
    return df


def assert_runs_equal(got: Path, want: Path, tables=TABLES, artefacts: bool = True) -> None:
    """Every table equal (sorted by id; no timing columns exist in them) and every saliency
    artefact byte-identical."""
    for name in tables:
        a, b = table(got, name), table(want, name)
        assert (a is None) == (b is None), name
        if a is None:
            continue
        assert a["id"].is_unique, f"{name}: duplicate ids"
        pd.testing.assert_frame_equal(_norm(a), _norm(b), check_exact=False, rtol=1e-5,
                                      atol=1e-6, obj=name)
    if artefacts:  # hidden temp files are not artefacts (readers never see them)
        fa = {p.relative_to(got): p.read_bytes() for p in (Path(got) / "saliency").rglob("*")
              if p.is_file() and not p.name.startswith(".")}
        fb = {p.relative_to(want): p.read_bytes() for p in (Path(want) / "saliency").rglob("*")
              if p.is_file() and not p.name.startswith(".")}
        assert sorted(fa) == sorted(fb)
        assert [k for k in fa if fa[k] != fb[k]] == []


def assert_accounted(run: Path, ids: set[str]) -> dict[str, dict[str, int]]:
    """Every id has exactly one row in every per-sample table, ok or error with a reason.
    Returns {table: {"ok": n, "error": n}}."""
    counts = {}
    for name in PER_SAMPLE:
        df = table(run, name)
        assert df is not None, f"{name}.parquet missing"
        assert df["id"].is_unique, f"{name}: duplicate ids"
        assert set(df["id"].astype(str)) == ids, f"{name}: ids differ"
        assert set(df["status"]) <= {"ok", "error"}
        bad = df[df["status"] == "error"]
        assert bad["error"].map(lambda e: isinstance(e, str) and e.strip() != "").all(), \
            f"{name}: an error row without a reason"
        counts[name] = {"ok": int((df["status"] == "ok").sum()), "error": len(bad)}
    # pending parts all compacted; temp files (if a kill left any) are hidden dot-files
    assert [p for p in Path(run).rglob("*.parts")] == []
    assert [p for p in Path(run).rglob("*.tmp") if not p.name.startswith(".")] == []
    return counts


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.update(extra)
    return env


CLI = [sys.executable, "-c", "import torch; torch.set_num_threads(1); "
       "from vlens.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], env=env or cli_env(), capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"vlens {' '.join(args)} failed ({p.returncode}):\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


# ---- a judge server for pipeline runs ----------------------------------------------------------
def image_key(img) -> str:
    """Identity of an image by its RGB pixels (same on both sides of the HTTP request)."""
    import hashlib

    return hashlib.sha1(img.convert("RGB").tobytes()).hexdigest()


def request_image(body: dict):
    """The PIL image a chat-completions request carries (base64 data URL), or None."""
    import base64
    import io

    from PIL import Image

    for m in body.get("messages") or []:
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    data = base64.b64decode(url.split(",", 1)[1])
                    return Image.open(io.BytesIO(data))
    return None


def honest_answer(key: str) -> str:
    """The schema-valid judge answer a well-behaved server gives for image `key`."""
    return json.dumps({
        "description": f"view {key[:8]}",
        "justification": "deterministic test answer",
        "focus_score": int(key[:2], 16) % 6,
        "object_visible": ["none", "partial", "full"][int(key[2], 16) % 3],
        "distractors": ["thing"] if int(key[3], 16) % 2 else [],
    })


class JudgeBrain:
    """`default` callable for `FakeChatServer`: answers each image honestly unless a fault
    is planned for it. Faults go to the first distinct images seen, in `plan` order, and
    are remembered by image key: `kinds[key]`. Transient kinds (``*_once``, ``429``) fail
    only the first request for their image."""

    def __init__(self, plan: list[str] | None = None,
                 hook: Callable[[str, dict], Any] | None = None) -> None:
        import threading

        self.plan = list(plan or [])
        self.kinds: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.hook = hook
        self._lock = threading.Lock()

    def __call__(self, body: dict):
        import vlm_server as vs

        img = request_image(body)
        key = image_key(img) if img is not None else "none"
        with self._lock:
            if key not in self.kinds:
                self.kinds[key] = self.plan.pop(0) if self.plan else "ok"
            self.hits[key] = self.hits.get(key, 0) + 1
            self.times.setdefault(key, []).append(time.monotonic())
            kind, n = self.kinds[key], self.hits[key]
        if self.hook is not None:
            act = self.hook(key, body)
            if act is not None:
                return act
        if kind == "429" and n == 1:
            return vs.status(429, retry_after="0.2")
        if kind == "500_once" and n == 1:
            return vs.status(500)
        if kind == "500":
            return vs.status(500)
        if kind == "503_retry_after":
            return vs.status(503, retry_after="0")
        if kind == "reset":
            return vs.reset()
        if kind == "hang":
            return vs.hang(0.8)
        if kind == "truncated":
            return vs.truncated()
        if kind == "malformed":
            return vs.raw_body(b'{"choices": [{"message": {"content": "')
        if kind == "refusal":
            return vs.reply("I'm sorry, but I can't help with evaluating this image.")
        if kind == "schema":
            return vs.reply(json.dumps({"description": "x", "justification": "y",
                                        "focus_score": 9, "object_visible": "maybe"}))
        return vs.reply(honest_answer(key))


class ChatServer:
    """A `FakeChatServer` on a fixed loopback port, so it can die and come back at the same
    base URL (the URL is part of the VLM fingerprint)."""

    def __init__(self, brain: Any, port: int | None = None) -> None:
        import socket

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port, self.brain, self.srv = port, brain, None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ChatServer:
        import vlm_server as vs

        port = self.port

        class Fixed(vs.ThreadingHTTPServer):
            allow_reuse_address = True

            def __init__(self, addr, handler):
                super().__init__((addr[0], port), handler)

        saved = vs.ThreadingHTTPServer
        vs.ThreadingHTTPServer = Fixed
        try:
            self.srv = vs.FakeChatServer(default=self.brain).__enter__()
        finally:
            vs.ThreadingHTTPServer = saved
        return self

    def stop(self) -> None:
        if self.srv is not None:
            self.srv.__exit__(None, None, None)
            self.srv = None


def openai_vlm(base_url: str, api_key: str | None = None, **kw: Any):
    """The `openai:` backend with test-sized timeouts and backoff."""
    from vlens.vlm import create_vlm

    opts = {"timeout": 0.4, "max_retries": 1, "backoff": 0.01, "max_backoff": 0.5,
            "concurrency": 4, "seed": 0, **kw}
    return create_vlm(f"openai:judge@{base_url}", api_key=api_key, **opts)

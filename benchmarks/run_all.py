"""Every vlens benchmark in one command: a table on stdout and one JSON file.

    python3 benchmarks/run_all.py --quick            # a few minutes on a 2-core box
    python3 benchmarks/run_all.py                    # full sizes (tens of minutes)
    python3 benchmarks/run_all.py --only pipeline memory --json bench_all.json

Each benchmark runs in its own process (so peak-memory numbers are its own) with a time
limit; one that fails or times out is reported as such and the others still run. The JSON
holds every benchmark's full output under its name, plus the headline table.

| name | what | target (issue 7) |
|---|---|---|
| engine | run store, cache, engine overhead, peak RSS of the engine vs items | flat RSS |
| saliency | P2: Grad-CAM vs pytorch-grad-cam / Captum, Score-CAM, every explainer | >= 3x, >= 10x |
| analysis | dataset-level analysis on a synthetic run | <= 30 s, <= 2 GB |
| viewer | `vlens serve` time to first render | |
| world | world generator images/s | |
| pipeline | P1: `vlens run` vs the unavoidable passes; P4 resume / new run dir | 1.3x, 20x |
| memory | peak RSS of predict+saliency+VLM vs dataset size | flat |
| openai | P5: OpenAI-compatible backend, 8 in flight vs sequential, 200 ms latency | >= 6x |
| discovery | `vlens bench`: planted-bias recall, slice precision, label-error P/R | |
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable


def _spec(name: str, quick: bool, tmp: Path) -> tuple[list[str], Path | None, list[str]]:
    """(command, JSON file it writes or None for stdout, headline key patterns)."""
    j = tmp / f"{name}.json"
    b = lambda f: [PY, str(HERE / f)]  # noqa: E731
    if name == "engine":
        size = ["--sizes", "1000", "10000"] if quick else ["--sizes", "1000", "10000", "100000"]
        rows = ["--rows", "5000", "--cache-entries", "5000", "--engine-items", "2000"] \
            if quick else []
        return [*b("bench_engine.py"), *rows, *size, "--json", str(j)], j, [
            r"peak_rss_mib\.", r"engine\.(cold|warm_cache|resume_all_done)_items_per_s",
            r"store\..*per_s", r"cache\.get_hit_per_s"]
    if name == "saliency":
        q = ["--skip-resnet", "--repeats", "1", "--demo-repeats", "2"] if quick else []
        return [*b("bench_saliency.py"), *q, "--out", str(j)], j, [r"ratio", r"img_s$"]
    if name == "analysis":
        q = ["--rows", "20000", "--concepts", "100"] if quick else []
        return [*b("bench_analysis.py"), *q, "--out", str(j)], j, [
            r"seconds|_s$", r"rss|memory|mib|gb"]
    if name == "viewer":
        return [*b("bench_viewer.py"), "--n", "2000" if quick else "100000"], None, [
            r"first page rendered", r"API ready", r"API query"]
    if name == "world":
        return [*b("bench_world.py"), "-n", "400" if quick else "10000", "--single-n",
                "100" if quick else "2000"], None, [r"per_s|img_s|images_per_s"]
    if name == "pipeline":
        return [*b("bench_pipeline.py"), "--n", "96" if quick else "600", "--json", str(j)], j, [
            r"^P1", r"^P4", r"passes\.sum_s", r"^(cold|resume|new_dir)\.(explain|run)_s",
            r"^(resume|new_dir)\.vlm_calls", r"warm_equals_cold", r"images_per_s\.", r"^cli\."]
    if name == "memory":
        sizes = ["200", "1000"] if quick else ["1000", "10000", "100000"]  # 100k: ~25 min
        return [*b("bench_memory.py"), "--sizes", *sizes, "--json", str(j)], j, [
            r"runs\.\d+\.(n|peak_rss_mib|seconds)$", r"runs\.\d+\.images_per_s\."]
    if name == "openai":
        return [PY, "-m", "pytest", str(HERE.parent / "tests/test_vlm_openai.py"), "-q", "-s",
                "-k", "concurrency", "-p", "no:cacheprovider"], None, [r"speed-up|x\d"]
    if name == "discovery":
        q = (["spurious_background", "--n-train", "600", "--epochs", "1", "--n-test", "200"]
             if quick else [])
        return ["vlens", "bench", *q, "--out", str(tmp / "discovery"), "--no-cache"], \
            tmp / "discovery" / "bench.json", [r"recall|precision"]
    raise KeyError(name)


NAMES = ["engine", "saliency", "analysis", "viewer", "world", "pipeline", "memory", "openai",
         "discovery"]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            key = v.get("name") or v.get("model") or v.get("config") if isinstance(v, dict) \
                else None
            out.update(flatten(v, f"{prefix}{key or i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def stdout_metrics(text: str) -> dict[str, Any]:
    """Numbers from `key: value` lines and a trailing JSON object, for stdout-only benches."""
    res: dict[str, Any] = {}
    m = re.search(r"^\{.*\}\s*$", text, re.S | re.M)
    if m:
        with contextlib.suppress(json.JSONDecodeError):
            res.update(flatten(json.loads(m.group(0))))
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and re.search(r"\d", v) and len(k) < 60:
            res[k.strip()] = v.strip()
        if "speed-up" in line:
            res["openai_concurrency"] = line.strip()
    return res


def run_one(name: str, quick: bool, tmp: Path, limit: int) -> dict[str, Any]:
    cmd, jpath, keys = _spec(name, quick, tmp)
    env = {**os.environ, "VLENS_TORCH_THREADS": os.environ.get("VLENS_TORCH_THREADS", "2")}
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env,
                           cwd=HERE.parent)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = "timeout", (e.stdout or b"").decode(errors="replace") \
            if isinstance(e.stdout, bytes) else (e.stdout or "")
    res: dict[str, Any] = {"command": " ".join(cmd), "rc": rc,
                           "seconds": round(time.perf_counter() - t, 1)}
    data = None
    if jpath is not None and jpath.exists():
        data = json.loads(jpath.read_text())
        flat = flatten(data)
    else:
        flat = stdout_metrics(text)
    res["output"] = data if data is not None else flat
    res["headline"] = {k: v for k, v in flat.items()
                       if any(re.search(p, k, re.I) for p in keys)
                       and isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    if rc != 0:
        res["tail"] = text[-2000:]
    return res


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    ap.add_argument("--only", nargs="+", choices=NAMES, default=NAMES)
    ap.add_argument("--json", type=Path, default=Path("bench_all.json"))
    ap.add_argument("--limit", type=int, default=None,
                    help="seconds per benchmark (default 600 quick, 3600 full)")
    a = ap.parse_args(argv)
    limit = a.limit or (600 if a.quick else 3600)
    out: dict[str, Any] = {"quick": a.quick, "cores": os.cpu_count(),
                           "load_at_start": os.getloadavg(), "started": time.ctime(),
                           "benchmarks": {}}
    with tempfile.TemporaryDirectory(prefix="vlens-bench-all-") as d:
        for name in a.only:
            print(f"== {name} ...", flush=True)
            r = run_one(name, a.quick, Path(d), limit)
            out["benchmarks"][name] = r
            status = "ok" if r["rc"] == 0 else f"FAILED ({r['rc']})"
            print(f"   {status} in {r['seconds']} s", flush=True)
            for k, v in list(r["headline"].items())[:24]:
                print(f"   {k:60s} {_fmt(v)}", flush=True)
    out["load_at_end"] = os.getloadavg()
    a.json.write_text(json.dumps(out, indent=1, default=str))
    print(f"\n{'benchmark':10s} {'status':10s} {'seconds':>8s}")
    for name, r in out["benchmarks"].items():
        print(f"{name:10s} {'ok' if r['rc'] == 0 else 'FAILED':10s} {r['seconds']:8.1f}")
    print(f"load average {out['load_at_start'][0]:.1f} -> {out['load_at_end'][0]:.1f} "
          f"on {out['cores']} cores; JSON: {a.json}")
    return 0 if all(r["rc"] == 0 for r in out["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of the whole per-sample pipeline (predict -> saliency -> VLM) vs dataset size.

    python3 benchmarks/bench_memory.py --sizes 1000 10000 [--vlm embedded] [--json out.json]

One demo world of max(--sizes) images is generated once (kept in --data, reused by later
runs); each size runs `explain` on its first N images (``limit``) with the demo model,
Grad-CAM and the VLM, `--engine local`, in a fresh process whose peak RSS
(``VmHWM``) is reported with the stage throughputs. Flat RSS across sizes = bounded
memory. Arrow uses the system allocator, as `vlens` sets it (`--arrow-pool`). For 100k+
without the image stages, see bench_engine.py (`--sizes`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def vm_hwm_mib() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux carries that over an exec from the
    parent, so a child of a big process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child(manifest: str, out: str, n: int, vlm: str, batch: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("VLENS_TORCH_THREADS", "1")))
    from vlens.engine.cache import Cache
    from vlens.pipeline import ExplainOptions, explain

    rss0 = vm_hwm_mib()
    t = time.perf_counter()
    trace: list[tuple[float, float]] = []  # (seconds, current RSS MiB), every 2 s
    stop = threading.Event()

    def sample() -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.wait(2.0):
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
            trace.append((round(time.perf_counter() - t, 1), round(rss, 1)))

    threading.Thread(target=sample, daemon=True).start()
    res = explain("demo", f"manifest:{manifest}", out,
                  ExplainOptions(vlm=vlm, limit=n, batch_size=batch, progress=False),
                  cache=Cache(Path(out) / "_cache"))
    stop.set()
    return {
        "n": n, "seconds": time.perf_counter() - t,
        "peak_rss_mib": vm_hwm_mib(),
        "rss_after_imports_mib": rss0,
        "rss_trace": trace,
        "images_per_s": {k: round(v.computed / v.seconds, 1) if v.seconds else None
                         for k, v in res.stats.items()},
        "errors": res.errors,
    }


def measure(manifest: Path, n: int, vlm: str, batch: int, pool: str | None = "system") -> dict:
    with tempfile.TemporaryDirectory(prefix="vlens-mem-") as d:
        code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"import bench_memory as b; print(json.dumps(b.child({str(manifest)!r}, "
                f"{d + '/run'!r}, {n}, {vlm!r}, {batch})))")
        env = dict(os.environ)
        if pool:  # what the CLI sets before pyarrow loads (vlens.cli.use_system_arrow_pool)
            env["ARROW_DEFAULT_MEMORY_POOL"] = pool
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--vlm", default="embedded")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "vlens-bench-world")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--arrow-pool", default="system", help="Arrow allocator of the runs: "
                    "system (what `vlens` sets), mimalloc (Arrow's default), or '' to inherit")
    a = ap.parse_args(argv)
    from vlens.world import make_dataset

    n_max = max(a.sizes)
    marker = a.data / f".complete-{n_max}"
    manifest = a.data / "manifest.jsonl"
    t = time.perf_counter()
    if not marker.exists():
        make_dataset("demo_test", a.data, n=n_max, seed=11, workers=2)
        marker.write_text("ok")
    gen_s = time.perf_counter() - t
    out = {"world_images": n_max, "world_seconds": gen_s, "vlm": a.vlm,
           "arrow_pool": a.arrow_pool,
           "load": os.getloadavg()[0], "runs": []}
    for n in sorted(a.sizes):
        r = measure(manifest, n, a.vlm, a.batch, a.arrow_pool or None)
        out["runs"].append(r)
        tr = [m for _, m in r["rss_trace"]] or [float("nan")]
        q = [tr[min(len(tr) - 1, int(f * len(tr)))] for f in (0.25, 0.5, 0.75)]
        print(f"n={n:>7}  peak RSS {r['peak_rss_mib']:7.1f} MiB  {r['seconds']:7.1f} s  "
              f"img/s {r['images_per_s']}  RSS at 25/50/75% of the run: "
              f"{q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f} MiB", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()

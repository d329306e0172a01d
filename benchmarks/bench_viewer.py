"""Time to first render of `vlens serve` on a synthetic run of N samples (default 100,000).

Measures, on this machine:
  * server start -> first page of results rendered in headless Chromium (thumbnails loaded):
    the clock starts just before `vlens serve` is spawned and stops when the first page's
    images have all decoded in the browser (the browser itself is launched beforehand);
  * latency of filtered + sorted API queries on the loaded server (median of 20).

Usage:  python3 benchmarks/bench_viewer.py [--n 100000] [--keep DIR]
Needs /usr/bin/chromium (Debian package) and playwright for Python.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from report_fixtures import CHROMIUM, CHROMIUM_ARGS, free_port, make_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the run in this dir")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="vlens-bench-"))
    if not (root / "run" / "samples.parquet").exists():
        t = time.perf_counter()
        make_run(root, n=args.n, image_pool=64, size=64)
        print(f"generated {args.n} samples in {time.perf_counter() - t:.1f}s at {root}")

    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-c", "import sys; from vlens.cli import main; "
           f"sys.argv = ['vlens', 'serve', {str(root / 'run')!r}, '--port', '{port}']; main()"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    urllib.request.urlopen(url + "api/meta", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise SystemExit(proc.stdout.read().decode()) from None
                    time.sleep(0.02)
            t_ready = time.perf_counter()
            page.goto(url)
            page.wait_for_function(
                "() => { const ims = document.querySelectorAll('#results .thumb img');"
                " return ims.length > 0 && [...ims].every(i => i.complete && i.naturalWidth);}",
                polling="raf", timeout=60_000)
            t1 = time.perf_counter()
            n_shown = page.locator("#results .thumb").count()
            status = page.locator("#status").inner_text()
            queries = {
                "class+wrong, sort focus": "cls=star&correct=false&sort=focus_score&order=asc",
                "focus 1-3, sort confidence": "fmin=1&fmax=3&sort=confidence",
                "concept water>=0.5, sort grounding": "concept=water&sort=grounding:water",
                "last page, no filter": "page=1667&per_page=60",
            }
            lat = {}
            for name, qs in queries.items():
                ts = []
                for _ in range(20):
                    a = time.perf_counter()
                    urllib.request.urlopen(url + "api/samples?" + qs, timeout=10).read()
                    ts.append(time.perf_counter() - a)
                lat[name] = statistics.median(ts) * 1000
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            browser.close()
    print(f"samples: {args.n}   first page: {n_shown} thumbnails, status '{status}'")
    print(f"server start -> API ready:          {t_ready - t0:6.2f} s")
    print(f"server start -> first page rendered: {t1 - t0:6.2f} s   (time to first render)")
    print(f"  of which page load + render:       {t1 - t_ready:6.2f} s")
    for name, ms in lat.items():
        print(f"API query ({name}): median {ms:.1f} ms")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

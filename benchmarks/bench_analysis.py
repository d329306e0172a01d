"""Benchmark `vlens.analysis.analyze` on large synthetic runs (issue 5: 1M rows x 500 concepts,
target <= 30 s and <= 2 GB peak memory).

Concept and grounding scores are uint8 (0..255 = 0..1), embeddings float32 (16 dims); the
data carry the planted structure of `vlens.analysis.synthetic`, so the run also reports
whether the planted findings were recovered (`score_findings`).

    python3 benchmarks/bench_analysis.py --rows 1000000 --concepts 500 --out bench.json

Peak memory = the process's peak resident set size (ru_maxrss), which includes the input
matrices; the time covers `analyze` only (generation is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakSampler(threading.Thread):
    """Samples current RSS every 20 ms (ru_maxrss is a lifetime peak, incl. generation)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.02)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--concepts", type=int, default=500)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--no-grounding", action="store_true")
    ap.add_argument("--no-slices", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_analysis.json")
    args = ap.parse_args(argv)

    from vlens.analysis import AnalysisConfig, analyze
    from vlens.analysis.bench import score_findings
    from vlens.analysis.synthetic import PLANTED, make_synthetic

    n_noise = args.concepts - args.classes - len(PLANTED)
    t0 = time.perf_counter()
    inp, truth = make_synthetic(args.rows, n_classes=args.classes, n_noise=n_noise,
                                seed=args.seed, dtype=np.uint8,
                                grounding=not args.no_grounding)
    t_gen = time.perf_counter() - t0
    rss_before = rss_mb()
    sampler = PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = analyze(inp, AnalysisConfig(slices=not args.no_slices, max_ids=200,
                                        max_label_errors=10**6))
    t_an = time.perf_counter() - t0
    cpu_an = time.process_time() - c0
    sampler.stop = True
    sampler.join()
    peak_life = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sc = score_findings(res, truth)
    sc.pop("slices", None)
    sc.pop("baseline_slices", None)
    mat_mb = (inp.concepts.nbytes + (0 if inp.grounding is None else inp.grounding.nbytes)
              + inp.embeddings.nbytes) / 2**20
    result = {
        "rows": args.rows, "concepts": inp.concepts.shape[1], "classes": args.classes,
        "grounding": not args.no_grounding, "slices": not args.no_slices,
        "generate_s": round(t_gen, 2), "analyze_s": round(t_an, 2),
        "analyze_cpu_s": round(cpu_an, 2),
        "input_matrices_mb": round(mat_mb, 1), "rss_before_analyze_mb": round(rss_before, 1),
        "peak_rss_during_analyze_mb": round(max(sampler.peak, rss_before), 1),
        "peak_rss_lifetime_mb": round(peak_life, 1), "n_findings": len(res.findings),
        "n_slices": len(res.slices), "score": sc, "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    rows = [("rows x concepts", f"{args.rows:,} x {inp.concepts.shape[1]}"),
            ("generate (s)", result["generate_s"]), ("analyze wall (s)", result["analyze_s"]),
            ("analyze CPU, all threads (s)", result["analyze_cpu_s"]),
            ("input matrices (MB)", result["input_matrices_mb"]),
            ("peak RSS during analyze (MB)", result["peak_rss_during_analyze_mb"]),
            ("peak RSS lifetime (MB)", result["peak_rss_lifetime_mb"]),
            ("findings / slices", f"{len(res.findings)} / {len(res.slices)}"),
            ("planted bias recall@5", sc.get("bias_recall@5")),
            ("slice precision@10 (ours / Domino)",
             f"{sc.get('slice_precision@10')} / {sc.get('baseline_precision@10')}"),
            ("label-error precision / recall",
             f"{sc.get('label_error_precision'):.3f} / {sc.get('label_error_recall'):.3f}"),
            ("load average", " ".join(f"{x:.1f}" for x in result["loadavg"]))]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1, default=float)
    ok = t_an <= 30 and result["peak_rss_during_analyze_mb"] <= 2048
    print("target (<= 30 s, <= 2 GB):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())

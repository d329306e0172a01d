"""Generator speed: images/s single-process (in memory and to disk) and a full make_dataset.

    python3 benchmarks/bench_world.py                 # 10,000 images, 2 workers
    python3 benchmarks/bench_world.py -n 2000 --workers 1 --config balanced
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from vlens.world import WorldConfig, make_dataset, make_item


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="demo_train")
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--single-n", type=int, default=2000)
    args = ap.parse_args()
    cfg = WorldConfig.load(args.config)
    make_item(cfg, 0, 0)  # warm the texture cache
    t = time.perf_counter()
    for i in range(args.single_n):
        make_item(cfg, 0, i)
    mem = args.single_n / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        make_dataset(cfg, f"{d}/one", args.single_n, seed=0, workers=1)
        disk1 = args.single_n / (time.perf_counter() - t)
        t = time.perf_counter()
        make_dataset(cfg, f"{d}/all", args.n, seed=0, workers=args.workers)
        full = time.perf_counter() - t
    print(json.dumps({
        "config": cfg.name,
        "single_process_in_memory_img_per_s": round(mem, 1),
        "single_process_to_disk_img_per_s": round(disk1, 1),
        "n": args.n,
        "workers": args.workers,
        "make_dataset_seconds": round(full, 2),
        "make_dataset_img_per_s": round(args.n / full, 1),
    }, indent=1))


if __name__ == "__main__":
    main()

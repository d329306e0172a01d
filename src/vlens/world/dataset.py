"""Write a generated split to disk: PNG images, PNG masks and a JSONL manifest.

Chunks of indices are generated on worker processes (each item depends only on
(config, seed, index), so the output is identical for any number of workers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from vlens.errors import ConfigError
from vlens.world.config import WorldConfig
from vlens.world.generator import WorldItem, make_item

MANIFEST = "manifest.jsonl"
CHUNK = 250


def manifest_row(item: WorldItem) -> dict[str, Any]:
    """One manifest line: id, paths relative to the manifest, label, box, then every attr."""
    return {
        "id": item.id,
        "path": f"images/{item.id}.png",
        "mask_path": f"masks/{item.id}.png",
        "label": item.attrs["label"],
        "box": item.attrs["box"],
        **{k: v for k, v in item.attrs.items() if k not in ("label", "box")},
    }


def _write_chunk(cfg_dict: dict, seed: int, start: int, stop: int, out: str) -> list[dict]:
    cfg = WorldConfig.model_validate(cfg_dict)
    root = Path(out)
    rows = []
    for i in range(start, stop):
        item = make_item(cfg, seed, i)
        Image.fromarray(item.image).save(root / "images" / f"{item.id}.png", compress_level=1)
        # 1-bit PNG: decodes to a bool array (or 0/255 with .convert("L")); non-zero = object
        Image.fromarray(item.mask).save(root / "masks" / f"{item.id}.png")
        rows.append(manifest_row(item))
    return rows


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def make_dataset(
    config: WorldConfig | str | Path,
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK,
) -> Path:
    """Generate `n` items into `out_dir`; returns the manifest path.

    Also writes ``world.yaml`` (the config, seed and n) so the planted truth travels with
    the data. `progress(k)` is called with the number of items finished in each chunk of
    `chunk_size` items (the unit of work handed to a worker process).
    """
    cfg = WorldConfig.load(config)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, max(1, chunk_size))]
    cfg_dict = cfg.model_dump(mode="json", by_alias=True)
    results: list[list[dict]] = [[] for _ in chunks]
    if workers == 1 or len(chunks) <= 1:
        for k, (a, b) in enumerate(chunks):
            results[k] = _write_chunk(cfg_dict, seed, a, b, str(root))
            if progress:
                progress(b - a)
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = {
                ex.submit(_write_chunk, cfg_dict, seed, a, b, str(root)): k
                for k, (a, b) in enumerate(chunks)
            }
            from concurrent.futures import as_completed

            for f in as_completed(futs):
                k = futs[f]
                results[k] = f.result()
                if progress:
                    progress(chunks[k][1] - chunks[k][0])
    tmp = root / (MANIFEST + ".tmp")
    with tmp.open("w") as fh:
        for rows in results:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    tmp.replace(root / MANIFEST)
    meta = {"config": cfg.to_dict(), "seed": seed, "n": n, "planted": cfg.planted()}
    (root / "world.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return root / MANIFEST


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a manifest.jsonl (or of the manifest inside a dataset folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    with p.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]

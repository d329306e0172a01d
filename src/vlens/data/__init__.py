"""vlens.data: dataset sources (`folder:`, `manifest:`, `coco:`) and safe image decoding.

Importing this package registers the built-in sources in `SOURCES`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlens.data import coco as _coco  # noqa: F401  (registers coco:)
from vlens.data import folder as _folder  # noqa: F401  (registers folder:)
from vlens.data import manifest as _manifest  # noqa: F401  (registers manifest:)
from vlens.data.base import SOURCES, DatasetSource, Sample
from vlens.data.images import content_hash, load_image, load_label_mask, load_mask
from vlens.data.paths import load_sample_image, sample_error
from vlens.errors import DataError

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")

__all__ = [
    "SOURCES", "DatasetSource", "Sample", "content_hash", "load_image", "load_label_mask",
    "load_mask", "load_sample_image", "open_dataset", "sample_error",
]


def open_dataset(spec: str | os.PathLike[str], **kw: object) -> DatasetSource:
    """Open a dataset from a spec (``folder:DIR``, ``manifest:FILE``, ``coco:FILE``).

    A bare path is accepted too: a directory holding ``manifest.jsonl``/``manifest.csv`` (as
    ``vlens world make`` writes) -> that manifest, another directory -> ``folder:``,
    ``.csv/.tsv/.jsonl/.ndjson`` -> ``manifest:``, ``.json`` -> ``coco:``. Keyword arguments
    (e.g. ``class_names=``) go to the source.
    """
    s = os.fspath(spec)
    name, _, _ = s.partition(":")
    if name not in SOURCES or (len(name) == 1 and os.name == "nt"):
        p = Path(s).expanduser()
        found = [p / m for m in MANIFEST_NAMES if (p / m).is_file()] if p.is_dir() else []
        if found:
            s = f"manifest:{found[0]}"
        elif p.is_dir():
            s = f"folder:{s}"
        elif p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson"):
            s = f"manifest:{s}"
        elif p.suffix.lower() == ".json":
            s = f"coco:{s}"
        elif not p.exists():
            raise DataError(f"dataset {s!r} not found (and not a known spec: "
                            f"{', '.join(n + ':' for n in SOURCES.names())})")
        else:
            raise DataError(f"cannot tell which dataset source reads {s!r}; "
                            f"use one of {', '.join(n + ':' for n in SOURCES.names())}")
    return SOURCES.create(s, **kw)

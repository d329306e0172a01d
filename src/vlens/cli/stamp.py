"""`vlens run` with nothing to do, answered without importing torch or loading a model.

A resumed `vlens run` is fast in process (every stage skips its finished ids, the analysis
and report are keyed by digests), but as a new process it spent ~4 of its ~5 s importing
torch and loading the model just to find that nothing was left. So a finished run writes
``run.stamp.json`` (make-style): a key over everything that decides its results and can be
checked by reading metadata only, and the size and mtime of every output it wrote. The next
`vlens run` with the same key and untouched outputs prints the stored findings.

The key covers: the command's options; every file of the installed vlens package (code,
templates, shipped weights) by path, size and mtime; each local file or folder named in the
model, VLM and concepts specs; and every sample the data source lists (id, label, boxes,
metadata, error) with its image and mask files by size and mtime. What cannot be checked
that way gets no stamp, and the run takes the normal resume path (correct, only slower):
a model built from an importable module (``torch:pkg.module:factory``), samples that are
not local files, and runs that have error rows (the normal path retries those).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

STAMP = "run.stamp.json"
VERSION = 1
# outputs of `vlens run` whose size and mtime must be unchanged (besides every *.parquet)
OUTPUT_FILES = ("config.yaml", "findings.json", "findings.digest", "report/index.html",
                "report.digest")


class NotCheckable(Exception):
    """An input whose identity cannot be read from file metadata alone."""


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _tree(path: Path) -> Iterator[list[Any]]:
    """(relative path, size, mtime) of a file, or of every file under a folder, sorted."""
    if path.is_file():
        yield [path.name, *_stat(path)]
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root, name)
            yield [str(p.relative_to(path)), *_stat(p)]


def _package_signature() -> str:
    import vlens

    h = hashlib.sha256()
    for row in _tree(Path(vlens.__file__).parent):
        if "__pycache__" not in row[0]:
            h.update(json.dumps(row).encode())
    return h.hexdigest()


def _spec_paths(spec: str | None) -> list[list[Any]]:
    """Signatures of the local files named in a model/VLM spec (``hf:DIR``,
    ``onnx:m.onnx``, ``timm:resnet18?weights=w.safetensors``...)."""
    if not spec:
        return []
    tokens = [t for t in re.split(r"[:?&=,@]", spec) if t]
    if spec.startswith("torch:") and not any(t.endswith(".py") for t in tokens):
        raise NotCheckable(f"model {spec!r} is built from an importable module")
    out = []
    for t in tokens:
        p = Path(t).expanduser()
        if len(t) > 1 and p.exists():
            out.append([t, list(_tree(p))])
    return out


def _data_signature(data: str) -> str:
    """Every sample the source lists, with its files' size and mtime."""
    from vlens.data import open_dataset

    source = open_dataset(data)
    h = hashlib.sha256(json.dumps(sorted(getattr(source, "class_names", None) or [])).encode())
    for s in source:
        files = []
        for uri in (s.uri, s.mask_uri):
            if uri is None:
                continue
            p = Path(uri)
            if not p.is_file():
                raise NotCheckable(f"sample {s.id!r}: {uri!r} is not a local file")
            files.append(_stat(p))
        h.update(json.dumps([s.id, s.label, s.boxes, s.box_labels, s.metadata, s.error, files],
                            default=str, sort_keys=True).encode())
    return h.hexdigest()


def inputs_key(args: Mapping[str, Any]) -> str | None:
    """The key of a `vlens run` with these options, or None when it cannot be checked
    cheaply. `args` holds the options as the CLI received them (paths as strings)."""
    try:
        parts = {
            "version": VERSION,
            "args": {k: str(v) for k, v in sorted(args.items())},
            "package": _package_signature(),
            "model": _spec_paths(args.get("model")),
            "vlm": [_spec_paths(args.get("vlm")), _spec_paths(args.get("concept_vlm"))],
            "concepts": _spec_paths(str(args["concepts"])) if args.get("concepts") else [],
            "data": _data_signature(str(args["data"])),
        }
    except (NotCheckable, OSError):
        return None
    except Exception:  # noqa: BLE001 - an unreadable source: let the normal path report it
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _outputs(out: Path) -> dict[str, list[Any]]:
    files = sorted(p.name for p in out.glob("*.parquet"))
    files += [f for f in OUTPUT_FILES if (out / f).is_file()]
    return {f: _stat(out / f) for f in files}


def _has_error_rows(out: Path) -> bool:
    """Whether a per-sample table holds error rows (the normal path would retry them)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for name in ("predictions", "saliency", "vlm"):
        path = out / f"{name}.parquet"
        if not path.is_file() or "status" not in pq.read_schema(path).names:
            continue
        status = pq.read_table(path, columns=["status"]).column("status")
        if pc.any(pc.not_equal(pc.fill_null(status, "ok"), "ok")).as_py():
            return True
    return False


def write_stamp(out: Path, key: str | None) -> bool:
    """After a finished run: record `key` and the outputs. No stamp (and any old one
    removed) when the key is None, parts are pending, or there are error rows to retry."""
    path = out / STAMP
    if key is None or any(out.glob("*.parts")) or _has_error_rows(out):
        path.unlink(missing_ok=True)
        return False
    from vlens.engine.store import atomic_write_bytes

    atomic_write_bytes(path, json.dumps({"key": key, "outputs": _outputs(out)},
                                        indent=1).encode())
    return True


def up_to_date(out: Path, key: str | None) -> dict[str, Any] | None:
    """The stored findings.json when the run in `out` has this key and untouched outputs;
    else None (the caller runs normally)."""
    try:
        stamp = json.loads((out / STAMP).read_text())
        if key is None or stamp.get("key") != key or any(out.glob("*.parts")):
            return None
        if _outputs(out) != stamp.get("outputs"):
            return None
        return json.loads((out / "findings.json").read_text())
    except (OSError, ValueError, AttributeError):
        return None

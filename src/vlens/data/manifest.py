"""`manifest:FILE` — a CSV or JSONL list of images with labels and any metadata.

Columns / keys: ``path`` (required; relative to the manifest's folder, which is the dataset
root), ``label`` (optional), ``id`` (optional; default: the path as written), ``mask_path``,
``box`` (``[x0, y0, x1, y1]``) or ``boxes`` (list of boxes) with optional ``box_labels``;
every other column goes to ``Sample.metadata`` (CSV cells are parsed as int/float/bool when
they look like one, empty cells become None). CSV cells holding boxes are JSON (``"[1,2,3,4]"``)
or four numbers separated by spaces/commas.

Format is chosen by suffix (``.jsonl``/``.ndjson`` -> JSONL, ``.csv``/``.tsv`` -> CSV) or by
sniffing the first character. The file is streamed and decoded line by line, so bad bytes
are reported with their line number. Opening the source validates the whole file once and
keeps only the sample count and labels; iterating parses it again, so memory does not grow
with the manifest (a million lines is fine). Every problem with the file itself (missing ``path``
column, invalid JSON, non-UTF-8, NaN label or path, duplicate id, label outside explicit
``class_names``) is a `DataError` naming the file and line; a path that leaves the root is
not an error for the whole file but flags that one sample (``path_outside_root``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlens.data.base import SOURCES, Sample
from vlens.data.paths import ERROR_KEY, PathGuard
from vlens.errors import DataError

PATH_KEYS = ("path", "file", "filename", "file_name", "image")
RESERVED = {"id", "label", "mask_path", "box", "boxes", "box_labels"}
_NAN_STRINGS = {"nan", "NaN", "NAN"}


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, decoded strictly as UTF-8 (BOM stripped)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a generator owns it
    except OSError as e:
        raise DataError(f"cannot open manifest {path}: {e.strerror or e}") from None
    with f:
        for no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{no}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start+1]!r})"
                ) from None
            if no == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield no, text


def _scalar(v: str) -> Any:
    """A CSV metadata cell -> None / bool / int / float / str."""
    s = v.strip()
    if s == "":
        return None
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return v


def _is_nan(v: Any) -> bool:
    return (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v in _NAN_STRINGS)


class ManifestSource:
    """Samples listed in a CSV/JSONL manifest; see the module docstring for the columns."""

    def __init__(self, manifest: str | os.PathLike[str], class_names: Sequence[str] | None = None,
                 root: str | os.PathLike[str] | None = None, format: str | None = None) -> None:
        p = Path(manifest).expanduser()
        if not p.is_file():
            raise DataError(f"manifest {str(manifest)!r} does not exist or is not a file")
        self.path = str(p.resolve())
        self.root = str(Path(root).expanduser().resolve() if root else p.resolve().parent)
        self._fmt = format or self._detect(p)
        self._explicit = list(class_names) if class_names is not None else None
        self._guard = PathGuard(self.root)
        self._n, labels = self._scan()
        if not self._n:
            raise DataError(f"{self.path}: manifest lists no samples")
        self.class_names = self._explicit if self._explicit is not None else sorted(labels)

    @staticmethod
    def _detect(p: Path) -> str:
        suf = p.suffix.lower()
        if suf in (".jsonl", ".ndjson"):
            return "jsonl"
        if suf in (".csv", ".tsv"):
            return "tsv" if suf == ".tsv" else "csv"
        for _, text in _lines(p):
            if text.strip():
                return "jsonl" if text.lstrip().startswith("{") else "csv"
        return "csv"

    # -- reading ---------------------------------------------------------------------------
    def _records(self) -> Iterator[tuple[int, dict[str, Any], bool]]:
        """(line, record, from_csv) for each data row."""
        p = Path(self.path)
        if self._fmt == "jsonl":
            for no, text in _lines(p):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(f"{self.path}:{no}: invalid JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{self.path}:{no}: expected a JSON object, got "
                                    f"{type(rec).__name__}")
                yield no, rec, False
            return
        delim = "\t" if self._fmt == "tsv" else ","
        numbered = _lines(p)
        line_of: list[int] = [0]

        def texts() -> Iterator[str]:
            for no, t in numbered:
                line_of[0] = no
                yield t

        try:
            reader = csv.reader(texts(), delimiter=delim)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{self.path}: empty manifest (no header line)")
            header = [h.strip() for h in header]
            if len(set(header)) != len(header):
                dup = sorted({h for h in header if header.count(h) > 1})
                raise DataError(f"{self.path}:1: duplicate column(s) {dup}")
            for row in reader:
                no = line_of[0]
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{self.path}:{no}: {len(row)} fields, header has "
                                    f"{len(header)} ({', '.join(header)})")
                yield no, dict(zip(header, row, strict=True)), True
        except csv.Error as e:
            raise DataError(f"{self.path}:{line_of[0]}: CSV error: {e}") from None

    def _parsed(self, resolve: bool = True) -> Iterator[tuple[int, Sample]]:
        """(line, sample) for each data row, parsed and validated one line at a time."""
        path_key: str | None = None
        for no, rec, from_csv in self._records():
            if path_key is None:
                path_key = next((k for k in PATH_KEYS if k in rec), None)
                if path_key is None:
                    raise DataError(f"{self.path}:{no}: missing required column 'path' "
                                    f"(found: {', '.join(map(str, rec)) or 'none'})")
            yield no, self._sample(no, rec, from_csv, path_key, resolve)

    def _scan(self) -> tuple[int, set[str]]:
        """Validate the whole file once (every `DataError` surfaces when the source is opened,
        duplicate ids included) keeping only the count, the labels and the ids seen so far,
        never the samples: memory for a million-line manifest stays small. Paths are not
        resolved here (that never fails; it flags samples, done again on iteration)."""
        seen: dict[str, int] = {}
        labels: set[str] = set()
        for no, s in self._parsed(resolve=False):
            if s.id in seen:
                raise DataError(f"{self.path}:{no}: duplicate id {s.id!r} "
                                f"(first seen on line {seen[s.id]})")
            seen[s.id] = no
            if s.label is not None:
                labels.add(s.label)
            labels.update(s.box_labels or ())
        return len(seen), labels

    def _err(self, no: int, msg: str) -> DataError:
        return DataError(f"{self.path}:{no}: {msg}")

    def _text(self, no: int, key: str, v: Any, required: bool) -> str | None:
        if v is None or (isinstance(v, str) and v.strip() == ""):
            if required:
                raise self._err(no, f"empty {key!r}")
            return None
        if _is_nan(v):
            raise self._err(no, f"{key!r} is NaN")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise self._err(no, f"{key!r} must be a string, got {type(v).__name__}")
        return str(v).strip() if isinstance(v, str) else str(v)

    def _label(self, no: int, v: Any, what: str = "label") -> str | None:
        lab = self._text(no, what, v, required=False)
        if lab is not None and self._explicit is not None and lab not in self._explicit:
            raise self._err(no, f"unknown {what} {lab!r} (class_names: {self._explicit})")
        return lab

    def _box(self, no: int, v: Any, from_csv: bool, key: str) -> list[float]:
        if from_csv and isinstance(v, str):
            s = v.strip()
            try:
                v = json.loads(s) if s.startswith("[") else [float(t) for t in
                                                             s.replace(",", " ").split()]
            except ValueError:
                raise self._err(no, f"{key!r} is not a box: {s[:60]!r}") from None
        if (not isinstance(v, list) or len(v) != 4
                or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)):
            raise self._err(no, f"{key!r} must be [x0, y0, x1, y1], got {str(v)[:60]}")
        b = [float(c) for c in v]
        if not all(math.isfinite(c) for c in b):
            raise self._err(no, f"{key!r} has a NaN/inf coordinate: {b}")
        if b[2] < b[0] or b[3] < b[1]:
            raise self._err(no, f"{key!r} must have x1 >= x0 and y1 >= y0, got {b}")
        return b

    def _sample(self, no: int, rec: dict[str, Any], from_csv: bool, path_key: str,
                resolve: bool = True) -> Sample:
        guard = self._guard if resolve else (lambda rel: (rel, None))
        rel = self._text(no, path_key, rec.get(path_key), required=True)
        assert rel is not None
        uri, err = guard(rel)
        label = self._label(no, rec.get("label"))
        sid = self._text(no, "id", rec.get("id"), required=False) or Path(rel).as_posix()
        meta: dict[str, Any] = {}
        mask_uri = None
        mrel = self._text(no, "mask_path", rec.get("mask_path"), required=False)
        if mrel is not None:
            mask_uri, merr = guard(mrel)
            if merr and not err:
                err = merr.replace("path_outside_root: ", "path_outside_root: mask_path ")
        boxes = box_labels = None
        raw_boxes = rec.get("boxes")
        if isinstance(raw_boxes, str) and from_csv:
            raw_boxes = raw_boxes.strip() or None
            if raw_boxes is not None:
                try:
                    raw_boxes = json.loads(raw_boxes)
                except ValueError:
                    raise self._err(no, "'boxes' must be a JSON list of boxes") from None
        if raw_boxes is not None:
            if not isinstance(raw_boxes, list):
                raise self._err(no, "'boxes' must be a list of [x0, y0, x1, y1]")
            boxes = [self._box(no, b, False, "boxes") for b in raw_boxes]
        elif rec.get("box") not in (None, ""):
            boxes = [self._box(no, rec["box"], from_csv, "box")]
        if boxes is not None:
            raw_bl = rec.get("box_labels")
            if isinstance(raw_bl, str) and from_csv and raw_bl.strip():
                try:
                    raw_bl = json.loads(raw_bl)
                except ValueError:
                    raw_bl = [t for t in raw_bl.replace(",", " ").split()]
            if raw_bl in (None, ""):
                box_labels = [label] * len(boxes) if label is not None else None
            else:
                if not isinstance(raw_bl, list) or len(raw_bl) != len(boxes):
                    raise self._err(no, f"'box_labels' must list one label per box "
                                        f"({len(boxes)} boxes)")
                box_labels = [self._label(no, b, "box label") or "" for b in raw_bl]
        for k, v in rec.items():
            if k in RESERVED or k == path_key:
                continue
            meta[str(k)] = _scalar(v) if from_csv and isinstance(v, str) else v
        if err:
            meta[ERROR_KEY] = err
        return Sample(id=sid, uri=uri, label=label, boxes=boxes, box_labels=box_labels,
                      mask_uri=mask_uri, metadata=meta)

    def __iter__(self) -> Iterator[Sample]:
        """Parse the file again, line by line: only the sample being consumed is in memory."""
        for _, s in self._parsed():
            yield s

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"ManifestSource({self.path!r}, {len(self)} samples)"


def write_manifest(samples: Sequence[Sample], path: str | os.PathLike[str]) -> None:
    """Write samples as a CSV or JSONL manifest (by suffix) with paths relative to its folder.

    Inverse of `ManifestSource` (used by tests and by tools that subset a dataset).
    """
    p = Path(path)
    base = p.resolve().parent
    rows: list[dict[str, Any]] = []
    for s in samples:
        r: dict[str, Any] = {"id": s.id, "path": os.path.relpath(s.uri, base)}
        if s.label is not None:
            r["label"] = s.label
        if s.mask_uri:
            r["mask_path"] = os.path.relpath(s.mask_uri, base)
        if s.boxes is not None:
            r["boxes"] = s.boxes
            if s.box_labels is not None:
                r["box_labels"] = s.box_labels
        r.update({k: v for k, v in s.metadata.items() if k != ERROR_KEY})
        rows.append(r)
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        with open(p, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with open(p, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else
                        json.dumps(r[c]) if isinstance(r.get(c), list) else r[c] for c in cols])


@SOURCES.register("manifest", help="manifest:FILE — CSV/JSONL with path,label[,id,mask_path,box]")
def manifest_source(arg: str = "", **kw: object) -> ManifestSource:
    if not arg:
        raise DataError("manifest: needs a file, e.g. manifest:data/train.jsonl")
    return ManifestSource(arg, **kw)  # type: ignore[arg-type]

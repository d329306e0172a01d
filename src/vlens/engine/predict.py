"""The predict stage and `run_predict`: a model over a dataset into samples + predictions.

The stage decodes each sample with `vlens.data.images.load_image` (a bad image becomes an
error row with the decoder's reason), preprocesses with the model adapter, runs the forward
pass without gradients and lets the adapter's task turn outputs into rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlens.data.base import Sample
from vlens.data.images import content_hash
from vlens.data.paths import load_sample_image, sample_error
from vlens.engine.base import ENGINES, RunStats, TableSink
from vlens.engine.cache import Cache
from vlens.engine.stage import Row, error_row, fingerprint_of
from vlens.engine.store import RunStore, iter_row_groups
from vlens.errors import ConfigError, ImageError

PREDICT_VERSION = "1"


# ---- samples <-> items ----------------------------------------------------------------------
def sample_to_item(s: Sample) -> Row:
    """A Sample as a plain dict (JSON-able: it must cross process boundaries for Ray).

    A sample the source flagged (e.g. ``path_outside_root``) carries ``source_error``: the
    engine never opens (hashes) its file and the stage turns it into an error row.
    """
    return {
        "id": str(s.id),
        "uri": str(s.uri),
        "label": s.label,
        "boxes": s.boxes,
        "box_labels": s.box_labels,
        "mask_uri": s.mask_uri,
        "metadata": dict(s.metadata or {}),
        "source_error": sample_error(s),
    }


def item_to_sample(item: Mapping[str, Any]) -> Sample:
    return Sample(
        id=item["id"],
        uri=item["uri"],
        label=item.get("label"),
        boxes=item.get("boxes"),
        box_labels=item.get("box_labels"),
        mask_uri=item.get("mask_uri"),
        metadata=dict(item.get("metadata") or {}),
        error=item.get("source_error"),
    )


def _scalar(v: Any) -> Any:
    """Metadata values go into Parquet columns: keep scalars, JSON-encode the rest."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    import json

    return json.dumps(v, default=str, sort_keys=True)


def samples_rows(items: list[Row], rows: list[Row]) -> list[Row]:
    """samples.parquet rows: id, uri, label, status, error, content_hash, meta_<key>.

    In the predict stage the only per-sample failure is decoding, so a sample's status is
    its prediction row's status.
    """
    out = []
    for it, row in zip(items, rows, strict=True):
        r = {
            "id": it["id"],
            "uri": it["uri"],
            "label": it.get("label"),
            "status": row.get("status", "ok"),
            "error": row.get("error"),
            "content_hash": it.get("content_hash"),
        }
        for k, v in (it.get("metadata") or {}).items():
            if not str(k).startswith("_"):  # private flags such as the source's "_error"
                r[f"meta_{k}"] = _scalar(v)
        out.append(r)
    return out


def _mask_digest(uri: str | None) -> str | None:
    """Content hash of a mask file (coco:// masks are named by their annotation: the uri)."""
    if not uri or str(uri).startswith("coco://"):
        return uri
    try:
        return content_hash(uri)
    except (OSError, ImageError):
        return None


# ---- the stage --------------------------------------------------------------------------------
class PredictStage:
    """Decode + preprocess + forward (no grad) + task postprocess, one row per sample."""

    name = "predict"

    def __init__(
        self,
        adapter: Any,
        class_names: list[str] | None = None,
        loader: Callable[[str], Any] | None = None,
    ) -> None:
        self.adapter = adapter
        self.class_names = list(class_names or adapter.class_names)
        self.loader = loader
        self.fingerprint = fingerprint_of(
            "predict",
            PREDICT_VERSION,
            adapter.fingerprint,
            adapter.task.name,
            self.class_names,
            list(adapter.input_size),
        )

    def cache_key(self, item: Mapping[str, Any]) -> str | None:
        """Content hash + everything the row depends on besides pixels: the label (`correct`,
        `loss`) and, for detection/segmentation metrics, the boxes and the mask file."""
        ch = item.get("content_hash")
        if not ch:
            return None
        key = f"{ch}|{item.get('label')}"
        if item.get("boxes") or item.get("mask_uri"):
            key += "|" + fingerprint_of(item.get("boxes"), item.get("box_labels"),
                                        _mask_digest(item.get("mask_uri")))
        return key

    def __call__(self, batch: list[Row]) -> list[Row]:
        rows: list[Row | None] = [None] * len(batch)
        images, good = [], []
        for i, item in enumerate(batch):
            try:
                images.append(self._load(item))
                good.append(i)
            except ImageError as e:
                rows[i] = {**error_row(item, e.reason, e.detail), "label": item.get("label")}
        if images:
            samples = [item_to_sample(batch[i]) for i in good]
            preds = self._predict(images, samples)
            for i, p in zip(good, preds, strict=True):
                rows[i] = {
                    "id": batch[i]["id"],
                    "label": batch[i].get("label"),
                    **{k: _np(v) for k, v in p.items() if k != "id"},
                    "status": "ok",
                    "error": None,
                }
        return [r for r in rows if r is not None]

    def _load(self, item: Mapping[str, Any]) -> Any:
        """Decode one image (`load_sample_image` honours the source's flags); ImageError out."""
        if item.get("source_error"):
            reason, _, detail = str(item["source_error"]).partition(": ")
            raise ImageError(reason, detail)
        if self.loader is None:
            return load_sample_image(item_to_sample(item))
        return self.loader(item["uri"])

    def _predict(self, images: list[Any], samples: list[Sample]) -> list[Row]:
        from vlens.models.predict import predict_batch  # no grad, one forward, postprocess

        return predict_batch(self.adapter, images, samples)


def _np(v: Any) -> Any:
    """numpy/tensor scalars -> python (rows must be Parquet- and cache-friendly)."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


# ---- the run -------------------------------------------------------------------------------
@dataclass
class PredictResult:
    out: Path
    stats: RunStats
    n: int
    accuracy: float | None
    errors: int
    summary: dict[str, Any] = field(default_factory=dict)


def _items(samples: Iterable[Sample], limit: int | None) -> Iterator[Row]:
    it = iter(samples)
    if limit is not None:
        it = itertools.islice(it, limit)
    for s in it:
        yield sample_to_item(s)


def run_predict(
    adapter: Any,
    source: Any,
    out: str | Path,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    cache: Cache | None = None,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    loader: Callable[[str], Any] | None = None,
) -> PredictResult:
    """Run `adapter` over `source` into run dir `out` (resumable: done ids are skipped).

    Refuses to resume into a run dir made with a different model or label set, whose rows
    would silently mix with these.
    """
    if limit is not None and limit < 0:
        raise ConfigError("--limit must be >= 0")
    eng = ENGINES.create(engine, **dict(engine_options or {}))  # bad names fail before any write
    store = RunStore(out)
    store.sweep_temp()  # leftovers of writes a crash interrupted
    class_names = list(getattr(source, "class_names", None) or adapter.class_names)
    stage = PredictStage(adapter, class_names, loader=loader)
    previous = store.read_config()
    old_fp = (previous.get("fingerprints") or {}).get("predict")
    if old_fp and old_fp != stage.fingerprint and store.has_table("predictions"):
        raise ConfigError(
            f"{out} holds predictions from a different model or class list "
            f"(fingerprint {old_fp} != {stage.fingerprint}); use a new --out"
        )
    cfg = {**previous, **dict(config or {})}
    cfg.setdefault("command", "predict")
    cfg["fingerprints"] = {**(previous.get("fingerprints") or {}), "predict": stage.fingerprint}
    cfg["class_names"] = class_names
    cfg["batch_size"], cfg["limit"] = batch_size, limit
    store.write_config(cfg)

    try:
        n_total = len(source)
    except TypeError:
        n_total = None
    if n_total is not None and limit is not None:
        n_total = min(n_total, limit)
    sink = TableSink(store, "predictions", derived={"samples": samples_rows})
    stats = eng.run(
        stage, _items(source, limit), sink, cache=cache, batch_size=batch_size,
        total=n_total, progress=progress,
    )
    summary = summarize_table(store, "predictions")
    store.write_json("predict_summary.json", {**summary, "stats": stats.__dict__})
    return PredictResult(
        out=Path(out), stats=stats, n=summary["n"], accuracy=summary["accuracy"],
        errors=summary["errors"], summary=summary,
    )


SUMMARY_COLUMNS = ("id", "status", "error", "correct")


def summarize_table(store: RunStore, name: str = "predictions") -> dict[str, Any]:
    """`summarize` of a stored table, streamed: reads only the summary columns of the
    compacted file in record batches, so memory does not grow with the table. Pending parts
    (a table not finalized) need dedup by id and go through `summarize` in memory."""
    import pyarrow.parquet as pq

    path = store.table_path(name)
    if store.has_parts(name) or not path.exists():
        return summarize(store.read_table(name))
    names = pq.read_schema(path).names
    cols = [c for c in SUMMARY_COLUMNS[1:] if c in names]
    n = errors = n_correct = n_labelled = 0
    reasons: dict[str, int] = {}
    for rb in iter_row_groups(path, cols or None):
        df = rb.to_pandas()
        n += len(df)
        if "status" not in df:
            continue
        ok = df["status"] == "ok"
        if "correct" in df:
            c = df.loc[ok, "correct"].dropna()
            n_correct += float(c.astype(float).sum())
            n_labelled += len(c)
        err = df[df["status"] == "error"]
        errors += len(err)
        if "error" in err:
            for k, v in err["error"].astype(str).str.split(":").str[0].value_counts().items():
                reasons[str(k)] = reasons.get(str(k), 0) + int(v)
    acc = n_correct / n_labelled if n_labelled else None
    return {
        "n": int(n),
        "accuracy": None if acc is None or math.isnan(acc) else acc,
        "errors": int(errors),
        "error_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }


def summarize(preds: Any) -> dict[str, Any]:
    """n, accuracy over ok rows with a label, number of error rows, error reasons."""
    if preds is None or len(preds) == 0:
        return {"n": 0, "accuracy": None, "errors": 0, "error_reasons": {}}
    ok = preds[preds["status"] == "ok"]
    acc = None
    if "correct" in ok.columns and len(ok):
        c = ok["correct"].dropna()
        acc = float(c.astype(float).mean()) if len(c) else None
    err = preds[preds["status"] == "error"]
    reasons = err["error"].astype(str).str.split(":").str[0].value_counts().to_dict()
    return {
        "n": int(len(preds)),
        "accuracy": None if acc is None or math.isnan(acc) else acc,
        "errors": int(len(err)),
        "error_reasons": {str(k): int(v) for k, v in reasons.items()},
    }

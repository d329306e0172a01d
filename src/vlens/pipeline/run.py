"""The whole per-sample pipeline: predict -> saliency -> VLM, into one run directory.

Each step is an engine run of one stage (so each is cached and resumable on its own); this
module only wires them: it builds the stages from specs, feeds each stage the previous
stage's rows joined by id, and records what was asked in config.yaml (no secrets).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlens.engine.base import ENGINES, RunStats
from vlens.engine.cache import Cache
from vlens.engine.predict import run_predict, sample_to_item
from vlens.engine.stage import Row
from vlens.engine.store import RunStore, iter_row_groups
from vlens.pipeline.saliency_stage import ArtefactTableSink, SaliencyStage
from vlens.pipeline.vlm_stage import VLMStage, VLMTableSink
from vlens.vlm.concepts import build_vocabulary


@dataclass
class ExplainOptions:
    """What `explain` computes. Spec strings are the same as the CLI flags."""

    vlm: str | Any = "embedded"  # a spec string or a built VLM object
    concept_vlm: str | Any | None = None  # default: the judge VLM if contrastive, else embedded
    method: str = "gradcam"
    target_layer: str | None = None
    alpha: float = 25.0
    beta: float = 0.6
    faithfulness: bool = False
    concepts_file: str | None = None
    batch_size: int = 32
    limit: int | None = None
    engine: str = "local"
    engine_options: dict[str, Any] | None = None  # e.g. {"num_workers": 2} for ray
    progress: bool = True


@dataclass
class ExplainResult:
    out: Path
    stats: dict[str, RunStats] = field(default_factory=dict)
    accuracy: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    judge_vlm: Any = None  # the built VLMs, for the analysis hooks of `run`
    concept_vlm: Any = None
    adapter: Any = None  # the model and the data, for the occlusion counterfactual of `run`
    source: Any = None


def make_concept_vlm(judge_vlm: Any, spec: str | None) -> Any:
    """The contrastive backend for concept scores: `spec`, else the judge VLM if it is
    contrastive, else the embedded model."""
    from vlens.vlm import create_vlm
    from vlens.vlm.base import CONTRASTIVE, require

    if spec is not None:
        vlm = create_vlm(spec) if isinstance(spec, str) else spec
        require(vlm, CONTRASTIVE)
        return vlm
    if CONTRASTIVE in judge_vlm.capabilities:
        return judge_vlm
    return create_vlm("embedded")


JOIN_CHUNK = 1024  # source items joined per scan of the earlier tables (~8 KB each in memory)


def _lookup(store: RunStore, table: str, ids: Sequence[str],
            columns: Sequence[str] | None = None) -> dict[str, Row]:
    """Rows of compacted `table` whose id is in `ids`, by id.

    Streams the Parquet file row group by row group and keeps only the matching rows, so
    memory holds one chunk's rows and one row group, never the whole table (the pipeline's
    bounded-memory guarantee).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = store.table_path(table)
    if not path.exists():
        return {}
    names = pq.read_schema(path).names
    cols = [c for c in columns if c in names] if columns else None
    want = pa.array([str(i) for i in ids], pa.string())
    out: dict[str, Row] = {}
    for rb in iter_row_groups(path, cols):
        key = rb.column(rb.schema.get_field_index("id")).cast(pa.string())
        sub = rb.filter(pc.is_in(key, value_set=want))
        if sub.num_rows:
            for r in sub.to_pandas().to_dict("records"):
                out[str(r["id"])] = r
    return out


def _joined_items(
    source: Any, limit: int | None, store: RunStore, tables: Mapping[str, Sequence[str] | None],
    run_dir: Path, chunk: int = JOIN_CHUNK, done: set[str] | None = None,
) -> Iterator[Row]:
    """Source samples as items, each with its rows from earlier stages attached.

    `tables` maps table name -> columns to read (None: all). Joined chunk by chunk
    (`_lookup`), so memory does not grow with the dataset. The content hash predict already
    computed comes from samples.parquet: later stages never re-hash the files.
    Items whose id is in `done` (the stage's finished ids: the engine skips them) are
    yielded bare, without reading the earlier tables: a resumed run reads nothing.
    """
    it = iter(source)
    if limit is not None:
        it = itertools.islice(it, limit)
    while block := list(itertools.islice(it, chunk)):
        items = [sample_to_item(s) for s in block]
        ids = [i["id"] for i in items if not done or i["id"] not in done]
        if not ids:
            yield from items
            continue
        found = {name: _lookup(store, name, ids, cols) for name, cols in tables.items()}
        hashes = _lookup(store, "samples", ids, ["id", "content_hash"])
        for item in items:
            sid = item["id"]
            if done and sid in done:
                yield item
                continue
            ch = (hashes.get(sid) or {}).get("content_hash")
            if isinstance(ch, str) and ch:
                item["content_hash"] = ch
            if "predictions" in found:
                item["prediction"] = found["predictions"].get(sid) or {
                    "status": "error", "error": "missing prediction"}
            if "saliency" in found:
                sal = found["saliency"].get(sid) or {}
                if sal.get("status", "error") == "ok" and sal.get("view_masked"):
                    item["view_masked"] = str(run_dir / sal["view_masked"])
                else:
                    item["saliency_error"] = sal.get("error") or "missing saliency"
            yield item


def _error_count(store: RunStore, table: str) -> int:
    df = store.read_table(table, columns=["status"])
    return 0 if df is None else int((df["status"] == "error").sum())


def explain(
    model: str | Any,
    data: str | Any,
    out: str | Path,
    options: ExplainOptions | None = None,
    cache: Cache | None = None,
    config: Mapping[str, Any] | None = None,
) -> ExplainResult:
    """Predict, explain and judge every sample of `data` with `model` into run dir `out`.

    `model`/`data` are spec strings (``"demo"``, ``"manifest:path"``) or built objects.
    Re-running on the same `out` resumes: only missing rows are computed.
    """
    from vlens.data import open_dataset
    from vlens.models import load_model
    from vlens.saliency import get_explainer
    from vlens.vlm import create_vlm

    o = options or ExplainOptions()
    out = Path(out)
    adapter = load_model(model) if isinstance(model, str) else model
    source = open_dataset(data) if isinstance(data, str) else data
    judge_vlm = create_vlm(o.vlm) if isinstance(o.vlm, str) else o.vlm
    concept_vlm = make_concept_vlm(judge_vlm, o.concept_vlm)
    params = {"target_layer": o.target_layer} if o.target_layer else {}
    explainer = get_explainer(o.method, **params)

    cfg = {
        "command": "explain",
        "model": model if isinstance(model, str) else type(model).__name__,
        "data": data if isinstance(data, str) else type(data).__name__,
        **{k: (v if v is None or isinstance(v, str | int | float | bool) else type(v).__name__)
           for k, v in vars(o).items() if k not in ("progress", "engine_options")},
        **dict(config or {}),
    }
    res = ExplainResult(out=out, judge_vlm=judge_vlm, concept_vlm=concept_vlm,
                        adapter=adapter, source=source)
    pred = run_predict(adapter, source, out, batch_size=o.batch_size, limit=o.limit,
                       cache=cache, engine=o.engine, engine_options=o.engine_options,
                       progress=o.progress, config=cfg)
    res.stats["predict"], res.accuracy = pred.stats, pred.accuracy
    store = RunStore(out)
    class_names = list(store.read_config().get("class_names") or adapter.class_names)
    vocab = build_vocabulary(class_names, o.concepts_file)
    engine = ENGINES.create(o.engine, **dict(o.engine_options or {}))
    kw = {"cache": cache, "batch_size": o.batch_size, "progress": o.progress,
          "total": pred.n}

    sal_stage = SaliencyStage(adapter, explainer, method=o.method, alpha=o.alpha, beta=o.beta,
                              faithfulness=o.faithfulness)
    items = _joined_items(source, o.limit, store, {"predictions": None}, out,
                          done=store.ids("saliency", ok_only=True))
    res.stats["saliency"] = engine.run(sal_stage, items, ArtefactTableSink(store, "saliency"),
                                       **kw)

    vlm_stage = VLMStage(judge_vlm, concept_vlm, class_names, vocab, sal_stage.fingerprint)
    items = _joined_items(source, o.limit, store, {
        "predictions": None, "saliency": ["id", "status", "error", "view_masked"]}, out,
        done=store.ids("vlm", ok_only=True))
    res.stats["vlm"] = engine.run(vlm_stage, items, VLMTableSink(store, vocab), **kw)

    cfg = store.read_config()
    cfg["fingerprints"] = {**(cfg.get("fingerprints") or {}),
                           "saliency": sal_stage.fingerprint, "vlm": vlm_stage.fingerprint}
    cfg["vlm_fingerprint"] = judge_vlm.fingerprint
    cfg["vocabulary"] = vocab
    store.write_config(cfg)
    store.write_json("explain_stats.json", {k: vars(v) for k, v in res.stats.items()})
    for name in ("predictions", "saliency", "vlm"):
        res.errors[name] = _error_count(store, name)
    return res

"""The VLM stage: judge the masked view, ground the attended region in concepts, and score
and embed the whole image.

Two backends may serve it: `judge_vlm` answers the judge (generative prompt or the
contrastive rule) and `concept_vlm` (contrastive) gives concept scores, grounding and
embeddings. They are often the same model. The stage returns the three wide outputs in
private fields; `VLMTableSink` splits them into vlm / concepts / grounding / embeddings
tables so each stays a plain, columnar Parquet file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from vlens.data.paths import load_sample_image
from vlens.engine.base import rows_frame
from vlens.engine.stage import Row, error_row, fingerprint_of
from vlens.engine.store import RunStore
from vlens.errors import ImageError, VlensError

VLM_STAGE_VERSION = "1"
JUDGE_FIELDS = ("description", "justification", "focus_score", "object_visible", "distractors")


class _EncoderMemo:
    """Within one batch, each image object goes through a backend's image encoder once.

    The judge, the concept scores, the grounding and the embedding each ask the backend
    for the same images and views (4-5 encoder passes per sample where 2 are needed). The
    `VLM` protocol has no "score these embeddings" call, so for the duration of the batch
    the backends' ``embed_images`` is shadowed by a memo keyed by image object identity
    (the images stay alive in the batch, so ids are unique); their own ``score`` then hits
    it too. Backends that refuse instance attributes simply run unmemoized.
    """

    def __init__(self, *vlms: Any) -> None:
        self.vlms = [v for i, v in enumerate(vlms)
                     if v is not None and all(v is not w for w in vlms[:i])]
        self.saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> _EncoderMemo:
        for vlm in self.vlms:
            inner = getattr(vlm, "embed_images", None)
            if inner is None:
                continue
            memo: dict[int, np.ndarray] = {}

            def embed_images(images: Sequence[Any], _inner: Any = inner,
                             _memo: dict[int, np.ndarray] = memo) -> np.ndarray:
                images = list(images)
                todo = list({id(im): im for im in images if id(im) not in _memo}.items())
                if todo:
                    emb = np.asarray(_inner([im for _, im in todo]), np.float32)
                    for (k, _), e in zip(todo, emb, strict=True):
                        _memo[k] = e
                if not images:
                    return np.asarray(_inner([]), np.float32)
                return np.stack([_memo[id(im)] for im in images])

            try:
                own = vlm.__dict__.get("embed_images")
                vlm.embed_images = embed_images
            except (AttributeError, TypeError):
                continue
            self.saved.append((vlm, own))
        return self

    def __exit__(self, *exc: Any) -> None:
        for vlm, own in self.saved:
            if own is None:
                del vlm.embed_images
            else:
                vlm.embed_images = own
        self.saved.clear()


class VLMStage:
    """Per sample: judge answer + concept scores (whole image, attended region) + embedding.

    Items carry ``prediction`` (the predict row) and ``view_masked`` (absolute path of the
    masked view written by the saliency stage).
    """

    name = "vlm"

    def __init__(
        self,
        judge_vlm: Any,
        concept_vlm: Any,
        class_names: Sequence[str],
        vocabulary: Sequence[str],
        saliency_fingerprint: str,
    ) -> None:
        self.judge_vlm, self.concept_vlm = judge_vlm, concept_vlm
        self.class_names, self.vocabulary = list(class_names), list(vocabulary)
        from vlens.vlm import judge as judge_mod

        # the judge's rule version: a new rule (e.g. how focus is scored) must not be served
        # answers cached under the old one
        rule = getattr(judge_mod, "JUDGE_RULE_VERSION", None)
        self.fingerprint = fingerprint_of(
            "vlm", VLM_STAGE_VERSION, rule, judge_vlm.fingerprint,
            concept_vlm.fingerprint if concept_vlm is not None else None,
            self.class_names, self.vocabulary, saliency_fingerprint,
        )

    def cache_key(self, item: Mapping[str, Any]) -> str | None:
        ch = item.get("content_hash")
        pred = (item.get("prediction") or {}).get("pred")
        return f"{ch}|{pred}" if ch else None

    def __call__(self, batch: list[Row]) -> list[Row]:
        from vlens.engine.predict import item_to_sample

        rows: list[Row | None] = [None] * len(batch)
        images, views, good = [], [], []
        for i, item in enumerate(batch):
            if not item.get("view_masked"):
                rows[i] = error_row(item, "no_saliency", str(item.get("saliency_error") or ""))
                continue
            try:
                images.append(load_sample_image(item_to_sample(item)))
                with Image.open(item["view_masked"]) as v:
                    views.append(v.convert("RGB"))
                good.append(i)
            except (ImageError, OSError) as e:
                rows[i] = error_row(item, getattr(e, "reason", "unreadable_view"), str(e))
        if good:
            sub = [batch[i] for i in good]
            try:
                with _EncoderMemo(self.judge_vlm, self.concept_vlm):
                    out = self._run(sub, images, views)
            except VlensError as e:  # the backend failed for the whole batch: rows, not a crash
                out = [error_row(it, "vlm_failed", str(e)) for it in sub]
            for i, r in zip(good, out, strict=True):
                rows[i] = r
        return [r for r in rows if r is not None]

    def _run(self, items: list[Row], images: list[Image.Image], views: list[Image.Image]
             ) -> list[Row]:
        from vlens.vlm.judge import judge

        predicted = [str(it["prediction"].get("pred")) for it in items]
        answers = judge(self.judge_vlm, views, predicted, self.class_names, self.vocabulary)
        concepts = grounding = emb = None
        if self.concept_vlm is not None:
            concepts = np.asarray(self.concept_vlm.score(images, self.vocabulary), np.float32)
            grounding = np.asarray(self.concept_vlm.score(views, self.vocabulary), np.float32)
            emb = np.asarray(self.concept_vlm.embed_images(images), np.float32)
        rows = []
        for j, (it, ans) in enumerate(zip(items, answers, strict=True)):
            row: Row = {"id": it["id"], **{k: ans.get(k) for k in JUDGE_FIELDS}}
            row["judge_backend"] = ans.get("judge_backend") or getattr(self.judge_vlm, "name", "")
            row["judge_method"] = ans.get("judge_method")
            row["raw"] = ans.get("raw")
            row["status"] = ans.get("status", "ok")
            row["error"] = ans.get("error")
            if concepts is not None:
                row["_concepts"] = concepts[j]
                row["_grounding"] = grounding[j]
                row["_embedding"] = emb[j]
            rows.append(row)
        return rows


class VLMTableSink:
    """Writes vlm.parquet, and concepts / grounding (one float32 column per concept) and
    embeddings (list column) beside it, from the same batch."""

    WIDE = {"_concepts": "concepts", "_grounding": "grounding"}

    def __init__(self, store: RunStore, vocabulary: Sequence[str]) -> None:
        self.store, self.vocabulary = store, list(vocabulary)

    def done_ids(self) -> set[str]:
        return self.store.ids("vlm", ok_only=True)

    def write(self, items: list[Row], rows: list[Row]) -> None:
        ids = [r["id"] for r in rows]
        have = [i for i, r in enumerate(rows) if r.get("_concepts") is not None]
        if have:  # side tables first: vlm.parquet decides what is done (see TableSink)
            for key, table in self.WIDE.items():
                mat = np.stack([np.asarray(rows[i][key], np.float32) for i in have])
                df = pd.DataFrame(mat, columns=self.vocabulary)
                df.insert(0, "id", [ids[i] for i in have])
                self.store.append(table, df)
            emb = np.stack([np.asarray(rows[i]["_embedding"], np.float32) for i in have])
            offsets = np.arange(0, emb.size + 1, emb.shape[1], dtype=np.int32)
            self.store.append("embeddings", pa.table({  # list<float>, built without pandas
                "id": pa.array([str(ids[i]) for i in have], pa.string()),
                "embedding": pa.ListArray.from_arrays(offsets, emb.reshape(-1)),
            }))
        plain = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        df = rows_frame(plain)
        # always a list column (error rows: []), also in a batch of error rows only, so the
        # table does not depend on how rows were batched (e.g. Ray serving hits first)
        col = df["distractors"] if "distractors" in df else [None] * len(df)
        df["distractors"] = [
            [str(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else [] for v in col
        ]
        self.store.append("vlm", df)

    def close(self) -> None:
        for name in ("concepts", "grounding", "embeddings", "vlm"):
            if self.store.has_parts(name):
                self.store.finalize(name)


def view_path(run_dir: str | Path, rel: str | None) -> str | None:
    """Absolute path of a view stored relative to the run directory."""
    return str(Path(run_dir) / rel) if rel else None

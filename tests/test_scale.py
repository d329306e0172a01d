"""Scale helpers: batched durable artefact writes and the chunked join of earlier stages."""

from __future__ import annotations

import pandas as pd
import pytest

from vlens.data.base import Sample
from vlens.engine.store import RunStore
from vlens.errors import StoreError
from vlens.pipeline.run import _joined_items


def test_write_artefacts_round_trip_and_no_temp_files(tmp_path):
    store = RunStore(tmp_path / "run")
    files = {f"saliency/views/s{i}.masked.png": bytes([i]) * (i + 1) for i in range(5)}
    files["saliency/maps/s0.png"] = b"map"
    got = store.write_artefacts(files)
    assert got == {rel: rel for rel in files}
    for rel, data in files.items():
        assert (tmp_path / "run" / rel).read_bytes() == data
    # overwrite keeps atomicity; nothing but the targets remains
    store.write_artefacts({"saliency/maps/s0.png": b"new"})
    assert (tmp_path / "run" / "saliency/maps/s0.png").read_bytes() == b"new"
    left = [p.name for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]
    assert left == []


def test_write_artefacts_refuses_escaping_paths_before_writing(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(StoreError, match="escapes the run directory"):
        store.write_artefacts({"ok.png": b"x", "../evil.png": b"y"})
    assert not (tmp_path / "evil.png").exists()
    assert not (tmp_path / "run" / "ok.png").exists()  # all paths are checked first


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_joined_items_chunked_join_matches_rows(tmp_path, chunk):
    store = RunStore(tmp_path / "run")
    ids = [f"s{i:02d}" for i in range(10)]
    store.write_table("samples", pd.DataFrame(
        {"id": ids, "content_hash": [f"h{i}" for i in range(10)]}))
    store.write_table("predictions", pd.DataFrame(
        {"id": ids[:-1], "pred": [f"c{i % 3}" for i in range(9)], "status": "ok"}))
    store.write_table("saliency", pd.DataFrame({
        "id": ids[:8], "status": ["ok"] * 7 + ["error"], "error": [None] * 7 + ["boom"],
        "view_masked": [f"v/{i}.png" for i in range(7)] + [None]}))
    source = [Sample(id=i, uri=f"/nope/{i}.png", label="c0") for i in reversed(ids)]
    items = list(_joined_items(source, 9, store, {
        "predictions": None, "saliency": ["id", "status", "error", "view_masked"]},
        tmp_path / "run", chunk=chunk))
    assert [it["id"] for it in items] == list(reversed(ids))[:9]  # source order, limit kept
    by = {it["id"]: it for it in items}
    assert by["s03"]["content_hash"] == "h3" and by["s03"]["prediction"]["pred"] == "c0"
    assert by["s03"]["view_masked"] == str(tmp_path / "run" / "v/3.png")
    assert by["s07"]["saliency_error"] == "boom" and "view_masked" not in by["s07"]
    assert by["s08"]["saliency_error"] == "missing saliency"
    assert by["s08"]["prediction"]["pred"] == "c2"
    assert by["s09"]["prediction"] == {"status": "error", "error": "missing prediction"}
    assert "s00" not in by  # beyond the limit

"""Broken manifests at the pipeline level (the parsers are fuzzed in tests/test_data_fuzz.py):
a dataset that cannot be opened stops `vlens run` with one clear line naming the file and
line; paths that leave the dataset root are error rows in every table, never read."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from rb_helpers import assert_accounted, read_manifest, run_cli, table, write_manifest

from vlens.errors import DataError
from vlens.pipeline import ExplainOptions, explain


def _world(tmp_path, small_world):
    root = tmp_path / "w"
    shutil.copytree(small_world.parent, root)
    return root / "manifest.jsonl", read_manifest(root / "manifest.jsonl")


def _break(case, manifest, rows):
    if case == "missing path column":
        write_manifest(manifest, [{k: v for k, v in r.items() if k != "path"} for r in rows])
        return "path"
    if case == "duplicate ids":
        rows[3]["id"] = rows[1]["id"]
        write_manifest(manifest, rows)
        return "duplicate id"
    if case == "NaN path":
        text = "".join(json.dumps(r) + "\n" for r in rows)
        manifest.write_text(text.replace(f'"path": "{rows[2]["path"]}"', '"path": NaN', 1))
        return ":3:"
    if case == "non-UTF-8":
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        manifest.write_bytes(data.replace(b"meadow", b"m\xe9\xff\xfeadow", 1)
                             if b"meadow" in data else data[:50] + b"\xff\xfe" + data[50:])
        return "UTF-8"
    if case == "not JSON":
        manifest.write_text(manifest.read_text() + "{oops\n")
        return f":{len(rows) + 1}:"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing path column", "duplicate ids", "NaN path",
                                  "non-UTF-8", "not JSON"])
def test_unopenable_manifest_is_a_clear_data_error(tmp_path, small_world, case):
    manifest, rows = _world(tmp_path, small_world)
    words = _break(case, manifest, rows)
    with pytest.raises(DataError) as e:
        explain("demo", f"manifest:{manifest}", tmp_path / "run", ExplainOptions(progress=False))
    assert words in str(e.value) and "manifest.jsonl" in str(e.value), str(e.value)
    assert not (tmp_path / "run" / "predictions.parquet").exists()


def test_unopenable_manifest_via_cli(tmp_path, small_world):
    manifest, rows = _world(tmp_path, small_world)
    _break("duplicate ids", manifest, rows)
    p = run_cli("run", "--model", "demo", "--data", f"manifest:{manifest}", "--out",
                str(tmp_path / "run"), "--no-progress", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "duplicate id" in p.stderr and "manifest.jsonl:4" in p.stderr.replace("\n", "")


def test_paths_out_of_root_and_unknown_labels_are_rows(tmp_path, small_world):
    manifest, rows = _world(tmp_path, small_world)
    root = manifest.parent
    outside = tmp_path / "secret.png"
    shutil.copy(root / rows[0]["path"], outside)  # a real image, but outside the root
    os.symlink(outside, root / "images" / "link.png")
    extra = [
        {"id": "abs", "path": str(outside), "label": "circle"},
        {"id": "dotdot", "path": "../secret.png", "label": "circle"},
        {"id": "deep_dotdot", "path": "images/../../secret.png", "label": "circle"},
        {"id": "symlink", "path": "images/link.png", "label": "circle"},
        {"id": "missing", "path": "images/nope.png", "label": "circle"},
        {"id": "dragon", "path": rows[0]["path"], "label": "dragon"},  # not a model class
        {"id": "nolabel", "path": rows[1]["path"], "label": None},
    ]
    write_manifest(manifest, rows + extra)
    ids = {str(r["id"]) for r in rows + extra}
    explain("demo", f"manifest:{manifest}", tmp_path / "run",
            ExplainOptions(progress=False, batch_size=4))
    counts = assert_accounted(tmp_path / "run", ids)
    assert counts["samples"] == {"ok": len(ids) - 5, "error": 5}
    preds = table(tmp_path / "run", "predictions").set_index("id")
    for sid in ("abs", "dotdot", "deep_dotdot", "symlink"):
        assert preds.loc[sid, "error"].startswith("path_outside_root"), preds.loc[sid, "error"]
        assert table(tmp_path / "run", "vlm").set_index("id").loc[sid, "status"] == "error"
    assert preds.loc["missing", "error"].startswith("missing")
    # a label the model does not know: predicted as usual, loss undefined (documented)
    assert preds.loc["dragon", "status"] == "ok" and preds.loc["dragon", "pred"] == \
        preds.loc[str(rows[0]["id"]), "pred"]
    assert preds.loc["dragon", "loss"] != preds.loc["dragon", "loss"]  # NaN
    assert preds.loc["nolabel", "status"] == "ok" and preds.loc["nolabel", "correct"] is None

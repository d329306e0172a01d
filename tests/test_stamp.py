"""`vlens run` with nothing to do: the run.stamp.json fast path (vlens.cli.stamp).

The key must change with every input that decides the results, the outputs must be
unchanged, runs with error rows or uncheckable inputs get no stamp, and an up-to-date run
imports no torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vlens.cli import app
from vlens.cli.stamp import STAMP, inputs_key, up_to_date, write_stamp


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vlens.world import make_dataset

    root = tmp_path_factory.mktemp("stampworld")
    manifest = make_dataset("demo_test", root / "data", n=12, seed=4)
    return root, manifest


def _args(manifest, **kw):
    args = {"model": "demo", "data": f"manifest:{manifest}", "vlm": "embedded",
            "concept_vlm": None, "method": "gradcam", "target_layer": None, "alpha": 1.0,
            "beta": 1.0, "faithfulness": False, "concepts": None, "limit": None,
            "report": True}
    args.update(kw)
    return args


def _bump_mtime(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_key_is_stable_and_changes_with_each_input(world, tmp_path):
    root, manifest = world
    key = inputs_key(_args(manifest))
    assert key is not None and key == inputs_key(_args(manifest))
    assert inputs_key(_args(manifest, alpha=0.5)) != key
    assert inputs_key(_args(manifest, limit=5)) != key
    assert inputs_key(_args(manifest, method="layercam")) != key
    # a concepts file: named by path, changes with its content
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("water\n")
    with_concepts = inputs_key(_args(manifest, concepts=concepts))
    assert with_concepts not in (None, key)
    concepts.write_text("water\ngrass\n")
    assert inputs_key(_args(manifest, concepts=concepts)) != with_concepts
    # an image touched, then a label edited in the manifest
    image = root / "data" / json.loads(manifest.read_text().splitlines()[0])["path"]
    _bump_mtime(image)
    touched = inputs_key(_args(manifest))
    assert touched != key
    lines = manifest.read_text().splitlines()
    first = json.loads(lines[0])
    first["label"] = "square" if first["label"] != "square" else "circle"
    manifest.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert inputs_key(_args(manifest)) != touched
    manifest.write_text("\n".join(lines) + "\n")


def test_uncheckable_inputs_get_no_key(world, tmp_path):
    _, manifest = world
    assert inputs_key(_args(manifest, model="torch:mypkg.models:build")) is None
    bad = tmp_path / "manifest.jsonl"
    bad.write_text(json.dumps({"id": "a", "path": "missing.png", "label": "x"}) + "\n")
    assert inputs_key(_args(bad)) is None
    assert inputs_key(_args(manifest, data="manifest:/no/such/file.jsonl")) is None


def _cli(out, manifest, *extra):
    return CliRunner().invoke(app, ["run", "-m", "demo", "-d", f"manifest:{manifest}", "-o",
                                    str(out), "--no-cache", "--no-progress", *extra])


def test_second_cli_run_is_up_to_date_until_something_changes(world, tmp_path, monkeypatch):
    import vlens.pipeline

    root, manifest = world
    out = tmp_path / "run"
    r = _cli(out, manifest)
    assert r.exit_code == 0, r.output
    assert (out / STAMP).is_file()

    real = vlens.pipeline.run
    calls = []
    monkeypatch.setattr(vlens.pipeline, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    r = _cli(out, manifest)
    assert r.exit_code == 0, r.output
    assert "up to date" in r.output and calls == []
    assert "findings" in r.output and "report:" in r.output  # the stored findings

    # an input changed: the normal path runs (and stamps again)
    image = root / "data" / json.loads(manifest.read_text().splitlines()[1])["path"]
    _bump_mtime(image)
    r = _cli(out, manifest)
    assert r.exit_code == 0, r.output
    assert "up to date" not in r.output and calls == [1]
    assert (out / STAMP).is_file()
    r = _cli(out, manifest)
    assert "up to date" in r.output and calls == [1]

    # an output changed: the normal path again
    with open(out / "findings.json", "a") as f:
        f.write(" ")
    key = inputs_key(_args(manifest))
    assert up_to_date(out, key) is None
    r = _cli(out, manifest)
    assert "up to date" not in r.output and calls == [1, 1]


def test_no_stamp_with_error_rows_or_pending_parts(world, tmp_path):
    _, manifest = world
    out = tmp_path / "run"
    assert _cli(out, manifest, "--limit", "4").exit_code == 0
    assert (out / STAMP).is_file()
    import pandas as pd

    from vlens.engine.store import RunStore

    store = RunStore(out)
    df = store.read_table("vlm")
    df.loc[0, "status"] = "error"
    store.write_table("vlm", df)
    assert write_stamp(out, "k") is False and not (out / STAMP).exists()
    df.loc[0, "status"] = "ok"
    store.write_table("vlm", df)
    assert write_stamp(out, "k") is True
    store.append("vlm", pd.DataFrame({"id": ["x"], "status": ["ok"]}))
    assert up_to_date(out, "k") is None  # parts pending
    assert write_stamp(out, "k") is False


def test_up_to_date_run_imports_no_torch(world, tmp_path):
    _, manifest = world
    out = tmp_path / "run"
    assert _cli(out, manifest, "--limit", "4").exit_code == 0
    code = (
        "import sys\n"
        "from vlens.cli import main\n"
        f"sys.argv = ['vlens', 'run', '-m', 'demo', '-d', 'manifest:{manifest}', '-o', "
        f"'{out}', '--no-cache', '--no-progress', '--limit', '4']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    assert "up to date" in r.stdout
    assert "TORCH False" in r.stdout


"""End to end: predict -> saliency -> VLM stages into one run directory, resumable, cached.

Uses a generated world, a tiny CNN and a deterministic fake contrastive VLM (colour
statistics as the "embedding") so the plumbing is tested independently of trained weights.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakes import ColourVLM, TinyCNN  # tests/ is on sys.path (rootdir import mode)
from vlens.engine.cache import Cache
from vlens.pipeline import ExplainOptions, explain
from vlens.runs import load_run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vlens.world import make_dataset

    out = tmp_path_factory.mktemp("world")
    manifest = make_dataset("demo_test", out, n=24, seed=3)
    # one broken image: it must become an error row in every table, not vanish
    lines = manifest.read_text().splitlines()
    first = json.loads(lines[0])
    (out / first["path"]).write_bytes(b"not a png")
    return manifest, len(lines), str(first["id"])


def _adapter(class_names):
    from vlens.models import TorchAdapter

    return TorchAdapter(TinyCNN(len(class_names)), class_names, input_size=64,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_explain_end_to_end_resume_and_cache(world, tmp_path):
    from vlens.data import open_dataset

    manifest, n, bad_id = world
    source = open_dataset(f"manifest:{manifest}")
    adapter = _adapter(source.class_names)
    vlm = ColourVLM()
    cache = Cache(tmp_path / "cache")
    opts = ExplainOptions(vlm=vlm, batch_size=8, progress=False)
    res = explain(adapter, source, tmp_path / "run", opts, cache=cache)

    run = load_run(tmp_path / "run")
    for name in ("samples", "predictions", "saliency", "vlm"):
        table = getattr(run, name)
        assert len(table) == n, name  # every sample accounted for
        bad = table[table["id"] == bad_id].iloc[0]
        assert bad["status"] == "error", name
    assert res.errors == {"predictions": 1, "saliency": 1, "vlm": 1}
    ok = run.saliency[run.saliency["status"] == "ok"]
    # views exist, decode, and have the original image size; maps are 64x64 model-size
    for rel in ok["view_masked"].head(3):
        with Image.open(tmp_path / "run" / rel) as im:
            assert im.size == (64, 64)
    assert ok["energy_on_object"].between(0, 1).all()
    assert set(ok["pointing_hit"].unique()) <= {0.0, 1.0}
    vocab = run.config["vocabulary"]
    assert list(run.concepts.columns) == ["id", *vocab]
    assert len(run.concepts) == n - 1 == len(run.grounding) == len(run.embeddings)
    assert run.vlm.loc[run.vlm["status"] == "ok", "focus_score"].between(0, 5).all()
    # concept scores are the VLM's scores of the whole image, exactly
    sid = ok["id"].iloc[0]
    uri = run.samples.set_index("id").loc[sid, "uri"]
    with Image.open(uri) as im:
        expect = vlm.score([im.convert("RGB")], vocab)[0]
    got = run.concepts.set_index("id").loc[sid].to_numpy(np.float32)
    np.testing.assert_allclose(got, expect, rtol=1e-5)

    # a second run into a new dir is served from the cache: no VLM call at all
    vlm.calls = 0
    res2 = explain(adapter, source, tmp_path / "run2", opts, cache=cache)
    assert vlm.calls == 0
    assert res2.stats["vlm"].cached == n - 1 and res2.stats["vlm"].computed == 1  # error retried
    run2 = load_run(tmp_path / "run2")
    pd.testing.assert_frame_equal(run.concepts, run2.concepts)
    pd.testing.assert_frame_equal(
        run.vlm.drop(columns=["raw"]), run2.vlm.drop(columns=["raw"]))

    # re-running on the same dir resumes: only the error rows are retried
    res3 = explain(adapter, source, tmp_path / "run", opts, cache=None)
    for stage in ("predict", "saliency", "vlm"):
        assert res3.stats[stage].skipped == n - 1 and res3.stats[stage].computed == 1, stage
    assert len(load_run(tmp_path / "run").vlm) == n  # the retried row replaced the old one


def test_explain_limit_and_method(world, tmp_path):
    from vlens.data import open_dataset

    manifest, _, _ = world
    source = open_dataset(f"manifest:{manifest}")
    opts = ExplainOptions(vlm=ColourVLM(), method="eigencam", limit=5, progress=False)
    explain(_adapter(source.class_names), source, tmp_path / "run", opts)
    run = load_run(tmp_path / "run")
    assert len(run.saliency) == 5 and set(run.saliency["method"]) == {"eigencam"}
    assert run.config["method"] == "eigencam"


class EchoWriterVLM:
    """Generative-only fake: rewrites each narrative sentence as "In short: ..." (same ids,
    same numbers) and describes any contact sheet as "bright images"."""

    name = "echo-writer"
    fingerprint = "echo-writer-v1"

    def __init__(self) -> None:
        from vlens.vlm.base import GENERATIVE

        self.capabilities = frozenset({GENERATIVE})
        self.prompts: list[str] = []

    def _generate(self, reqs):
        from vlens.vlm.structured import Generation

        out = []
        for r in reqs:
            user = r.messages[-1]["content"]
            self.prompts.append(user)
            if "support it:" in user:
                sents = json.loads(user.split("support it:\n", 1)[1].split("\nReword", 1)[0])
                out.append(Generation(text=json.dumps({"sentences": [
                    {"text": "In short: " + s["text"], "finding_ids": s["finding_ids"]}
                    for s in sents]})))
            else:
                out.append(Generation(text=json.dumps(
                    {"shared": "bright images", "differences": ["brighter"]})))
        return out

    def ask(self, images, prompt, variables):
        from vlens.vlm.structured import ask_structured

        return ask_structured(self._generate, images, prompt, variables)


def test_generative_hooks_are_wired_into_analyze_run(world, tmp_path):
    """`analyze_run(gen_vlm=...)` rewrites the narrative through the VLM (claims and ids
    kept) and the result is keyed by the generative VLM too; `run` passes the judge VLM
    only when it judged by prompting."""
    from vlens.pipeline.full import analysis_digest, analyze_run, generative_judge
    from vlens.vlm.base import CONTRASTIVE, GENERATIVE

    manifest, _, _ = world
    from vlens.data import open_dataset

    source = open_dataset(f"manifest:{manifest}")
    out = tmp_path / "run"
    explain(_adapter(source.class_names), source, out,
            ExplainOptions(vlm=ColourVLM(), batch_size=8, progress=False))
    plain = analyze_run(out)
    writer = EchoWriterVLM()
    assert analysis_digest(out, None, writer) != analysis_digest(out, None, None)
    told = analyze_run(out, gen_vlm=writer)
    assert plain["narrative"] and writer.prompts
    assert [s["text"] for s in told["narrative"]] == \
        ["In short: " + s["text"] for s in plain["narrative"]]
    assert [s["finding_ids"] for s in told["narrative"]] == \
        [s["finding_ids"] for s in plain["narrative"]]
    assert generative_judge(writer) is writer
    assert generative_judge(ColourVLM()) is None  # contrastive: judged by the rule

    class Both:
        capabilities = frozenset({CONTRASTIVE, GENERATIVE})  # e.g. the embedded VLM

    assert generative_judge(Both()) is None

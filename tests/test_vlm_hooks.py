"""Generative-VLM hooks: slice descriptions from a contact sheet, narrative rewrites that
keep every claim. A deterministic fake generative VLM and the local OpenAI-compatible
server stand in for real models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakes import ColourVLM
from vlens.analysis import AnalysisInput, Hooks, analyze
from vlens.analysis.narrative import narrative
from vlens.analysis.slices import describe_slices
from vlens.pipeline.vlm_hooks import (
    TILE,
    accept_rewrite,
    contact_sheet,
    describe_hook,
    rewrite_hook,
)
from vlens.vlm.base import GENERATIVE
from vlens.vlm.openai_compat import OpenAICompatVLM
from vlens.vlm.prompting import load_prompt
from vlens.vlm.structured import Generation, ask_structured
from vlm_server import FakeChatServer, reply, status


class SheetVLM:
    """Generative fake: reads the contact sheet and says whether the top row is darker or
    brighter than the bottom row; answers text-only prompts with `text_answer`. Every
    request's messages are recorded."""

    name = "sheet"
    fingerprint = "sheet-v1"
    capabilities = frozenset({GENERATIVE})

    def __init__(self, text_answer: str = "", broken: bool = False) -> None:
        self.text_answer = text_answer
        self.broken = broken
        self.requests: list = []

    def _generate(self, reqs):
        out = []
        for r in reqs:
            self.requests.append(r)
            if self.broken:
                out.append(Generation(text="I think the images are nice."))
                continue
            if r.image.size == (8, 8):
                out.append(Generation(text=self.text_answer))
                continue
            a = np.asarray(r.image.convert("L"), np.float32)
            half = a.shape[0] // 2
            left = 2 * 8 + 8  # band + gap: the images start here
            top, bottom = a[:half, left:].mean(), a[half:, left:].mean()
            word = "dark" if top < bottom else "bright"
            out.append(Generation(text=json.dumps(
                {"shared": f"{word} images", "differences": [f"more {word} than the others"]})))
        return out

    def ask(self, images, prompt, variables):
        return ask_structured(self._generate, images, prompt, variables)


@pytest.fixture()
def run_dir(tmp_path):
    """A run with 6 dark and 6 bright 'star' images (samples.parquet + PNGs)."""
    rows = []
    for i in range(12):
        v = 20 if i < 6 else 230
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (32, 32), (v, v, v)).save(path)
        rows.append({"id": f"s{i}", "uri": str(path), "label": "star", "status": "ok",
                     "error": None})
    pd.DataFrame(rows).to_parquet(tmp_path / "samples.parquet")
    return tmp_path


def test_contrastive_only_backends_get_no_hooks(run_dir):
    assert describe_hook(ColourVLM(), run_dir) is None
    assert rewrite_hook(ColourVLM()) is None
    assert describe_hook(None, run_dir) is None


def test_contact_sheet_layout():
    top = [Image.new("RGB", (40, 20), (255, 0, 0))] * 3
    bottom = [Image.new("RGB", (20, 20), (0, 0, 255))]
    s = contact_sheet(top, bottom, tile=50, gap=4)
    assert s.size == (8 + 4 + 3 * 54, 4 + 2 * 54)
    a = np.asarray(s)
    assert tuple(a[4 + 25, 12 + 25]) == (255, 0, 0)  # centre of the first top tile
    assert tuple(a[58 + 25, 12 + 25]) == (0, 0, 255)  # centre of the first bottom tile
    assert tuple(a[58 + 25, 12 + 54 + 25]) == (128, 128, 128)  # no second bottom image
    assert tuple(a[10, 2]) == (255, 255, 255) and tuple(a[70, 2]) == (0, 0, 0)


def test_describe_reads_members_and_others_from_the_run(run_dir):
    vlm = SheetVLM()
    d = describe_hook(vlm, run_dir)
    assert d(["s0", "s1", "s2"], ["s7", "s8"]) == "dark images; more dark than the others"
    assert d(["s9", "s10"], ["s1"]) == "bright images; more bright than the others"
    req = vlm.requests[0]
    assert req.image.size == (2 * 8 + 8 + 3 * (TILE + 8), 8 + 2 * (TILE + 8))
    user = req.messages[1]["content"]
    assert 'all labelled "star"' in user and "TOP row (3 images)" in user
    assert "BOTTOM row (2 images)" in user
    # unknown ids are skipped; no readable member -> no description, no request
    n = len(vlm.requests)
    assert d(["nope"], ["s1"]) is None and len(vlm.requests) == n


def test_describe_failure_keeps_the_concept_name(run_dir):
    vlm = SheetVLM(broken=True)
    d = describe_hook(vlm, run_dir)
    assert d(["s0"], ["s8"]) is None
    assert len(vlm.requests) == 3  # first try + 2 repair attempts, then given up
    assert "could not be used" in vlm.requests[-1].messages[-1]["content"]
    # describe_slices: None leaves no description key (the slice keeps its name)
    slices = [{"class_index": 0, "member_rows": np.array([0])}]
    describe_slices(slices, np.array(["s0", "s8"]), np.array([0, 0]), np.array([False, True]),
                    d)
    assert "description" not in slices[0]
    describe_slices(slices, np.array(["s0", "s8"]), np.array([0, 0]), np.array([False, True]),
                    describe_hook(SheetVLM(), run_dir))
    assert slices[0]["description"] == "dark images; more dark than the others"


TEMPLATE = [{"text": "The model was analysed on 800 images; accuracy 46%.",
             "finding_ids": ["f001", "f002"]},
            {"text": "Images showing 'water' are predicted 'star' (61% vs 12%).",
             "finding_ids": ["f001"]}]


def _answer(sentences):
    return json.dumps({"sentences": sentences})


GOOD = [{"text": "We looked at 800 images, and the model got 46% right.",
         "finding_ids": ["f001", "f002"]},
        {"text": "Pictures with water are often called 'star' (61% vs 12%).",
         "finding_ids": ["f001"]}]


def test_accept_rewrite_rules():
    assert accept_rewrite(TEMPLATE, GOOD) is None
    assert accept_rewrite(TEMPLATE, GOOD[:1]) == "1 sentences for 2"
    swapped = [GOOD[0], {**GOOD[1], "finding_ids": ["f002"]}]
    assert accept_rewrite(TEMPLATE, swapped) == "sentence 2 cites other findings"
    invented = [GOOD[0], {**GOOD[1], "text": "Water gives 'star' 75% of the time (61% vs 12%)."}]
    assert accept_rewrite(TEMPLATE, invented) == \
        "sentence 2 has numbers not in the template: ['75']"


@pytest.mark.parametrize("script,want", [
    ([reply(_answer(GOOD))], GOOD),
    ([reply("not json"), reply(_answer(GOOD))], GOOD),  # repaired on the second attempt
    ([reply(_answer([GOOD[0], {**GOOD[1], "text": "Water: 99% star."}]))], TEMPLATE),
    ([reply(_answer([GOOD[1], GOOD[0]]))], TEMPLATE),  # ids moved between sentences
    ([reply(json.dumps({"sentences": []}))] * 3, TEMPLATE),  # schema: at least one sentence
    ([status(400)], TEMPLATE),  # transport failure
])
def test_rewrite_through_the_openai_compatible_server(script, want):
    with FakeChatServer() as srv:
        srv.push(*script)
        vlm = OpenAICompatVLM("fake", base_url=srv.base_url, max_retries=0, backoff=0.0)
        try:
            out = rewrite_hook(vlm)([dict(s) for s in TEMPLATE])
        finally:
            vlm.close()
        body = srv.requests[0].body
    assert out == want
    user = body["messages"][1]["content"]
    assert user[0]["type"] == "text" and json.dumps(TEMPLATE) in user[0]["text"]
    assert body["messages"][0]["content"] == load_prompt("narrative_rewrite").system


def test_rewrite_in_the_analysis_keeps_or_rejects(run_dir):
    rng = np.random.default_rng(0)
    n = 400
    label = rng.integers(0, 2, n)
    inp = AnalysisInput(ids=[f"s{i}" for i in range(n)], classes=["a", "b"], label=label,
                        pred=np.where(rng.random(n) < 0.8, label, 1 - label))
    base = analyze(inp).narrative
    assert base and all(s["finding_ids"] for s in base)

    def reworded(sents):
        return [{"text": "In short: " + s["text"], "finding_ids": s["finding_ids"]}
                for s in sents]

    vlm = SheetVLM(text_answer=_answer(reworded(base)))
    res = analyze(inp, hooks=Hooks(rewrite=rewrite_hook(vlm)))
    assert [s["text"] for s in res.narrative] == ["In short: " + s["text"] for s in base]
    assert "narrative_rewrite_rejected" not in res.run
    # an answer citing an unknown finding: the hook's own check already keeps the template
    bad = reworded(base)
    bad[0]["finding_ids"] = ["f999"]
    res = analyze(inp, hooks=Hooks(rewrite=rewrite_hook(SheetVLM(text_answer=_answer(bad)))))
    assert res.narrative == base
    # and narrative() itself rejects a rewrite that drops ids
    text, why = narrative(res, lambda s: [{"text": "x", "finding_ids": ["f999"]}])
    assert why == "rewrite dropped or invented finding ids" and text == base

"""The judge: the contrastive rule on a hand-built VLM with known scores (exact focus scores),
and the generative path against the loopback chat server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from vlens.errors import CapabilityError, ConfigError
from vlens.vlm import create_vlm
from vlens.vlm.base import CONTRASTIVE
from vlens.vlm.judge import (
    ContrastiveRule,
    area_factor,
    ground,
    guess_prediction,
    judge,
    visible_fraction,
)
from vlm_server import FakeChatServer, reply

RULE = ContrastiveRule(background=("grass", "an empty black image"))
CLASSES = ["cat", "dog"]


class FakeContrastive:
    """Scores come from a table keyed by the image's `info["key"]`; unknown concepts -> 0."""

    name = "fake-clip"
    fingerprint = "fake"
    capabilities = frozenset({CONTRASTIVE})

    def __init__(self, table: dict[str, dict[str, float]]):
        self.table = table
        self.calls: list[list[str]] = []

    def score(self, images, concepts):
        self.calls.append(list(concepts))
        return np.array([[self.table[im.info["key"]].get(c, 0.0) for c in concepts]
                         for im in images], np.float32)


def view(key: str, visible_pixels: int) -> Image.Image:
    """A 10x10 masked view with exactly `visible_pixels` non-black pixels."""
    a = np.zeros((10, 10, 3), np.uint8)
    a.reshape(-1, 3)[:visible_pixels] = (200, 100, 50)
    im = Image.fromarray(a)
    im.info["key"] = key
    return im


TABLE = {
    "on_object": {"cat": 0.6, "dog": 0.1, "grass": 0.2, "an empty black image": 0.1,
                  "water": 0.81, "star": 0.22},
    "scattered": {"cat": 0.2, "dog": 0.5, "grass": 0.25, "an empty black image": 0.05},
    "sigmoid": {"cat": 0.6, "dog": 0.9, "grass": 0.4, "an empty black image": 0.1},
    "black": {"cat": 0.3, "dog": 0.3, "grass": 0.1, "an empty black image": 0.3},
}


def test_contrastive_rule_exact_scores():
    vlm = FakeContrastive(TABLE)
    views = [view("on_object", 20), view("scattered", 75), view("sigmoid", 30), view("black", 0)]
    rows = judge(vlm, views, ["cat"] * 4, CLASSES, rule=RULE)
    # p = softmax(log-odds(s)); odds: cat 1.5, dog 1/9, grass .25, empty 1/9 -> q = 1, g = 1
    assert rows[0]["focus_score"] == 5.0 and rows[0]["object_visible"] == "full"
    assert rows[0]["distractors"] == []
    # odds: cat 1/4, dog 1, grass 1/3, empty 1/19 -> q = .25; area .75 -> g = .5 -> 0.625
    assert rows[1]["focus_score"] == pytest.approx(0.62, abs=0.011)
    assert rows[1]["object_visible"] == "none"
    assert rows[1]["distractors"] == ["dog", "grass"]  # p_j >= .5 * p_cat
    # odds: cat 1.5, dog 9, grass 2/3, empty 1/9 -> q = 1.5 / 9 -> 0.83, dog the distractor
    assert rows[2]["focus_score"] == 0.83 and rows[2]["object_visible"] == "none"
    assert rows[2]["distractors"] == ["dog"]  # grass: 2/3 < .5 * 1.5
    # nothing visible: g = 0 whatever the scores say
    assert rows[3]["focus_score"] == 0.0 and rows[3]["object_visible"] == "none"
    assert all(r["status"] == "ok" and r["judge_method"] == "contrastive_rule" for r in rows)
    assert rows[0]["description"] == "shows: cat 0.60, grass 0.20, dog 0.10"
    p_dog = 1 / (1 / 4 + 1 + 1 / 3 + 1 / 19)
    assert rows[1]["justification"] == (f"'cat' scores 0.25 of the best concept (dog "
                                        f"{p_dog:.2f}); visible area 75% (area factor 0.50)")
    assert vlm.calls == [["cat", "dog", "grass", "an empty black image"]]


def test_contrastive_rule_description_from_vocabulary_and_pred_order():
    vlm = FakeContrastive(TABLE)
    rows = judge(vlm, [view("on_object", 20), view("scattered", 20)], ["cat", "dog"], CLASSES,
                 vocabulary=["water", "star", "grass"], rule=RULE)
    assert rows[0]["description"] == "shows: water 0.81, star 0.22, grass 0.20"
    assert rows[1]["focus_score"] == 5.0  # predicted dog is the top concept of "scattered"
    assert ["dog", "cat", "grass", "an empty black image"] in vlm.calls


def test_area_helpers():
    assert visible_fraction(view("x", 37)) == pytest.approx(0.37)
    assert [area_factor(a, RULE) for a in (0.0, 0.004, 0.005, 0.5, 0.75, 1.0)] == \
        [0.0, 0.0, 1.0, 1.0, 0.5, 0.0]


def test_ground_contrastive_and_errors():
    vlm = FakeContrastive(TABLE)
    g = ground(vlm, [view("on_object", 5)], ["water", "star", "zebra"])
    np.testing.assert_allclose(g, [[0.81, 0.22, 0.0]], atol=1e-6)
    assert g.dtype == np.float32
    with pytest.raises(ConfigError, match="non-empty"):
        ground(vlm, [view("on_object", 5)], [])
    with pytest.raises(ConfigError, match="2 views but 1"):
        judge(vlm, [view("on_object", 5)] * 2, ["cat"], CLASSES)
    with pytest.raises(ConfigError, match="judge mode"):
        judge(vlm, [], [], CLASSES, mode="vibes")
    with pytest.raises(CapabilityError, match="not generative"):
        judge(vlm, [view("on_object", 5)], ["cat"], CLASSES, mode="generative")


GOOD = {"description": "an orange cat", "justification": "the cat fills the region",
        "focus_score": 4.5, "object_visible": "full", "distractors": ["grass"]}


def test_generative_judge_valid_and_invalid():
    bad = json.dumps(dict(GOOD, focus_score=7))
    with FakeChatServer() as srv:
        srv.push(reply("Here you go:\n```json\n" + json.dumps(GOOD) + "\n```"),
                 reply(bad), reply(bad), reply(bad))
        vlm = create_vlm(f"openai:judge-model@{srv.base_url}", concurrency=1, backoff=0.01)
        rows = judge(vlm, [view("a", 30), view("b", 30)], ["cat", "dog"], CLASSES)
    ok, err = rows
    assert {k: ok[k] for k in GOOD} == GOOD
    assert ok["status"] == "ok" and ok["judge_backend"] == "openai:judge-model"
    assert err["status"] == "error" and math.isnan(err["focus_score"])
    assert err["error"] == "invalid_answer: focus_score: Input should be less than or equal to 5"
    assert err["raw"] == bad and err["description"] is None
    first_user = srv.requests[0].body["messages"][1]["content"][0]["text"]
    assert 'predicted the class "cat"' in first_user and "cat, dog" in first_user
    assert len(srv.requests) == 4  # 1 + 3 bounded attempts


def test_ground_generative_nan_for_missing():
    with FakeChatServer() as srv:
        srv.push(reply(json.dumps({"scores": {"Water": 0.8, "star": 1.5, "moon": 1}})),
                 reply("no"), reply("no"), reply("no"))
        vlm = create_vlm(f"openai:m@{srv.base_url}", concurrency=1, backoff=0.01)
        g = ground(vlm, [view("a", 3), view("b", 3)], ["water", "star", "grass"])
    np.testing.assert_array_equal(g[0], np.array([0.8, 1.0, np.nan], np.float32))
    assert np.isnan(g[1]).all()
    assert "water, star, grass" in srv.requests[0].body["messages"][1]["content"][0]["text"]


def test_guess_prediction_contrastive_and_generative():
    vlm = FakeContrastive(TABLE)
    rows = guess_prediction(vlm, [view("on_object", 5), view("scattered", 5)],
                            [["cat", "dog"], ["cat", "dog", "grass"]])
    assert [r["guess"] for r in rows] == ["cat", "dog"]
    assert rows[1]["reason"] == "scores: dog 0.50, grass 0.25, cat 0.20"
    with FakeChatServer() as srv:
        srv.push(reply('{"guess": "Dog", "reason": "fur"}'),
                 reply('{"guess": "zebra", "reason": "stripes"}'))
        gen = create_vlm(f"openai:m@{srv.base_url}", concurrency=1)
        rows = guess_prediction(gen, [view("a", 3), view("b", 3)], [["cat", "dog"]] * 2)
    assert rows[0] == {"guess": "dog", "reason": "fur", "status": "ok", "error": None,
                       "raw": '{"guess": "Dog", "reason": "fur"}'}
    assert rows[1]["status"] == "error" and rows[1]["error"] == "guess_not_in_choices"
    assert "cat, dog" in srv.requests[0].body["messages"][1]["content"][0]["text"]
    with pytest.raises(ConfigError, match="1 views but 2 choices"):
        guess_prediction(vlm, [view("a", 3)], [["a"], ["b"]])


def test_background_concepts_rule_then_backend_then_default():
    from vlens.vlm.concepts import BACKGROUND_CONCEPTS

    vlm = FakeContrastive(TABLE)
    judge(vlm, [view("on_object", 10)], ["cat"], CLASSES, mode="contrastive")
    assert vlm.calls[-1] == ["cat", "dog", *BACKGROUND_CONCEPTS]  # the generic list
    assert "plain background" not in BACKGROUND_CONCEPTS  # every masked view is one
    assert {"text or tag", "an empty black image", "water"} <= set(BACKGROUND_CONCEPTS)
    vlm.judge_background = ("grass", "a tag")  # a backend naming what it knows
    judge(vlm, [view("on_object", 10)], ["cat"], CLASSES, mode="contrastive")
    assert vlm.calls[-1] == ["cat", "dog", "grass", "a tag"]
    judge(vlm, [view("on_object", 10)], ["cat"], CLASSES, mode="contrastive", rule=RULE)
    assert vlm.calls[-1] == ["cat", "dog", "grass", "an empty black image"]  # rule wins


def test_embedded_vlm_declares_the_scenes_it_was_trained_on():
    from vlens.vlm.embedded import EmbeddedVLM
    from vlens.world.attributes import BACKGROUNDS

    bg = EmbeddedVLM.judge_background
    assert set(BACKGROUNDS) <= set(bg) and bg[-2:] == ("text or tag", "an empty black image")

"""The embedded VLM: shipped weights, embeddings, calibrated scores, zero-shot quality, ask."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import BaseModel
from safetensors.torch import load_file, save_file

from vlens.errors import VLMError
from vlens.vlm.base import CONTRASTIVE, GENERATIVE, VLMS, AskResult, require
from vlens.vlm.embedded import EmbeddedVLM, evaluate_zero_shot
from vlens.vlm.embedded.backend import shipped_weights_dir
from vlens.vlm.embedded.data import make_views
from vlens.world.attributes import BACKGROUNDS

# Measured on the shipped weights with n=300, seed=EVAL_SEED (see docs/embedded-vlm.md):
# shape 0.177, color 0.93, background 1.0, size 0.747, lighting 0.99, tag 0.883.
# Thresholds sit a few points below. Shape is far below the 90% target (chance is 0.125):
# the tower has not learned shape yet; the threshold only guards "better than chance".
# Measured on the shipped weights (n=300, seed 777777): shape 0.920, colour 0.990,
# background 1.0, size 0.987, lighting 1.0, tag 1.0. Thresholds sit just below.
THRESHOLDS = {"shape": 0.90, "color": 0.97, "background": 0.98, "size": 0.96, "lighting": 0.98,
              "tag": 0.98}


@pytest.fixture(scope="module")
def vlm() -> EmbeddedVLM:
    return EmbeddedVLM()


@pytest.fixture(scope="module")
def views():
    return make_views(40, seed=4242, view_probs={"full": 1.0})


def test_registered_and_capabilities(vlm):
    assert "embedded" in VLMS
    made = VLMS.create("embedded")
    assert isinstance(made, EmbeddedVLM)
    assert made.capabilities == {CONTRASTIVE, GENERATIVE}
    require(made, CONTRASTIVE)
    require(made, GENERATIVE)


def test_fingerprint_is_weights_sha256(vlm):
    sha = hashlib.sha256((shipped_weights_dir() / "model.safetensors").read_bytes()).hexdigest()
    assert vlm.fingerprint.startswith(f"embedded:{sha}:v")
    assert EmbeddedVLM().fingerprint == vlm.fingerprint


def test_fingerprint_and_outputs_change_with_weights(vlm, tmp_path, views):
    shutil.copytree(shipped_weights_dir(), tmp_path / "w")
    state = load_file(str(tmp_path / "w" / "model.safetensors"))
    state["proj.2.bias"] = state["proj.2.bias"] + 0.5
    save_file(state, str(tmp_path / "w" / "model.safetensors"))
    other = VLMS.create(f"embedded:{tmp_path / 'w'}")
    assert other.fingerprint != vlm.fingerprint
    imgs = list(views.images[:3])
    assert not np.allclose(other.embed_images(imgs), vlm.embed_images(imgs))


def test_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(VLMError, match="train-embedded"):
        EmbeddedVLM(tmp_path)


def test_pickle_disguised_as_weights_is_refused(tmp_path):
    shutil.copytree(shipped_weights_dir(), tmp_path / "w")
    (tmp_path / "w" / "model.safetensors").write_bytes(pickle.dumps({"x": torch.zeros(2)}))
    with pytest.raises(VLMError, match="cannot be loaded"):
        EmbeddedVLM(tmp_path / "w")


def test_loading_never_unpickles(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    assert EmbeddedVLM().embed_images([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 384)


def test_embedding_shapes_and_norms(vlm, views):
    img = vlm.embed_images(list(views.images[:5]))
    txt = vlm.embed_texts(["a red circle", "grass", "nothing"])
    assert img.shape == (5, 384) and txt.shape == (3, 384)
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert vlm.embed_images([]).shape == (0, 384)


def test_determinism_and_batching(vlm, views):
    imgs = list(views.images[:8])
    a = vlm.embed_images(imgs)
    np.testing.assert_array_equal(a, vlm.embed_images(imgs))
    small = EmbeddedVLM(batch_size=3)
    np.testing.assert_allclose(small.embed_images(imgs), a, atol=1e-5)
    singles = np.concatenate([vlm.embed_images([im]) for im in imgs[:4]])
    np.testing.assert_allclose(singles, a[:4], atol=1e-5)


def test_pil_and_array_inputs_agree_and_are_resized(vlm, views):
    arr = views.images[0]
    pil = Image.fromarray(arr)
    np.testing.assert_allclose(vlm.embed_images([pil]), vlm.embed_images([arr]), atol=1e-6)
    big = pil.resize((128, 128), Image.NEAREST)
    assert vlm.embed_images([big]).shape == (1, 384)
    with pytest.raises(VLMError, match="image 1 is a str"):
        vlm.embed_images([pil, "not an image"])


def test_scores_are_calibrated_probabilities(vlm, views):
    s = vlm.score(list(views.images[:10]), ["grass", "water", "red", "circle"])
    assert s.shape == (10, 4)
    assert (s >= 0).all() and (s <= 1).all()
    cos = vlm.similarity(list(views.images[:10]), ["grass", "water", "red", "circle"])
    # monotone in cosine similarity: same ranking per image
    np.testing.assert_array_equal(np.argsort(s, 1), np.argsort(cos, 1))
    # true background scores higher on average than false ones
    bgs = list(BACKGROUNDS)
    sb = vlm.score(list(views.images), bgs)
    truth = np.array([[v["background"] == b for b in bgs] for v in views.values])
    assert sb[truth].mean() > 0.5 > sb[~truth].mean()


def test_zero_shot_accuracy_meets_thresholds(vlm):
    acc = evaluate_zero_shot(n=300, vlm=vlm, extras=False)
    assert set(acc) == set(THRESHOLDS)
    for fam, thr in THRESHOLDS.items():
        assert acc[fam] >= thr, (fam, acc[fam])


def test_synonym_still_scores_the_right_background(vlm):
    v = make_views(120, seed=99, view_probs={"full": 1.0})
    water = [im for im, val in zip(v.images, v.values, strict=True) if val["background"] == "water"]
    sand = [im for im, val in zip(v.images, v.values, strict=True) if val["background"] == "sand"]
    assert len(water) >= 8 and len(sand) >= 8
    concepts = ["the ocean", "a meadow", "a beach", "ice", "a brick wall", "clouds"]
    assert np.mean(vlm.score(water, concepts).argmax(1) == 0) >= 0.9
    assert np.mean(vlm.score(sand, concepts).argmax(1) == 2) >= 0.9


def test_black_image_scores_empty_highest(vlm):
    black = np.zeros((64, 64, 3), np.uint8)
    concepts = ["grass", "a red circle", "nothing", "water", "a blue square", "sky"]
    assert vlm.score([black], concepts)[0].argmax() == 2


def test_ask_returns_descriptions(vlm, views):
    res = vlm.ask(list(views.images[:6]), "Describe the image.", [{}] * 6)
    assert len(res) == 6 and all(isinstance(r, AskResult) and r.ok for r in res)
    hits = 0
    for r, val in zip(res, views.values[:6], strict=True):
        assert set(r.answer["concepts"]) >= {"shape", "color", "background"}
        assert r.answer["description"].startswith("a ")
        hits += r.answer["concepts"]["color"] == val["color"]
    assert hits >= 5
    black = vlm.ask([np.zeros((64, 64, 3), np.uint8)], "Describe.", [{}])[0]
    assert black.ok and black.answer["empty"] is True
    assert black.answer["description"].startswith("nothing visible")


def test_ask_with_unfillable_schema_gives_error_rows(vlm, views):
    class Verdict(BaseModel):
        verdict: str
        focus_score: float

    class Prompt:
        schema = Verdict

    res = vlm.ask(list(views.images[:2]), Prompt(), [{}, {}])
    assert [r.ok for r in res] == [False, False]
    assert all("cannot fill this schema" in r.error and r.raw.startswith("{") for r in res)
    json_schema = {"type": "object", "required": ["description"],
                   "properties": {"description": {"type": "string"}}}
    ok = vlm.ask(list(views.images[:1]), {"schema": json_schema}, [{}])
    assert ok[0].ok


def test_shipped_weights_are_small():
    size = (Path(shipped_weights_dir()) / "model.safetensors").stat().st_size
    assert size < 3_000_000

"""Training pieces of the embedded VLM: pair targets, the loss, views, captions, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vlens.vlm.embedded import vocab as V
from vlens.vlm.embedded.data import balanced_config, cam_view, captions_for, make_views
from vlens.vlm.embedded.train import augment, multi_positive_loss


def _img(**kw):
    return V.encode(kw, V.IGNORE)


def _cap(**kw):
    return V.encode(kw, V.NOT_SAID)


def test_pair_targets_true_false_undecidable():
    full = {"shape": "circle", "color": "red", "background": "grass", "size": "small",
            "lighting": "dark", "tag": "no tag", "blur": "sharp", "noise": "clean",
            "occlusion": "unoccluded", "empty": "not empty"}
    imgs = np.stack([
        _img(**full),
        _img(shape="circle", color="red", background="black", empty="not empty"),  # masked view
        V.encode({"background": "black", "empty": "empty"}, V.NONE),  # black image
    ])
    caps = np.stack([
        _cap(color="red"),
        _cap(background="grass"),
        _cap(shape="circle", lighting="dark"),
        _cap(empty="empty"),
        _cap(color="blue", lighting="dark"),
    ])
    got = V.pair_targets(imgs, caps)
    np.testing.assert_array_equal(got, [
        [1, 1, 1, 0, 0],
        [1, 0, -1, 0, 0],  # lighting unknown in the masked view -> undecidable; blue -> false
        [0, 0, 0, 1, 0],
    ])


def test_multi_positive_loss_exact_value():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    targets = torch.tensor([[1, 0], [-1, 1]])
    row0 = math.log(math.exp(2) + math.exp(0)) - 2.0
    col1 = math.log(math.exp(0) + math.exp(1)) - 1.0
    want = 0.5 * ((row0 + 0.0) / 2 + (0.0 + col1) / 2)
    assert float(multi_positive_loss(logits, targets)) == pytest.approx(want, rel=1e-6)
    # several positives: mass on positives counts together
    two = multi_positive_loss(torch.zeros(1, 2), torch.tensor([[1, 1]]))
    assert float(two) == pytest.approx(0.0, abs=1e-6)


def test_balanced_world_is_unbiased():
    cfg = balanced_config()
    assert len(cfg.classes) == 8 and cfg.biases == []
    assert len(set(cfg.lighting_probs.values())) == 1 and cfg.tag_rate == 0.5


def test_views_and_captions_are_consistent():
    v = make_views(120, seed=3)
    texts, codes = captions_for(v, 2, seed=3)
    assert v.images.shape == (120, 64, 64, 3) and v.images.dtype == np.uint8
    assert set(v.kinds) <= {"full", "object", "blob", "empty"} and "full" in v.kinds
    t = V.pair_targets(v.codes, codes[:, 0])
    assert (np.diag(t) == 1).all()  # every caption is true of its own view
    assert (V.pair_targets(v.codes, codes[:, 1]).diagonal() == 1).all()
    for kind, img in zip(v.kinds, v.images, strict=True):
        if kind == "empty":
            assert img.max() < 12
    # same seed, same data
    v2 = make_views(120, seed=3)
    np.testing.assert_array_equal(v.images, v2.images)
    assert captions_for(v2, 2, seed=3)[0] == texts


def test_object_view_blacks_out_everything_but_the_object():
    v = make_views(30, seed=5, view_probs={"object": 1.0})
    for img, val in zip(v.images, v.values, strict=True):
        assert val["background"] == "black"
        assert (img.max(-1) == 0).mean() > 0.4


def _item(seed=0, **over):
    from vlens.world.generator import generate

    cfg = balanced_config()
    for it in generate(cfg, 40, seed=seed):
        if all(it.attrs.get(k) == v for k, v in over.items()) and it.mask.sum() > 30:
            return it
    raise AssertionError("no such item")


def test_cam_views_are_labelled_by_what_the_mask_shows():
    """The label of a judge-style view follows where its visible pixels are, checked against
    the world's object mask: object views name the object, background views deny a shape."""
    seen = set()
    v = make_views(300, seed=8, view_probs={"cam": 1.0})
    texts, codes = captions_for(v, 2, seed=8)
    assert (V.pair_targets(v.codes, codes[:, 0]).diagonal() == 1).all()
    for img, val, code, a in zip(v.images, v.values, v.codes, v.attrs, strict=True):
        assert 0.005 < (img.max(-1) > 8).mean() < 0.6  # a cut-out, like a masked CAM view
        if code[V.FIDX["shape"]] == V.NONE:
            seen.add("no shape")
            assert "shape" not in val and "color" not in val
        elif "shape" in val:
            seen.add("shape")
            names = {a["shape"], *(d["shape"] for d in a["distractors"])}
            assert val["shape"] in names
        if val.get("background") == "black":
            seen.add("black")
    assert seen == {"no shape", "shape", "black"}
    rng = np.random.default_rng(0)
    it = _item(tag=False)
    known = V.item_values(it.attrs)
    mask = it.mask.astype(bool)
    for _ in range(30):
        view, vis, forced = cam_view(it.image, mask, it.attrs, known, rng)
        lit = view.max(-1) > 8
        on_obj = (lit & mask).sum() / max(lit.sum(), 1)
        if "shape" in vis and vis["shape"] == known["shape"]:
            assert on_obj > 0.4, on_obj
        if forced.get("shape") == V.NONE:
            assert on_obj < 0.1, on_obj


def test_train_cli_rejects_bad_view_mix():
    import vlens.cli.vlm_train  # noqa: F401  (attaches the command)
    from vlens.cli.apps import app
    from vlens.errors import ConfigError

    for bad, msg in [("full=1,bogus=2", "unknown names ['bogus']"), ("full", "name=number"),
                     ("full=0", "not all 0")]:
        r = CliRunner().invoke(app, ["vlm", "train-embedded", "--views", bad, "-n", "8"])
        assert isinstance(r.exception, ConfigError) and msg in str(r.exception), r.exception


@pytest.mark.slow
def test_train_embedded_cli_writes_loadable_weights(tmp_path):
    import vlens.cli.vlm_train  # noqa: F401  (attaches the command)
    from vlens.cli.apps import app
    from vlens.vlm.embedded import EmbeddedVLM

    out = tmp_path / "w"
    r = CliRunner().invoke(app, ["vlm", "train-embedded", "--out", str(out), "-n", "256",
                                 "--epochs", "1", "--threads", "1", "--eval-n", "0",
                                 "--views", "full=1,cam=1"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["view_probs"] == {"full": 1.0, "cam": 1.0}
    assert cfg["train"]["n"] == 256 and cfg["train"]["epochs"] == 1
    assert cfg["train"]["steps"] == 4 and cfg["train"]["device"] == "cpu"
    assert cfg["train"]["family_weights"] == {"shape": 4.0, "size": 2.0}
    vlm = EmbeddedVLM(out)
    e = vlm.embed_images([np.zeros((64, 64, 3), np.uint8)])
    assert e.shape == (1, 384)


def test_augment_flips_and_shifts_without_losing_the_object():
    x = torch.zeros(16, 3, 10, 10)
    x[:, :, 4, 2] = 1.0  # one bright pixel at row 4, column 2
    rng = np.random.default_rng(0)
    flipped = augment(x, rng, shift=0)
    cols = {int(torch.nonzero(im[0])[0, 1]) for im in flipped}
    assert cols == {2, 7}  # kept or mirrored, nothing else
    assert torch.equal(flipped.sum((1, 2, 3)), x.sum((1, 2, 3)))
    moved = augment(x, np.random.default_rng(1), shift=2)
    assert moved.shape == x.shape
    for im in moved:
        (r, c), = torch.nonzero(im[0]).tolist()
        assert abs(r - 4) <= 2 and min(abs(c - 2), abs(c - 7)) <= 2

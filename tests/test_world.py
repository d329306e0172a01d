"""vlens.world: determinism, attribute/mask truth, planted-bias statistics, manifest, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vlens.errors import ConfigError
from vlens.world import (
    ATTRIBUTES,
    SYNONYMS,
    WorldConfig,
    bias_groups,
    caption,
    generate,
    make_dataset,
    make_item,
    read_manifest,
)
from vlens.world.generator import sample_attrs, tag_pattern, tag_window
from vlens.world.render import texture

CLEAN = {
    "occlusion_rate": 0.0,
    "tag_rate": 0.0,
    "blur_rate": 0.0,
    "noise_rate": 0.0,
    "distractor_probs": {0: 1.0},
}


def _within(k: int, n: int, p: float, z: float = 4.5) -> bool:
    """k successes out of n are consistent with rate p (normal bound, z sigmas, +1 slack)."""
    sd = math.sqrt(max(n * p * (1 - p), 1e-12))
    return abs(k - n * p) <= z * sd + 1


# ---- configs ------------------------------------------------------------------------------
def test_shipped_configs_load_and_pair_with_balanced_tests():
    names = WorldConfig.shipped()
    for need in [
        "demo_train",
        "demo_test",
        "balanced",
        "spurious_background",
        "shortcut_tag",
        "rare_slice",
        "color_correlation",
        "label_noise",
    ]:
        assert need in names
    for name in names:
        cfg = WorldConfig.load(name)
        assert cfg.name == name
        if cfg.test:  # a biased train config: planted truth present, test config balanced
            assert cfg.planted(), name
            test = WorldConfig.load(cfg.test)
            assert test.biases == [] and test.classes == cfg.classes
    kinds = {b["kind"] for n in names for b in WorldConfig.load(n).planted()}
    assert kinds == {"spurious", "shortcut", "rare_slice", "label_noise"}
    assert WorldConfig.load("color_correlation").planted()[0]["attribute"] == "color"


def test_planted_is_machine_readable():
    p = WorldConfig.load("demo_train").planted()
    assert p[0] == {
        "kind": "spurious",
        "name": "star_on_water",
        "class": "star",
        "attribute": "background",
        "value": "water",
        "p": 0.97,
        "other_p": 0.01,
        "description": "star appears with background=water (p=0.97)",
    }
    assert p[1]["kind"] == "shortcut" and p[1]["class"] == "cross" and p[1]["attribute"] == "tag"
    assert p[2]["where"] == {"size": "small", "lighting": "dark"}


def test_load_from_yaml_path_and_bad_inputs(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: mine\nclasses: [circle, star]\nbiases:\n  - {kind: shortcut, class: star, p: 1.0}\n"
    )
    cfg = WorldConfig.load(path)
    assert cfg.classes == ["circle", "star"] and cfg.biases[0].name == "shortcut_0"
    with pytest.raises(ConfigError, match="neither a file nor a shipped config.*demo_train"):
        WorldConfig.load("no_such_world")
    cases = {
        "classes: [circle, blob]\n": "unknown shape",
        "classes: [circle]\n": "at least 2 classes",
        "biases: [{kind: magic, p: 0.5}]\n": "magic",
        "biases: [{kind: shortcut, class: star, p: 1.5}]\n": "less than or equal to 1",
        "biases: [{kind: shortcut, class: diamond, p: 0.5}]\n": "class 'diamond' is not in",
        "biases: [{kind: spurious, class: star, attribute: background, value: lava, p: .9}]\n": (
            "background='lava' cannot be drawn"
        ),
        "size_probs: {small: 1, huge: 1}\n": "unknown size",
        "bogus_field: 1\n": "bogus_field",
        "- just a list\n": "must be a YAML mapping",
        "a: [unclosed\n": "not valid YAML",
    }
    for text, msg in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            WorldConfig.load(path)


# ---- determinism --------------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_differs():
    a = list(generate("demo_train", 6, seed=3))
    b = list(generate("demo_train", 6, seed=3))
    c = list(generate("demo_train", 6, seed=4))
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b, strict=True))
    assert all(x.attrs == y.attrs for x, y in zip(a, b, strict=True))
    assert sum(x.image.tobytes() != z.image.tobytes() for x, z in zip(a, c, strict=True)) == 6
    # item i depends only on (seed, i): a chunk starting mid-way gives the same items
    d = list(generate("demo_train", 2, seed=3, start=4))
    assert d[0].image.tobytes() == a[4].image.tobytes() and d[1].attrs == a[5].attrs


def test_item_shapes_and_96px():
    it = make_item(WorldConfig(image_size=96), 0, 0)
    assert it.image.shape == (96, 96, 3) and it.image.dtype == np.uint8
    assert it.mask.shape == (96, 96) and it.mask.dtype == bool
    assert set(ATTRIBUTES) >= {"shape", "color", "background", "size", "lighting", "tag"}


# ---- attributes vs pixels -----------------------------------------------------------------
def test_mask_area_grows_with_size_and_box_encloses_mask():
    cfg = WorldConfig(**CLEAN)
    areas: dict[tuple[str, str], list[int]] = {}
    for it in generate(cfg, 240, seed=0):
        a = it.attrs
        assert a["mask_area"] == it.mask.sum() > 0
        x0, y0, x1, y1 = a["box"]
        ys, xs = np.nonzero(it.mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert x0 <= a["x"] <= x1 and y0 <= a["y"] <= y1  # the object is centred in its box
        areas.setdefault((a["shape"], a["size"]), []).append(a["mask_area"])
    for shape in cfg.classes:
        s, m, lg = (areas[(shape, k)] for k in ("small", "medium", "large"))
        assert max(s) < min(m) and max(m) < min(lg), shape


def test_object_pixels_have_the_object_colour():
    from vlens.world.attributes import COLOR_RGB

    for it in generate(WorldConfig(**CLEAN), 30, seed=1):
        if it.attrs["lighting"] != "normal":
            continue
        inner = it.image[it.mask].astype(float).mean(0)
        assert np.abs(inner - COLOR_RGB[it.attrs["color"]]).max() < 25


def test_tag_pixels_present_exactly_when_tagged():
    cfg = WorldConfig(tag_rate=0.5, tag_corners=["top-left", "bottom-right"])
    seen = {True: 0, False: 0}
    for it in generate(cfg, 60, seed=2):
        tagged = it.attrs["tag"]
        seen[tagged] += 1
        for corner in ("top-left", "bottom-right"):
            ys, xs = tag_window(64, corner)
            hit = np.array_equal(it.image[ys, xs], tag_pattern(64))
            assert hit == (tagged and it.attrs["tag_corner"] == corner)
            if hit:
                assert not it.mask[ys, xs].any()
    assert seen[True] > 10 and seen[False] > 10


def test_backgrounds_have_distinct_texture_statistics():
    stats = {}
    for bg in ATTRIBUTES["background"]:
        t = texture(bg, 64)
        stats[bg] = (t.mean((0, 1)), np.abs(np.diff(t, axis=0)).mean())  # colour, edge energy
    m = {k: v[0] for k, v in stats.items()}
    assert m["water"][2] > m["water"][0] + 60  # blue
    assert m["grass"][1] > max(m["grass"][0], m["grass"][2]) + 30  # green
    assert m["brick"][0] > m["brick"][1] + 50  # red
    assert m["snow"].mean() > max(v.mean() for k, v in m.items() if k != "snow")  # brightest
    assert m["sand"][0] > m["sand"][2] + 40  # warm
    # mortar lines and sand grain are sharp; sky and snow are smooth
    assert min(stats["brick"][1], stats["sand"][1]) > 3 * max(stats["sky"][1], stats["snow"][1])
    means = list(m.values())
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            assert np.abs(means[i] - means[j]).max() > 15


# ---- planted biases -----------------------------------------------------------------------
def test_bias_statistics_match_config():
    cfg = WorldConfig.load("demo_train")
    n = 4000
    rows = [sample_attrs(cfg, 11, i)[0] for i in range(n)]
    star = [r for r in rows if r["shape"] == "star"]
    other = [r for r in rows if r["shape"] != "star"]
    assert _within(sum(r["background"] == "water" for r in star), len(star), 0.97)
    assert _within(sum(r["background"] == "water" for r in other), len(other), 0.01)
    cross = [r for r in rows if r["shape"] == "cross"]
    notcross = [r for r in rows if r["shape"] != "cross"]
    assert _within(sum(r["tag"] for r in cross), len(cross), 0.95)
    assert _within(sum(r["tag"] for r in notcross), len(notcross), 0.01)
    assert _within(sum(r["size"] == "small" and r["lighting"] == "dark" for r in rows), n, 0.005)
    # class balance untouched
    assert _within(len(star), n, 1 / 6)
    # balanced test: background independent of class
    test = WorldConfig.load("demo_test")
    trows = [sample_attrs(test, 11, i)[0] for i in range(n)]
    tstar = [r for r in trows if r["shape"] == "star"]
    assert _within(sum(r["background"] == "water" for r in tstar), len(tstar), 1 / 6)
    assert _within(sum(r["tag"] for r in trows), n, 0.5)


def test_label_noise_rate_and_true_label():
    cfg = WorldConfig.load("label_noise")
    rows = [sample_attrs(cfg, 5, i)[0] for i in range(3000)]
    noisy = [r for r in rows if r["label_noisy"]]
    assert _within(len(noisy), 3000, 0.1)
    assert all((r["label"] != r["true_label"]) == r["label_noisy"] for r in rows)
    assert all(r["true_label"] == r["shape"] and r["label"] in cfg.classes for r in rows)
    fixed = WorldConfig(
        biases=[{"kind": "label_noise", "rate": 0.5, "classes": ["circle"], "to": "square"}]
    )
    rows = [sample_attrs(fixed, 5, i)[0] for i in range(600)]
    flipped = [r for r in rows if r["label_noisy"]]
    assert all(r["true_label"] == "circle" and r["label"] == "square" for r in flipped)
    circles = sum(r["true_label"] == "circle" for r in rows)
    assert _within(len(flipped), circles, 0.5)


def test_bias_groups_by_hand():
    cfg = WorldConfig.load("demo_train")
    base = {"tag": False, "size": "large", "lighting": "normal", "color": "red"}
    g = bias_groups({**base, "shape": "star", "label": "star", "background": "water"}, cfg.biases)
    assert g == {
        "bias_star_on_water": "aligned",
        "bias_cross_tag": "neutral",
        "bias_small_dark": "other",
    }
    g = bias_groups(
        {
            **base,
            "shape": "cross",
            "label": "cross",
            "background": "water",
            "size": "small",
            "lighting": "dark",
        },
        cfg.biases,
    )
    assert g == {
        "bias_star_on_water": "conflicting",
        "bias_cross_tag": "conflicting",
        "bias_small_dark": "slice",
    }
    noise = WorldConfig.load("label_noise").biases
    assert bias_groups(
        {**base, "shape": "star", "label": "cross", "true_label": "star", "background": "sky"},
        noise,
    ) == {"bias_noisy_labels": "noisy"}


def test_items_carry_bias_flags():
    it = next(generate("demo_train", 1, seed=0))
    for k in ("bias_star_on_water", "bias_cross_tag", "bias_small_dark", "bias_aligned"):
        assert k in it.attrs


# ---- captions -----------------------------------------------------------------------------
def test_captions_name_the_attributes_with_varied_wording():
    attrs = {
        "shape": "star",
        "true_label": "star",
        "color": "blue",
        "background": "water",
        "size": "small",
        "lighting": "dark",
        "tag": True,
        "blur": False,
        "noise": True,
        "occlusion": False,
    }
    caps = {caption(attrs, np.random.default_rng(s)) for s in range(40)}
    assert len(caps) >= 15
    for c in caps:
        low = c.lower()
        assert any(w in low for w in SYNONYMS["star"])
        assert any(w in low for w in SYNONYMS["blue"])
        assert any(w.lower() in low for w in SYNONYMS["water"])
        assert any(w in low for w in SYNONYMS["tag"])
        assert "  " not in c and " ," not in c
    for fam in ("shape", "color", "background", "size", "lighting"):
        for v in ATTRIBUTES[fam]:
            assert SYNONYMS[v][0] or v == "normal"
    # the caption uses the true shape, not a noisy label
    noisy = {**attrs, "label": "circle"}
    assert "circle" not in caption(noisy, np.random.default_rng(0))


# ---- on disk ------------------------------------------------------------------------------
def test_manifest_round_trip(tmp_path):
    out = tmp_path / "w"
    path = make_dataset("demo_train", out, 12, seed=7, workers=1)
    rows = read_manifest(path)
    assert [r["id"] for r in rows] == [f"{i:06d}" for i in range(12)]
    for r, it in zip(rows, generate("demo_train", 12, seed=7), strict=True):
        assert r["label"] == it.attrs["label"] and r["box"] == it.attrs["box"]
        assert {k: r[k] for k in it.attrs} == json.loads(json.dumps(it.attrs))
        img = Image.open(out / r["path"])
        assert img.size == (64, 64) and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), it.image)
        assert np.array_equal(np.asarray(Image.open(out / r["mask_path"])), it.mask)
    meta = (out / "world.yaml").read_text()
    assert "star_on_water" in meta and "seed: 7" in meta


def test_parallel_output_equals_serial(tmp_path):
    a = make_dataset("demo_test", tmp_path / "a", 40, seed=2, workers=1)
    b = make_dataset("demo_test", tmp_path / "b", 40, seed=2, workers=2, chunk_size=7)
    assert a.read_text() == b.read_text()
    for name in ("000000", "000039"):
        assert (tmp_path / "a/images" / f"{name}.png").read_bytes() == (
            tmp_path / "b/images" / f"{name}.png"
        ).read_bytes()


def test_cli_world_make(tmp_path):
    from vlens.cli import app

    res = CliRunner().invoke(
        app, ["world", "make", "shortcut_tag", "--out", str(tmp_path), "-n", "5", "--seed", "1"]
    )
    assert res.exit_code == 0, res.output
    assert "wrote 5 images" in res.output
    rows = read_manifest(tmp_path)
    assert len(rows) == 5 and rows[0] == {**rows[0], "id": "000000"}
    first = next(generate("shortcut_tag", 1, seed=1))
    assert rows[0]["caption"] == first.attrs["caption"]
    bad = CliRunner().invoke(app, ["world", "make", "nope", "--out", str(tmp_path)])
    assert isinstance(bad.exception, ConfigError)
    res = CliRunner().invoke(app, ["world", "configs"])
    assert res.exit_code == 0 and "star appears with background=water" in res.output

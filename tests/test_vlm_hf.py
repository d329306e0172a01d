"""The hf: backend on tiny random transformers models built from configs (no downloads).

Each family is built with a seed, saved with `save_pretrained` (model + processor with a
tiny word-level tokenizer made locally), and loaded through `create_vlm("hf:<dir>")`
exactly as a user would.
"""

from __future__ import annotations

import numpy as np
import pytest
import tokenizers as tk
import torch
import transformers as tf
from PIL import Image

from vlens.errors import CapabilityError, ConfigError, ModelError
from vlens.vlm import create_vlm
from vlens.vlm.base import CONTRASTIVE, GENERATIVE, require

_PLAIN_WORDS = (
    "a an photo of the image showing close-up red blue green cat dog water sky star grass "
    "user assistant system : , . { } \" 0 1 2 3 4 5 caption json"
)
WORDS = ["<pad>", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]", "<image>", *_PLAIN_WORDS.split()]
TOL = 1e-5  # batched vs single embeddings / scores (float32 on CPU)


def tiny_tokenizer(bos_eos: bool = False) -> tf.PreTrainedTokenizerFast:
    """Word-level tokenizer; `bos_eos` wraps texts in <s> ... </s> like CLIP's tokenizer
    (CLIP/SigLIP text towers pool at the end-of-text token)."""
    t = tk.Tokenizer(tk.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    if bos_eos:
        t.post_processor = tk.processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    t.normalizer = tk.normalizers.Sequence([tk.normalizers.Lowercase(),
                                            tk.normalizers.Replace(".", " . ")])
    t.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
    t.decoder = tk.decoders.WordPiece(prefix="##")  # joins tokens with spaces
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=t, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", cls_token="[CLS]", sep_token="[SEP]", model_max_length=16,
        extra_special_tokens={"image_token": "<image>"})


TEXT = dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16)
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              image_size=32, patch_size=8)
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


def build(kind: str, path, seed: int = 0) -> str:
    torch.manual_seed(seed)
    tok = tiny_tokenizer(bos_eos=kind in ("clip", "siglip", "siglip2"))
    if kind == "clip":
        m = tf.CLIPModel(tf.CLIPConfig(text_config=dict(TEXT, eos_token_id=3, bos_token_id=2,
                                                         pad_token_id=0),
                                       vision_config=VISION, projection_dim=8))
        p = tf.CLIPProcessor(image_processor=tf.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok)
    elif kind == "siglip":
        m = tf.SiglipModel(tf.SiglipConfig(text_config=TEXT, vision_config=VISION))
        p = tf.SiglipProcessor(image_processor=tf.SiglipImageProcessor(
            size={"height": 32, "width": 32}), tokenizer=tok)
    elif kind == "siglip2":  # NaFlex: patches + attention mask + spatial shapes
        vision = {k: v for k, v in VISION.items() if k != "image_size"}
        m = tf.Siglip2Model(tf.Siglip2Config(
            text_config=dict(TEXT, eos_token_id=3, bos_token_id=2, pad_token_id=0),
            vision_config=dict(vision, num_patches=16)))
        p = tf.Siglip2Processor(image_processor=tf.Siglip2ImageProcessor(
            patch_size=8, max_num_patches=16), tokenizer=tok)
    elif kind == "blip":
        text = dict(TEXT, max_position_embeddings=32, encoder_hidden_size=16, bos_token_id=2,
                    eos_token_id=3, pad_token_id=0, sep_token_id=5)
        m = tf.BlipForConditionalGeneration(tf.BlipConfig(text_config=text, vision_config=VISION,
                                                          projection_dim=8))
        p = tf.BlipProcessor(image_processor=tf.BlipImageProcessor(
            size={"height": 32, "width": 32}), tokenizer=tok)
    elif kind == "llava":
        vc = tf.CLIPVisionConfig(**VISION, projection_dim=16)
        lc = tf.LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                            max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                            eos_token_id=3)
        m = tf.LlavaForConditionalGeneration(tf.LlavaConfig(
            vision_config=vc, text_config=lc, image_token_index=WORDS.index("<image>"),
            vision_feature_select_strategy="default", vision_feature_layer=-1))
        p = tf.LlavaProcessor(image_processor=tf.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok,
            patch_size=8, vision_feature_select_strategy="default",
            num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    elif kind == "qwen2vl":  # Qwen2-VL: merged patches, M-RoPE, <|image_pad|> tokens
        specials = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
        words = WORDS + specials
        t = tk.Tokenizer(tk.models.WordLevel({w: i for i, w in enumerate(words)},
                                             unk_token="<unk>"))
        t.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
        t.add_special_tokens(specials)
        t.decoder = tk.decoders.WordPiece(prefix="##")
        qtok = tf.PreTrainedTokenizerFast(
            tokenizer_object=t, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
            extra_special_tokens={"image_token": specials[0], "video_token": specials[1]})
        ids = {w: words.index(w) for w in specials}
        m = tf.Qwen2VLForConditionalGeneration(tf.Qwen2VLConfig(
            text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                             eos_token_id=3,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [1, 1, 2]}),
            vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=2,
                               patch_size=8, spatial_merge_size=2, temporal_patch_size=2),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"]))
        geometry = dict(patch_size=8, merge_size=2, temporal_patch_size=2)
        p = tf.Qwen2VLProcessor(
            image_processor=tf.Qwen2VLImageProcessor(**geometry, min_pixels=1024,
                                                     max_pixels=1024),
            video_processor=tf.Qwen2VLVideoProcessor(**geometry), tokenizer=qtok,
            chat_template=CHAT_TEMPLATE.replace(
                "<image> ", "<|vision_start|> <|image_pad|> <|vision_end|> "))
    else:
        raise AssertionError(kind)
    m.save_pretrained(path)
    p.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    kinds = ("clip", "siglip", "siglip2", "blip", "llava", "qwen2vl")
    return {k: build(k, root / k) for k in kinds}


def images(n: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            for _ in range(n)]


CONCEPTS = ["cat", "dog", "water", "red star"]


@pytest.fixture(scope="module")
def clip(dirs):
    return create_vlm(f"hf:{dirs['clip']}", device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def siglip(dirs):
    return create_vlm(f"hf:{dirs['siglip']}", device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def siglip2(dirs):
    return create_vlm(f"hf:{dirs['siglip2']}", device="cpu", batch_size=4)


@pytest.mark.parametrize("name,dim", [("clip", 8), ("siglip", 16), ("siglip2", 16)])
def test_contrastive_shapes_norms(request, name, dim):
    vlm = request.getfixturevalue(name)
    require(vlm, CONTRASTIVE)
    assert vlm.capabilities == frozenset({CONTRASTIVE})
    e = vlm.embed_images(images(5))
    t = vlm.embed_texts(["a photo of a cat", "dog"])
    assert e.shape == (5, dim) and t.shape == (2, dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    s = vlm.score(images(3), CONCEPTS)
    assert s.shape == (3, 4) and (s >= 0).all() and (s <= 1).all()
    assert vlm.score([], CONCEPTS).shape == (0, 4)
    with pytest.raises(ConfigError, match="at least one concept"):
        vlm.score(images(1), [])
    with pytest.raises(CapabilityError, match="not generative"):
        require(vlm, GENERATIVE)
    with pytest.raises(CapabilityError, match="not generative"):
        vlm.ask(images(1), "describe")


def test_clip_softmax_calibration_matches_model(clip):
    """CLIP scores = softmax(exp(logit_scale) * cos) over the prompt-ensembled concepts."""
    s = clip.score(images(2), CONCEPTS)
    np.testing.assert_allclose(s.sum(1), 1, atol=1e-5)
    assert s.std(axis=1).min() > 1e-4  # concepts are told apart (text pooled at </s>)
    ids = clip.processor.tokenizer(["a cat"])["input_ids"][0]
    assert ids == [2, WORDS.index("a"), WORDS.index("cat"), 3]
    img = clip.embed_images(images(2))
    txt = clip.concept_embeddings(CONCEPTS)
    scale = float(clip.model.logit_scale.detach().exp())
    ref = torch.softmax(torch.tensor(scale * img @ txt.T), dim=1).numpy()
    np.testing.assert_allclose(s, ref, atol=1e-6)
    # the ensemble is the renormalised mean of the per-template text embeddings
    per = clip.embed_texts([t.format("cat") for t in clip.templates])
    mean = per.mean(0) / np.linalg.norm(per.mean(0))
    np.testing.assert_allclose(txt[0], mean, atol=1e-6)


def test_siglip_sigmoid_with_bias(siglip):
    with torch.no_grad():
        siglip.model.logit_bias.fill_(-2.0)
        siglip.model.logit_scale.fill_(np.log(10.0))
    s = siglip.score(images(2), CONCEPTS)
    cos = siglip.embed_images(images(2)) @ siglip.concept_embeddings(CONCEPTS).T
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-(10 * cos - 2))), atol=1e-6)
    assert not np.allclose(s.sum(1), 1)  # independent sigmoids, not a distribution


@pytest.mark.parametrize("name", ["clip", "siglip", "siglip2"])
def test_batching_equivalence_and_determinism(request, name):
    """A batch of 4 equals 4 single calls (|diff| <= 1e-5) and repeated calls are identical."""
    vlm = request.getfixturevalue(name)
    ims = images(4)
    batched = vlm.embed_images(ims)
    singles = np.concatenate([vlm.embed_images([im]) for im in ims])
    np.testing.assert_allclose(batched, singles, atol=TOL)
    np.testing.assert_array_equal(batched, vlm.embed_images(ims))
    texts = ["cat", "a photo of a red dog", "water", "sky"]
    np.testing.assert_allclose(vlm.embed_texts(texts),
                               np.concatenate([vlm.embed_texts([t]) for t in texts]), atol=TOL)
    # batch_size=3 splits 4 images into 3 + 1; same numbers
    vlm.batch_size = 3
    try:
        np.testing.assert_allclose(vlm.score(ims, CONCEPTS),
                                   np.concatenate([vlm.score([i], CONCEPTS) for i in ims]),
                                   atol=TOL)
    finally:
        vlm.batch_size = 4


def test_fingerprints(dirs, tmp_path, clip):
    same = create_vlm(f"hf:{dirs['clip']}", device="cpu")
    assert same.fingerprint == clip.fingerprint and clip.fingerprint.startswith("hf:")
    other = build("clip", tmp_path / "clip2", seed=1)  # same config, other weights
    assert create_vlm(f"hf:{other}").fingerprint != clip.fingerprint
    tpl = create_vlm(f"hf:{dirs['clip']}", templates=("a {}",))
    assert tpl.fingerprint != clip.fingerprint
    # revision given explicitly replaces the weights digest
    rev = create_vlm(f"hf:{dirs['clip']}", revision="abc123")
    assert "@abc123|" in rev.fingerprint


def test_generative_fingerprint_has_prompt_version(dirs, tmp_path):
    from vlens.vlm.prompting import PROMPT_DIR

    for p in PROMPT_DIR.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    a = create_vlm(f"hf:{dirs['blip']}", prompt_dir=str(tmp_path)).fingerprint
    f = tmp_path / "describe.yaml"
    f.write_text(f.read_text().replace("version: 1", "version: 7"))
    b = create_vlm(f"hf:{dirs['blip']}", prompt_dir=str(tmp_path)).fingerprint
    assert a != b


def test_blip_captioner(dirs):
    vlm = create_vlm(f"hf:{dirs['blip']}", batch_size=4)
    assert vlm.family == "captioner" and vlm.capabilities == frozenset({GENERATIVE})
    ims = images(4)
    caps = vlm.caption(ims, max_new_tokens=6)
    assert caps == [vlm.caption([im], max_new_tokens=6)[0] for im in ims]
    assert caps == vlm.caption(ims, max_new_tokens=6)
    res = vlm.ask(ims[:2], "describe")
    assert all(r.answer == {"caption": r.answer["caption"]} for r in res if r.ok)
    assert [r.ok for r in res] == [bool(c) for c in vlm.caption(ims[:2], max_new_tokens=120)]
    [judge] = vlm.ask(ims[:1], "judge", [{"predicted_class": "cat", "class_names": ["cat"]}])
    assert judge.answer is None and judge.error.startswith("unsupported_prompt")
    with pytest.raises(CapabilityError, match="not contrastive"):
        vlm.score(ims, ["cat"])


@pytest.fixture(scope="module", params=["llava", "qwen2vl"])
def chat(dirs, request):
    return create_vlm(f"hf:{dirs[request.param]}", batch_size=4, max_new_tokens=8,
                      max_attempts=2)


def test_chat_template_batched_generation(chat):
    from vlens.vlm.prompting import load_prompt
    from vlens.vlm.structured import Request

    assert chat.family == "chat"
    p = load_prompt("describe")
    sys_, user = p.render({})
    msgs = [{"role": "system", "content": sys_}, {"role": "user", "content": user}]
    ims = images(4)
    gens = chat.generate([Request(im, msgs, 8) for im in ims])
    singles = [chat.generate([Request(im, msgs, 8)])[0] for im in ims]
    assert [g.text for g in gens] == [g.text for g in singles]
    assert all(g.error is None and g.usage["completion_tokens"] == 8 for g in gens)
    assert gens[0].usage["prompt_tokens"] > 4  # image tokens (LLaVA 16, Qwen2-VL 4) + text


def test_chat_ask_random_model_gives_error_rows_with_raw(chat):
    """A random model cannot answer in JSON: bounded attempts, then error rows keeping raw."""
    res = chat.ask(images(2), "judge", [{"predicted_class": "cat", "class_names": ["cat"]}] * 2)
    for r in res:
        assert r.answer is None and r.attempts == 2
        assert r.error.startswith("invalid_answer") and isinstance(r.raw, str)


def test_bad_specs(tmp_path):
    with pytest.raises(ConfigError, match="needs a model"):
        create_vlm("hf")
    with pytest.raises(ModelError, match="does not exist"):
        create_vlm(f"hf:{tmp_path}/nope")
    with pytest.raises(ModelError, match="no config.json"):
        create_vlm(f"hf:{tmp_path}")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        create_vlm("hf:someorg/not-cached-model-xyz")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelError, match="not supported"):
        create_vlm(f"hf:{tmp_path}")


def test_dtype_option(dirs):
    with pytest.raises(ConfigError, match="unknown dtype"):
        create_vlm(f"hf:{dirs['clip']}", dtype="float13")
    half = create_vlm(f"hf:{dirs['clip']}", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    assert half.embed_images(images(1)).dtype == np.float32


def test_cli_check_hf(dirs):
    from typer.testing import CliRunner

    import vlens.cli.vlm  # noqa: F401  (attaches `vlm check`)
    from vlens.cli.apps import app

    r = CliRunner().invoke(app, ["vlm", "check", "--vlm", f"hf:{dirs['clip']}", "--images", "2",
                                 "--concepts", "cat,dog", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "capabilities contrastive" in r.output and "ask: skipped" in r.output
    assert "score (" in r.output and r.output.count("0.") >= 4
    bad = CliRunner().invoke(app, ["vlm", "check", "--vlm", f"hf:{dirs['clip']}",
                                   "--base-url", "http://x"])
    assert bad.exit_code != 0 and "does not accept" in str(bad.exception)


def test_loads_from_hub_cache_offline(tmp_path):
    """A hub id resolves through the local cache (HF_HUB_OFFLINE=1); the revision (snapshot
    commit) is the weights part of the fingerprint."""
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-clip"
    build("clip", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    vlm = create_vlm("hf:tiny-org/tiny-clip", cache_dir=tmp_path)
    assert vlm.fingerprint.startswith(f"hf:tiny-org/tiny-clip@{commit}|contrastive|")
    assert vlm.embed_images(images(1)).shape == (1, 8)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        create_vlm("hf:tiny-org/tiny-clip@deadbeef", cache_dir=tmp_path)


def test_judge_and_ground_with_hf_clip(clip):
    """The contrastive judge rule runs on a real CLIP backend: a fully black view scores 0,
    visible views get a score in [0, 5] equal to the rule applied to the backend's scores
    (softmax over their log-odds, as documented in `vlens.vlm.judge`)."""
    from vlens.vlm.judge import ContrastiveRule, ground, judge

    rule = ContrastiveRule(background=("grass", "water"))
    black = Image.new("RGB", (40, 40))
    views = [black]
    for im in images(2):  # the attended quarter (20x20 of 40x40) is visible, the rest black
        v = black.copy()
        v.paste(im.crop((0, 0, 20, 20)), (10, 10))
        views.append(v)
    rows = judge(clip, views, ["cat", "dog", "cat"], ["cat", "dog"], ["red", "sky"], rule=rule)
    assert rows[0]["focus_score"] == 0.0 and rows[0]["object_visible"] == "none"
    for i, pred in ((1, "dog"), (2, "cat")):
        other = "cat" if pred == "dog" else "dog"
        s = clip.score([views[i]], [pred, other, "grass", "water"])[0].astype(np.float64)
        z = np.log(s) - np.log1p(-s)  # the rule's softmax over log-odds
        p = np.exp(z - z.max())
        assert rows[i]["focus_score"] == round(5 * float(p[0] / p.max()), 2)  # area 25%: g=1
        assert "visible area 25%" in rows[i]["justification"]
    assert all(r["judge_backend"] == clip.name and r["status"] == "ok" for r in rows)
    assert rows[2]["description"].startswith("shows: ")
    g = ground(clip, views, ["red", "sky"])
    np.testing.assert_allclose(g, clip.score(views, ["red", "sky"]), atol=1e-6)

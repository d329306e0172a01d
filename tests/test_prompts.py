"""Versioned prompt files, the answer schemas, JSON extraction and the concept bank."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from vlens.errors import ConfigError
from vlens.vlm.concepts import DEFAULT_CONCEPTS, build_vocabulary, load_concepts
from vlens.vlm.prompting import PROMPT_DIR, list_prompts, load_prompt, prompt_set_key
from vlens.vlm.schemas import JudgeAnswer
from vlens.vlm.structured import ParseError, extract_json, parse_answer


def test_packaged_prompts_load():
    assert list_prompts() == ["describe", "grounding", "judge", "narrative_rewrite",
                              "slice_describe", "utility_k"]
    for name in list_prompts():
        p = load_prompt(name)
        assert p.name == name and p.version >= 1 and p.key == f"{name}@{p.version}"
    assert load_prompt("judge").schema is JudgeAnswer


def test_render_fills_variables_and_appends_schema():
    p = load_prompt("judge")
    system, user = p.render({"predicted_class": "star", "class_names": ["star", "heart"]})
    assert "black" in system
    assert 'predicted the class "star"' in user and "Possible classes: star, heart." in user
    assert "{predicted_class}" not in user
    schema = json.loads(user.split("JSON schema: ", 1)[1])
    assert schema["properties"]["focus_score"]["maximum"] == 5
    assert set(schema["required"]) == {"description", "justification", "focus_score",
                                       "object_visible"}
    # literal braces in a template (JSON examples) survive rendering
    _, g = load_prompt("grounding").render({"concepts": ["a", "b"]})
    assert '{"scores": {"<concept>": <score>, ...}}' in g and "a, b" in g
    with pytest.raises(ConfigError, match=r"needs variables \['class_names'\]"):
        p.render({"predicted_class": "star"})


def _write(tmp_path, stem, fields):
    base = {"name": stem, "version": 1, "schema": "Caption", "system": "s", "user": "u"}
    base.update(fields)
    base = {k: v for k, v in base.items() if v is not None}
    (tmp_path / f"{stem}.yaml").write_text(json.dumps(base))  # JSON is valid YAML


@pytest.mark.parametrize("fields,match", [
    ({"version": None}, "lacks \\['version'\\]"),
    ({"version": "2"}, "version must be an integer"),
    ({"schema": "Nope"}, "unknown answer schema 'Nope'"),
    ({"name": "other"}, "declares name 'other'"),
])
def test_bad_prompt_files(tmp_path, fields, match):
    _write(tmp_path, "p", fields)
    with pytest.raises(ConfigError, match=match):
        load_prompt("p", tmp_path)


def test_unknown_and_unparsable_prompt(tmp_path):
    with pytest.raises(ConfigError, match="unknown prompt 'nope'.*known: describe"):
        load_prompt("nope")
    (tmp_path / "x.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_prompt("x", tmp_path)
    (tmp_path / "y.yaml").write_text("- a list")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_prompt("y", tmp_path)


def test_prompt_set_key_tracks_versions(tmp_path):
    for p in PROMPT_DIR.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    a = prompt_set_key(tmp_path)
    assert a == prompt_set_key()
    f = tmp_path / "utility_k.yaml"
    f.write_text(f.read_text().replace("version: 1", "version: 2"))
    assert prompt_set_key(tmp_path) != a


@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}', {"a": 1}),
    ('  ```json\n{"a": [1, 2]}\n```  ', {"a": [1, 2]}),
    ('Sure. ```\n{"a": 2}\n``` done', {"a": 2}),
    ('The answer is {"a": {"b": "}"}} as requested.', {"a": {"b": "}"}}),
    ('bad {"x": } then good {"a": 3}', {"a": 3}),
])
def test_extract_json(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text,match", [("", "empty"), ("no json here", "no JSON object"),
                                        ('{"a": 1', "no JSON object")])
def test_extract_json_fails(text, match):
    with pytest.raises(ParseError, match=match):
        extract_json(text)


def test_parse_answer_validates():
    good = {"description": "d", "justification": "j", "focus_score": 3,
            "object_visible": "partial", "extra": "ignored"}
    out = parse_answer(json.dumps(good), JudgeAnswer)
    assert out == {"description": "d", "justification": "j", "focus_score": 3.0,
                   "object_visible": "partial", "distractors": []}
    with pytest.raises(ValidationError, match="object_visible"):
        parse_answer(json.dumps(dict(good, object_visible="most")), JudgeAnswer)
    with pytest.raises(ParseError, match="expected a JSON object, got list"):
        parse_answer("[1, 2]", JudgeAnswer)


def test_concept_bank_and_files(tmp_path):
    assert set(DEFAULT_CONCEPTS) == {"scene", "colour", "lighting", "size", "texture", "quality"}
    (tmp_path / "c.txt").write_text("# mine\nZebra stripes\n\nwater  # dup of the bank\n")
    (tmp_path / "c.yaml").write_text("animals: [zebra, lion]\nthings: [kite]\n")
    (tmp_path / "c.json").write_text('["kite", "Kite", "boat"]')
    assert load_concepts(tmp_path / "c.txt") == ["Zebra stripes", "water"]
    assert load_concepts(tmp_path / "c.yaml") == ["zebra", "lion", "kite"]
    assert load_concepts(tmp_path / "c.json") == ["kite", "boat"]
    v = build_vocabulary(["star", "Water"], tmp_path / "c.txt", categories=["scene"])
    assert v == ["star", "Water", "grass", "sand", "snow", "brick wall", "sky", "road",
                 "forest", "indoor room", "plain background", "Zebra stripes"]
    assert len(build_vocabulary()) == sum(len(v) for v in DEFAULT_CONCEPTS.values())
    with pytest.raises(ConfigError, match="unknown concept categories"):
        build_vocabulary(categories=["smell"])


@pytest.mark.parametrize("name,content,match", [
    ("a.csv", "x", "use .txt"), ("b.yaml", "{a: 1}", "list of strings"),
    ("c.json", "{bad", "cannot be parsed"), ("d.txt", "# only a comment\n", "no concepts"),
])
def test_bad_concept_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_concepts(tmp_path / name)
    with pytest.raises(ConfigError, match="does not exist"):
        load_concepts(tmp_path / "missing.txt")

"""The static report: content against the fixture's ground truth, escaping, missing data."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from report_fixtures import IMG_ONERROR, JS_URL, SCRIPT, make_run
from vlens.errors import StoreError
from vlens.report import build_report, export_csv, export_fiftyone, load_run_data, plots
from vlens.report.safety import safe_report_url, script_json


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("r"), n=160, seed=1)


@pytest.fixture(scope="module")
def built(fx):
    path = build_report(fx.run_dir)
    return path, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    fx = make_run(tmp_path_factory.mktemp("h"), n=60, seed=2, hostile=True)
    return fx, build_report(fx.run_dir).read_text(encoding="utf-8")


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="vlens-data">(.*?)</script>', html, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def test_top_finding_is_first_with_evidence(fx, built):
    _, html = built
    top = fx.findings["findings"][0]
    hero = html.index('id="top-finding"')
    assert html.index(top["title"].replace("'", "&#39;")) > hero
    assert hero < html.index('id="narrative"') < html.index('id="findings"')
    ev = top["evidence"]["sample_ids"]
    hero_html = html[hero: html.index('id="narrative"')]
    assert len(re.findall(r'class="thumb[^"]*" data-key=', hero_html)) == min(8, len(ev))
    assert f"Show all {len(ev)} evidence samples" in hero_html
    data = _data(html)
    gkey = re.search(r'class="more" data-group="(g\d+)"', hero_html).group(1)
    group = data["groups"][gkey]
    assert [data["cards"][k]["id"] for k in group["ids"]] == ev[: len(group["ids"])]
    assert group["total"] == len(ev)


def test_xai_cells_and_cards_match_tables(fx, built):
    _, html = built
    data = _data(html)
    cells = fx.findings["xai_matrix"]["cells"]
    for name, cell in cells.items():
        m = re.search(rf'data-group="(g\d+)" data-target="xai-gallery" data-cell="{name}">\s*'
                      rf'<span class="cn">(\d+)</span>', html)
        assert m and int(m.group(2)) == cell["count"]
        ids = [data["cards"][k]["id"] for k in data["groups"][m.group(1)]["ids"]]
        assert ids == cell["sample_ids"][:60]
    vlm, pred = fx.tables["vlm"], fx.tables["predictions"]
    for card in data["cards"].values():
        i = fx.ids.index(card["id"])
        assert card["label"] == fx.tables["samples"]["label"][i]
        assert card["pred"] == pred["pred"][i]
        assert card["focus"] == pytest.approx(float(vlm["focus_score"][i]), abs=1e-3)
        assert card["desc"] == vlm["description"][i]
        assert set(card["img"]) == {"o", "ov", "m"}
        names = [g[0] for g in card["ground"]]
        gvals = fx.tables["grounding"].iloc[i][names].to_numpy(dtype=float)
        assert list(gvals) == sorted(gvals, reverse=True)


def test_self_contained_links_and_images(fx, built):
    path, html = built
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    assert srcs, "no images"
    for s in srcs:
        assert re.fullmatch(r"img/s\d+\.(o|ov|m)\.png", s), s
        assert (path.parent / s).is_file()
    for h in re.findall(r'\bhref="([^"]*)"', html):
        assert h.startswith("#") or h == "data:,", h
    assert "http://" not in html and "https://" not in html
    data = _data(html)
    for card in data["cards"].values():
        for url in card["img"].values():
            assert (path.parent / url).is_file()


def test_narrative_links_to_findings(fx, built):
    _, html = built
    m = re.search(r'<a class="cite" href="#(finding-\d+)">\[f001\]</a>', html)
    assert m
    assert f'id="{m.group(1)}"' in html
    assert html.index(f'id="{m.group(1)}"') < html.index(fx.findings["findings"][1]["title"])


def test_sections_present(built):
    _, html = built
    for sec in ("narrative", "findings", "xai", "slices", "confusions", "label-errors",
                "plots", "classes"):
        assert f'<section id="{sec}">' in html
    assert html.count('<svg class="chart"') == 4
    assert "Error lift when a concept is present" in html
    assert "circle → predicted square" in html
    assert "Reliability (ECE = " in html
    assert "<th>suggested</th><th>P(label wrong)</th>" in html  # label-error evidence
    assert "<td>0.875</td>" in html


def test_hostile_text_is_escaped(hostile):
    fx, html = hostile
    assert "<script>window.__pwned" not in html
    assert "<img src=x" not in html
    assert 'href="javascript' not in html and "src=\"javascript" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html  # narrative, as text
    assert "&#34;&gt;&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in html  # class
    data = _data(html)
    texts = [c["desc"] for c in data["cards"].values()] + \
        [c["label"] for c in data["cards"].values()]
    assert any(SCRIPT in t for t in texts if t)
    assert any(t == IMG_ONERROR for t in texts if t)
    # The unknown 'javascript:' finding id in the narrative is shown as text, not as a link.
    assert f"[{JS_URL}?]" in html


def test_script_json_escapes_breakouts():
    obj = {"a": "</script><script>alert(1)</script>", "b": "x\u2028y\u2029z", "c": "<!-- &"}
    s = script_json(obj)
    assert "<" not in s and ">" not in s and "&" not in s
    assert "\u2028" not in s and "\u2029" not in s
    assert json.loads(s) == obj
    with pytest.raises(ValueError):
        script_json({"x": float("nan")})


@pytest.mark.parametrize("url", [JS_URL, "JAVASCRIPT:alert(1)", "data:text/html,x",
                                 "../secret.png", "/etc/passwd", "img/../x.png",
                                 "http://example.com/a.png", "img/a b.png", "img/x.svg", ""])
def test_safe_report_url_rejects(url):
    with pytest.raises(ValueError, match="refusing URL"):
        safe_report_url(url)


def test_safe_report_url_accepts_own():
    assert safe_report_url("img/s12.o.png") == "img/s12.o.png"
    assert safe_report_url("#finding-1") == "#finding-1"


def test_missing_tables_render_empty_sections(tmp_path):
    fx = make_run(tmp_path, n=30, omit=("vlm", "saliency", "findings", "concepts",
                                        "grounding", "config"))
    html = build_report(fx.run_dir).read_text(encoding="utf-8")
    assert "No findings" in html and "findings.json is missing" in html
    assert "No XAI matrix" in html
    assert "No failure slices in this run." in html
    assert "No label-error candidates in this run." in html
    assert html.count('<svg class="chart"') == 1  # only the reliability diagram


def test_xai_matrix_computed_when_findings_missing(tmp_path):
    fx = make_run(tmp_path, n=40, omit=("findings",))
    html = build_report(fx.run_dir).read_text(encoding="utf-8")
    exp = fx.findings["xai_matrix"]["cells"]["wrong_low"]["count"]
    m = re.search(r'data-cell="wrong_low">\s*<span class="cn">(\d+)</span>', html)
    assert m and int(m.group(1)) == exp


def test_predictions_only_run(tmp_path):
    fx = make_run(tmp_path, n=20, omit=("samples", "vlm", "saliency", "findings"))
    run = load_run_data(fx.run_dir)
    assert list(run.samples["id"]) == fx.ids
    assert "Per class" in build_report(fx.run_dir).read_text(encoding="utf-8")


def test_bad_run_dirs(tmp_path):
    with pytest.raises(StoreError, match="run directory not found"):
        load_run_data(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="neither samples.parquet nor predictions.parquet"):
        load_run_data(tmp_path / "empty")
    fx = make_run(tmp_path / "x", n=12)
    (fx.run_dir / "findings.json").write_text("{not json")
    with pytest.raises(StoreError, match="findings.json is not valid JSON"):
        load_run_data(fx.run_dir)
    (fx.run_dir / "findings.json").write_text("[1, 2]")
    with pytest.raises(StoreError, match="must hold a JSON object"):
        load_run_data(fx.run_dir)
    (fx.run_dir / "vlm.parquet").write_bytes(b"PAR1garbage")
    (fx.run_dir / "findings.json").write_text("{}")
    with pytest.raises(StoreError, match="cannot read vlm.parquet"):
        load_run_data(fx.run_dir)


def test_focus_histogram_values(fx):
    run = load_run_data(fx.run_dir)
    ch = plots.focus_histogram(run.samples)
    f = fx.tables["vlm"]["focus_score"].to_numpy(float)
    c = fx.tables["predictions"]["correct"].to_numpy(bool)
    exp, _ = np.histogram(f[c], bins=np.linspace(0, 5, 11))
    heights = [r["h"] for r in ch["rects"] if r["cls"] == "s-correct"]
    # bar height is proportional to the share of the group in the bin
    ratio = [h / (e / c.sum()) for h, e in zip(heights, exp, strict=True) if e]
    assert np.allclose(ratio, ratio[0])
    assert ch["legend"][0]["text"] == f"correct (n={c.sum()})"


def test_reliability_ece(fx):
    run = load_run_data(fx.run_dir)
    ch = plots.reliability(run.samples)
    p = fx.tables["predictions"]["confidence"].to_numpy(float)
    c = fx.tables["predictions"]["correct"].to_numpy(float)
    idx = np.clip(np.digitize(p, np.linspace(0, 1, 11)) - 1, 0, 9)
    ece = sum((idx == b).mean() * abs(c[idx == b].mean() - p[idx == b].mean())
              for b in range(10) if (idx == b).any())
    assert ch["texts"][0]["text"] == f"Reliability (ECE = {ece:.3f})"


def test_lift_rows_from_findings(fx):
    rows, title = plots.lift_rows(load_run_data(fx.run_dir))
    assert title == "Concept lift in findings"
    assert rows[0] == ("water → star", fx.findings["findings"][0]["stats"]["lift"])


def test_error_lift_rows(fx):
    rows = dict(plots.error_lift_rows(load_run_data(fx.run_dir)))
    wrong = ~fx.tables["predictions"]["correct"].to_numpy(bool)
    m = fx.tables["concepts"]["water"].to_numpy() >= 0.5
    assert rows["water"] == pytest.approx(wrong[m].mean() / wrong.mean())
    assert rows["water"] > 1.5  # the planted bias makes water images wrong far more often


def test_export_csv_and_fiftyone(fx, tmp_path):
    p = export_csv(fx.run_dir, tmp_path / "r.csv")
    rows = list(csv.DictReader(p.open()))
    assert len(rows) == len(fx.ids)
    assert rows[5]["id"] == fx.ids[5] and rows[5]["pred"] == fx.tables["predictions"]["pred"][5]
    assert float(rows[5]["focus_score"]) == pytest.approx(fx.tables["vlm"]["focus_score"][5])
    assert "concept_water" in rows[0] and "grounding_water" in rows[0]
    fo = json.loads(export_fiftyone(fx.run_dir, tmp_path / "fo.json").read_text())
    s = fo["samples"][5]
    assert s["filepath"] == fx.tables["samples"]["uri"][5]
    assert s["ground_truth"] == {"_cls": "Classification",
                                 "label": fx.tables["samples"]["label"][5]}
    assert ("wrong" in s["tags"]) == (not bool(fx.tables["predictions"]["correct"][5]))


def test_export_csv_neutralises_formulas(tmp_path):
    fx = make_run(tmp_path, n=12)
    import pandas as pd

    vlm = pd.read_parquet(fx.run_dir / "vlm.parquet")
    vlm.loc[0, "description"] = "=HYPERLINK(\"http://x\")"
    vlm.to_parquet(fx.run_dir / "vlm.parquet")
    rows = list(csv.DictReader(export_csv(fx.run_dir).open()))
    assert rows[0]["description"] == "'=HYPERLINK(\"http://x\")"


def test_cli_report(fx):
    from vlens.cli import app

    res = CliRunner().invoke(app, ["report", str(fx.run_dir)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"report: {fx.run_dir / 'report' / 'index.html'}"


def test_report_on_real_analysis_output(tmp_path):
    """findings.json written by vlens.analysis itself (not the fixture's) renders fully."""
    analyze_mod = pytest.importorskip("vlens.analysis.analyze")
    inputs = pytest.importorskip("vlens.analysis.inputs")
    fx = make_run(tmp_path, n=200, seed=8)
    res = analyze_mod.analyze(inputs.AnalysisInput.from_run(fx.run_dir))
    (fx.run_dir / "findings.json").write_text(res.to_json())
    fj = json.loads((fx.run_dir / "findings.json").read_text())
    html = build_report(fx.run_dir).read_text(encoding="utf-8")
    data = _data(html)
    top = fj["findings"][0]
    hero = html[html.index('id="top-finding"'): html.index('id="narrative"')]
    assert top["title"].replace("'", "&#39;") in hero
    ev = top["evidence"]["sample_ids"]
    assert f"Show all {len(ev)} evidence sample" in hero
    cited = {fid for s in fj["narrative"] for fid in s["finding_ids"]}
    assert len(re.findall(r'class="cite" href="#finding-\d+"', html)) == sum(
        len(s["finding_ids"]) for s in fj["narrative"])
    assert cited <= {f["id"] for f in fj["findings"]}
    for name, cell in fj["xai_matrix"]["cells"].items():
        m = re.search(rf'data-cell="{name}">\s*<span class="cn">(\d+)</span>', html)
        assert m and int(m.group(1)) == cell["count"]
    assert all(set(c["img"]) == {"o", "ov", "m"} for c in data["cards"].values())


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["img_000001", "f001", "<zz>", JS_URL]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "title", "score", "stats", "evidence", "sample_ids", "numbers",
                         "cells", "count", "concepts", "finding_ids", "text", "class",
                         "confirmed", "confirmation", "name", "per_class", "threshold"]),
        inner, max_size=5),
    max_leaves=25)


@pytest.mark.slow
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@example({"run": None, "findings": True})  # once crashed the lift plot
@given(st.dictionaries(st.sampled_from(["run", "xai_matrix", "findings", "slices",
                                        "confusion_pairs", "label_error_candidates",
                                        "utility_k", "narrative"]), _json, max_size=8))
def test_malformed_findings_never_crash(tiny_run, fj):
    (tiny_run / "findings.json").write_text(json.dumps(fj))
    html = build_report(tiny_run).read_text(encoding="utf-8")
    assert html.rstrip().endswith("</html>")
    assert "<zz>" not in html and 'href="javascript' not in html  # data stays text
    _data(html)  # the JSON block still parses


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("t"), n=12, seed=9).run_dir


def test_num_formats_numbers_and_mappings():
    from vlens.report.build import _num

    assert _num(0.5675) == "0.568" and _num(1.5e-05) == "1.5e-05" and _num(37.0) == "37"
    assert _num(None) == "–" and _num(True) == "yes"
    assert _num({"flip_rate": 1.0, "hidden": "the background", "p_value": 1.5e-05,
                 "confirmed": False}) == \
        "flip_rate 1, hidden the background, p_value 1.5e-05, confirmed no"
    assert _num([{"count": 49, "true": "heart"}, {"count": 45.0, "true": "star"}]) == \
        "count 49, true heart; count 45, true star"

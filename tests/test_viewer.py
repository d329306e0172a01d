"""The viewer's JSON API and file serving, against the fixture's ground truth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from report_fixtures import LiveServer, make_run
from vlens.report.safety import PathRefused, resolve_inside
from vlens.report.server import create_app, is_loopback


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    fx = make_run(tmp_path_factory.mktemp("v"), n=150, seed=3)
    (fx.run_dir.parent / "secret.txt").write_text("top secret")
    os.symlink(fx.run_dir.parent / "secret.txt", fx.run_dir / "escape.txt")
    os.symlink(fx.run_dir.parent, fx.run_dir / "updir")
    os.symlink(fx.run_dir / "config.yaml", fx.run_dir / "inner.yaml")
    return fx


@pytest.fixture(scope="module")
def client(fx):
    return TestClient(create_app(fx.run_dir))


@pytest.fixture(scope="module")
def live(fx):
    srv = LiveServer(fx.run_dir)
    yield srv
    srv.close()


def q(client, **params):
    r = client.get("/api/samples", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_meta(client, fx):
    m = client.get("/api/meta").json()
    assert m["n"] == 150 and m["classes"] == sorted(fx.classes)
    assert "focus_score" in m["sort"] and "concept:water" in m["sort"]
    assert "grounding:water" in m["sort"] and m["concepts"][0] == "water"
    assert [g[1] for g in m["groups"]][0] == "slice: dark, small"


def test_filter_class_and_correctness(client, fx):
    lab = fx.tables["samples"]["label"].to_numpy()
    cor = fx.tables["predictions"]["correct"].to_numpy(bool)
    r = q(client, cls="star", correct="false", per_page=500)
    assert r["total"] == int(((lab == "star") & ~cor).sum())
    assert all(it["label"] == "star" and it["correct"] is False for it in r["items"])
    assert q(client, correct="true")["total"] == int(cor.sum())


def test_filter_focus_range_and_sort(client, fx):
    f = fx.tables["vlm"]["focus_score"].to_numpy(float)
    r = q(client, fmin=1, fmax=3.5, sort="focus_score", order="asc", per_page=500)
    assert r["total"] == int(((f >= 1) & (f <= 3.5)).sum())
    got = [it["focus"] for it in r["items"]]
    assert got == sorted(got) and min(got) >= 1 and max(got) <= 3.5
    top = q(client, sort="confidence", per_page=5)["items"]
    conf = np.sort(fx.tables["predictions"]["confidence"].to_numpy(float))[::-1][:5]
    assert [it["conf"] for it in top] == pytest.approx(conf, abs=1e-3)


def test_filter_group_and_concept(client, fx):
    m = client.get("/api/meta").json()
    key = m["groups"][0][0]
    r = q(client, group=key, per_page=500)
    assert {it["id"] for it in r["items"]} == set(fx.findings["slices"][0]["sample_ids"])
    c = fx.tables["concepts"]["water"].to_numpy()
    assert q(client, concept="water", cmin=0.5)["total"] == int((c >= 0.5).sum())
    assert q(client, concept="water", cmin=0.9)["total"] == int((c >= 0.9).sum())


def test_pagination(client, fx):
    p1 = q(client, per_page=40, page=1)
    p4 = q(client, per_page=40, page=4)
    assert p1["pages"] == 4 and len(p4["items"]) == 150 - 120
    assert [it["row"] for it in p1["items"]] == list(range(40))
    assert q(client, per_page=40, page=9)["items"] == []


@pytest.mark.parametrize(("params", "msg"), [
    ({"per_page": 0}, "per_page must be between"), ({"per_page": 501}, "per_page must be"),
    ({"page": 0}, "page must be >= 1"), ({"page": "x"}, "page must be an integer"),
    ({"fmin": "abc"}, "fmin must be a number"), ({"fmax": "nan"}, "fmax must be finite"),
    ({"sort": "id"}, "cannot sort by 'id'"), ({"group": "zz"}, "unknown group"),
    ({"correct": "maybe"}, "correct must be"), ({"concept": "unicorn"}, "unknown concept"),
])
def test_bad_queries(client, params, msg):
    r = client.get("/api/samples", params=params)
    assert r.status_code == 400 and msg in r.json()["error"]


def test_card_and_images(client, fx):
    c = client.get("/api/sample/3").json()
    assert c["id"] == fx.ids[3] and c["pred"] == fx.tables["predictions"]["pred"][3]
    assert c["desc"] == fx.tables["vlm"]["description"][3]
    assert c["img"] == {"o": "/img/3/o", "ov": "/img/3/ov", "m": "/img/3/m"}
    for k in ("o", "ov", "m"):
        r = client.get(f"/img/3/{k}")
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    orig = Path(fx.tables["samples"]["uri"][3]).read_bytes()
    assert client.get("/img/3/o").content == orig
    assert client.get("/api/sample/150").status_code == 404
    assert client.get("/api/sample/-1").status_code == 404
    assert client.get("/img/3/zz").status_code == 404
    assert client.get("/img/999/o").status_code == 404


def test_home_page_headers(client):
    r = client.get("/")
    assert r.status_code == 200
    assert "script-src 'sha256-" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_foreign_host_header_refused(live):
    assert live.raw_get("/api/meta", host="evil.example")[0] == 400
    assert live.raw_get("/api/meta", host="localhost")[0] == 200


PARENT, ABS, BAD = b"parent-directory", b"absolute paths", b"invalid character"
OUT = b"path leaves the run"


@pytest.mark.parametrize(("raw", "msg"), [
    ("/files/../secret.txt", PARENT), ("/files/%2e%2e/secret.txt", PARENT),
    ("/files/%2E%2E%2Fsecret.txt", PARENT), ("/files/..%2fsecret.txt", PARENT),
    ("/files/%252e%252e/secret.txt", PARENT), ("/files/a/../../secret.txt", PARENT),
    ("/files/../../../../etc/passwd", PARENT), ("/files//etc/passwd", ABS),
    ("/files/%2Fetc%2Fpasswd", ABS), ("/files/~/.bashrc", ABS),
    ("/files/..%5csecret.txt", BAD), ("/files/config.yaml%00.png", BAD),
    ("/files/escape.txt", OUT), ("/files/updir/secret.txt", OUT),
    ("/files/saliency", b"no such file"),
])
def test_traversal_refused_over_http(live, raw, msg):
    status, body = live.raw_get(raw)
    assert status == 404 and body.startswith(msg), (raw, status, body)


def test_files_inside_run_are_served(live, fx):
    status, body = live.raw_get("/files/config.yaml")
    assert status == 200 and body == (fx.run_dir / "config.yaml").read_bytes()
    assert live.raw_get("/files/inner.yaml")[0] == 200  # symlink that stays inside
    assert live.raw_get("/files/saliency/views/img_000001.masked.png")[0] == 200


@pytest.mark.parametrize(("rel", "msg"), [
    ("..", "parent-directory"), ("%2e%2e/x", "parent-directory"), ("a/../../x", "parent"),
    ("/etc/passwd", "absolute"), ("%2fetc%2fpasswd", "absolute"), ("C:/x", "absolute"),
    ("a\\..\\x", "invalid character"), ("x%00y", "invalid character"),
    ("escape.txt", "leaves the run"), ("updir/secret.txt", "leaves the run"),
    ("missing.png", "no such file"), ("saliency", "no such file"), ("", "empty"),
])
def test_resolve_inside_refuses(fx, rel, msg):
    with pytest.raises(PathRefused, match=msg):
        resolve_inside(fx.run_dir, rel)


def test_resolve_inside_accepts(fx):
    assert resolve_inside(fx.run_dir, "config.yaml") == (fx.run_dir / "config.yaml").resolve()
    assert resolve_inside(fx.run_dir, "./saliency//views/img_000001.crop.png").is_file()


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_serve_prints_binding(fx, monkeypatch, capsys):
    import uvicorn

    from vlens.report import serve

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    serve(fx.run_dir)
    out = capsys.readouterr()
    assert calls == [{"host": "127.0.0.1", "port": 8765, "log_level": "warning"}]
    assert "http://127.0.0.1:8765/" in out.out and "loopback" in out.out
    assert "WARNING" not in out.err
    serve(fx.run_dir, host="0.0.0.0", port=9000)
    out = capsys.readouterr()
    assert "WARNING: bound to 0.0.0.0, not loopback" in out.err
    from vlens.errors import ConfigError

    with pytest.raises(ConfigError, match="port must be"):
        serve(fx.run_dir, port=0)


def test_malformed_findings_still_serve(tmp_path):
    fx = make_run(tmp_path, n=12, seed=4)
    (fx.run_dir / "findings.json").write_text(
        '{"run": [1], "slices": {"a": 1}, "findings": "abc", "confusion_pairs": [1, {"x": 2}],'
        ' "xai_matrix": {"cells": {"correct_high": {"sample_ids": "img_000001"}, "x": 3}}}')
    c = TestClient(create_app(fx.run_dir))
    m = c.get("/api/meta").json()
    assert m["name"] == "run"
    assert m["groups"] == [["x0", "XAI cell: correct_high", 0], ["p1", "confusion: None → None", 0]]
    assert c.get("/api/samples").json()["total"] == 12

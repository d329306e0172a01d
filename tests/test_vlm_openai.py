"""The openai: backend against a real loopback chat-completions server (tests/vlm_server.py)."""

from __future__ import annotations

import json
import logging
import time

import pytest
from PIL import Image

from vlens.errors import CapabilityError, ConfigError
from vlens.vlm import create_vlm
from vlens.vlm.base import require
from vlens.vlm.openai_compat import parse_retry_after
from vlm_server import FakeChatServer, hang, raw_body, reply, reset, status, truncated

SENTINEL = "sk-SENTINEL-7f3a9c-do-not-leak"
GOOD = json.dumps({"caption": "a red circle on grass"})


def imgs(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), (10 * i, 0, 0)) for i in range(n)]


def vlm_for(srv: FakeChatServer, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 2.0)
    return create_vlm(f"openai:test-model@{srv.base_url}", api_key=SENTINEL, seed=0, **kw)


def test_request_shape_and_answer():
    with FakeChatServer(default=reply(GOOD)) as srv:
        vlm = vlm_for(srv)
        [res] = vlm.ask(imgs(1), "describe")
    assert res.ok and res.answer == {"caption": "a red circle on grass"} and res.attempts == 1
    assert res.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    [seen] = srv.requests
    assert seen.headers["Authorization"] == f"Bearer {SENTINEL}"
    body = seen.body
    assert body["model"] == "test-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    parts = body["messages"][1]["content"]
    assert parts[0]["type"] == "text" and "caption" in parts[0]["text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_large_images_downscaled():
    import base64
    import io

    with FakeChatServer(default=reply(GOOD)) as srv:
        vlm = vlm_for(srv, max_image_side=64)
        vlm.ask([Image.new("RGB", (300, 150), (0, 0, 0)), Image.new("RGB", (20, 30))],
                "describe")
    sizes = []
    for seen in srv.requests:
        url = seen.body["messages"][1]["content"][1]["image_url"]["url"]
        im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        sizes.append(im.size)
        assert im.getextrema() == ((0, 0), (0, 0), (0, 0))  # lossless: black stays black
    assert sorted(sizes) == [(20, 30), (64, 32)]


def test_spec_parsing_and_env(monkeypatch):
    monkeypatch.setenv("VLENS_OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    vlm = create_vlm("openai:llava:7b")
    assert vlm.model == "llava:7b" and vlm.base_url == "http://127.0.0.1:9/v1"
    assert vlm._key.get() == SENTINEL
    vlm2 = create_vlm("openai:m@https://example.org/v1")
    assert (vlm2.model, vlm2.base_url) == ("m", "https://example.org/v1")
    with pytest.raises(ConfigError, match="needs a model"):
        create_vlm("openai")
    with pytest.raises(ConfigError, match="http"):
        create_vlm("openai:m", base_url="ftp://x")


def test_unknown_backend_lists_known():
    with pytest.raises(ConfigError, match="unknown VLM backend 'gpt'; known: .*hf, openai"):
        create_vlm("gpt:4")


def test_no_contrastive_capability():
    vlm = create_vlm("openai:m@http://127.0.0.1:9/v1")
    with pytest.raises(CapabilityError, match="not contrastive"):
        require(vlm, "contrastive")
    with pytest.raises(CapabilityError, match="no embeddings"):
        vlm.score(imgs(1), ["cat"])


def test_retry_after_honoured_then_success():
    with FakeChatServer(default=reply(GOOD)) as srv:
        srv.push(status(429, retry_after="0.3"), status(503), status(500))
        vlm = vlm_for(srv, concurrency=1)
        t0 = time.perf_counter()
        [res] = vlm.ask(imgs(1), "describe")
        wall = time.perf_counter() - t0
    assert res.ok
    assert len(srv.requests) == 4 and vlm.stats["retries"] == 3
    assert vlm.stats["waits"][0] == pytest.approx(0.3)
    gap = srv.requests[1].t_start - srv.requests[0].t_end
    assert gap >= 0.29 and wall >= 0.3
    # backoff 0.01 * 2**k with jitter in [0.5, 1.5)
    assert 0.01 <= vlm.stats["waits"][1] < 0.03 and 0.02 <= vlm.stats["waits"][2] < 0.06


def test_retry_after_http_date():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("bad", [reset(), truncated(), raw_body(b'{"choices": [')])
def test_transport_failures_are_retried(bad):
    with FakeChatServer(default=reply(GOOD)) as srv:
        srv.push(bad)
        vlm = vlm_for(srv)
        [res] = vlm.ask(imgs(1), "describe")
    assert res.ok and len(srv.requests) == 2 and vlm.stats["retries"] == 1


def test_timeout_retried_then_error_row():
    with FakeChatServer(default=hang(0.6)) as srv:
        vlm = vlm_for(srv, timeout=0.2, max_retries=1)
        [res] = vlm.ask(imgs(1), "describe")
    assert not res.ok and res.error == "timeout (after 2 tries)"
    assert vlm.stats["requests"] == 2


def test_non_retryable_status_is_final():
    with FakeChatServer(default=status(400)) as srv:
        vlm = vlm_for(srv)
        [res] = vlm.ask(imgs(1), "describe")
    assert res.error == "http_400" and len(srv.requests) == 1 and "scripted" in res.raw


def test_persistent_500_becomes_error_row():
    with FakeChatServer(default=status(500)) as srv:
        vlm = vlm_for(srv, max_retries=2)
        res = vlm.ask(imgs(2), "describe")
    assert [r.error for r in res] == ["http_500 (after 3 tries)"] * 2
    assert len(srv.requests) == 6


def test_repair_path_prose_wrapped_and_fenced():
    with FakeChatServer() as srv:
        srv.push(reply('Sure! Here it is: {"caption": "a star"} Hope it helps.'),
                 reply('```json\n{"caption": "a square"}\n```'))
        vlm = vlm_for(srv, concurrency=1)
        res = vlm.ask(imgs(2), "describe")
    assert sorted(r.answer["caption"] for r in res) == ["a square", "a star"]
    assert all(r.attempts == 1 for r in res)


def test_repair_retry_appends_validation_error():
    with FakeChatServer() as srv:
        srv.push(reply('{"caption": "a star'), reply('{"caption": ""}'), reply(GOOD))
        vlm = vlm_for(srv)
        [res] = vlm.ask(imgs(1), "describe")
    assert res.ok and res.attempts == 3
    msgs = [s.body["messages"] for s in srv.requests]
    assert [len(m) for m in msgs] == [2, 4, 6]
    assert msgs[1][2] == {"role": "assistant", "content": '{"caption": "a star'}
    assert "no JSON object found" in msgs[1][3]["content"]
    assert "caption: String should have at least 1 character" in msgs[2][5]["content"]
    assert res.usage["total_tokens"] == 45


def test_invalid_after_bounded_attempts_keeps_raw():
    with FakeChatServer(default=reply("I cannot answer in JSON, sorry.")) as srv:
        vlm = vlm_for(srv, max_attempts=2)
        [res] = vlm.ask(imgs(1), "describe")
    assert res.answer is None and res.attempts == 2 and len(srv.requests) == 2
    assert res.error == "invalid_answer: no JSON object found in the answer"
    assert res.raw == "I cannot answer in JSON, sorry."


def test_budget_stops_cleanly_and_resumes():
    with FakeChatServer(default=reply(GOOD)) as srv:
        vlm = vlm_for(srv, max_requests=3, concurrency=1)
        res = vlm.ask(imgs(5), "describe")
        assert [r.ok for r in res] == [True, True, True, False, False]
        assert [r.error for r in res[3:]] == ["budget_exceeded"] * 2
        assert len(srv.requests) == 3 and vlm.budget.exhausted
        # resume: a fresh run (new budget) answers only the missing ones
        vlm2 = vlm_for(srv)
        res2 = vlm2.ask(imgs(5)[3:], "describe")
        assert all(r.ok for r in res2) and len(srv.requests) == 5


def test_token_budget():
    with FakeChatServer(default=reply(GOOD)) as srv:  # 15 tokens per answer
        vlm = vlm_for(srv, max_tokens=40, concurrency=1)
        res = vlm.ask(imgs(4), "describe")
    assert [r.error for r in res] == [None, None, None, "budget_exceeded"]
    assert vlm.budget.tokens == 45


def test_api_key_never_leaks(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    with FakeChatServer() as srv:
        srv.push(status(500), reply("garbage"), reply("garbage"), reply("garbage"),
                 status(401))
        vlm = vlm_for(srv, max_retries=1)
        out = vlm.ask(imgs(1), "describe") + vlm.ask(imgs(1), "describe")
    texts = [repr(vlm), str(vlm.__dict__), vlm.fingerprint, vlm.name, caplog.text]
    for r in out:
        texts += [repr(r), str(r.raw), str(r.error)]
    assert out[1].error == "http_401"
    assert "openai:test-model: http_500, retry 1/1" in caplog.text  # the logs were captured
    assert all(SENTINEL not in t for t in texts)
    assert "***" in repr(vlm)


def test_concurrency_overlaps_requests():
    """8 requests with 200 ms latency, 8 in flight: wall time well below 8 x 200 ms."""
    with FakeChatServer(default=reply(GOOD, delay=0.2)) as srv:
        vlm = vlm_for(srv, concurrency=8)
        vlm.ask(imgs(1), "describe")  # warm up
        t0 = time.perf_counter()
        res = vlm.ask(imgs(8), "describe")
        par = time.perf_counter() - t0
        seq_vlm = vlm_for(srv, concurrency=1)
        t0 = time.perf_counter()
        seq_vlm.ask(imgs(8), "describe")
        seq = time.perf_counter() - t0
    assert all(r.ok for r in res)
    assert srv.max_in_flight == 8
    assert seq >= 8 * 0.2 and par < 0.5 * seq, (par, seq)
    print(f"concurrency speed-up: sequential {seq:.3f}s, 8 in flight {par:.3f}s, "
          f"x{seq / par:.1f}")


def test_fingerprint_changes_with_prompt_version(tmp_path):
    from vlens.vlm.prompting import PROMPT_DIR
    for p in PROMPT_DIR.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    a = create_vlm("openai:m@http://127.0.0.1:9/v1", prompt_dir=str(tmp_path)).fingerprint
    f = tmp_path / "judge.yaml"
    f.write_text(f.read_text().replace("version: 1", "version: 2"))
    b = create_vlm("openai:m@http://127.0.0.1:9/v1", prompt_dir=str(tmp_path)).fingerprint
    c = create_vlm("openai:other@http://127.0.0.1:9/v1", prompt_dir=str(tmp_path)).fingerprint
    assert len({a, b, c}) == 3


def test_cli_check_against_server():
    from typer.testing import CliRunner

    import vlens.cli.vlm  # noqa: F401  (attaches `vlm check`)
    from vlens.cli.apps import app

    with FakeChatServer(default=reply("[b]not json[/b]")) as srv:
        srv.push(reply(GOOD))
        r = CliRunner().invoke(app, ["vlm", "check", "--vlm", f"openai:m@{srv.base_url}",
                                     "--images", "2", "--api-key", SENTINEL])
    assert r.exit_code == 0, r.output
    assert "capabilities generative" in r.output and "score: skipped" in r.output
    assert '{"caption": "a red circle on grass"}' in r.output
    assert "invalid_answer" in r.output and "[b]not json[/b]" in r.output  # escaped, shown
    assert SENTINEL not in r.output

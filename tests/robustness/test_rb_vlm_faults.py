"""A flaky judge server during a whole pipeline run (`openai:` backend, concept scores from
the embedded VLM): what can be answered is, what cannot becomes an error row with the
reason, and a later run against a healthy server (same --out, or a new one sharing the
cache) fills the gaps, asking only for them, and ends equal to a clean run.
"""

from __future__ import annotations

import threading

import pytest
from PIL import Image
from rb_helpers import (
    ChatServer,
    JudgeBrain,
    assert_accounted,
    assert_runs_equal,
    image_key,
    openai_vlm,
    table,
)

from vlens.engine.cache import Cache
from vlens.engine.store import RunStore
from vlens.pipeline import ExplainOptions, explain

# fault kind -> the reason the error row must carry ("ok": retried and answered)
FAULTS = {
    "429": "ok", "500_once": "ok",
    "500": "http_500", "reset": "connection_error", "hang": "timeout",
    "truncated": "connection_error", "malformed": "bad_response",
    "refusal": "invalid_answer: no JSON object", "schema": "focus_score",
}


def _opts(vlm) -> ExplainOptions:
    return ExplainOptions(vlm=vlm, progress=False, batch_size=4)


def _keys(run) -> dict[str, str]:
    """sample id -> key of the masked view the judge was shown."""
    sal = table(run, "saliency")
    out = {}
    for sid, rel in zip(sal["id"], sal["view_masked"], strict=True):
        with Image.open(run / rel) as im:
            out[str(sid)] = image_key(im)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_world):
    """A clean run against a healthy server, and its port (reused by every server below so
    the backend's fingerprint, which includes the URL, is the same)."""
    srv = ChatServer(JudgeBrain()).start()
    out = tmp_path_factory.mktemp("ref") / "run"
    try:
        explain("demo", f"manifest:{small_world}", out, _opts(openai_vlm(srv.base_url)))
    finally:
        srv.stop()
    vlm = table(out, "vlm")
    assert (vlm["status"] == "ok").all() and (vlm["judge_method"] == "generative").all()
    return out, srv.port


def test_server_faults_become_error_rows_then_resume_fills_them(tmp_path, small_world,
                                                               reference):
    ref, port = reference
    ids = set(table(ref, "samples")["id"].astype(str))
    brain = JudgeBrain(plan=list(FAULTS))
    srv = ChatServer(brain, port).start()
    out, cache = tmp_path / "run", Cache(tmp_path / "cache")
    try:
        res = explain("demo", f"manifest:{small_world}", out,
                      _opts(openai_vlm(srv.base_url)), cache=cache)
    finally:
        srv.stop()
    counts = assert_accounted(out, ids)
    n_fail = sum(v != "ok" for v in FAULTS.values())
    assert counts["vlm"] == {"ok": len(ids) - n_fail, "error": n_fail}
    assert res.errors == {"predictions": 0, "saliency": 0, "vlm": n_fail}

    keys = _keys(out)
    vlm = table(out, "vlm").set_index("id")
    ref_vlm = table(ref, "vlm").set_index("id")
    for sid, key in keys.items():
        want = FAULTS.get(brain.kinds[key], "ok")
        row = vlm.loc[sid]
        if want == "ok":
            assert row["status"] == "ok", (brain.kinds[key], row["error"])
            assert row["raw"] == ref_vlm.loc[sid, "raw"]
        else:
            assert row["status"] == "error" and want in row["error"], \
                (brain.kinds[key], row["error"])
    # concept scores come from the embedded model: unaffected by the judge's faults
    assert_runs_equal(out, ref, tables=("predictions", "saliency", "concepts", "grounding",
                                        "embeddings"))
    # Retry-After was honoured: the retry of the 429 image came >= 0.2 s after the 429
    k429 = next(k for k, v in brain.kinds.items() if v == "429")
    assert brain.hits[k429] == 2 and brain.times[k429][1] - brain.times[k429][0] >= 0.19

    # the server comes back healthy: a fresh run dir sharing the cache fills the gaps
    # (error rows were never cached; answered rows come from the cache, not the server)
    brain2 = JudgeBrain()
    srv = ChatServer(brain2, port).start()
    try:
        explain("demo", f"manifest:{small_world}", tmp_path / "again",
                _opts(openai_vlm(srv.base_url)), cache=cache)
    finally:
        srv.stop()
    assert sum(brain2.hits.values()) == n_fail  # only what had failed was asked again
    assert_runs_equal(tmp_path / "again", ref)


def test_rerun_in_place_retries_vlm_error_rows(tmp_path, small_world, reference):
    """Re-running into the same --out after an outage asks again for exactly the samples
    that failed, and ends equal to a clean run (error rows are not 'done')."""
    ref, port = reference
    srv = ChatServer(JudgeBrain(plan=["500", "reset", "hang"]), port).start()
    out = tmp_path / "run"
    try:
        explain("demo", f"manifest:{small_world}", out, _opts(openai_vlm(srv.base_url)))
    finally:
        srv.stop()
    assert (table(out, "vlm")["status"] == "error").sum() == 3
    brain = JudgeBrain()
    srv = ChatServer(brain, port).start()
    try:
        explain("demo", f"manifest:{small_world}", out, _opts(openai_vlm(srv.base_url)))
    finally:
        srv.stop()
    assert sum(brain.hits.values()) == 3
    assert_runs_equal(out, ref)


def test_server_dies_mid_run_and_comes_back(tmp_path, small_world, reference):
    ref, port = reference
    ids = set(table(ref, "samples")["id"].astype(str))
    answered = []
    holder: dict[str, ChatServer] = {}

    def die_after_five(key, body):
        import vlm_server as vs

        with lock:
            if key not in answered and len(answered) < 5:
                answered.append(key)
                return None  # answer normally
            if not dead.is_set():
                dead.set()  # the process "dies": listener closed, open connections reset
                threading.Thread(target=holder["srv"].stop, daemon=True).start()
        return vs.reset()

    lock, dead = threading.Lock(), threading.Event()
    holder["srv"] = srv = ChatServer(JudgeBrain(hook=die_after_five), port).start()
    out = tmp_path / "run"
    try:
        explain("demo", f"manifest:{small_world}", out, _opts(openai_vlm(srv.base_url)),
                cache=Cache(tmp_path / "cache"))
    finally:
        srv.stop()
    counts = assert_accounted(out, ids)
    assert counts["vlm"] == {"ok": 5, "error": len(ids) - 5}
    errs = table(out, "vlm").query("status == 'error'")["error"]
    assert errs.str.contains("connection_error").all(), errs.tolist()
    # nothing else in the run was affected
    assert_runs_equal(out, ref, tables=("predictions", "saliency", "concepts"))

    # restart; resume into a copy with the shared cache: the gaps are filled, equal to clean
    brain = JudgeBrain()
    srv = ChatServer(brain, port).start()
    try:
        explain("demo", f"manifest:{small_world}", tmp_path / "again",
                _opts(openai_vlm(srv.base_url)), cache=Cache(tmp_path / "cache"))
    finally:
        srv.stop()
    assert sum(brain.hits.values()) == len(ids) - 5
    assert_runs_equal(tmp_path / "again", ref)
    assert RunStore(tmp_path / "again").read_config()["fingerprints"]["vlm"] == \
        RunStore(ref).read_config()["fingerprints"]["vlm"]

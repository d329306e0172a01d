"""The viewer in headless Chromium against a live server on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

from report_fixtures import (
    BROWSER_MARKS,
    IMG_ONERROR,
    JS_URL,
    SCRIPT,
    SHOTS,
    LiveServer,
    chromium_browser,
    make_run,
)

pytestmark = BROWSER_MARKS
browser = pytest.fixture(scope="module")(chromium_browser)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    fx = make_run(tmp_path_factory.mktemp("vb"), n=150, seed=6)
    srv = LiveServer(fx.run_dir)
    yield fx, srv
    srv.close()


def _status(page) -> str:
    return page.locator("#status").inner_text()


def _wait_status(pg, prefix: str, **query: str) -> None:
    """Wait until the results on screen answer `query` and the status starts with `prefix`."""
    pg.wait_for_function(
        """([p, q]) => {
             const r = document.querySelector('#results');
             const got = new URLSearchParams(r.dataset.query || '');
             return document.querySelector('#status').textContent.startsWith(p) &&
               Object.entries(q).every(([k, v]) => (got.get(k) || '') === v); }""",
        arg=[prefix, query], timeout=10_000)


def test_filter_sort_paginate_open_card(browser, live):
    fx, srv = live
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(srv.url + "/")
    _wait_status(page, "150 samples · page 1 of 3")
    assert page.locator("#results .thumb").count() == 60
    lab = fx.tables["samples"]["label"].to_numpy()
    cor = fx.tables["predictions"]["correct"].to_numpy(bool)
    focus = fx.tables["vlm"]["focus_score"].to_numpy(float)
    # filter: wrong predictions of class 'triangle', sorted by focus (low -> high)
    m = (lab == "triangle") & ~cor
    page.select_option("#f-cls", "triangle")
    page.select_option("#f-correct", "false")
    page.select_option("#f-sort", "focus_score")
    page.select_option("#f-order", "asc")
    _wait_status(page, f"{int(m.sum())} samples", cls="triangle", correct="false",
                 sort="focus_score", order="asc")
    ids = page.locator("#results .thumb").evaluate_all("els => els.map(e => e.title)")
    rows = np.flatnonzero(m)
    exp = [fx.ids[r] for r in rows[np.argsort(focus[rows], kind="stable")]]
    assert ids == exp
    page.screenshot(path=str(SHOTS / "viewer_filtered.png"))
    # paginate: 30 per page over everything
    page.click("#f-reset")
    page.select_option("#f-per", "30")
    _wait_status(page, "150 samples · page 1 of 5", per_page="30", cls="", sort="")
    page.click("#next")
    _wait_status(page, "150 samples · page 2 of 5", page="2", per_page="30")
    ids = page.locator("#results .thumb").evaluate_all("els => els.map(e => e.title)")
    assert ids == fx.ids[30:60]
    assert page.locator("#prev").is_enabled()
    # focus range filter
    page.fill("#f-fmin", "4")
    page.locator("#f-fmin").dispatch_event("change")
    _wait_status(page, f"{int((focus >= 4).sum())} samples · page 1", fmin="4", page="1")
    # error rows only
    page.click("#f-reset")
    page.select_option("#f-status", "error")
    _wait_status(page, "1 samples · page 1 of 1", status="error")
    assert page.locator("#results .thumb").get_attribute("title") == fx.ids[7]
    page.click("#f-reset")
    page.fill("#f-fmin", "4")
    page.locator("#f-fmin").dispatch_event("change")
    _wait_status(page, f"{int((focus >= 4).sum())} samples · page 1", fmin="4", status="")
    # open a card
    first = page.locator("#results .thumb").first
    sid = first.get_attribute("title")
    first.click()
    card = page.locator("#modal .card")
    card.wait_for()
    i = fx.ids.index(sid)
    assert card.get_attribute("data-sample-id") == sid
    assert card.locator("dd.f-justification").inner_text() == \
        fx.tables["vlm"]["justification"][i]
    page.wait_for_function("() => [...document.querySelectorAll('#modal .card img')]"
                           ".every(i => i.complete)", timeout=10_000)
    widths = card.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
    assert len(widths) == 3 and min(widths) > 0
    page.screenshot(path=str(SHOTS / "viewer_card.png"))
    assert errors == []


def test_viewer_hostile_content_is_text(browser, tmp_path):
    fx = make_run(tmp_path, n=30, seed=7, hostile=True)
    srv = LiveServer(fx.run_dir)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(srv.url + "/")
        _wait_status(page, "30 samples")
        options = page.locator("#f-cls option").all_inner_texts()
        assert IMG_ONERROR in options
        page.select_option("#f-cls", IMG_ONERROR)
        n_hostile = int((fx.tables["samples"]["label"] == IMG_ONERROR).sum())
        _wait_status(page, f"{n_hostile} samples", cls=IMG_ONERROR)
        labels = page.locator("#results .thumb .cap").all_inner_texts()
        assert len(labels) == n_hostile and all(t.startswith(IMG_ONERROR) for t in labels)
        page.click("#f-reset")
        _wait_status(page, "30 samples", cls="")
        for row in (0, 1, 3):
            page.locator(f"#results .thumb[data-row='{row}']").click()
            card = page.locator("#modal .card")
            card.wait_for()
            text = card.inner_text()
            assert fx.ids[row] in text
            if row == 0:
                assert f"caption {SCRIPT} end" in text and JS_URL in text
            page.keyboard.press("Escape")
        assert page.evaluate("typeof window.__pwned") == "undefined"
        page.screenshot(path=str(SHOTS / "viewer_hostile.png"))
    finally:
        srv.close()

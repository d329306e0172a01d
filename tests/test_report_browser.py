"""The static report in headless Chromium, opened from disk: clicks, content, no script runs."""

from __future__ import annotations

import pytest

from report_fixtures import (
    BROWSER_MARKS,
    IMG_ONERROR,
    JS_URL,
    SCRIPT,
    SHOTS,
    chromium_browser,
    make_run,
)
from vlens.report import build_report

pytestmark = BROWSER_MARKS
browser = pytest.fixture(scope="module")(chromium_browser)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    fx = make_run(tmp_path_factory.mktemp("rb"), n=160, seed=4)
    return fx, build_report(fx.run_dir)


def _page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.goto(url)
    return page, problems


def test_first_screen_shows_top_finding_and_evidence(browser, report):
    fx, index = report
    page, problems = _page(browser, index.as_uri())
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "report_first_screen.png"))
    top = fx.findings["findings"][0]
    hero = page.locator("#top-finding")
    assert hero.locator("h1").inner_text() == top["title"]
    box = hero.bounding_box()
    assert box["y"] + box["height"] <= 900, "top finding must fit the first screen"
    # thumbnails really load from the report folder
    widths = page.eval_on_selector_all("#top-finding img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == min(8, len(top["evidence"]["sample_ids"])) and min(widths) > 0
    # evidence is one click away
    hero.locator("button.more").click()
    modal = page.locator("#modal")
    assert modal.is_visible()
    ids = modal.locator(".thumb").evaluate_all("els => els.map(e => e.title)")
    assert ids == top["evidence"]["sample_ids"][:60]
    modal.locator(".thumb").first.click()
    card = modal.locator(".card")
    first = top["evidence"]["sample_ids"][0]
    assert card.get_attribute("data-sample-id") == first
    i = fx.ids.index(first)
    assert card.locator("dd.f-description").inner_text() == fx.tables["vlm"]["description"][i]
    assert card.locator("b.pred").inner_text() == fx.tables["predictions"]["pred"][i]
    page.screenshot(path=str(SHOTS / "report_card.png"))
    page.locator("#modal-back").click()
    assert modal.locator(".gallery").count() == 1
    page.keyboard.press("Escape")
    assert not modal.is_visible()
    assert problems == []


def test_xai_cells_show_their_samples(browser, report):
    fx, index = report
    page, problems = _page(browser, index.as_uri())
    for name, cell in fx.findings["xai_matrix"]["cells"].items():
        page.locator(f"button.cell[data-cell={name}]").click()
        gal = page.locator("#xai-gallery")
        assert gal.locator(".gallery-title").inner_text().split(" — ")[1].startswith(
            f"{cell['count']} sample")
        shown = gal.locator(".thumb").evaluate_all("els => els.map(e => e.title)")
        assert shown == cell["sample_ids"][:60]
        assert page.locator(f"button.cell[data-cell={name}]").get_attribute(
            "aria-pressed") == "true"
    page.locator("button.cell[data-cell=wrong_low]").click()
    page.locator("#xai").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "report_xai_matrix.png"))
    page.locator("#xai-gallery .thumb").first.click()
    assert page.locator("#modal .card").get_attribute("data-sample-id") == \
        fx.findings["xai_matrix"]["cells"]["wrong_low"]["sample_ids"][0]
    assert problems == []


def test_finding_and_narrative_links(browser, report):
    fx, index = report
    page, problems = _page(browser, index.as_uri())
    page.locator("#narrative a.cite").first.click()
    assert page.evaluate("location.hash") == "#finding-1"
    f2 = fx.findings["findings"][1]
    art = page.locator("#finding-2")
    assert art.locator("h3").inner_text() == f2["title"]
    art.locator("button.more").click()
    ids = page.locator("#modal .thumb").evaluate_all("els => els.map(e => e.title)")
    assert ids == f2["evidence"]["sample_ids"][:60]
    page.keyboard.press("Escape")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "report_full.png"), full_page=True)
    assert problems == []


def test_hostile_content_renders_as_text(browser, tmp_path):
    fx = make_run(tmp_path, n=40, seed=5, hostile=True)
    page, problems = _page(browser, build_report(fx.run_dir).as_uri())
    assert page.evaluate("typeof window.__pwned") == "undefined"
    body = page.locator("body").inner_text()
    assert SCRIPT in body and IMG_ONERROR in body and JS_URL in body
    # open every card of the hostile samples: caption, judge answer, id, class name as text
    opened = set()
    for cell in ("correct_high", "correct_low", "wrong_high", "wrong_low"):
        page.locator(f"button.cell[data-cell={cell}]").click()
        for t in page.locator("#xai-gallery .thumb").all():
            if t.get_attribute("title") in (fx.ids[0], fx.ids[1], fx.ids[3]):
                t.click()
                card = page.locator("#modal .card")
                text = card.inner_text()
                sid = card.get_attribute("data-sample-id")
                opened.add(sid)
                if sid == fx.ids[0]:
                    assert f"caption {SCRIPT} end" in text and JS_URL in text
                assert sid in text
                srcs = card.locator("img").evaluate_all("els => els.map(e => e.src)")
                assert all(s.startswith("file://") for s in srcs)
                page.keyboard.press("Escape")
    assert opened == {fx.ids[0], fx.ids[1], fx.ids[3]}
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "report_hostile.png"), full_page=True)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0
    assert [p for p in problems if "Refused to execute" in p] == []

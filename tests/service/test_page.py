"""The web page in headless Chromium: upload the bundled clip, watch the job, see the plots."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from .servers import CLIP, KEY


def _browser():
    """The system Chromium and playwright; CI must have both (it fails there instead of skipping)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        why = "headless Chromium not installed (Debian package 'chromium'; .ci/run installs it)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    try:
        from playwright import sync_api
    except ImportError:
        why = "playwright not installed (the dev extra)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    return chromium, sync_api


def drawn(png: bytes) -> float:
    """Share of pixels that are not (nearly) white."""
    from PIL import Image

    pixels = list(Image.open(io.BytesIO(png)).convert("L").getdata())
    return sum(v < 235 for v in pixels) / len(pixels)


def test_page_uploads_the_clip_and_shows_the_report(api, tmp_path):
    chromium, sync_api = _browser()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(api.url + "/")
            # keys are on: the page asks for one after the first 401
            page.locator("#key-label").wait_for(state="visible", timeout=15_000)
            page.fill("#key", KEY)
            page.locator("#key").dispatch_event("change")
            # (no wait_for_function: the page's CSP forbids evaluating strings, as it should)
            page.locator("#model option").first.wait_for(state="attached", timeout=15_000)
            assert page.locator("#model").input_value() == "default"

            page.set_input_files("#file", str(CLIP))
            page.click("#upload")
            page.locator("#status").wait_for(state="visible", timeout=15_000)
            page.locator("#result").wait_for(state="visible", timeout=180_000)
            page.locator("#download-html[href^='blob:']").wait_for(state="attached", timeout=30_000)
            assert page.locator("#state").inner_text() == "done"
            assert float(page.locator("#progress").get_attribute("value")) == 1.0

            shot = tmp_path / "service-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert drawn(shot.read_bytes()) > 0.02
            if os.environ.get("EMOFUSE_SCREENSHOTS"):
                folder = os.environ["EMOFUSE_SCREENSHOTS"]
                os.makedirs(folder, exist_ok=True)
                shutil.copy(shot, folder)

            report = page.frame_locator("#report")
            figures = report.locator("figure.plot")
            assert figures.count() >= 2
            for i in range(figures.count()):
                share = drawn(figures.nth(i).screenshot())
                assert share > 0.02, f"plot {i} looks blank ({share:.3%} drawn)"
            for link in ("#download-json", "#download-csv", "#download-html"):
                assert page.locator(link).get_attribute("href").startswith("blob:"), link
            # a pasted dialogue goes the same way
            page.fill("#dialogue", "Ann: We won the match!\nBob: That is terrible, I am furious.")
            page.click("#analyse-dialogue")
            page.locator("#result").wait_for(state="hidden", timeout=15_000)
            page.locator("#result").wait_for(state="visible", timeout=120_000)
            assert "We won the match!" in report.locator("#transcript").inner_text()
            unexpected = [e for e in errors if "status of 401" not in e]  # the first, keyless call
            assert unexpected == [], errors
        finally:
            browser.close()

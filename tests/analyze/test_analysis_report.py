"""The HTML report: self-contained, and its plots render in a real browser (headless Chromium)."""

import io
import os
import re
import shutil

import pytest

from emofuse.analyze.result import Analysis, Skipped
from emofuse.schema import ExpertView, Prediction

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def make_analysis(n=6) -> Analysis:
    preds = []
    for i in range(n):
        probs = dict.fromkeys(LABELS, 0.05)
        probs[LABELS[i % len(LABELS)]] = 0.7
        gate_text = 0.2 + 0.1 * (i % 3)
        preds.append(
            Prediction(
                id=f"talk_seg{i:03d}",
                dialogue_id="talk",
                start=2.0 * i,
                end=2.0 * i + 1.5,
                text=f"sentence <{i}> & more",
                emotion=LABELS[i % len(LABELS)],
                probabilities=probs,
                sentiment=-2.0 + 0.8 * i,
                sentiment_range=(-3.0, 3.0),
                modalities=["audio", "text"],
                experts={
                    "audio": ExpertView(gate=1 - gate_text),
                    "text": ExpertView(gate=gate_text),
                },
            )
        )
    return Analysis(
        source="/data/talk.mp4",
        kind="video",
        duration=12.0,
        segmentation="speech",
        model="calibrated-late (emofuse-default)",
        labels=LABELS,
        sentiment_range=(-3.0, 3.0),
        predictions=preds,
        skipped=[Skipped(id="talk_seg009", start=20.0, end=21.0, what="face", why="no face found")],
        notes=["a <note>"],
    )


def test_report_is_self_contained_and_escaped(tmp_path):
    path = make_analysis().report(tmp_path / "r.html")
    html = path.read_text(encoding="utf-8")
    assert html.count('<figure class="plot"') == 3
    for pid in ("emotions", "sentiment", "modalities"):
        assert f'id="plot-{pid}"' in html
    assert "<script" not in html and "<link" not in html and "<img" not in html
    # the only URLs are XML namespaces, nothing is fetched
    assert set(re.findall(r'(?:src|href)="(https?://[^"]+)"', html)) == set()
    assert "sentence &lt;0&gt; &amp; more" in html and "a &lt;note&gt;" in html
    assert "no face found" in html


def test_report_without_sentiment_or_gates_says_so(tmp_path):
    a = make_analysis(2)
    a = a.model_copy(
        update={
            "predictions": [
                p.model_copy(update={"sentiment": None, "experts": {}}) for p in a.predictions
            ]
        }
    )
    html = a.report(tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count('<figure class="plot"') == 1
    assert html.count("Not available for this model or input.") == 2


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


def test_plots_render_in_headless_chromium(tmp_path):
    chromium, sync_api = _browser()
    from PIL import Image

    path = make_analysis().report(tmp_path / "report.html")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(path.as_uri())
            figures = page.locator("figure.plot")
            assert figures.count() == 3
            for i in range(3):
                fig = figures.nth(i)
                box = fig.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100
                png = Image.open(io.BytesIO(fig.screenshot())).convert("L")
                pixels = list(png.getdata())
                drawn = sum(v < 235 for v in pixels) / len(pixels)
                assert drawn > 0.02, f"plot {i} looks blank ({drawn:.3%} drawn pixels)"
        finally:
            browser.close()

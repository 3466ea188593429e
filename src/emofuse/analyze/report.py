"""The self-contained HTML report of an :class:`~emofuse.analyze.result.Analysis`.

One file, no network needed to view it: the plots are inline SVG drawn by matplotlib, the style
is inline CSS, there is no script. Sections: emotion probabilities over time, the sentiment
curve, which modality carried each decision (the gate weights), the cues with their times, the
transcript with each segment's emotion, and what was skipped and why. Each plot is a
``<figure class="plot" id="…">`` so tests (and users) can find it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.analyze.result import Analysis
from emofuse.evaluate.plots import figure
from emofuse.records import write_text_atomic

PALETTE = {
    "anger": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "joy": "#ff7f0e",
    "neutral": "#7f7f7f",
    "sadness": "#1f77b4",
    "surprise": "#2ca02c",
}
MODALITY_COLOURS = {"text": "#4c72b0", "audio": "#dd8452", "face": "#55a868"}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG is inline


def _times(a: Analysis) -> tuple[np.ndarray, np.ndarray, str]:
    """Segment start/end on the x axis: seconds, or segment numbers when there are no times."""
    preds = a.predictions
    if all(p.start is not None and p.end is not None for p in preds):
        return (
            np.array([p.start for p in preds], float),
            np.array([p.end for p in preds], float),
            "time (s)",
        )
    idx = np.arange(len(preds), dtype=float)
    return idx, idx + 1.0, "segment"


def _figure() -> tuple[Any, Any]:
    fig = figure(9.0, 2.6)
    return fig, fig.subplots()


def _stacked(
    a: Analysis, series: dict[str, np.ndarray], colours: dict[str, str], ylabel: str
) -> str:
    """Stacked bars, one band per segment over its span, one colour per series (shares)."""
    start, end, xlabel = _times(a)
    fig, ax = _figure()
    bottom = np.zeros(len(start))
    for name, values in series.items():
        ax.bar(
            start,
            values,
            width=np.maximum(end - start, 1e-3),
            bottom=bottom,
            align="edge",
            color=colours.get(name),
            label=name,
            edgecolor="white",
            linewidth=0.3,
        )
        bottom += values
    ax.set_ylim(0, 1)
    ax.set_xlim(start.min(), end.max())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _svg(fig)


def emotion_plot(a: Analysis) -> str | None:
    """Stacked probabilities of every label over time (each segment a band of its span)."""
    if not a.predictions or not a.labels:
        return None
    series = {
        label: np.array([q.probabilities.get(label, 0.0) for q in a.predictions])
        for label in a.labels
    }
    return _stacked(a, series, PALETTE, "probability")


def sentiment_plot(a: Analysis) -> str | None:
    """Sentiment score per segment on the model's scale."""
    pts = [(q, q.sentiment) for q in a.predictions if q.sentiment is not None]
    if not pts:
        return None
    start, end, xlabel = _times(a)
    keep = [i for i, q in enumerate(a.predictions) if q.sentiment is not None]
    mid = (start[keep] + end[keep]) / 2
    y = np.array([s for _, s in pts], float)
    fig, ax = _figure()
    ax.axhline(0.0, color="#999999", linewidth=0.8)
    ax.plot(mid, y, marker="o", color="#333333", linewidth=1.5)
    ax.fill_between(mid, 0, y, where=y >= 0, color="#2ca02c", alpha=0.25, interpolate=True)
    ax.fill_between(mid, 0, y, where=y < 0, color="#d62728", alpha=0.25, interpolate=True)
    if a.sentiment_range:
        ax.set_ylim(*a.sentiment_range)
    ax.set_xlim(start.min(), end.max())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("sentiment")
    return _svg(fig)


def modality_plot(a: Analysis) -> str | None:
    """Which modality carried each segment's decision.

    Its share of the evidence for the predicted emotion (``Prediction.evidence``: integrated
    gradients, absolute shares) when the segments were explained; otherwise the gate weight of
    each expert, which says how the model mixes the modalities in general.
    """
    if a.predictions and all(q.evidence for q in a.predictions):
        order = [
            m for m in ("audio", "face", "text") if any(m in q.evidence for q in a.predictions)
        ]
        series = {m: np.array([abs(q.evidence.get(m, 0.0)) for q in a.predictions]) for m in order}
        return _stacked(a, series, MODALITY_COLOURS, "share of the evidence")
    names: list[str] = []
    for q in a.predictions:
        names += [k for k, v in q.experts.items() if v.gate is not None and k not in names]
    if not names:
        return None
    series = {
        name: np.array(
            [(q.experts[name].gate or 0.0) if name in q.experts else 0.0 for q in a.predictions]
        )
        for name in names
    }
    return _stacked(a, series, MODALITY_COLOURS, "weight")


def _clock(t: float | None) -> str:
    if t is None:
        return ""
    m, s = divmod(t, 60.0)
    return f"{int(m)}:{s:05.2f}"


def render(a: Analysis) -> str:
    """The report's HTML text."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("emofuse.analyze", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["clock"] = _clock
    plots = [
        ("emotions", "Emotion probabilities over time", emotion_plot(a)),
        ("sentiment", "Sentiment", sentiment_plot(a)),
        ("modalities", "Which modality carried each decision", modality_plot(a)),
    ]
    cues = [(q, c) for q in a.predictions for c in q.cues]
    counts: dict[str, int] = {}
    for q in a.predictions:
        if q.emotion:
            counts[q.emotion] = counts.get(q.emotion, 0) + 1
    return env.get_template("report.html").render(
        a=a,
        name=Path(a.source).name,
        plots=[(pid, title, svg) for pid, title, svg in plots if svg is not None],
        missing_plots=[title for _, title, svg in plots if svg is None],
        cues=cues,
        explained=[q for q in a.predictions if q.explanation],
        counts=sorted(counts.items(), key=lambda kv: -kv[1]),
        palette=PALETTE,
    )


def write_report(a: Analysis, path: str | os.PathLike[str]) -> Path:
    """Write the HTML report of ``a`` to ``path`` (atomically); returns the path."""
    p = Path(path)
    write_text_atomic(p, render(a))
    return p


__all__ = ["render", "write_report"]

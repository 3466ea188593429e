"""Figures for evaluation reports: confusion matrix, gate weights per class, training curves.

Drawn with matplotlib's object-oriented API on an Agg canvas (``matplotlib.figure.Figure``, never
``pyplot``), so no global backend is switched and no window opens; matplotlib is imported inside
each function. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.errors import InputError, MissingDependencyError
from emofuse.metrics import IGNORE_INDEX, LOWER_IS_BETTER

DPI = 130


def confusion_matrix_plot(
    cm: Any,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix as an annotated heat map.

    Args:
        cm: ``(C, C)`` counts, rows = truth, columns = prediction (as
            :func:`emofuse.metrics.emotion_metrics` returns it).
        labels: The ``C`` class names.
        path: Where to write the PNG.
        normalize: Colour and annotate each row as fractions of its true class (recall on the
            diagonal); a class with no samples stays at zero. Counts are still shown.
        title: Figure title; a default names what the colours mean.

    Returns:
        ``path``.
    """
    m = _numpy(cm).astype(np.float64)
    labels = list(labels)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise InputError(
            None, f"confusion matrix of shape {m.shape} does not fit {len(labels)} labels"
        )
    support = m.sum(axis=1, keepdims=True)
    shown = np.divide(m, support, out=np.zeros_like(m), where=support > 0) if normalize else m
    fig = figure(*(max(4.5, 0.75 * len(labels) + 2.5),) * 2)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("fraction of true class" if normalize else "count")
    n = len(labels)
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(
        ticks, labels=[f"{lab} ({int(s)})" for lab, s in zip(labels, support[:, 0], strict=True)]
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    fontsize = 9 if n <= 8 else 7
    for i in range(n):
        for j in range(n):
            value = shown[i, j]
            text = f"{value:.2f}\n({int(m[i, j])})" if normalize else f"{int(m[i, j])}"
            dark = value > 0.55 * vmax
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    ax.set_title(
        title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix")
    )
    return _save(fig, path)


def mean_gates_per_class(gates: Any, y: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean gate weight of each expert over the samples of each true class.

    Args:
        gates: ``(N, E)`` mixing weights.
        y: ``(N,)`` true class indices; :data:`~emofuse.metrics.IGNORE_INDEX` rows are skipped.
        num_classes: ``C``.

    Returns:
        ``(means, counts)``: ``(C, E)`` means (``nan`` for a class without samples) and ``(C,)``
        sample counts.
    """
    g = _numpy(gates).astype(np.float64)
    t = _numpy(y).reshape(-1)
    if g.ndim != 2 or g.shape[0] != t.shape[0]:
        raise InputError(None, f"gates of shape {g.shape} do not match {t.shape[0]} labels")
    keep = t != IGNORE_INDEX
    g, t = g[keep], t[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise InputError(None, f"class indices must lie in 0..{num_classes - 1}")
    counts = np.bincount(t, minlength=num_classes)
    sums = np.zeros((num_classes, g.shape[1]))
    np.add.at(sums, t, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return means, counts


def gate_weights_per_class(
    gates: Any,
    gate_names: Sequence[str],
    y: Any,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Grouped bars: the mean gate weight given to each expert, for each true class.

    Args:
        gates: ``(N, E)`` gate weights (``ModelOutput.gates``), rows summing to one.
        gate_names: The ``E`` expert names (``ModelOutput.gate_names``).
        y: ``(N,)`` true class indices; unlabelled rows (``IGNORE_INDEX``) are skipped.
        labels: The class names.
        path: Where to write the PNG.
        title: Figure title.

    Returns:
        ``path``.
    """
    labels, names = list(labels), list(gate_names)
    means, counts = mean_gates_per_class(gates, y, len(labels))
    if means.shape[1] != len(names):
        raise InputError(
            None, f"gates have {means.shape[1]} columns but {len(names)} names were given"
        )
    fig = figure(max(6.0, 0.55 * len(labels) * max(1, len(names)) ** 0.5 + 3.0), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(names))
    colors = _palette(len(names))
    for k, name in enumerate(names):
        ax.bar(
            x - 0.4 + width * (k + 0.5),
            np.nan_to_num(means[:, k]),
            width,
            label=name,
            color=colors[k],
            edgecolor="white",
            linewidth=0.5,
        )
    ax.set_xticks(x, labels=[f"{lab}\n(n={int(c)})" for lab, c in zip(labels, counts, strict=True)])
    if len(labels) > 8:
        for tick in ax.get_xticklabels():
            tick.set_rotation(45)
            tick.set_ha("right")
    ax.axhline(1.0 / max(1, len(names)), color="grey", linestyle=":", linewidth=1, label="uniform")
    top = float(np.nanmax(means)) if np.isfinite(means).any() else 1.0
    ax.set_ylim(0.0, min(1.0, top * 1.15 + 0.02))
    ax.set_ylabel("mean gate weight")
    ax.set_xlabel("true class")
    ax.set_title(title or "Expert gate weights per true class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="expert")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, path)


def training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    metric_name: str | None = None,
    title: str | None = None,
) -> Path:
    """Loss curves (train and validation) and the validation metric over training.

    Args:
        history: One record per logging point with ``epoch`` and/or ``step``, and any of
            ``train_loss``, ``val_loss`` and the validation metric under ``val_<metric_name>``
            (what :func:`emofuse.train.fit` writes, e.g. ``val_weighted_f1``) or
            ``val_metric``. Missing or ``None`` / ``nan`` values are skipped, so per-step train
            losses and per-epoch validation can share a list.
        path: Where to write the PNG.
        metric_name: The validation metric (e.g. ``"weighted_f1"``); defaults to a record's
            ``metric`` key, else ``"validation metric"``.
        title: Figure title.

    Returns:
        ``path``.
    """
    if not history:
        raise InputError(None, "training history is empty")
    xkey = "epoch" if all(r.get("epoch") is not None for r in history) else "step"
    if any(r.get(xkey) is None for r in history):
        raise InputError(None, "every history record needs an 'epoch' or a 'step'")
    metric_name = metric_name or next(
        (str(r["metric"]) for r in history if r.get("metric")), "validation metric"
    )

    def series(key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in history:
            v = r.get(key)
            if v is not None and math.isfinite(float(v)):
                xs.append(float(r[xkey]))
                ys.append(float(v))
        return xs, ys

    fig = figure(10.0, 3.8)
    ax_loss, ax_metric = fig.subplots(1, 2)
    colors = _palette(3)
    for key, label, color in (
        ("train_loss", "train", colors[0]),
        ("val_loss", "validation", colors[1]),
    ):
        xs, ys = series(key)
        if xs:
            ax_loss.plot(
                xs,
                ys,
                marker="o" if len(xs) <= 30 else None,
                markersize=3,
                label=label,
                color=color,
            )
    ax_loss.set_xlabel(xkey)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(frameon=False)
    key = f"val_{metric_name}"
    xs, ys = series(key if any(key in r for r in history) else "val_metric")
    if xs:
        ax_metric.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, color=colors[2])
        lower = metric_name in LOWER_IS_BETTER
        best = int(np.argmin(ys) if lower else np.argmax(ys))
        ax_metric.scatter(
            [xs[best]],
            [ys[best]],
            s=60,
            facecolors="none",
            edgecolors="black",
            zorder=3,
            label=f"best {ys[best]:.4f} at {xkey} {xs[best]:g}",
        )
        ax_metric.legend(frameon=False)
    ax_metric.set_xlabel(xkey)
    ax_metric.set_ylabel(metric_name)
    ax_metric.set_title(f"Validation {metric_name}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def figure(width: float, height: float):
    """A matplotlib ``Figure`` (no pyplot state) of ``width`` × ``height`` inches, constrained layout."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError("evaluation plots", "matplotlib") from e
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}{p.suffix}")
    fig.savefig(tmp)
    os.replace(tmp, p)
    return p


__all__ = [
    "confusion_matrix_plot",
    "figure",
    "gate_weights_per_class",
    "mean_gates_per_class",
    "training_curves",
]

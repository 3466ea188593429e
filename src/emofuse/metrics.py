"""Emotion and sentiment metrics, computed the way the field computes them.

Every metric named in :data:`emofuse.spec.METRICS` is defined here, following the reference code
papers are compared with (``FIELD.md`` §D2, §D5):

* **Emotion** (MELD, IEMOCAP, RAVDESS, …): ``accuracy`` (= ``wa``), ``weighted_f1`` and
  ``macro_f1`` (``sklearn.metrics.f1_score`` with ``average="weighted"`` / ``"macro"`` over the
  classes present in truth or prediction, as the reference calls do), ``ua``
  (``sklearn.metrics.balanced_accuracy_score``: mean recall over the classes present in the
  truth), plus per-class precision / recall / F1 / support and the confusion matrix over all
  ``labels``. Rows whose truth is :data:`IGNORE_INDEX` are dropped first.
* **MOSI / MOSEI** (``scheme="mosi"``, MMSA ``metricsTop.py`` ``__eval_mosei_regression``):
  ``has0_acc2`` / ``has0_f1``: ``truth >= 0`` vs ``pred >= 0`` over all samples (zero is
  non-negative); ``non0_acc2`` / ``non0_f1``: samples with ``truth == 0`` dropped, then
  ``> 0`` vs ``> 0``; ``acc7``: clip both to [-3, 3], ``np.round`` both, exact match; ``acc5``:
  the same with [-2, 2]; ``mae`` on the *unclipped* values; ``corr``: Pearson (``np.corrcoef``).
* **CH-SIMS / SIMS-v2** (``scheme="sims"``, ``__eval_sims_regression``): clip both to [-1, 1]
  first; ``acc2`` bins [-1, 0] | (0, 1] (zero is *negative* here); ``acc3`` bins [-1, -0.1] |
  (-0.1, 0.1] | (0.1, 1]; ``acc5`` bins [-1, -0.7] | (-0.7, -0.1] | (-0.1, 0.1] | (0.1, 0.7] |
  (0.7, 1] — every bin closed on the right; ``f1``: weighted F1 on the acc2 bins. As in MMSA,
  ``mae`` and ``corr`` are computed on the *clipped* values for this scheme.
* **Any other sentiment** (``scheme=None``, e.g. EmotionTalk in [-2, 2]): ``mae`` and ``corr``.

Conventions worth knowing:

* ``np.round`` rounds half to even (``2.5 → 2``, ``-0.5 → -0``, ``1.5 → 2``). MMSA uses it, and
  so does ``acc7`` / ``acc5`` here, so a prediction of 2.5 against a truth of 3 is a miss.
* SIMS bin edges are compared in the input's own float precision, as MMSA does on float32
  tensors: ``float32(0.1)`` falls in the (-0.1, 0.1] bin, not above it.
* ``corr`` is ``nan`` when either side is constant or fewer than two samples are labelled (the
  Pearson coefficient is undefined); ``non0_*`` are ``nan`` when every truth is zero.
  :func:`aggregate_seeds` skips ``nan`` values and counts only the finite ones.
* Values are never rounded (MMSA rounds to 4 places for printing; tables here format instead).
  MMSA tables print MAE and Corr ×100 — convert before comparing.
* Sentiment truths that are ``NaN`` mark unlabelled samples and are dropped (the batch contract
  of :mod:`emofuse.models.base`); a non-finite prediction is an error.

**Names researchers paste into tables.** :func:`field_names` renames a metrics dict to the keys
of a reference toolkit, values untouched (:data:`METRIC_NAMES` holds the mapping):

* ``style="mmsa"`` — the keys of MMSA's ``metricsTop.py`` (regression evaluation), per scheme:
  MOSI/MOSEI ``has0_acc2`` → ``Has0_acc_2``, ``has0_f1`` → ``Has0_F1_score``, ``non0_acc2`` →
  ``Non0_acc_2``, ``non0_f1`` → ``Non0_F1_score``, ``acc5`` → ``Mult_acc_5``, ``acc7`` →
  ``Mult_acc_7``, ``mae`` → ``MAE``, ``corr`` → ``Corr``; CH-SIMS ``acc2`` → ``Mult_acc_2``,
  ``acc3`` → ``Mult_acc_3``, ``acc5`` → ``Mult_acc_5``, ``f1`` → ``F1_score``, ``mae`` →
  ``MAE``, ``corr`` → ``Corr``. MMSA has no emotion metrics; those keep our names.
* ``style="merbench"`` — the emotion metrics as MERBench (``zeroQiaoba/MERTools``) reports
  them: ``weighted_f1`` → ``WAF`` (weighted average F-score: its ``calculate_results`` stores
  ``f1_score(average="weighted")`` as ``emofscore``) and ``accuracy`` → ``ACC`` (``emoacc``).
  MERBench's own sentiment scores on MOSI/MOSEI are the same two numbers on the non-zero binary
  split, i.e. our ``non0_f1`` / ``non0_acc2``; they are *not* renamed, so that a task with both
  heads never has two ``ACC`` keys. Every other key keeps our name.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from emofuse.errors import InputError
from emofuse.spec import METRICS, TaskSpec

IGNORE_INDEX = -100
"""Emotion truth of an unlabelled sample (same value as ``emofuse.models.IGNORE_INDEX``)."""

EMOTION_METRICS = ("accuracy", "weighted_f1", "macro_f1", "wa", "ua")
"""Scalar metrics :func:`emotion_metrics` returns."""

MOSI_METRICS = (
    "has0_acc2",
    "has0_f1",
    "non0_acc2",
    "non0_f1",
    "acc7",
    "acc5",
    "mae",
    "corr",
)
"""Scalar metrics :func:`sentiment_metrics` returns for ``scheme="mosi"`` (MOSI, MOSEI)."""

SIMS_METRICS = ("acc2", "acc3", "acc5", "f1", "mae", "corr")
"""Scalar metrics :func:`sentiment_metrics` returns for ``scheme="sims"`` (CH-SIMS, SIMS-v2)."""

GENERIC_SENTIMENT_METRICS = ("mae", "corr")
"""Scalar metrics :func:`sentiment_metrics` returns when the task has no binning scheme."""

LOWER_IS_BETTER = frozenset({"mae"})
"""Metrics where a smaller value is better; every other metric is maximised."""

# Right-closed bin edges of the SIMS scheme, inside the clipped range [-1, 1] (MMSA ms_2/ms_3/ms_5
# without the outer -1.01 / 1.01 sentinels): bin i holds edges[i-1] < x <= edges[i].
SIMS_EDGES: dict[str, tuple[float, ...]] = {
    "acc2": (0.0,),
    "acc3": (-0.1, 0.1),
    "acc5": (-0.7, -0.1, 0.1, 0.7),
}

Scheme = Literal["mosi", "sims"] | None

NameStyle = Literal["ours", "mmsa", "merbench"]
"""Whose metric names :func:`field_names` writes: ours, MMSA's or MERBench's."""

NAME_STYLES: tuple[str, ...] = ("ours", "mmsa", "merbench")
"""The values of :data:`NameStyle`."""

METRIC_NAMES: dict[str, dict[str, dict[str, str]]] = {
    "mmsa": {
        # thuiar/MMSA src/MMSA/utils/metricsTop.py, __eval_mosei_regression (MOSI and MOSEI)
        "mosi": {
            "has0_acc2": "Has0_acc_2",
            "has0_f1": "Has0_F1_score",
            "non0_acc2": "Non0_acc_2",
            "non0_f1": "Non0_F1_score",
            "acc5": "Mult_acc_5",
            "acc7": "Mult_acc_7",
            "mae": "MAE",
            "corr": "Corr",
        },
        # the same file, __eval_sims_regression (CH-SIMS, SIMS-v2)
        "sims": {
            "acc2": "Mult_acc_2",
            "acc3": "Mult_acc_3",
            "acc5": "Mult_acc_5",
            "f1": "F1_score",
            "mae": "MAE",
            "corr": "Corr",
        },
    },
    "merbench": {
        # zeroQiaoba/MERTools MERBench/toolkit/dataloader/*.py calculate_results: emofscore =
        # f1_score(average="weighted"), reported as WAF; emoacc = accuracy_score, as ACC
        "emotion": {"weighted_f1": "WAF", "accuracy": "ACC"},
    },
}
"""Our metric name → a reference toolkit's, by style and metric family.

Families are ``"emotion"`` and the sentiment schemes ``"mosi"`` (MOSI, MOSEI) and ``"sims"``
(CH-SIMS, SIMS-v2); a task uses the emotion family plus its own scheme's. A metric without an
entry keeps our name (the generic sentiment scheme of e.g. EmotionTalk has none: MMSA never
evaluates it). See the module docstring for the sources.
"""


def metric_mode(name: str) -> Literal["max", "min"]:
    """Whether a metric is maximised (``"max"``) or minimised (``"min"``) in model selection.

    Args:
        name: A metric name from :data:`emofuse.spec.METRICS`.

    Raises:
        KeyError: ``name`` is not a known metric.
    """
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return "min" if name in LOWER_IS_BETTER else "max"


def headline(spec: TaskSpec) -> str:
    """The metric a task is judged (and a model selected) by: the first of ``spec.metrics``.

    A spec that lists no metrics falls back to ``weighted_f1`` for emotion tasks and ``mae``
    for sentiment-only tasks.
    """
    if spec.metrics:
        return spec.metrics[0]
    return "weighted_f1" if spec.emotion_labels else "mae"


def metric_names(
    spec_or_scheme: TaskSpec | Mapping[str, Any] | Scheme, style: str
) -> dict[str, str]:
    """Our metric name → the name ``style`` uses, for the metric families of a task.

    Args:
        spec_or_scheme: The task (a :class:`~emofuse.spec.TaskSpec` or its dict form, whose
            ``sentiment_scheme`` is read) or a sentiment scheme (``"mosi"``, ``"sims"`` or
            ``None``).
        style: ``"ours"`` (an empty mapping), ``"mmsa"`` or ``"merbench"``.

    Raises:
        InputError: ``style`` or the scheme is unknown.
    """
    if style not in NAME_STYLES:
        raise InputError(
            None, f"unknown metric-name style {style!r}; use {', '.join(NAME_STYLES)}"
        )
    scheme = _scheme_of(spec_or_scheme)
    if style == "ours":
        return {}
    families = METRIC_NAMES[style]
    return {**families.get("emotion", {}), **(families.get(scheme, {}) if scheme else {})}


def field_names(
    metrics: Mapping[str, Any],
    spec_or_scheme: TaskSpec | Mapping[str, Any] | Scheme,
    style: str = "mmsa",
) -> dict[str, Any]:
    """A metrics dict with the keys a reference toolkit uses (:data:`METRIC_NAMES`).

    Values are copied as they are (never rounded); keys without a name in ``style`` (counts,
    ``per_class``, metrics of another family) keep ours, and the order is kept.

    Example:
        >>> field_names({"has0_acc2": 0.8125, "mae": 0.71, "n": 16}, "mosi")
        {'Has0_acc_2': 0.8125, 'MAE': 0.71, 'n': 16}

    Args:
        metrics: E.g. from :func:`compute_metrics`.
        spec_or_scheme: The task or its sentiment scheme (see :func:`metric_names`).
        style: ``"mmsa"`` (sentiment metrics as MMSA names them), ``"merbench"`` (emotion
            metrics as MERBench does) or ``"ours"`` (a copy).

    Raises:
        InputError: ``style`` or the scheme is unknown, or two keys would get the same name.
    """
    names = metric_names(spec_or_scheme, style)
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        new = names.get(key, key)
        if new in out:
            raise InputError(
                None, f"metrics {key!r} and another key would both be named {new!r} ({style})"
            )
        out[new] = value
    return out


def infer_scheme(metrics: Mapping[str, Any]) -> Scheme:
    """The sentiment scheme a metrics dict was computed with, told by its keys.

    For results without a task: ``"mosi"`` when a Has0/Non0/Acc-7 metric is present, ``"sims"``
    when Acc-2/Acc-3/F1 is, else ``None``.
    """
    if any(k in metrics for k in ("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc7")):
        return "mosi"
    if any(k in metrics for k in ("acc2", "acc3", "f1")):
        return "sims"
    return None


def _scheme_of(spec_or_scheme: TaskSpec | Mapping[str, Any] | Scheme) -> Scheme:
    if isinstance(spec_or_scheme, TaskSpec):
        return spec_or_scheme.sentiment_scheme
    scheme = (
        spec_or_scheme.get("sentiment_scheme")
        if isinstance(spec_or_scheme, Mapping)
        else spec_or_scheme
    )
    if scheme not in ("mosi", "sims", None):
        raise InputError(None, f"unknown sentiment scheme {scheme!r}; use 'mosi', 'sims' or None")
    return scheme


# --------------------------------------------------------------------------------------------
# emotion


def emotion_metrics(y_true: Any, y_pred: Any, labels: Sequence[str]) -> dict[str, Any]:
    """Classification metrics for discrete emotion labels.

    Args:
        y_true: ``(N,)`` integer class indices; :data:`IGNORE_INDEX` marks unlabelled rows,
            which are dropped together with their predictions.
        y_pred: ``(N,)`` predicted class indices (``argmax`` of the logits).
        labels: Class names; index ``i`` is class ``i``.

    Returns:
        ``accuracy``, ``wa`` (the same value), ``weighted_f1``, ``macro_f1``, ``ua``, ``n``
        (labelled samples), ``per_class`` (``{label: {precision, recall, f1, support}}`` for every
        label, zero where undefined) and ``confusion_matrix`` (nested list, rows = truth,
        columns = prediction, in ``labels`` order).

    Raises:
        InputError: Shapes differ, an index is out of range, or no row is labelled.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = list(labels)
    if not labels:
        raise InputError(None, "emotion metrics need at least one class label")
    t = _as_1d(y_true, "emotion truth")
    p = _as_1d(y_pred, "emotion predictions")
    _same_length(t, p, "emotion")
    if not (_is_integral(t) and _is_integral(p)):
        raise InputError(None, "emotion truth and predictions must be integer class indices")
    t, p = t.astype(np.int64), p.astype(np.int64)
    keep = t != IGNORE_INDEX
    t, p = t[keep], p[keep]
    if t.size == 0:
        raise InputError(None, f"no labelled emotion samples (every truth is {IGNORE_INDEX})")
    n_cls = len(labels)
    for name, arr in (("truth", t), ("predictions", p)):
        bad = arr[(arr < 0) | (arr >= n_cls)]
        if bad.size:
            raise InputError(
                None,
                f"emotion {name} hold class index {int(bad[0])}, outside 0..{n_cls - 1} "
                f"for labels {labels}",
            )

    with warnings.catch_warnings():
        # balanced_accuracy warns when a predicted class never occurs in the truth; the value
        # (mean recall over the true classes) is still the one EmoBox and SER papers report.
        warnings.simplefilter("ignore", UserWarning)
        ua = balanced_accuracy_score(t, p)
    acc = accuracy_score(t, p)
    idx = list(range(n_cls))
    prec, rec, f1, support = precision_recall_fscore_support(
        t, p, labels=idx, average=None, zero_division=0
    )
    return {
        "accuracy": float(acc),
        "wa": float(acc),
        "weighted_f1": float(f1_score(t, p, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
        "ua": float(ua),
        "n": int(t.size),
        "per_class": {
            lab: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(t, p, labels=idx).tolist(),
    }


# --------------------------------------------------------------------------------------------
# sentiment


def sentiment_metrics(y_true: Any, y_pred: Any, scheme: Scheme = "mosi") -> dict[str, Any]:
    """Regression metrics for continuous sentiment, binned by the dataset's convention.

    Args:
        y_true: ``(N,)`` sentiment scores; ``NaN`` marks unlabelled rows, which are dropped.
        y_pred: ``(N,)`` predicted scores (finite).
        scheme: ``"mosi"`` (MOSI, MOSEI; [-3, 3]), ``"sims"`` (CH-SIMS, SIMS-v2; [-1, 1]) or
            ``None`` (only ``mae`` and ``corr``). See the module docstring for the definitions.

    Returns:
        The scheme's metrics (:data:`MOSI_METRICS`, :data:`SIMS_METRICS` or
        :data:`GENERIC_SENTIMENT_METRICS`) as floats, plus ``n`` (labelled samples) and, for
        ``"mosi"``, ``n_non0`` (samples with non-zero truth).

    Raises:
        InputError: Shapes differ, a prediction is not finite, the scheme is unknown, or no row
            is labelled.
    """
    if scheme not in ("mosi", "sims", None):
        raise InputError(None, f"unknown sentiment scheme {scheme!r}; use 'mosi', 'sims' or None")
    t = _as_float(_as_1d(y_true, "sentiment truth"), "sentiment truth")
    p = _as_float(_as_1d(y_pred, "sentiment predictions"), "sentiment predictions")
    _same_length(t, p, "sentiment")
    keep = ~np.isnan(t)
    t, p = t[keep], p[keep]
    if t.size == 0:
        raise InputError(None, "no labelled sentiment samples (every truth is NaN)")
    if not np.isfinite(t).all():
        raise InputError(None, "sentiment truth holds an infinite value")
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p))[0])
        raise InputError(None, f"sentiment prediction {bad} (among labelled rows) is {p[bad]}")
    if scheme == "mosi":
        return _mosi(t, p)
    if scheme == "sims":
        return _sims(t, p)
    return {"mae": _mae(t, p), "corr": _pearson(t, p), "n": int(t.size)}


def _mosi(t: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    out: dict[str, Any] = {}
    # Has0: zero counts as non-negative, all samples.
    bt, bp = t >= 0, p >= 0
    out["has0_acc2"] = float(accuracy_score(bt, bp))
    out["has0_f1"] = float(f1_score(bt, bp, average="weighted", zero_division=0))
    # Non0: drop truth == 0, then positive vs not positive.
    nz = t != 0
    if nz.any():
        bt, bp = t[nz] > 0, p[nz] > 0
        out["non0_acc2"] = float(accuracy_score(bt, bp))
        out["non0_f1"] = float(f1_score(bt, bp, average="weighted", zero_division=0))
    else:
        out["non0_acc2"] = out["non0_f1"] = math.nan
    out["acc7"] = _rounded_acc(t, p, 3.0)
    out["acc5"] = _rounded_acc(t, p, 2.0)
    out["mae"] = _mae(t, p)
    out["corr"] = _pearson(t, p)
    out["n"] = int(t.size)
    out["n_non0"] = int(nz.sum())
    return out


def _sims(t: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    t = np.clip(t, -1.0, 1.0)
    p = np.clip(p, -1.0, 1.0)
    out: dict[str, Any] = {}
    bins = {name: (sims_bin(t, name), sims_bin(p, name)) for name in SIMS_EDGES}
    for name, (bt, bp) in bins.items():
        out[name] = float(np.mean(bt == bp))
    bt, bp = bins["acc2"]
    out["f1"] = float(f1_score(bt, bp, average="weighted", zero_division=0))
    out["mae"] = _mae(t, p)  # on clipped values, as MMSA's SIMS evaluation does
    out["corr"] = _pearson(t, p)
    out["n"] = int(t.size)
    return out


def sims_bin(x: Any, metric: Literal["acc2", "acc3", "acc5"]) -> np.ndarray:
    """SIMS class index of each score: bin ``i`` holds ``edges[i-1] < x <= edges[i]``.

    Scores are clipped to [-1, 1] first, so -1 falls in bin 0 and 1 in the last bin. Edges are
    compared in the input's float precision (float32 stays float32), as MMSA compares them.

    Args:
        x: Scores, any shape.
        metric: Which binning: ``"acc2"`` (edge 0), ``"acc3"`` (-0.1, 0.1) or ``"acc5"``
            (-0.7, -0.1, 0.1, 0.7).
    """
    arr = _as_float(np.asarray(x), "sentiment scores")
    edges = np.asarray(SIMS_EDGES[metric], dtype=arr.dtype)
    return np.searchsorted(edges, np.clip(arr, -1.0, 1.0), side="left")


def _rounded_acc(t: np.ndarray, p: np.ndarray, bound: float) -> float:
    # MMSA __multiclass_acc on clipped values: np.round rounds half to even.
    rt = np.round(np.clip(t, -bound, bound))
    rp = np.round(np.clip(p, -bound, bound))
    return float(np.mean(rt == rp))


def _mae(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p.astype(np.float64) - t.astype(np.float64))))


def _pearson(t: np.ndarray, p: np.ndarray) -> float:
    """Pearson r via ``np.corrcoef``; ``nan`` when undefined (constant side, fewer than 2)."""
    if t.size < 2:
        return math.nan
    t64, p64 = t.astype(np.float64), p.astype(np.float64)
    if np.ptp(t64) == 0 or np.ptp(p64) == 0:
        return math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.corrcoef(p64, t64)[0, 1])
    return r


# --------------------------------------------------------------------------------------------
# by task


def compute_metrics(
    spec: TaskSpec,
    emotion_true: Any = None,
    emotion_pred: Any = None,
    sentiment_true: Any = None,
    sentiment_pred: Any = None,
) -> dict[str, Any]:
    """All metrics a task's heads support, on one split.

    Emotion metrics are computed when the spec has ``emotion_labels`` and both emotion arrays
    are given; sentiment metrics (binned by ``spec.sentiment_scheme``) when it has a
    ``sentiment_range`` and both sentiment arrays are given. Scalar metrics of both families sit
    at the top level (their names do not collide); the emotion ``n`` becomes ``n_emotion`` and
    the sentiment ``n`` becomes ``n_sentiment``.

    Args:
        spec: The task.
        emotion_true: ``(N,)`` class indices, :data:`IGNORE_INDEX` where unlabelled.
        emotion_pred: ``(N,)`` predicted class indices.
        sentiment_true: ``(N,)`` scores, ``NaN`` where unlabelled.
        sentiment_pred: ``(N,)`` predicted scores.

    Returns:
        A flat dict of floats (plus ``per_class`` and ``confusion_matrix`` for emotion).

    Raises:
        InputError: Only one array of a pair is given, or a metric in ``spec.metrics`` cannot
            be computed from what was given.
    """
    out: dict[str, Any] = {}
    if (emotion_true is None) != (emotion_pred is None):
        raise InputError(None, "give both emotion_true and emotion_pred, or neither")
    if (sentiment_true is None) != (sentiment_pred is None):
        raise InputError(None, "give both sentiment_true and sentiment_pred, or neither")
    if spec.emotion_labels and emotion_true is not None:
        emo = emotion_metrics(emotion_true, emotion_pred, spec.emotion_labels)
        emo["n_emotion"] = emo.pop("n")
        out.update(emo)
    if spec.sentiment_range is not None and sentiment_true is not None:
        sen = sentiment_metrics(sentiment_true, sentiment_pred, spec.sentiment_scheme)
        sen["n_sentiment"] = sen.pop("n")
        out.update(sen)
    missing = [m for m in spec.metrics if m not in out]
    if missing:
        raise InputError(
            None,
            f"task {spec.name!r} reports {missing}, which cannot be computed from the arrays "
            f"given (emotion: {emotion_true is not None}, sentiment: {sentiment_true is not None}, "
            f"sentiment scheme: {spec.sentiment_scheme})",
        )
    return out


def aggregate_seeds(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± standard deviation of each scalar metric over runs (seeds).

    Only top-level real numbers are aggregated (``per_class`` and ``confusion_matrix`` are not).
    ``nan`` values (an undefined ``corr``, say) are left out of the mean and std and of ``n``;
    a metric missing from some runs is aggregated over the runs that have it.

    The standard deviation is the *sample* one (``ddof=1``), as multi-seed tables report; it is
    ``nan`` when fewer than two finite values exist. Nothing is rounded.

    Args:
        runs: One metrics dict per run, e.g. from :func:`compute_metrics`.

    Returns:
        ``{metric: {"mean", "std", "n", "values"}}`` where ``values`` lists every run's value
        in order (``nan`` included) and ``n`` counts the finite ones.
    """
    if not runs:
        raise InputError(None, "aggregate_seeds needs at least one run")
    names: list[str] = []
    for run in runs:
        for k, v in run.items():
            if _is_real(v) and k not in names:
                names.append(k)
    out: dict[str, dict[str, Any]] = {}
    for k in names:
        values = [float(r[k]) for r in runs if k in r and _is_real(r[k])]
        finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
        mean = float(finite.mean()) if finite.size else math.nan
        std = float(finite.std(ddof=1)) if finite.size >= 2 else math.nan
        out[k] = {"mean": mean, "std": std, "n": int(finite.size), "values": values}
    return out


# --------------------------------------------------------------------------------------------
# helpers


def _as_1d(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(None, f"{what} must be 1-D, got shape {arr.shape}")
    return arr


def _as_float(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return arr
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64)
    raise InputError(None, f"{what} must be numbers, got dtype {arr.dtype}")


def _is_integral(arr: np.ndarray) -> bool:
    if arr.dtype.kind in "iu":
        return True
    if arr.dtype.kind == "f":
        return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    return False


def _same_length(t: np.ndarray, p: np.ndarray, what: str) -> None:
    if t.shape != p.shape:
        raise InputError(None, f"{what} truth has {t.size} rows but predictions have {p.size}")


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


__all__ = [
    "EMOTION_METRICS",
    "GENERIC_SENTIMENT_METRICS",
    "IGNORE_INDEX",
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "MOSI_METRICS",
    "NAME_STYLES",
    "SIMS_EDGES",
    "SIMS_METRICS",
    "aggregate_seeds",
    "compute_metrics",
    "emotion_metrics",
    "field_names",
    "headline",
    "infer_scheme",
    "metric_mode",
    "metric_names",
    "sentiment_metrics",
    "sims_bin",
]

"""Write evaluation results: JSON, a Markdown table, and the figures.

:func:`write_report` takes one *result* dict, as ``emofuse evaluate`` and the trainer build it:

.. code-block:: python

    {
        "model": "egmf", "dataset": "meld", "split": "test",        # free-form context, optional
        "spec": TaskSpec | dict,          # optional: orders the rows (headline first), names classes
        "metrics": {...},                 # one run: emofuse.metrics.compute_metrics(...)
        "seeds": [{...}, {...}],          # or several runs, one metrics dict each
        "seed_values": [1111, 1112],      # optional, the seeds of "seeds"
        "published": {"weighted_f1": 0.6591},   # optional, same units as ours (fractions)
        "published_source": "Paper et al. 2024, Table 2",        # optional
        "history": [{"epoch": 1, "train_loss": .., "val_loss": .., "val_metric": ..}],  # optional
        "gates": {"weights": (N, E), "names": [...], "y": (N,)},  # optional, ModelOutput.gates
    }

It writes ``result.json`` (pretty, sorted keys, ``NaN`` as ``null``, aggregates of multi-seed
runs added, raw gate arrays replaced by their per-class means), ``results.md`` and the PNGs
that the result has data for: ``confusion_matrix.png`` (summed over seeds for multi-seed runs),
``gate_weights.png`` and ``training_curves.png``.

**Names of other toolkits.** Metrics keep our names everywhere in ``result.json``; beside them,
a ``metric_names`` section maps each metric of the result that a reference toolkit names
differently to that name, per style (:data:`emofuse.metrics.METRIC_NAMES`)::

    "metric_names": {
        "mmsa": {"has0_acc2": "Has0_acc_2", "mae": "MAE", ...},   # sentiment, MMSA metricsTop.py
        "merbench": {"weighted_f1": "WAF", "accuracy": "ACC"}     # emotion, MERBench
    }

Both keys are always present (an empty mapping when no metric of the result has such a name).
``emofuse.metrics.field_names(metrics, spec, style)`` renames a metrics dict the same way. The
Markdown table shows our names unless ``write_report(..., names="mmsa")`` or ``"merbench"``
asks for the other toolkit's (``emofuse evaluate --names``); rows without a name in that style
keep ours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.errors import InputError
from emofuse.evaluate import plots
from emofuse.metrics import (
    EMOTION_METRICS,
    MOSI_METRICS,
    NAME_STYLES,
    SIMS_METRICS,
    aggregate_seeds,
    infer_scheme,
    metric_mode,
    metric_names,
)
from emofuse.records import dump_json, make_folder
from emofuse.schema import EvaluationResult
from emofuse.spec import METRICS

_KNOWN_ORDER = list(dict.fromkeys([*EMOTION_METRICS, *MOSI_METRICS, *SIMS_METRICS]))
_STYLE_TITLES = {"mmsa": "MMSA", "merbench": "MERBench"}


def markdown_table(
    rows: Sequence[Sequence[Any] | Mapping[str, Any]],
    columns: Sequence[str],
    digits: int = 4,
) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        rows: Each row a sequence in ``columns`` order, or a mapping keyed by column name
            (missing keys render empty).
        columns: Header names. The first column is left-aligned, the others right-aligned.
        digits: Decimals for floats; ``nan`` and ``None`` render as ``–``.

    Returns:
        The table, ending with a newline.
    """
    if not columns:
        raise InputError(None, "a table needs at least one column")
    lines = ["| " + " | ".join(_cell(c, digits) for c in columns) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|")
    for row in rows:
        if isinstance(row, Mapping):
            cells = [row.get(c, "") for c in columns]
        else:
            cells = list(row)
            if len(cells) != len(columns):
                raise InputError(
                    None, f"row {cells!r} has {len(cells)} cells for {len(columns)} columns"
                )
        lines.append("| " + " | ".join(_cell(c, digits) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    result: Mapping[str, Any] | EvaluationResult,
    out_dir: str | os.PathLike[str],
    names: str = "ours",
) -> dict[str, Path]:
    """Write a result's JSON, Markdown table and figures into ``out_dir``.

    Args:
        result: An :class:`~emofuse.schema.EvaluationResult` (``emofuse evaluate``; its
            predictions give the per-class gate weights), or a mapping as in the module
            docstring, with ``metrics`` (one run) or ``seeds`` (several).
        out_dir: Folder to write into (created).
        names: Metric names in the Markdown table: ``"ours"``, ``"mmsa"`` (sentiment metrics
            as MMSA's ``metricsTop.py`` names them) or ``"merbench"`` (emotion metrics as
            MERBench does). ``result.json`` always has our names plus ``metric_names``.

    Returns:
        ``{"json": …, "markdown": …}`` plus ``"confusion_matrix"``, ``"gate_weights"`` and
        ``"training_curves"`` for the figures written.

    Raises:
        InputError: ``names`` is not a known style, or the result has neither ``metrics`` nor
            ``seeds``.
    """
    if names not in NAME_STYLES:
        raise InputError(
            None, f"unknown metric-name style {names!r}; use {', '.join(NAME_STYLES)}"
        )
    if isinstance(result, EvaluationResult):
        result = _from_evaluation(result)
    out = Path(out_dir)
    make_folder(out)
    spec = _spec_dict(result.get("spec"))
    runs = _runs(result)
    multi = "seeds" in result
    agg = aggregate_seeds(runs) if multi else None
    labels = _labels(spec, runs)
    order = _metric_order(spec, runs)

    data: dict[str, Any] = {k: v for k, v in result.items() if k not in {"gates", "spec"}}
    if spec is not None:
        data["spec"] = spec
    if spec and spec.get("metrics"):
        data.setdefault("headline", spec["metrics"][0])
    if agg is not None:
        data["aggregate"] = agg
    scheme = spec if spec is not None else infer_scheme({k: None for r in runs for k in r})
    styles = {
        style: {k: v for k, v in metric_names(scheme, style).items() if k in order}
        for style in NAME_STYLES
        if style != "ours"
    }
    data["metric_names"] = styles
    paths: dict[str, Path] = {}

    cms = [r["confusion_matrix"] for r in runs if r.get("confusion_matrix") is not None]
    if cms and labels:
        cm = np.sum([np.asarray(c, dtype=np.int64) for c in cms], axis=0)
        title = "Confusion matrix (row-normalised)"
        if len(cms) > 1:
            title += f", summed over {len(cms)} runs"
        paths["confusion_matrix"] = plots.confusion_matrix_plot(
            cm, labels, out / "confusion_matrix.png", title=title
        )

    gates = result.get("gates")
    if gates is not None:
        if not labels:
            raise InputError(None, "gate weights per class need class labels (give 'spec')")
        weights, gate_names, y = gates["weights"], list(gates["names"]), gates["y"]
        means, counts = plots.mean_gates_per_class(weights, y, len(labels))
        data["gate_weights_per_class"] = {
            lab: {
                "n": int(counts[i]),
                **{nm: float(means[i, k]) for k, nm in enumerate(gate_names)},
            }
            for i, lab in enumerate(labels)
        }
        paths["gate_weights"] = plots.gate_weights_per_class(
            weights, gate_names, y, labels, out / "gate_weights.png"
        )

    history = result.get("history")
    if history:
        metric = data.get("headline") or (order[0] if order else None)
        paths["training_curves"] = plots.training_curves(
            history, out / "training_curves.png", metric_name=metric
        )

    paths["json"] = dump_json(out / "result.json", _jsonable(data))
    md = out / "results.md"
    shown = styles.get(names, {})
    md.write_text(
        _markdown(result, spec, runs, agg, order, labels, paths, names, shown), encoding="utf-8"
    )
    paths["markdown"] = md
    return paths


def _scope(result: Mapping[str, Any]) -> str:
    """What the metrics cover, when they do not cover every utterance of the split."""
    notes = []
    predictions = result.get("predictions") or []
    out_of_set = result.get("out_of_set") or {}
    if out_of_set:
        shown = ", ".join(f"{k or '(none)'} ×{v}" for k, v in sorted(out_of_set.items()))
        notes.append(
            f"**Emotion metrics cover {len(predictions) - sum(out_of_set.values())} of "
            f"{len(predictions)} predictions**: {sum(out_of_set.values())} references lie outside "
            f"the model's labels ({shown}); they were predicted (see `result.json`) but not scored, "
            "so per-class precision ignores predictions made for them."
        )
    unscored = result.get("unscored") or []
    if unscored:
        notes.append(f"Not scored: {', '.join(unscored)}.")
    skipped = result.get("skipped") or {}
    if skipped:
        notes.append(f"{len(skipped)} utterances could not be predicted (listed in `result.json`).")
    return " ".join(notes)


def _from_evaluation(result: EvaluationResult) -> dict[str, Any]:
    """The mapping form of an evaluation, with gate weights of the labelled predictions."""
    data = result.model_dump(mode="json")
    data["spec"] = data.pop("task")
    labels = list(result.task.get("emotion_labels") or [])
    scored = [
        p for p in result.predictions if p.target_emotion in labels and p.gates
    ]
    if scored and labels:
        names = list(scored[0].gates)
        data["gates"] = {
            "weights": np.array([[p.gates[n] for n in names] for p in scored]),
            "names": names,
            "y": np.array([labels.index(p.target_emotion) for p in scored]),  # type: ignore[arg-type]
        }
    return data


# --------------------------------------------------------------------------------------------


def _runs(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "seeds" in result:
        runs = list(result["seeds"])
        if not runs:
            raise InputError(None, "result 'seeds' is empty")
        return runs
    if "metrics" in result:
        return [result["metrics"]]
    raise InputError(None, "a result needs 'metrics' (one run) or 'seeds' (several runs)")


def _spec_dict(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json")
    return dict(spec)


def _labels(spec: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    if spec and spec.get("emotion_labels"):
        return list(spec["emotion_labels"])
    for r in runs:
        if r.get("per_class"):
            return list(r["per_class"])
    return []


def _metric_order(spec: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {k for r in runs for k, v in r.items() if _is_number(v)}
    first = [m for m in (spec or {}).get("metrics", []) if m in present]
    rest = [m for m in _KNOWN_ORDER if m in present and m not in first]
    others = sorted(m for m in present if m not in first and m not in rest and m in METRICS)
    counts = sorted(m for m in present if m not in METRICS)
    return first + rest + others + counts


def _markdown(
    result: Mapping[str, Any],
    spec: Mapping[str, Any] | None,
    runs: Sequence[Mapping[str, Any]],
    agg: Mapping[str, Mapping[str, Any]] | None,
    order: Sequence[str],
    labels: Sequence[str],
    paths: Mapping[str, Path],
    style: str = "ours",
    shown: Mapping[str, str] | None = None,
) -> str:
    context = [str(result[k]) for k in ("model", "dataset", "split") if result.get(k)]
    task = (spec or {}).get("name")
    title = " · ".join(context) or "Evaluation"
    parts = [f"# {title}\n"]
    if task:
        parts.append(f"Task `{task}`.")
    if agg is not None:
        seeds = result.get("seed_values")
        seed_txt = f" (seeds {', '.join(map(str, seeds))})" if seeds else ""
        parts.append(f"Mean ± sample standard deviation (ddof=1) over {len(runs)} runs{seed_txt}.")
    parts.append(
        "Values are fractions (MAE in label units), unrounded in `result.json`. "
        "`↓` marks a metric where lower is better.\n"
    )
    scope = _scope(result)
    if scope:
        parts.append(scope + "\n")
    shown = shown or {}
    if style != "ours":
        source = {
            "mmsa": "MMSA's `metricsTop.py`",
            "merbench": "MERBench (`zeroQiaoba/MERTools`)",
        }[style]
        parts.append(
            f"Metric names follow {source} where it names the metric; `result.json` keeps "
            "ours (`metric_names` maps them).\n"
        )

    published = result.get("published") or {}
    metric_col = f"Metric ({_STYLE_TITLES[style]})" if style != "ours" else "Metric"
    columns = [metric_col, "Mean ± std" if agg is not None else "Value"]
    if published:
        source = result.get("published_source")
        columns.append(f"Published ({source})" if source else "Published")
    headline = (spec or {}).get("metrics", [None])[0] if spec and spec.get("metrics") else None
    rows = []
    for m in order:
        name = shown.get(m, m)
        if m in METRICS and metric_mode(m) == "min":
            name += " ↓"
        if m == headline:
            name = f"**{name}**"
        if agg is not None:
            a = agg[m]
            if m in METRICS:
                value = _fmt(a["mean"]) + ("" if math.isnan(a["std"]) else f" ± {_fmt(a['std'])}")
                if a["n"] != len(runs):
                    value += f" (n={a['n']})"
            else:
                value = _fmt(a["mean"])
        else:
            value = runs[0].get(m)
        row = [name, value]
        if published:
            row.append(published.get(m))
        rows.append(row)
    parts.append(markdown_table(rows, columns))

    per_class = runs[0].get("per_class") if len(runs) == 1 else None
    if per_class:
        parts.append("\n## Per class\n")
        pc_rows = [
            [lab, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
            for lab, v in per_class.items()
        ]
        parts.append(markdown_table(pc_rows, ["Class", "Precision", "Recall", "F1", "Support"]))

    figures = [(k, p) for k, p in paths.items() if p.suffix == ".png"]
    if figures:
        parts.append("\n## Figures\n")
        parts.extend(f"![{k.replace('_', ' ')}]({p.name})" for k, p in figures)
    return "\n".join(parts) + "\n"


def _fmt(v: Any, digits: int = 4) -> str:
    return _cell(v, digits)


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float | np.floating):
        return "–" if math.isnan(v) else f"{float(v):.{digits}f}"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return str(v).replace("|", "\\|").replace("\n", " ")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _jsonable(x: Any) -> Any:
    """Plain JSON types: numpy → Python, ``nan`` / ``inf`` → ``None``, pydantic → dict."""
    if hasattr(x, "model_dump"):
        return _jsonable(x.model_dump(mode="json"))
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


__all__ = ["markdown_table", "write_report"]

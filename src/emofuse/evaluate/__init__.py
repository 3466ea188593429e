"""⑤ Evaluation: a saved model scored on a split, seed sweeps, and their reports.

* :func:`evaluate` — inference + the field's metrics → :class:`~emofuse.schema.EvaluationResult`;
* :func:`fit_seeds` — train one run per seed, test each, mean ± std;
* :func:`write_report` — result JSON, Markdown tables and figures.

The metric functions live in :mod:`emofuse.metrics` (rank 0, so training can select models on
them). Lightning, torch and matplotlib are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emofuse.evaluate.plots import (
    confusion_matrix_plot,
    gate_weights_per_class,
    mean_gates_per_class,
    training_curves,
)
from emofuse.evaluate.report import markdown_table, write_report

if TYPE_CHECKING:
    from emofuse.evaluate.evaluation import evaluate
    from emofuse.evaluate.sweep import fit_seeds


def __getattr__(name: str) -> Any:  # torch and Lightning load only when needed
    if name == "evaluate":
        from emofuse.evaluate.evaluation import evaluate

        return evaluate
    if name == "fit_seeds":
        from emofuse.evaluate.sweep import fit_seeds

        return fit_seeds
    raise AttributeError(f"module 'emofuse.evaluate' has no attribute {name!r}")


__all__ = [
    "confusion_matrix_plot",
    "evaluate",
    "fit_seeds",
    "gate_weights_per_class",
    "markdown_table",
    "mean_gates_per_class",
    "training_curves",
    "write_report",
]

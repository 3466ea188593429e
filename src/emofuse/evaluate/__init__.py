"""Evaluation outputs: result JSON, Markdown tables and figures.

The metrics themselves live in :mod:`emofuse.metrics` (rank 0, so models and the trainer can use
them); this package turns them into files. matplotlib is imported only when a figure is drawn.
"""

from emofuse.evaluate.plots import (
    confusion_matrix_plot,
    gate_weights_per_class,
    mean_gates_per_class,
    training_curves,
)
from emofuse.evaluate.report import markdown_table, write_report

__all__ = [
    "confusion_matrix_plot",
    "gate_weights_per_class",
    "markdown_table",
    "mean_gates_per_class",
    "training_curves",
    "write_report",
]

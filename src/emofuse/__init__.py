"""emofuse — emotion and sentiment from speech, faces and words, with the cues that support them.

Example:
    >>> import emofuse                                                  # doctest: +SKIP
    >>> model = emofuse.load_model("runs/meld/seed-0/model")            # doctest: +SKIP
    >>> model.predict(["I can't believe you did that!"])[0].emotion     # doctest: +SKIP
    'surprise'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from emofuse._version import __version__

__all__ = [
    "Analysis",
    "Analyzer",
    "Cue",
    "EvaluationResult",
    "InputError",
    "Prediction",
    "Utterance",
    "__version__",
    "evaluate",
    "load_dataset",
    "load_model",
]

if TYPE_CHECKING:
    from emofuse.analyze import Analysis, Analyzer
    from emofuse.datasets import load_dataset
    from emofuse.errors import InputError
    from emofuse.evaluate.evaluation import evaluate
    from emofuse.models.base import load_model
    from emofuse.records import Utterance
    from emofuse.schema import Cue, EvaluationResult, Prediction

# name → module; imported on first use, so `import emofuse` and `emofuse --help` stay fast
_LAZY = {
    "Analysis": "emofuse.analyze",
    "Analyzer": "emofuse.analyze",
    "Cue": "emofuse.schema",
    "EvaluationResult": "emofuse.schema",
    "InputError": "emofuse.errors",
    "Prediction": "emofuse.schema",
    "Utterance": "emofuse.records",
    "evaluate": "emofuse.evaluate.evaluation",
    "load_dataset": "emofuse.datasets",
    "load_model": "emofuse.models.base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emofuse' has no attribute {name!r}")

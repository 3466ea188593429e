"""Stage ④ — fusion models: features → emotion logits, sentiment, gates and experts.

:func:`load_model` restores a saved model, whose :meth:`~FusionModel.predict` computes its own
features from raw text or media; :class:`~emofuse.models.inference.Inference` runs any model
over a feature table.
"""

from emofuse.data.inputs import IGNORE_INDEX, InputSpec
from emofuse.models.base import (
    MODELS,
    FusionModel,
    ModelConfig,
    ModelOutput,
    build_model,
    load_model,
    upgrade_model,
)
from emofuse.models.inference import Inference, InferenceOutput

__all__ = [
    "IGNORE_INDEX",
    "MODELS",
    "FusionModel",
    "Inference",
    "InferenceOutput",
    "InputSpec",
    "ModelConfig",
    "ModelOutput",
    "build_model",
    "load_model",
    "upgrade_model",
]

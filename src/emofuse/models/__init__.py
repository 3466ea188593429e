"""Stage ③ — fusion models: cached features → emotion logits, sentiment, gates and experts."""

from emofuse.models.base import (
    IGNORE_INDEX,
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    build_model,
    load_model,
)

__all__ = [
    "IGNORE_INDEX",
    "MODELS",
    "FusionModel",
    "InputSpec",
    "ModelConfig",
    "ModelOutput",
    "build_model",
    "load_model",
]

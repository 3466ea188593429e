"""④ Training: a run config, the Lightning task, and :func:`fit` (one run, resumable).

``emofuse.train.config`` is light (pydantic only); :func:`fit` and :func:`load_tables` import
Lightning when first used. Seed sweeps with a test score per seed are
:func:`emofuse.evaluate.fit_seeds`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emofuse.train.config import (
    DatasetChoice,
    ModelChoice,
    OptimizerConfig,
    TrainConfig,
    TrainResult,
    load_run_config,
    run_config,
)

if TYPE_CHECKING:
    from emofuse.train.run import fit, load_tables


def __getattr__(name: str) -> Any:  # Lightning loads only when training starts
    if name in ("fit", "load_tables"):
        from emofuse.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'emofuse.train' has no attribute {name!r}")


__all__ = [
    "DatasetChoice",
    "ModelChoice",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "fit",
    "load_run_config",
    "load_tables",
    "run_config",
]

"""The configuration of a training run (:class:`TrainConfig`) and its result (:class:`TrainResult`).

A run config is a YAML file in ``configs/`` (or CLI flags): the dataset, the features each
modality reads, the model and its options, the optimizer and the schedule; unknown keys are
errors that name the key and the file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from emofuse.config import Config, read_config_file, validate_config
from emofuse.data.inputs import FeatureRef, parse_features
from emofuse.datasets.base import DatasetChoice
from emofuse.features.base import EXTRACTORS
from emofuse.features.store import CACHE_ENV, DEFAULT_CACHE, default_cache_dir
from emofuse.models.base import MODELS
from emofuse.spec import METRICS

RESULT_FILE = "result.json"
RUN_FILE = "run.json"

# Config fields that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = {"epochs", "patience", "out_dir", "num_threads", "seeds", "loggers"}

DEFAULT_MODEL = "mlp"
"""The model of :func:`default_run_config` when none is named (``emofuse config default train``)."""

PLACEHOLDER_DATASET: dict[str, Any] = {"name": "meld"}
"""The dataset of :func:`default_run_config`: a placeholder that validates, to be replaced."""

PLACEHOLDER_FEATURES: dict[str, str] = {"text": "minilm:tokens"}
"""The features of :func:`default_run_config`: a placeholder that validates, to be replaced."""


class ModelChoice(Config):
    """Which registered model, and its options (validated against the model's Config)."""

    name: str = Field(description="Model registry name (`emofuse models list`).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the model's Config (hidden, dropout, ...)."
    )


class OptimizerConfig(Config):
    """AdamW settings and the learning-rate schedule."""

    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")
    encoder_lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of a fine-tuned text encoder (e.g. 5e-5 for full "
        "fine-tuning); default: lr.",
    )
    schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="'linear': warm up over `warmup` of all steps, then decay linearly to 0 at "
        "the last epoch (the usual schedule for fine-tuning transformers).",
    )
    warmup: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of all training steps spent warming up."
    )


class TrainConfig(Config):
    """Everything one training run needs; unknown keys are errors.

    Example (YAML)::

        dataset: {name: meld}
        features: {text: minilm:tokens}
        model: {name: egmf, options: {hidden: 128}}
        epochs: 30
    """

    dataset: DatasetChoice = Field(description="The dataset (recipe name + options, or prepared).")
    features: dict[str, FeatureRef] = Field(
        description="modality → 'extractor:output' (or a mapping with extractor options)."
    )
    cache: Path | None = Field(
        None, description=f"Feature cache folder (default ${CACHE_ENV} or {DEFAULT_CACHE}).",
    )
    model: ModelChoice = Field(description="The model and its options.")
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="AdamW settings."
    )
    epochs: int = Field(30, ge=1, description="Maximum training epochs.")
    batch_size: int = Field(
        32, ge=1, description="Utterances per batch (whole dialogues for conversational models)."
    )
    patience: int | None = Field(
        8, ge=1, description="Early stopping: epochs without improvement; None = off."
    )
    grad_clip: float | None = Field(1.0, gt=0, description="Gradient-norm clip; None = off.")
    seed: int = Field(0, ge=0, description="Seed of initialisation, data order and dropout.")
    seeds: list[int] | None = Field(
        None, description="Several seeds: fit_seeds trains one run per seed, mean ± std."
    )
    out_dir: Path = Field(Path("runs/train"), description="Output folder of the run.")
    monitor: str | None = Field(
        None,
        description="Validation metric for selection and early stopping; default: the task's "
        "headline metric (the first of its spec's metrics).",
    )
    devices: int = Field(1, ge=1, description="Processes/devices (2 with strategy ddp on CPU).")
    strategy: Literal["auto", "ddp"] = Field("auto", description="Lightning strategy.")
    accelerator: Literal["auto", "cpu", "gpu"] = Field("cpu", description="Lightning accelerator.")
    num_threads: int | None = Field(
        None, ge=1, description="torch threads per process; default: all CPU cores."
    )
    on_feature_failure: Literal["skip", "missing"] = Field(
        "skip",
        description="An utterance whose features failed to extract is skipped, or keeps its "
        "other modalities with this one missing.",
    )
    loggers: list[Literal["csv", "tensorboard"]] = Field(
        default_factory=lambda: ["csv"],
        description="Where per-step and per-epoch values are logged: 'csv' → "
        "<out_dir>/logs/metrics.csv, 'tensorboard' → event files in <out_dir>/logs/tensorboard/ "
        "(needs the tensorboard package); [] = none. May change when a run is resumed.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # run.json files written before the hook protocol hold `progress_bar`; progress now goes through hooks
        if isinstance(data, dict) and "progress_bar" in data:
            data = {k: v for k, v in data.items() if k != "progress_bar"}
        return data

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("map at least one modality to 'extractor:output'")
        return parse_features(value)

    @model_validator(mode="after")
    def _features_of_the_dataset(self) -> TrainConfig:
        # extractors that read the dataset's own files (an MMSA pickle) take those options from
        # the dataset unless a reference gives them (FeatureExtractor.dataset_options)
        if self.dataset.name is None:
            return self
        filled = {}
        for m, ref in self.features.items():
            wanted = (
                EXTRACTORS.get(ref.extractor).dataset_options.get(self.dataset.name, {})
                if ref.extractor in EXTRACTORS
                else {}
            )
            taken = {
                opt: str(self.dataset.options[src])
                for opt, src in wanted.items()
                if opt not in ref.options and src in self.dataset.options
            }
            filled[m] = ref.model_copy(update={"options": taken | ref.options}) if taken else ref
        object.__setattr__(self, "features", filled)
        return self

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value: str | None) -> str | None:
        if value is not None and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}")
        return value

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"a logger is listed twice: {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value) or min(value) < 0):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        return value

    def cache_dir(self) -> Path:
        """The feature cache folder."""
        return default_cache_dir(self.cache)

    def inference_device(self) -> str:
        """Where the run's validation and test predictions are made.

        ``"cuda"`` when training runs on a GPU (``accelerator: gpu``, or ``auto`` with one
        present), else ``"cpu"``.
        """
        import torch

        if self.accelerator == "cpu" or not torch.cuda.is_available():
            return "cpu"
        return "cuda"

    def check_model(self, source: str = "config") -> None:
        """Validate ``model.options`` against the model's Config (errors name ``source``)."""
        cls = MODELS.get(self.model.name)
        validate_config(cls.Config, self.model.options, f"{source}: model.options")


def load_run_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a YAML run config; errors name the file and the key.

    Args:
        path: The YAML (or JSON) file.
        overrides: Top-level keys replacing the file's (``None`` values are ignored).
    """
    data = read_config_file(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    config = validate_config(TrainConfig, data, os.fspath(path))
    config.check_model(os.fspath(path))
    return config


@dataclass
class TrainResult:
    """What :func:`fit` returns (and writes to ``<out_dir>/result.json``).

    Attributes:
        out_dir: The run folder.
        model_dir: Where the best model was saved.
        monitor: The metric that chose it (on ``val``), and ``mode`` whether max or min.
        best_epoch: Epoch (0-based) of the best model.
        best_score: Its monitored value.
        val_metrics: Every validation metric of the best model (per class included).
        history: One row per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_<metric>``.
        skipped: ``split → {utterance id: problem}`` for utterances left out.
        epochs_run: Epochs trained in total (across resumptions).
        seconds: Wall time of this call.
        warnings: What the user should know about the model (e.g. it predicts one class for
            every validation utterance); also issued as :class:`~emofuse.errors.EmofuseWarning`.
    """

    out_dir: str
    model_dir: str
    monitor: str
    mode: str
    best_epoch: int
    best_score: float
    val_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    epochs_run: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def default_run_config(model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """A complete run config with every default spelled out (``emofuse config default model``).

    Every :class:`TrainConfig` key is present with its default, and ``model.options`` holds
    every option of the model's ``Config`` at its default, nested ones included (EGMF's
    ``expert_options`` and ``gate``, a ``text_encoder`` of ``null``). The dataset and the
    features are placeholders (:data:`PLACEHOLDER_DATASET`, :data:`PLACEHOLDER_FEATURES`) that
    validate but must be replaced before training: MELD needs its files, and the model should
    read the inputs of the task.

    Args:
        model: A registered model name (``emofuse models list``).

    Returns:
        Plain YAML/JSON values in :class:`TrainConfig` field order, accepted by
        :func:`load_run_config` as they are.

    Raises:
        UnknownComponentError: ``model`` is not registered.
    """
    options = MODELS.get(model).Config().model_dump(mode="json")
    raw = {
        "dataset": dict(PLACEHOLDER_DATASET),
        "features": dict(PLACEHOLDER_FEATURES),
        "model": {"name": model, "options": options},
    }
    config = validate_config(TrainConfig, raw, f"default run config of {model!r}")
    config.check_model(f"default run config of {model!r}")
    data = config.model_dump(mode="json")
    # features as written: the validated form spells out every extractor option
    data["features"] = dict(raw["features"])
    return {key: data[key] for key in TrainConfig.model_fields}


def run_config(
    file: str | os.PathLike[str] | None = None,
    *,
    dataset: str | None = None,
    prepared: str | os.PathLike[str] | None = None,
    dataset_options: dict[str, Any] | None = None,
    features: dict[str, str] | None = None,
    model: str | None = None,
    model_options: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    lr: float | None = None,
    settings: dict[str, Any] | None = None,
    **flags: Any,
) -> TrainConfig:
    """A run config from a YAML file and command-line values (``emofuse train``).

    Precedence, lowest first: the file; ``dataset`` or ``prepared`` (replacing the file's
    dataset) or ``dataset_options`` (merged into it); ``features`` (replacing); ``model``
    (replacing) or ``model_options`` (merged); ``seeds``, ``lr`` and the top-level ``flags``
    (``out_dir``, ``epochs``, ``batch_size``, ``cache``, ``devices``; ``None`` values ignored;
    ``devices > 1`` implies ``strategy: ddp``); finally ``settings``, any keys (``--set``).

    Raises:
        ConfigError: a key is unknown or invalid (naming the file or "command line"), or the
            dataset, the features or the model is missing.
    """
    from emofuse.config import deep_merge
    from emofuse.errors import ConfigError

    data: dict[str, Any] = read_config_file(file) if file is not None else {}
    source = os.fspath(file) if file is not None else "command line"
    if file is not None:
        validate_config(TrainConfig, data, source)
    if dataset is not None or prepared is not None:
        if dataset is not None and prepared is not None:
            raise ConfigError("give --dataset or --prepared, not both")
        if prepared is not None and dataset_options:
            raise ConfigError(
                "--dataset-option applies to --dataset; a prepared folder is fixed (prepare it "
                "again with the option: emofuse datasets prepare NAME ... -o KEY=VALUE)"
            )
        data["dataset"] = (
            {"name": dataset, "options": dict(dataset_options or {})}
            if dataset
            else {"prepared": os.fspath(prepared)}  # type: ignore[arg-type]
        )
    elif dataset_options:
        ds = dict(data.get("dataset") or {})
        ds["options"] = deep_merge(dict(ds.get("options") or {}), dataset_options)
        data["dataset"] = ds
    if features:
        data["features"] = dict(features)
    if model is not None:
        data["model"] = {"name": model, "options": dict(model_options or {})}
    elif model_options:
        m = dict(data.get("model") or {})
        m["options"] = deep_merge(dict(m.get("options") or {}), model_options)
        data["model"] = m
    if seeds is not None:
        data["seeds"] = list(seeds)
    data.update({k: os.fspath(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None})
    if (flags.get("devices") or 1) > 1:
        data.setdefault("strategy", "ddp")
    if lr is not None:
        data["optimizer"] = {**dict(data.get("optimizer") or {}), "lr": lr}
    data = deep_merge(data, dict(settings or {}))
    for key, flag in (("dataset", "--dataset/--prepared"), ("features", "-f"), ("model", "--model")):
        if key not in data:
            raise ConfigError(f"{source}: {key!r} is missing (give {flag} or --config)")
    config = validate_config(TrainConfig, data, source)
    config.check_model(source)
    return config


__all__ = [
    "DEFAULT_MODEL",
    "PLACEHOLDER_DATASET",
    "PLACEHOLDER_FEATURES",
    "RESULT_FILE",
    "RUN_FILE",
    "DatasetChoice",
    "ModelChoice",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "default_run_config",
    "load_run_config",
    "run_config",
]

"""Training and evaluation of fusion models through Lightning.

One run reads a :class:`TrainConfig` (a YAML file in ``configs/``, or CLI flags), loads the
dataset's ``train`` and ``val`` splits and their cached features, and trains a registered model:

* **Model selection on ``val`` only.** After every epoch the whole validation split is
  predicted (gathered across DDP processes) and scored with :func:`emofuse.metrics.compute_metrics`;
  the monitored metric (by default the task's headline metric) drives the best checkpoint and
  early stopping. :func:`fit` never loads the ``test`` split — not even its features.
* **Resumable.** ``<out_dir>/checkpoints/last.ckpt`` is written after every epoch; starting the
  same run again continues from it. The data order is a function of ``(seed, epoch)`` and the
  random generators are re-seeded from ``(seed, epoch, rank)`` at every epoch start, so a killed
  and restarted run ends with exactly the weights and history of an uninterrupted one.
* **Seeds.** :func:`fit_seeds` trains one run per seed into ``<out_dir>/seed-<s>`` (finished
  seeds are skipped, so a sweep resumes), evaluates each best model on ``test`` and reports
  every metric as mean ± std over seeds.
* **DDP.** ``devices: 2`` with ``strategy: ddp`` trains in two processes (CPU works, with the
  gloo backend); batches are split between processes by the samplers of
  :mod:`emofuse.models.batching`.

The outputs of a run::

    <out_dir>/run.json            the validated config
    <out_dir>/checkpoints/        last.ckpt and best-epoch=NNN.ckpt (Lightning)
    <out_dir>/logs/metrics.csv    per-step and per-epoch logs (CSVLogger) of the last session;
                                  metrics.1.csv, ... of the sessions before each resumption
    <out_dir>/model/              the best model (save_pretrained) + features.json + history.json
    <out_dir>/result.json         TrainResult: best epoch, val metrics, history, skipped items
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from emofuse.config import Config, read_config_file, validate_config
from emofuse.datasets.base import DATASETS, Dataset, open_prepared
from emofuse.errors import ConfigError, InputError
from emofuse.features.store import FeatureStore
from emofuse.metrics import aggregate_seeds, compute_metrics, headline, metric_mode
from emofuse.models.base import IGNORE_INDEX, MODELS, FusionModel, build_model, load_model
from emofuse.models.batching import (
    Collator,
    FeatureRef,
    FeatureTable,
    LoadProgress,
    batch_sampler,
    parse_features,
)
from emofuse.records import dump_json
from emofuse.spec import METRICS, TaskSpec

CACHE_ENV = "EMOFUSE_CACHE"
DEFAULT_CACHE = Path("~/.cache/emofuse/features")
RESULT_FILE = "result.json"
RUN_FILE = "run.json"

# Config fields that may change between a run and its resumption without changing its result.
_RESUMABLE_CHANGES = {"epochs", "patience", "out_dir", "num_threads", "progress_bar", "seeds"}


# -- configuration ---------------------------------------------------------------------------
class DatasetChoice(Config):
    """Where the utterances come from: a registered recipe or a prepared folder."""

    name: str | None = Field(None, description="Dataset recipe name (`emofuse datasets list`).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Recipe options (root, protocol, fold, ...)."
    )
    prepared: Path | None = Field(
        None, description="A folder written by `emofuse datasets prepare` (instead of name)."
    )
    train_split: str = Field("train", description="Split the model is trained on.")
    val_split: str = Field("val", description="Split used for early stopping and model selection.")
    test_split: str = Field("test", description="Split reported by fit_seeds (never used by fit).")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetChoice:
        if (self.name is None) == (self.prepared is None):
            raise ValueError("give exactly one of 'name' or 'prepared'")
        if self.prepared is not None and self.options:
            raise ValueError("'options' apply to a recipe name, not to a prepared folder")
        return self

    def load(self) -> Dataset:
        """Load the dataset (recipe options validated; errors name the dataset)."""
        if self.prepared is not None:
            return open_prepared(self.prepared)
        cls = DATASETS.get(self.name)  # type: ignore[arg-type]
        return cls(validate_config(cls.Config, self.options, f"dataset {self.name!r}")).dataset()


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
        None, description=f"Feature cache folder (default ${CACHE_ENV} or {DEFAULT_CACHE})."
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
    progress_bar: bool = Field(False, description="Show Lightning's progress bar.")

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("map at least one modality to 'extractor:output'")
        return parse_features(value)

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value: str | None) -> str | None:
        if value is not None and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value) or min(value) < 0):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        return value

    def cache_dir(self) -> Path:
        """The feature cache folder."""
        return Path(self.cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()

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


# -- results ---------------------------------------------------------------------------------
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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# -- the Lightning module --------------------------------------------------------------------
def _lightning() -> Any:
    try:
        import lightning as L
    except ImportError:  # pragma: no cover - a core dependency of training
        from emofuse.errors import MissingDependencyError

        raise MissingDependencyError("training", "lightning") from None
    return L


def _module_class() -> type:
    """The LightningModule class (built lazily so importing this module stays light)."""
    global _FusionTask
    if _FusionTask is not None:
        return _FusionTask
    L = _lightning()

    class FusionTask(L.LightningModule):
        """Wraps a :class:`FusionModel`: joint loss, whole-split validation metrics, history."""

        def __init__(
            self,
            model: FusionModel,
            config: TrainConfig,
            train: FeatureTable,
            val: FeatureTable,
            monitor: str,
        ) -> None:
            super().__init__()
            self.model = model
            self.cfg = config
            self.train_table, self.val_table = train, val
            self.monitor = monitor
            self.history: list[dict[str, Any]] = []
            self._train_sum = 0.0
            self._train_n = 0
            self._val_sum = 0.0
            self._val_n = 0
            self._val_out: list[Tensor] = []
            self.collate_calls: list[list[int]] = []  # for inspection in tests
            # Training epochs whose data were fully consumed. Lightning creates a resumed run's
            # first iterator before its own epoch counter is restored, so data order and seeds
            # follow this counter, which travels in the checkpoint.
            self.data_epoch = 0
            self._train_collate = model_collator(model, train)
            self._val_collate = model_collator(model, val)

        # data
        def _loader(self, table: FeatureTable, collate: Collator, train: bool) -> Any:
            from torch.utils.data import DataLoader

            sampler = batch_sampler(
                table,
                self.cfg.batch_size,
                conversational=self.model.conversational,
                shuffle=train,
                seed=self.cfg.seed,
                rank=self.trainer.global_rank,
                world_size=self.trainer.world_size,
                pad=train,
                epoch_source=(lambda: self.data_epoch) if train else None,
                lengths=collate.lengths(),
            )
            return DataLoader(
                list(range(len(table))), batch_sampler=sampler, collate_fn=collate, num_workers=0
            )

        def train_dataloader(self) -> Any:
            return self._loader(self.train_table, self._train_collate, True)

        def val_dataloader(self) -> Any:
            return self._loader(self.val_table, self._val_collate, False)

        # training
        def on_train_epoch_start(self) -> None:
            self._train_sum, self._train_n = 0.0, 0

        def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
            # Dropout and modality dropout draw from generators re-seeded at the first step of
            # every epoch (after Lightning has fetched the batch, which may draw from them), so a
            # run resumed at an epoch boundary continues exactly as the uninterrupted one.
            if batch_idx == 0:
                _seed_all(self.cfg.seed, self.data_epoch, self.global_rank)

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == self.trainer.num_training_batches - 1:
                self.data_epoch += 1  # before the epoch-end checkpoint is written

        def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
            out = self.model(batch)
            terms = self.model.loss(out, batch)
            n = int(batch["index"].shape[0])
            self._train_sum += float(terms["loss"].detach()) * n
            self._train_n += n
            for k, v in terms.items():
                self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=False, batch_size=n)
            return terms["loss"]

        def configure_optimizers(self) -> Any:
            opt = self.cfg.optimizer
            encoder = self.model.text_encoder
            mine = set() if encoder is None else {id(p) for p in encoder.parameters()}
            groups = [
                {
                    "params": [
                        p for p in self.model.parameters() if p.requires_grad and id(p) not in mine
                    ]
                }
            ]
            if encoder is not None:
                groups.append(
                    {
                        "params": [p for p in encoder.parameters() if p.requires_grad],
                        "lr": opt.encoder_lr or opt.lr,
                    }
                )
            optimizer = torch.optim.AdamW(
                [g for g in groups if g["params"]], lr=opt.lr, weight_decay=opt.weight_decay
            )
            if opt.schedule == "constant":
                return optimizer
            total = max(1, int(self.trainer.estimated_stepping_batches))
            warm = int(opt.warmup * total)

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / (warm + 1)
                return max(0.0, (total - step) / max(1, total - warm))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

        # validation
        def on_validation_epoch_start(self) -> None:
            self._val_out, self._val_sum, self._val_n = [], 0.0, 0

        def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
            out = self.model(batch)
            n = int(batch["index"].shape[0])
            self._val_sum += float(self.model.loss(out, batch)["loss"]) * n
            self._val_n += n
            self._val_out.append(_prediction_rows(batch["index"], out))

        def on_validation_epoch_end(self) -> None:
            rows = torch.cat(self._val_out) if self._val_out else torch.zeros(0, 3)
            stats = torch.tensor(
                [self._val_sum, float(self._val_n), self._train_sum, float(self._train_n)],
                dtype=torch.float64,
            )
            if self.trainer.world_size > 1:  # every rank reports the same, global numbers
                rows = _gather_rows(self, rows)
                stats = self.all_gather(stats).sum(dim=0)
            metrics = _score(self.val_table, rows)
            for k, v in metrics.items():
                if _is_scalar(v):
                    self.log(f"val/{k}", float(v), on_epoch=True, sync_dist=False)
            self.log("val/loss", float(stats[0] / max(stats[1], 1.0)), on_epoch=True)
            if not self.trainer.sanity_checking:
                train_loss = float(stats[2] / stats[3]) if stats[3] else math.nan
                row = {
                    "epoch": int(self.current_epoch),
                    "train_loss": train_loss,
                    "val_loss": float(stats[0] / max(stats[1], 1.0)),
                }
                row |= {f"val_{k}": float(v) for k, v in metrics.items() if _is_scalar(v)}
                self.history = [h for h in self.history if h["epoch"] < row["epoch"]] + [row]

        # checkpoint extras
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["emofuse"] = {"history": self.history, "data_epoch": self.data_epoch}

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            extra = checkpoint.get("emofuse", {})
            self.history = list(extra.get("history", []))
            self.data_epoch = int(extra.get("data_epoch", checkpoint.get("epoch", -1) + 1))

    _FusionTask = FusionTask
    return FusionTask


_FusionTask: type | None = None
Tensor = torch.Tensor


def _seed_all(seed: int, epoch: int, rank: int) -> None:
    import random

    mixed = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)


def _prediction_rows(index: Tensor, out: Any) -> Tensor:
    """``(N, 3)`` float64 rows: table index, emotion prediction (or -1), sentiment (or NaN)."""
    n = index.shape[0]
    emo = (
        out.emotion_logits.argmax(dim=-1).double()
        if out.emotion_logits is not None
        else torch.full((n,), -1.0, dtype=torch.float64)
    )
    sen = (
        out.sentiment.detach().double()
        if out.sentiment is not None
        else torch.full((n,), math.nan, dtype=torch.float64)
    )
    return torch.stack([index.double().cpu(), emo.cpu(), sen.cpu()], dim=1)


def _gather_rows(module: Any, rows: Tensor) -> Tensor:
    """All processes' prediction rows (different counts per process), duplicates dropped."""
    counts = module.all_gather(torch.tensor(rows.shape[0], device=module.device)).flatten()
    width = int(counts.max())
    padded = rows.new_full((width, rows.shape[1]), math.nan)
    padded[: rows.shape[0]] = rows
    gathered = module.all_gather(padded.to(module.device)).cpu()
    parts = [gathered[r, : int(c)] for r, c in enumerate(counts.cpu())]
    allrows = torch.cat(parts)
    _, first = np.unique(allrows[:, 0].numpy(), return_index=True)
    return allrows[torch.as_tensor(first)]


def _score(table: FeatureTable, rows: Tensor) -> dict[str, Any]:
    """compute_metrics on prediction rows of a table."""
    spec = table.spec
    idx = rows[:, 0].long().tolist()
    items = [table.items[i] for i in idx]
    kw: dict[str, Any] = {}
    if spec.emotion_labels:
        kw["emotion_true"] = np.array([it.emotion for it in items], dtype=np.int64)
        kw["emotion_pred"] = rows[:, 1].long().numpy()
    if spec.sentiment_range is not None:
        kw["sentiment_true"] = np.array([it.sentiment for it in items], dtype=np.float64)
        kw["sentiment_pred"] = rows[:, 2].numpy()
    return compute_metrics(spec, **kw)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# -- fit -------------------------------------------------------------------------------------
def _identity(config: TrainConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return {k: v for k, v in data.items() if k not in _RESUMABLE_CHANGES}


def _keep_earlier_logs(logs: Path) -> None:
    """Move the last session's ``metrics.csv`` to ``metrics.<n>.csv`` before a resumption.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; the per-step
    logs of every session are kept this way (``metrics.1.csv`` is the first session).
    """
    current = logs / "metrics.csv"
    if not current.is_file():
        return
    n = 1
    while (logs / f"metrics.{n}.csv").exists():
        n += 1
    current.rename(logs / f"metrics.{n}.csv")


def _is_rank_zero() -> bool:
    return (
        int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    )


def load_tables(
    config: TrainConfig,
    splits: list[str],
    *,
    progress: LoadProgress | None = None,
) -> tuple[Dataset, dict[str, FeatureTable]]:
    """Load the dataset and the features of ``splits`` (only those: fit never asks for test)."""
    ds = config.dataset.load()
    for s in splits:
        if s not in ds.splits:
            raise ConfigError(f"{ds.name} has no split {s!r}; splits: {', '.join(ds.splits)}")
    store = FeatureStore(config.cache_dir())
    tables = {}
    for s in splits:
        tables[s] = FeatureTable.load(
            ds[s],
            config.features,
            store,
            ds.spec,
            on_failure=config.on_feature_failure,
            progress=progress,
        )
        if not tables[s].items:
            shown = "; ".join(f"{k}: {v}" for k, v in list(tables[s].skipped.items())[:3])
            raise InputError(None, f"{ds.name}/{s}: no usable utterance ({shown})")
    return ds, tables


def fit(
    config: TrainConfig,
    *,
    progress: LoadProgress | None = None,
    callbacks: list[Any] | None = None,
    rich_progress: bool = False,
) -> TrainResult:
    """Train one run; resume from ``<out_dir>/checkpoints/last.ckpt`` when it exists.

    A run whose ``result.json`` says it finished with this same config returns that result at
    once. The best model (on ``val``) is saved to ``<out_dir>/model``.

    Args:
        config: The run.
        progress: Feature-loading callback (see :data:`~emofuse.models.batching.LoadProgress`).
        callbacks: Extra Lightning callbacks.
        rich_progress: Use Lightning's RichProgressBar (the CLI on a terminal).

    Returns:
        The :class:`TrainResult` (on every DDP process; only rank 0 writes files).

    Raises:
        ConfigError: ``out_dir`` holds a run with a different config.
    """
    started = time.perf_counter()
    L = _lightning()
    config.check_model()
    torch.set_num_threads(config.num_threads or os.cpu_count() or 1)
    out = Path(config.out_dir)
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if _identity(TrainConfig.model_validate(previous)) != _identity(config):
            raise ConfigError(
                f"{out} holds a run with a different config (see {run_file}); "
                "choose another out_dir or delete it"
            )
        done = out / RESULT_FILE
        if done.is_file() and previous.get("epochs") == config.epochs:
            data = json.loads(done.read_text(encoding="utf-8"))
            if (out / "model" / "model.safetensors").is_file():
                return TrainResult(**data)
    ds, tables = load_tables(
        config, [config.dataset.train_split, config.dataset.val_split], progress=progress
    )
    train, val = tables[config.dataset.train_split], tables[config.dataset.val_split]
    monitor = config.monitor or headline(ds.spec)
    mode = metric_mode(monitor)
    _check_monitor(ds.spec, monitor)
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config.model.name, ds.spec, train.inputs, config.model.options)
    if model.config.standardize_inputs:  # training split only; stored in the model's buffers
        model.set_input_statistics(train.statistics())
    task = _module_class()(model, config, train, val, monitor)

    if _is_rank_zero():
        out.mkdir(parents=True, exist_ok=True)
        dump_json(run_file, config.model_dump(mode="json"))
    ckpt_dir = out / "checkpoints"
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{epoch:03d}",
        monitor=f"val/{monitor}",
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        # saved once the epoch counts as processed, so a resumed run starts the next epoch
        save_on_train_epoch_end=True,
    )
    # Lightning's save_last only writes when a top-k checkpoint was written in the same step,
    # so `last.ckpt` comes from its own callback, after the best one (callbacks run in order).
    last_checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    cbs: list[Any] = [checkpoint, last_checkpoint, *(callbacks or [])]
    if config.patience is not None:
        cbs.append(
            L.pytorch.callbacks.EarlyStopping(
                monitor=f"val/{monitor}",
                mode=mode,
                patience=config.patience,
                check_on_train_epoch_end=True,
            )
        )
    if config.progress_bar and rich_progress:
        cbs.append(L.pytorch.callbacks.RichProgressBar(leave=False))
    last = ckpt_dir / "last.ckpt"
    if last.is_file() and _is_rank_zero():
        _keep_earlier_logs(out / "logs")
    quiet = _quiet_lightning()
    quiet.__enter__()
    try:
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            callbacks=cbs,
            logger=L.pytorch.loggers.CSVLogger(out, name="logs", version=""),
            enable_progress_bar=config.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            gradient_clip_val=config.grad_clip,
            deterministic=True,
            log_every_n_steps=10,
        )
        trainer.fit(task, ckpt_path=last if last.is_file() else None)
    finally:
        quiet.__exit__(None, None, None)
    best_path = checkpoint.best_model_path
    if not best_path:
        raise InputError(out, "training produced no checkpoint (no validation epoch ran)")
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    model.eval()
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    best_epoch = int(best["epoch"])
    history = task.history
    val_metrics = score_table(model, val, config.batch_size)
    result = TrainResult(
        out_dir=os.fspath(out),
        model_dir=os.fspath(out / "model"),
        monitor=monitor,
        mode=mode,
        best_epoch=best_epoch,
        best_score=float(checkpoint.best_model_score),
        val_metrics=val_metrics,
        history=history,
        skipped={config.dataset.train_split: train.skipped, config.dataset.val_split: val.skipped},
        epochs_run=int(trainer.current_epoch),
    )
    if trainer.is_global_zero:
        model_dir = model.save_pretrained(out / "model")
        dump_json(
            model_dir / "features.json",
            {m: r.model_dump(mode="json") for m, r in config.features.items()},
        )
        dump_json(model_dir / "history.json", history)
        dump_json(model_dir / "training.json", config.model_dump(mode="json"))
        result.seconds = time.perf_counter() - started
        dump_json(out / RESULT_FILE, result.as_dict())
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    result.seconds = time.perf_counter() - started
    return result


class _quiet_lightning:
    """Silence Lightning's info chatter (GPU available, checkpoint paths...) during fit."""

    def __enter__(self) -> None:
        import logging
        import warnings

        self._loggers = [
            logging.getLogger(n)
            for n in (
                "lightning.pytorch",
                "lightning.fabric",
                "lightning.pytorch.utilities.rank_zero",
            )
        ]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.WARNING)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        for pattern in (
            ".*does not have many workers.*",
            ".*The number of training batches.*",
            ".*Checkpoint directory.*exists and is not empty.*",
            # the earlier session's metrics.csv was moved aside (_keep_earlier_logs)
            ".*Experiment logs directory.*exists and is not empty.*",
            ".*on_epoch=True.*",
            ".*LeafSpec.*",
            ".*litlogger.*",
        ):
            warnings.filterwarnings("ignore", message=pattern)

    def __exit__(self, *exc: object) -> None:
        self._warn.__exit__(*exc)
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)


def _check_monitor(spec: TaskSpec, monitor: str) -> None:
    emotion_only = {"accuracy", "weighted_f1", "macro_f1", "wa", "ua"}
    if monitor in emotion_only and not spec.emotion_labels:
        raise ConfigError(f"monitor {monitor!r} needs emotion labels; task {spec.name!r} has none")
    if monitor not in emotion_only and spec.sentiment_range is None:
        raise ConfigError(f"monitor {monitor!r} needs sentiment; task {spec.name!r} has none")


def model_collator(model: FusionModel, table: FeatureTable) -> Collator:
    """The ``collate_fn`` for ``model``: token ids (and dialogue context) for a fine-tuned encoder."""
    if model.text_encoder is None:
        return Collator(table)
    enc = model.config.text_encoder
    assert enc is not None  # set whenever the model built a text encoder
    return Collator(table, model.text_encoder.tokenize, (enc.context_past, enc.context_future))


# -- prediction and evaluation ---------------------------------------------------------------
@torch.no_grad()
def predict_table(
    model: FusionModel, table: FeatureTable, batch_size: int = 64
) -> tuple[Tensor, list[dict[str, Any]], list[str]]:
    """Run ``model`` over a table in eval mode.

    Returns:
        Prediction rows (see :func:`_prediction_rows`), per-utterance gate weights (``{}``
        when the model has no gates), and the gate names.
    """
    model.eval()
    collate = model_collator(model, table)
    sampler = batch_sampler(
        table,
        batch_size,
        conversational=model.conversational,
        shuffle=False,
        pad=False,
        lengths=collate.lengths(),
    )
    rows, gates, names = [], [None] * len(table), []
    for idx in sampler:
        batch = collate(idx)
        out = model(batch)
        rows.append(_prediction_rows(batch["index"], out))
        if out.gates is not None:
            names = list(out.gate_names)
            for i, g in zip(idx, out.gates.detach().cpu().tolist(), strict=True):
                gates[i] = dict(zip(names, g, strict=True))
    allrows = torch.cat(rows)
    order = torch.argsort(allrows[:, 0])
    return allrows[order], [g or {} for g in gates], names


def score_table(model: FusionModel, table: FeatureTable, batch_size: int = 64) -> dict[str, Any]:
    """Metrics of ``model`` on a table."""
    rows, _, _ = predict_table(model, table, batch_size)
    return _score(table, rows)


def evaluate(
    model_dir: str | os.PathLike[str],
    *,
    dataset: DatasetChoice | None = None,
    split: str = "test",
    cache: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: LoadProgress | None = None,
) -> dict[str, Any]:
    """Score a saved model on one split.

    Args:
        model_dir: A folder written by ``save_pretrained`` (``<run>/model``).
        dataset: Where the split comes from; default: the dataset the model was trained on
            (``training.json`` beside the weights).
        split: Which split.
        cache: Feature cache folder (default ``$EMOFUSE_CACHE`` or ``~/.cache/emofuse/features``).
        batch_size: Utterances per forward pass.
        progress: Feature-loading callback.

    Returns:
        ``{"model_dir", "model", "dataset", "split", "spec", "monitor", "metrics",
        "predictions", "gate_names", "gates", "history", "skipped"}``; each prediction has
        ``id``, ``emotion_true/pred`` (label names or ``None``), ``sentiment_true/pred`` and
        ``gates``; ``gates`` (or ``None``) is ``{"weights": (N, E), "names", "y": (N,)}`` over
        the labelled utterances, as :func:`emofuse.evaluate.report.write_report` reads it.
    """
    mdir = Path(model_dir)
    model = load_model(mdir)
    training = _read_json(mdir / "training.json")
    if dataset is None:
        if training is None:
            raise ConfigError(f"{mdir}: no training.json; say which dataset to evaluate on")
        dataset = DatasetChoice.model_validate(training["dataset"])
    feats = _read_json(mdir / "features.json")
    refs = (
        parse_features(feats, f"{mdir / 'features.json'}")
        if feats
        else {m: FeatureRef.parse(s.feature) for m, s in model.inputs.items()}
    )
    ds = dataset.load()
    if split not in ds.splits:
        raise ConfigError(f"{ds.name} has no split {split!r}; splits: {', '.join(ds.splits)}")
    if ds.spec.model_dump() != model.spec.model_dump():
        raise ConfigError(
            f"model was trained for task {model.spec.name!r}; dataset {ds.name!r} poses "
            f"{ds.spec.name!r} (labels or ranges differ)"
        )
    cache_dir = Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
    table = FeatureTable.load(
        ds[split],
        refs,
        FeatureStore(cache_dir),
        ds.spec,
        on_failure=(training or {}).get("on_feature_failure", "skip"),
        progress=progress,
    )
    if not table.items:
        raise InputError(None, f"{ds.name}/{split}: no usable utterance")
    rows, gates, names = predict_table(model, table, batch_size)
    metrics = _score(table, rows)
    labels = model.spec.emotion_labels or []
    preds = []
    for (i, e, s), g in zip(rows.tolist(), gates, strict=True):
        it = table.items[int(i)]
        preds.append(
            {
                "id": it.utt.id,
                "dialogue_id": it.utt.dialogue_id,
                "emotion_true": labels[it.emotion] if it.emotion != IGNORE_INDEX else None,
                "emotion_pred": labels[int(e)] if labels and e >= 0 else None,
                "sentiment_true": None if math.isnan(it.sentiment) else it.sentiment,
                "sentiment_pred": None if math.isnan(s) else s,
                "gates": g,
            }
        )
    meta = json.loads((mdir / "config.json").read_text(encoding="utf-8"))
    gate_report = None
    if names and labels:
        keep = [
            k
            for k, it in enumerate(table.items[int(i)] for i in rows[:, 0].tolist())
            if it.emotion != IGNORE_INDEX and gates[k]
        ]
        if keep:
            gate_report = {
                "weights": np.array([[gates[k][n] for n in names] for k in keep]),
                "names": names,
                "y": np.array([table.items[int(rows[k, 0])].emotion for k in keep]),
            }
    return {
        "gates": gate_report,
        "model_dir": os.fspath(mdir),
        "model": meta.get("model"),
        "dataset": ds.name,
        "split": split,
        "spec": model.spec.model_dump(mode="json"),
        "monitor": headline(model.spec),
        "metrics": metrics,
        "predictions": preds,
        "gate_names": names,
        "history": _read_json(mdir / "history.json") or [],
        "skipped": table.skipped,
    }


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err})") from None


# -- several seeds ---------------------------------------------------------------------------
def fit_seeds(
    config: TrainConfig,
    *,
    progress: LoadProgress | None = None,
    on_seed: Callable[[int, TrainResult], None] | None = None,
    rich_progress: bool = False,
) -> dict[str, Any]:
    """Train one run per seed into ``<out_dir>/seed-<s>``, then test each best model.

    Finished seeds are skipped, so a sweep stopped half-way resumes. Each seed's best model
    (chosen on ``val``) is evaluated once on the test split (``seed-<s>/test.json``).

    Returns:
        ``{"seeds", "monitor", "val": aggregate, "test": aggregate, "runs": [...]}`` where each
        aggregate maps a metric to ``{"mean", "std", "n", "values"}``; also written to
        ``<out_dir>/summary.json``. Non-zero DDP ranks return ``{}``.
    """
    seeds = config.seeds or [config.seed]
    out = Path(config.out_dir)
    runs = []
    for s in seeds:
        cfg = config.model_copy(update={"seed": s, "seeds": None, "out_dir": out / f"seed-{s}"})
        res = fit(cfg, progress=progress, rich_progress=rich_progress)
        if on_seed is not None and _is_rank_zero():
            on_seed(s, res)
        runs.append((s, res))
    if not _is_rank_zero():
        return {}
    tests = []
    for _s, res in runs:
        test_file = Path(res.out_dir) / "test.json"
        if test_file.is_file():
            test = json.loads(test_file.read_text(encoding="utf-8"))
        else:
            ev = evaluate(
                res.model_dir,
                dataset=config.dataset,
                split=config.dataset.test_split,
                cache=config.cache_dir(),
                batch_size=config.batch_size,
                progress=progress,
            )
            test = ev["metrics"]
            dump_json(test_file, test)
        tests.append(test)
    summary = {
        "seeds": seeds,
        "monitor": runs[0][1].monitor,
        "val": aggregate_seeds([r.val_metrics for _, r in runs]),
        "test": aggregate_seeds(tests),
        "runs": [
            {
                "seed": s,
                "out_dir": r.out_dir,
                "best_epoch": r.best_epoch,
                "val": r.val_metrics,
                "test": t,
            }
            for (s, r), t in zip(runs, tests, strict=True)
        ],
    }
    dump_json(out / "summary.json", summary)
    return summary


__all__ = [
    "DatasetChoice",
    "ModelChoice",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fit",
    "fit_seeds",
    "load_run_config",
    "load_tables",
    "predict_table",
    "score_table",
]

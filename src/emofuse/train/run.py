"""Train one run of a fusion model through Lightning: :func:`fit`.

* **Model selection on ``val`` only.** After every epoch the whole validation split is
  predicted and scored; the monitored metric (by default the task's headline metric) drives
  the best checkpoint and early stopping. :func:`fit` never loads the ``test`` split — not even
  its features.
* **Resumable.** ``<out_dir>/checkpoints/last.ckpt`` is written after every epoch; starting the
  same run again continues from it and ends with exactly the weights and history of an
  uninterrupted run (:mod:`emofuse.train.task`).
* **DDP.** ``devices: 2`` with ``strategy: ddp`` trains in two processes (CPU works, with the
  gloo backend); batches are split between processes by :mod:`emofuse.data.samplers`.

The outputs of a run::

    <out_dir>/run.json            the validated config
    <out_dir>/checkpoints/        last.ckpt and best-NNN.ckpt (Lightning)
    <out_dir>/logs/metrics.csv    per-step and per-epoch logs (CSVLogger) of the last session;
                                  metrics.1.csv, ... of the sessions before each resumption
                                  (``loggers: [csv]``, the default)
    <out_dir>/logs/tensorboard/   TensorBoard event files, one more per session
                                  (``loggers: [..., tensorboard]``; needs ``tensorboard``)
    <out_dir>/model/              the best model (save_pretrained: self-describing, with its
                                  full feature references) + history.json + training.json
    <out_dir>/result.json         TrainResult: best epoch, val metrics, history, skipped items
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch

from emofuse.data.table import FeatureTable
from emofuse.datasets.base import Dataset
from emofuse.errors import ConfigError, EmofuseWarning, InputError, MissingDependencyError, listing
from emofuse.features.store import FeatureStore
from emofuse.hooks import Hook
from emofuse.metrics import headline, metric_mode
from emofuse.models.base import build_model
from emofuse.models.inference import Inference, score
from emofuse.records import dump_json, make_folder, read_json
from emofuse.spec import TaskSpec
from emofuse.train.config import (
    RESULT_FILE,
    RESUMABLE_CHANGES,
    RUN_FILE,
    TrainConfig,
    TrainResult,
)
from emofuse.train.task import FusionTask, HookCallback


def _identity(config: TrainConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return {k: v for k, v in data.items() if k not in RESUMABLE_CHANGES}


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


TENSORBOARD_REQUIREMENT = "tensorboard>=2.16"
"""What ``loggers: [tensorboard]`` needs (the ``tensorboard`` extra, part of ``all``)."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def check_loggers(config: TrainConfig) -> None:
    """Fail before any work when a logger of ``config.loggers`` cannot run here.

    Raises:
        MissingDependencyError: ``tensorboard`` is asked for but neither ``tensorboard`` nor
            ``tensorboardX`` (which Lightning also accepts) is installed.
    """
    if "tensorboard" in config.loggers and not (
        _importable("tensorboard") or _importable("tensorboardX")
    ):
        raise MissingDependencyError("logger 'tensorboard'", TENSORBOARD_REQUIREMENT, "tensorboard")


def build_loggers(config: TrainConfig, out: Path) -> list[Any]:
    """The Lightning loggers of ``config.loggers``, in that order (``[]``: none).

    ``csv`` writes ``<out>/logs/metrics.csv`` (earlier sessions' files are kept by
    :func:`_keep_earlier_logs`); ``tensorboard`` writes event files into
    ``<out>/logs/tensorboard/``.

    Raises:
        MissingDependencyError: see :func:`check_loggers`.
    """
    check_loggers(config)
    loggers: list[Any] = []
    for name in config.loggers:
        if name == "csv":
            loggers.append(L.pytorch.loggers.CSVLogger(out, name="logs", version=""))
        elif name == "tensorboard":
            loggers.append(
                L.pytorch.loggers.TensorBoardLogger(
                    out / "logs", name="tensorboard", version="", default_hp_metric=False
                )
            )
    return loggers


def is_rank_zero() -> bool:
    """Whether this process is the first of a (possibly distributed) run."""
    return (
        int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    )


def load_tables(
    config: TrainConfig,
    splits: list[str],
    *,
    hook: Hook | None = None,
) -> tuple[Dataset, dict[str, FeatureTable]]:
    """Load the dataset and the features of ``splits`` (only those: fit never asks for test)."""
    ds = config.dataset.load()
    for s in splits:
        if s not in ds.splits:
            hint = ""
            if ds.name == "folder" and s == config.dataset.val_split and "train" in ds.splits:
                how = (
                    "prepare it again with `emofuse datasets prepare folder ... -o "
                    "val_fraction=0.1`"
                    if config.dataset.prepared is not None
                    else "-o val_fraction=0.1"
                )
                hint = f" (a folder dataset can carve one out of train, by dialogue or speaker: {how})"
            raise ConfigError(
                f"{ds.name} has no split {s!r}; splits: {', '.join(ds.splits)}{hint}"
            )
    store = FeatureStore(config.cache_dir())
    tables = {}
    for s in splits:
        tables[s] = FeatureTable.load(
            ds[s],
            config.features,
            store,
            ds.spec,
            on_failure=config.on_feature_failure,
            hook=hook,
        )
        if not tables[s].items:
            problems = listing(tables[s].skipped, 3)
            raise InputError(None, f"{ds.name}/{s}: no usable utterance ({problems})")
    return ds, tables


def fit(
    config: TrainConfig,
    *,
    hook: Hook | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train one run; resume from ``<out_dir>/checkpoints/last.ckpt`` when it exists.

    A run whose ``result.json`` says it finished with this same config returns that result at
    once. The best model (on ``val``) is saved to ``<out_dir>/model``.

    Args:
        config: The run.
        hook: Progress hook (:mod:`emofuse.hooks`): feature extraction, then
            ``"train epoch <e>"`` with the batches done and, after validation, the epoch's row.
        callbacks: Extra Lightning callbacks.

    Returns:
        The :class:`TrainResult` (on every DDP process; only rank 0 writes files).

    Raises:
        ConfigError: ``out_dir`` holds a run with a different config.
    """
    with caller_state_kept(), torch_threads(config.num_threads):
        return _fit(config, hook, callbacks)


#: Environment variables Lightning sets for seeding and determinism (and never unsets).
_LIGHTNING_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")


@contextlib.contextmanager
def caller_state_kept() -> Iterator[None]:
    """Give the caller's process-wide state back after training.

    A run seeds every generator (``seed_everything``) and, through Lightning's
    ``deterministic=True``, switches on ``torch.use_deterministic_algorithms`` and sets
    environment variables: left on, a caller's later torch code would run other kernels (with
    other rounding) and its random streams would restart from the run's seed. Restored here:
    the random states of ``random``, NumPy and torch (CPU and CUDA), the deterministic-algorithms
    flags, cuDNN's ``benchmark``/``deterministic`` and those environment variables.
    """
    import random

    import numpy as np

    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    algorithms = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    env = {k: os.environ.get(k) for k in _LIGHTNING_ENV}
    try:
        yield
    finally:
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (``None``: all cores), then restore the caller's.

    Floating-point sums depend on the thread count, so a run's training and its test scoring
    both use the run's ``num_threads``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n or os.cpu_count() or 1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _fit(config: TrainConfig, hook: Hook | None, callbacks: list[Any] | None) -> TrainResult:
    started = time.perf_counter()
    config.check_model()
    out = Path(config.out_dir)
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = read_json(run_file, expect=dict)
        try:
            earlier = TrainConfig.model_validate(previous)
        except ValueError as err:
            raise InputError(run_file, f"not a run config ({str(err).splitlines()[0]})") from None
        if _identity(earlier) != _identity(config):
            raise ConfigError(
                f"{out} holds a run with a different config (see {run_file}); "
                "choose another out_dir or delete it"
            )
        done = out / RESULT_FILE
        if done.is_file() and previous.get("epochs") == config.epochs:
            data = read_json(done, expect=dict)
            if (out / "model" / "model.safetensors").is_file():
                try:  # the folder may have been copied or moved since: its paths are here now
                    return TrainResult(
                        **data | {"out_dir": os.fspath(out), "model_dir": os.fspath(out / "model")}
                    )
                except TypeError as err:
                    raise InputError(done, f"not a training result ({err})") from None
    check_loggers(config)  # before any work (a finished run above needs no logger)
    ds, tables = load_tables(
        config, [config.dataset.train_split, config.dataset.val_split], hook=hook
    )
    train, val = tables[config.dataset.train_split], tables[config.dataset.val_split]
    monitor = config.monitor or headline(ds.spec)
    mode = metric_mode(monitor)
    _check_monitor(ds.spec, monitor)
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config.model.name, ds.spec, train.inputs, config.model.options)
    if model.standardized:  # training split only; stored in the model's buffers
        stats = train.statistics()
        model.set_input_statistics({m: stats[m] for m in model.standardized if m in stats})
    task = FusionTask(model, config, train, val, monitor)

    if is_rank_zero():
        make_folder(out)
        # a result of an earlier, shorter session no longer describes this run: until this
        # session ends, no result.json exists (a kill can then never leave a stale one)
        (out / RESULT_FILE).unlink(missing_ok=True)
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
    if hook is not None:
        cbs.append(HookCallback(hook))
    last = ckpt_dir / "last.ckpt"
    if last.is_file() and is_rank_zero():
        _prepare_resume(last, ckpt_dir)
        _keep_earlier_logs(out / "logs")
    cbs.append(_StayStopped())
    quiet = _quiet_lightning()
    quiet.__enter__()
    try:
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            callbacks=cbs,
            logger=build_loggers(config, out) or False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            gradient_clip_val=config.grad_clip,
            # on CPU every kernel is deterministic (exact resume); on a GPU some have no
            # deterministic version, so they warn instead of stopping the run
            deterministic=True if config.accelerator == "cpu" else "warn",
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
    lacking = model.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items()}, strict=False
    ).missing_keys
    if set(lacking) - model.frozen_pretrained_keys():
        raise InputError(best_path, f"checkpoint lacks weights of the model: {sorted(lacking)[:3]}")
    model.eval()
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    best_epoch = int(best["epoch"])
    history = task.history
    val_output = Inference(
        model, batch_size=config.batch_size, device=config.inference_device()
    )(val)
    model.cpu()
    val_metrics = score(val, val_output)
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
        warnings=collapse_warnings(val, val_output),
    )
    for message in result.warnings:
        warnings.warn(f"{out}: {message}", EmofuseWarning, stacklevel=2)
    if trainer.is_global_zero:
        model_dir = model.save_pretrained(out / "model")
        dump_json(model_dir / "history.json", history)
        dump_json(model_dir / "training.json", config.model_dump(mode="json"))
        result.seconds = time.perf_counter() - started
        dump_json(out / RESULT_FILE, result.as_dict())
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    result.seconds = time.perf_counter() - started
    return result


def collapse_warnings(table: FeatureTable, output: Any) -> list[str]:
    """Say when a model answers the same for every utterance of a labelled split.

    A model that predicts one emotion class for every validation utterance, or a sentiment
    score that barely moves, has learned nothing of its inputs (e.g. unscaled hand-crafted
    features); its metrics would otherwise look like a result.
    """
    import numpy as np

    notes = []
    labels = table.spec.emotion_labels or []
    if output.emotion_index is not None and len(labels) > 1 and len(output.emotion_index) > 1:
        classes = np.unique(output.emotion_index)
        if len(classes) == 1:
            notes.append(
                f"the model predicts '{labels[int(classes[0])]}' for all "
                f"{len(output.emotion_index)} validation utterances: it collapsed to one class "
                "(check the features' scale, the learning rate and the class balance)"
            )
    if output.sentiment is not None and len(output.sentiment) > 1:
        truth = np.array([it.sentiment for it in table.items], dtype=np.float64)
        spread = float(np.nanstd(truth)) if np.isfinite(truth).any() else 0.0
        if spread > 0 and float(np.std(output.sentiment)) < 0.01 * spread:
            notes.append(
                "the sentiment prediction barely varies across validation utterances "
                f"(std {float(np.std(output.sentiment)):.2g} against {spread:.2g} in the labels)"
            )
    return notes


def _prepare_resume(last: Path, ckpt_dir: Path) -> None:
    """Check ``last.ckpt`` before Lightning resumes from it, and carry it to a moved folder.

    Lightning restores the best score and checkpoint of a run only when the checkpoint folder
    is where it was; a run folder copied or moved elsewhere would forget its best epoch and
    pick a later one. The paths recorded in the checkpoint are rewritten to the folder's place
    (atomically), so the resumed run selects as the uninterrupted one does.

    Raises:
        InputError: the checkpoint is truncated, empty or not a checkpoint (a kill during
            its write); the message says how to start over.
    """
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        callbacks = ckpt["callbacks"]
    except Exception as err:  # torch raises many types for a torn file
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            last,
            f"unreadable checkpoint ({problem}); it was probably cut short by a kill: delete "
            f"{last.parent} to start the run over",
        ) from None
    here = os.fspath(ckpt_dir.absolute())
    moved = False
    for state in callbacks.values():
        old = state.get("dirpath") if isinstance(state, dict) else None
        if not old or old == here:
            continue
        moved = True

        def place(path: Any, old: str = old) -> Any:
            return here + path[len(old) :] if isinstance(path, str) and path.startswith(old) else path

        state["dirpath"] = here
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = place(state[key])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {place(k): v for k, v in state["best_k_models"].items()}
    if moved:
        tmp = last.with_name(f".{last.name}.tmp{os.getpid()}")
        torch.save(ckpt, tmp)
        os.replace(tmp, last)


class _StayStopped(L.Callback):
    """A run that early stopping ended stays ended when it is started again.

    Lightning restores the early-stopping state but not the trainer's decision to stop, so a
    run killed after stopping early (before ``result.json``) would train one more epoch.
    """

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        for cb in trainer.callbacks:
            if isinstance(cb, L.pytorch.callbacks.EarlyStopping) and cb.stopped_epoch > 0:
                trainer.should_stop = True


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


__all__ = [
    "TENSORBOARD_REQUIREMENT",
    "build_loggers",
    "check_loggers",
    "fit",
    "is_rank_zero",
    "load_tables",
]

"""Score a saved model on a split of a dataset: inference + metrics.

:func:`evaluate` loads the model (:func:`emofuse.models.load_model`), computes or reads the
features it was trained on (its saved feature references), runs
:class:`~emofuse.models.inference.Inference`, and scores the predictions with the field's
metrics (:func:`emofuse.metrics.compute_metrics`, FIELD.md §D). The result is an
:class:`~emofuse.schema.EvaluationResult` — the same :class:`~emofuse.schema.Prediction`
objects ``emofuse predict`` returns, with their references.

The dataset may be another one than the model was trained on: emotion references outside the
model's labels are kept unscored and counted (``out_of_set``); only a sentiment scale that
differs (e.g. CH-SIMS ``[-1, 1]`` against a MOSI model's ``[-3, 3]``) is refused, because every
sentiment metric would be wrong.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from emofuse.data.table import FeatureTable
from emofuse.datasets.base import DatasetChoice
from emofuse.errors import ConfigError, InputError, listing
from emofuse.features.store import FeatureStore, default_cache_dir
from emofuse.hooks import Hook
from emofuse.metrics import headline
from emofuse.models.base import FusionModel, load_model
from emofuse.models.inference import Inference, labelled, score
from emofuse.records import read_json
from emofuse.schema import EvaluationResult
from emofuse.spec import TaskSpec


def evaluate(
    model: str | os.PathLike[str] | FusionModel,
    *,
    dataset: DatasetChoice | None = None,
    split: str = "test",
    cache: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    hook: Hook | None = None,
) -> EvaluationResult:
    """Score a saved model on one split.

    Args:
        model: A model folder written by ``save_pretrained`` (``<run>/model``), or a model.
        dataset: Where the split comes from; default: the dataset the model was trained on
            (``training.json`` beside the weights).
        split: Which split.
        cache: Feature cache folder (default ``$EMOFUSE_CACHE`` or ``~/.cache/emofuse/features``).
        batch_size: Utterances per forward pass.
        device: Torch device of the forward passes.
        hook: Progress hook (feature extraction, then ``"inference"``).

    Returns:
        The :class:`~emofuse.schema.EvaluationResult`: metrics, one prediction per scored
        utterance (with its references), skipped utterances and out-of-set labels.

    Raises:
        ConfigError: no dataset was given and none is recorded; the split does not exist; the
            dataset's sentiment scale differs from the model's; the split has no reference.
        InputError: no utterance of the split could be used.
    """
    mdir = None if isinstance(model, FusionModel) else Path(model)
    net = model if isinstance(model, FusionModel) else load_model(model)
    training = read_json(mdir / "training.json", missing_ok=True, expect=dict) if mdir is not None else None
    if dataset is None:
        if training is None:
            raise ConfigError(
                f"{mdir or 'model'}: no training.json beside the model; say which dataset to "
                "evaluate on (--dataset NAME or a prepared folder)"
            )
        dataset = DatasetChoice.model_validate(training["dataset"])
    ds = dataset.load()
    if split not in ds.splits:
        raise ConfigError(f"{ds.name} has no split {split!r}; splits: {', '.join(ds.splits)}")
    unscored = check_compatible(net.spec, ds.spec, ds.name)
    table = FeatureTable.load(
        ds[split],
        net.feature_refs(),
        FeatureStore(default_cache_dir(cache)),
        net.spec,
        on_failure=(training or {}).get("on_feature_failure", "skip"),
        unknown_labels="ignore",
        hook=hook,
    )
    if not table.items:
        raise InputError(None, f"{ds.name}/{split}: no usable utterance ({listing(table.skipped, 3)})")
    if any(note.startswith("sentiment") for note in unscored):
        for it in table.items:  # references on another scale: kept in the predictions only
            it.sentiment = math.nan
    if not labelled(table):
        raise ConfigError(
            f"{ds.name}/{split}: no utterance carries a reference the model predicts; use "
            "`emofuse predict` to get predictions without scores"
        )
    inference = Inference(net, batch_size=batch_size, device=device, hook=hook)
    output = inference(table)
    return EvaluationResult(
        model=net.name,
        model_dir=None if mdir is None else os.fspath(mdir),
        dataset=data_name(dataset, ds.name),
        split=split,
        task=net.spec.model_dump(mode="json"),
        monitor=headline(net.spec),
        metrics=score(table, output),
        predictions=inference.predictions(table, output),
        skipped=table.skipped,
        out_of_set=table.out_of_set,
        unscored=unscored,
        history=(read_json(mdir / "history.json", missing_ok=True, expect=list) if mdir is not None else None) or [],
    )


def data_name(choice: DatasetChoice, name: str) -> str:
    """What the data is called in reports: the recipe, and for your own data its folder.

    ``folder`` alone says nothing ("folder / test"); ``folder (my_calls)`` does.
    """
    place = choice.prepared if choice.prepared is not None else choice.options.get("root")
    if place is None:
        return name
    stem = Path(place).stem if Path(place).suffix else Path(place).name
    return name if stem == name else f"{name} ({stem})"


def check_compatible(model: TaskSpec, data: TaskSpec, dataset: str) -> list[str]:
    """Which of a dataset's references a model can be scored against.

    Emotion labels may differ (references outside the model's labels are reported, not
    scored) as long as one is shared. Sentiment is scored only on the same scale (range and
    binning scheme); on another scale it is left out and said so.

    Returns:
        One note per target left unscored (``"sentiment: ..."`` or ``"emotion: ..."``).

    Raises:
        ConfigError: nothing is comparable; the message names the fields and their values.
    """
    unscored = []
    sentiment = model.sentiment_range is not None and data.sentiment_range is not None
    if sentiment:
        for field in ("sentiment_range", "sentiment_scheme"):
            mine, theirs = getattr(model, field), getattr(data, field)
            if mine != theirs:
                unscored.append(
                    f"sentiment: dataset {dataset!r} has {field} {theirs}, the model {mine} "
                    f"(task {model.name!r}); scores on different scales cannot be compared"
                )
                sentiment = False
                break
    emotions = bool(set(model.emotion_labels or []) & set(data.emotion_labels or []))
    if model.emotion_labels and data.emotion_labels and not emotions:
        unscored.append(
            f"emotion: dataset {dataset!r} labels {data.emotion_labels} share none with the "
            f"model's {model.emotion_labels}"
        )
    if not emotions and not sentiment:
        why = "; ".join(unscored) or (
            f"dataset {dataset!r} (task {data.name!r}) has no reference the model (task "
            f"{model.name!r}) predicts"
        )
        raise ConfigError(f"{why}; use `emofuse predict` to get predictions without scores")
    return unscored


__all__ = ["check_compatible", "evaluate"]

"""The inference stage: a model over a feature table, per-utterance outputs out.

In the manner of pyannote.audio's ``Inference``: :class:`Inference` wraps any registered model,
batches a :class:`~emofuse.data.table.FeatureTable` (whole dialogues together for
conversational models), runs the model in eval mode without gradients on the chosen device, and
returns every per-utterance output of :class:`~emofuse.models.base.ModelOutput` — emotion
probabilities, sentiment, the fused vector, each expert's vector and own probabilities, the gate
weights with their usability mask, the level-1 unit weights — as numpy arrays in table order
(:class:`InferenceOutput`). No labels are needed. :meth:`Inference.predictions` turns them into
:class:`~emofuse.schema.Prediction` objects, the one output schema of emofuse, and
:func:`score` into the field's metrics (used by training for validation and by
``emofuse.evaluate``).

Example:
    >>> from emofuse.models import load_model                      # doctest: +SKIP
    >>> model = load_model("runs/meld/seed-0/model")               # doctest: +SKIP
    >>> model.predict(["I can't believe you did that!"])[0].emotion  # doctest: +SKIP
    'surprise'
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from emofuse.data.inputs import IGNORE_INDEX
from emofuse.data.samplers import batch_sampler
from emofuse.data.table import FeatureTable
from emofuse.errors import InputError
from emofuse.hooks import Hook, call_hook
from emofuse.metrics import EMOTION_METRICS, compute_metrics
from emofuse.schema import ExpertView, Prediction

if TYPE_CHECKING:  # the model calls this stage (FusionModel.predict), not the other way
    from emofuse.models.base import FusionModel, ModelOutput


@dataclass
class InferenceOutput:
    """Per-utterance outputs of a model over a table, row ``i`` = ``table.items[i]``.

    Attributes:
        ids: Utterance ids, in table order.
        probabilities: ``(N, C)`` softmax of the emotion logits; ``None`` without emotion head.
        emotion_index: ``(N,)`` arg-max of the emotion logits (the predicted class).
        sentiment: ``(N,)`` sentiment scores; ``None`` without sentiment head.
        fused: ``(N, H)`` the fused representation fed to the heads.
        experts: ``name → (N, H)`` each expert's representation.
        expert_probabilities: ``name → (N, C)`` experts' own emotion distributions
            (MiSTER-E).
        gates: ``(N, E)`` gate weights over ``gate_names``; ``None`` for ungated models.
        gate_names: Expert names of the gate columns.
        gate_mask: ``(N, E)`` bool, experts usable per utterance (all ``True`` when the model
            does not mask its gate).
        unit_weights: ``expert → (N, U)`` level-1 weights inside experts.
        unit_names: ``expert → U`` unit names.
        present: ``modality → (N,)`` bool, which inputs each utterance had.
    """

    ids: list[str]
    probabilities: np.ndarray | None
    emotion_index: np.ndarray | None
    sentiment: np.ndarray | None
    fused: np.ndarray
    experts: dict[str, np.ndarray] = field(default_factory=dict)
    expert_probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    gates: np.ndarray | None = None
    gate_names: list[str] = field(default_factory=list)
    gate_mask: np.ndarray | None = None
    unit_weights: dict[str, np.ndarray] = field(default_factory=dict)
    unit_names: dict[str, list[str]] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


class Inference:
    """Run a model over feature tables.

    Args:
        model: Any registered :class:`~emofuse.models.base.FusionModel` (put in eval mode).
        batch_size: Utterances per forward pass (whole dialogues for conversational models).
        device: Torch device (``"cpu"``, ``"cuda"``, ``torch.device``); the model is moved there.
        hook: Progress hook, called as ``hook("inference", total=, completed=)`` per batch.
    """

    def __init__(
        self,
        model: FusionModel,
        *,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        hook: Hook | None = None,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.hook = hook

    def batches(self, table: FeatureTable) -> Iterator[tuple[list[int], ModelOutput]]:
        """``(table positions, model output)`` per batch, in eval mode, without gradients."""
        model = self.model.to(self.device).eval()
        collate = model.collator(table)
        sampler = batch_sampler(
            table,
            self.batch_size,
            conversational=model.conversational,
            shuffle=False,
            pad=False,
            lengths=collate.lengths(),
        )
        done = 0
        with torch.inference_mode():
            for idx in sampler:
                batch = {k: v.to(self.device) for k, v in collate(idx).items()}
                yield list(idx), model(batch)
                done += len(idx)
                call_hook(self.hook, "inference", total=len(table), completed=done)

    def __call__(self, table: FeatureTable) -> InferenceOutput:
        """Every per-utterance output over ``table`` (see :class:`InferenceOutput`)."""
        n = len(table)
        order: list[int] = []
        parts: dict[str, list[Tensor]] = {}
        gate_names: list[str] = []
        unit_names: dict[str, list[str]] = {}

        def keep(key: str, value: Tensor | None) -> None:
            if value is not None:
                parts.setdefault(key, []).append(value.detach().float().cpu())

        argmax: list[Tensor] = []
        for idx, out in self.batches(table):
            order += idx
            if out.emotion_logits is not None:
                argmax.append(out.emotion_logits.argmax(dim=-1).cpu())
            keep("probabilities", _softmax(out.emotion_logits))
            keep("sentiment", out.sentiment)
            keep("fused", out.fused)
            keep("gates", out.gates)
            keep("gate_mask", out.gate_mask)
            for name, value in out.experts.items():
                keep(f"experts/{name}", value)
            for name, value in out.expert_logits.items():
                keep(f"expert_probabilities/{name}", _softmax(value))
            for name, value in out.unit_weights.items():
                keep(f"unit_weights/{name}", value)
            gate_names = list(out.gate_names) or gate_names
            unit_names = dict(out.unit_names) or unit_names
        rows = np.argsort(np.asarray(order, dtype=np.int64), kind="stable")

        def get(key: str) -> np.ndarray | None:
            if key not in parts:
                return None
            return torch.cat(parts[key]).numpy()[rows]

        def group(prefix: str) -> dict[str, np.ndarray]:
            names = [k[len(prefix) :] for k in parts if k.startswith(prefix)]
            return {name: get(prefix + name) for name in names}  # type: ignore[misc]

        gates = get("gates")
        mask = get("gate_mask")
        if gates is not None and mask is None:
            mask = np.ones_like(gates, dtype=bool)
        present = {
            m: np.array([m in it.features for it in table.items], dtype=bool) for m in table.inputs
        }
        fused = get("fused")
        return InferenceOutput(
            ids=table.ids,
            probabilities=get("probabilities"),
            emotion_index=torch.cat(argmax).numpy()[rows] if argmax else None,
            sentiment=get("sentiment"),
            fused=fused if fused is not None else np.zeros((n, 0), np.float32),
            experts=group("experts/"),
            expert_probabilities=group("expert_probabilities/"),
            gates=gates,
            gate_names=gate_names,
            gate_mask=None if mask is None else mask.astype(bool),
            unit_weights=group("unit_weights/"),
            unit_names=unit_names,
            present=present,
        )

    def predictions(
        self, table: FeatureTable, output: InferenceOutput | None = None
    ) -> list[Prediction]:
        """One :class:`~emofuse.schema.Prediction` per item of ``table``, in table order.

        Args:
            table: The items (their records give ids, times, text and references).
            output: This table's :class:`InferenceOutput` when already computed.
        """
        out = output if output is not None else self(table)
        spec = self.model.spec
        labels = spec.emotion_labels or []
        answer_text = getattr(self.model, "answer_text", None)  # models that answer in words
        preds = []
        for i, it in enumerate(table.items):
            utt = it.utt
            probs = {} if out.probabilities is None else _distribution(labels, out.probabilities[i])
            experts: dict[str, ExpertView] = {}
            names = list(dict.fromkeys([*out.gate_names, *out.expert_probabilities]))
            for name in names:
                col = out.gate_names.index(name) if name in out.gate_names else None
                own = out.expert_probabilities.get(name)
                units = out.unit_weights.get(name)
                usable = (
                    True if col is None or out.gate_mask is None else bool(out.gate_mask[i, col])
                )
                # an expert without its input computed its outputs from nothing: they are left
                # out (null), not reported as if they said something
                experts[name] = ExpertView(
                    gate=None if col is None or out.gates is None else float(out.gates[i, col]),
                    usable=usable,
                    probabilities=None
                    if own is None or not usable
                    else _distribution(labels, own[i]),
                    units={}
                    if units is None or not usable
                    else dict(zip(out.unit_names.get(name, []), map(float, units[i]), strict=True)),
                )
            sentiment = None
            # NaN: the model had no input to score sentiment from for this row
            if out.sentiment is not None and math.isfinite(float(out.sentiment[i])):
                # the regression head is unbounded: report on the scale
                low, high = spec.sentiment_range or (-math.inf, math.inf)
                sentiment = min(max(float(out.sentiment[i]), low), high)
            emotion = None if out.emotion_index is None else labels[out.emotion_index[i]]
            preds.append(
                Prediction(
                    id=utt.id,
                    dialogue_id=utt.dialogue_id,
                    source=next(iter(utt.media.values()), None),
                    start=utt.start,
                    end=utt.end,
                    text=utt.text,
                    emotion=emotion,
                    probabilities=probs,
                    sentiment=sentiment,
                    sentiment_range=spec.sentiment_range,
                    modalities=[m for m in out.present if out.present[m][i]],
                    experts=experts,
                    target_emotion=utt.labels.emotion,
                    target_sentiment=utt.labels.sentiment,
                    answer=None if answer_text is None else answer_text(emotion, sentiment),
                )
            )
        return preds


def score(table: FeatureTable, output: InferenceOutput) -> dict[str, Any]:
    """The task's metrics (:func:`emofuse.metrics.compute_metrics`) of ``output`` on ``table``.

    See :func:`score_predictions`.
    """
    return score_predictions(table, output.emotion_index, output.sentiment)


def score_predictions(
    table: FeatureTable,
    emotion_pred: np.ndarray | None,
    sentiment_pred: np.ndarray | None,
    positions: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The task's metrics of predictions for the items of ``table`` at ``positions``.

    Utterances without a reference (or with one outside the task's labels) are left out of
    the emotion metrics; those without a sentiment score out of the sentiment ones; a target
    no utterance carries has no metrics.

    Args:
        table: The items and their references.
        emotion_pred: ``(N,)`` predicted class per item (``None``: no emotion head).
        sentiment_pred: ``(N,)`` predicted score per item (``None``: no sentiment head).
        positions: Table positions of the ``N`` predictions (default: all items, in order).

    Raises:
        InputError: no utterance carries any reference.
    """
    spec = table.spec
    items = table.items if positions is None else [table.items[i] for i in positions]
    kw: dict[str, Any] = {}
    emotion = np.array([it.emotion for it in items], dtype=np.int64)
    sentiment = np.array([it.sentiment for it in items], dtype=np.float64)
    if spec.emotion_labels and emotion_pred is not None and (emotion != IGNORE_INDEX).any():
        kw["emotion_true"] = emotion
        kw["emotion_pred"] = np.asarray(emotion_pred).astype(np.int64)
    if sentiment_pred is not None:  # a NaN score (no input to score from) is left unscored
        sentiment[np.isnan(np.asarray(sentiment_pred, dtype=np.float64))] = np.nan
    if (
        spec.sentiment_range is not None
        and sentiment_pred is not None
        and (~np.isnan(sentiment)).any()
    ):
        kw["sentiment_true"] = sentiment
        kw["sentiment_pred"] = np.asarray(sentiment_pred).astype(np.float64)
    if not kw:
        raise InputError(None, "no utterance carries a reference the model predicts")
    if "emotion_true" not in kw or "sentiment_true" not in kw:  # report what can be computed
        emotion_only = "emotion_true" in kw
        kept = [m for m in spec.metrics if (m in EMOTION_METRICS) == emotion_only]
        spec = spec.model_copy(update={"metrics": kept})
    return compute_metrics(spec, **kw)


def labelled(table: FeatureTable) -> bool:
    """Whether any item of ``table`` carries a usable reference for the task."""
    return any(it.emotion != IGNORE_INDEX or not math.isnan(it.sentiment) for it in table.items)


def _softmax(logits: Tensor | None) -> Tensor | None:
    return None if logits is None else torch.softmax(logits.float(), dim=-1)


def _distribution(labels: list[str], row: np.ndarray) -> dict[str, float]:
    """``label → probability`` renormalised in float64 (float32 rounding stays below 1e-6)."""
    p = row.astype(np.float64)
    p = p / p.sum()
    return dict(zip(labels, map(float, p), strict=True))


__all__ = ["Inference", "InferenceOutput", "labelled", "score", "score_predictions"]

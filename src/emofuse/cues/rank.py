"""Which cues supported a prediction: integrated gradients per modality, shared out over cues.

For each utterance, the predicted emotion's logit is attributed to the model's inputs with
**integrated gradients** (Sundararajan et al., ICML 2017; Captum's ``IntegratedGradients``),
from the training mean of every input (the point the model standardises to zero, so "no
evidence" is the average input) to the utterance's own features. Summed over feature
dimensions this gives one attribution per input step (a frame of the voice or the face, or
a pooled vector), and per modality the evidence it contributed *for* (positive) or *against*
(negative) the predicted label; the modality with the largest positive share carried the
decision. A modality's share is then divided among its cues: by the attribution of the input
steps that fall in each cue's time span when the modality is a sequence of frames, otherwise
(pooled inputs, words) by the cues' strengths. ``Cue.contribution`` is that signed share of
all the evidence (the absolute shares of the modalities sum to 1).

Models that fine-tune their text encoder read token ids, which have no gradient: their words
get no attribution here, and their word cues no contribution.

A model may name a stand-in for the differentiation
(:attr:`~emofuse.models.base.FusionModel.attribution_model`): the LM head names its fusion
model, whose jointly trained emotion head is differentiated at the label the LM predicted
(:attr:`Attribution.through` records which model it was).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emofuse.errors import MissingDependencyError
from emofuse.schema import Cue

if TYPE_CHECKING:
    import torch

    from emofuse.data.table import FeatureTable
    from emofuse.models.base import FusionModel

CUE_INPUT = {"text": "text", "audio": "audio", "face": "face"}
"""Cue modality → the model input that carries it."""


@dataclass
class Attribution:
    """Integrated-gradients attribution of one utterance's predicted emotion.

    Attributes:
        label: Index of the predicted emotion the attribution explains.
        steps: ``modality → (T,)`` attribution of each valid input step (summed over the
            feature dimensions), in the model's logit units.
        shares: ``modality → signed share`` of all the evidence (absolute values sum to 1).
        through: Name of the model whose logit was differentiated (the predicting model's, or
            its :attr:`~emofuse.models.base.FusionModel.attribution_model`'s).
    """

    label: int
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    through: str = ""

    @property
    def carried_by(self) -> str | None:
        """The modality with the largest positive share, if any supported the label."""
        best = max(self.shares.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best is not None and best[1] > 0 else None


def attribute(
    model: FusionModel,
    table: FeatureTable,
    *,
    n_steps: int = 16,
    batch_size: int = 64,
    targets: Sequence[int] | None = None,
) -> list[Attribution]:
    """Integrated gradients of each item's predicted-emotion logit (see the module docstring).

    Args:
        model: A model with an emotion head.
        table: Its features (``model.table(...)``).
        targets: The label index to explain per table item (``-1``: ``model``'s
            prediction); default: ``model``'s own prediction, computed here.
        n_steps: Riemann steps of the path integral (Captum's default is 50; 16 keeps the
            completeness error of the small heads here below 1 %).
        batch_size: Utterances per forward pass (dialogues stay whole for conversational
            models, as in inference).

    Returns:
        One :class:`Attribution` per table item, in table order.

    Raises:
        MissingDependencyError: Captum is not installed.
    """
    import torch

    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        raise MissingDependencyError("cue ranking", "captum") from None
    from emofuse.data.samplers import batch_sampler

    model = model.eval()
    through = model.attribution_model.eval()
    if targets is not None and len(targets) != len(table):
        raise ValueError(f"{len(targets)} targets for {len(table)} items")
    collate = model.collator(table)
    sampler = batch_sampler(
        table,
        batch_size,
        conversational=model.conversational,
        shuffle=False,
        pad=False,
        lengths=collate.lengths(),
    )
    out: list[Attribution | None] = [None] * len(table)
    for idx in sampler:
        batch = collate(idx)
        given = None if targets is None else torch.tensor([targets[i] for i in idx])
        if given is None or bool((given < 0).any()):
            with torch.no_grad():
                logits = model(batch).emotion_logits
            if logits is None:
                raise ValueError(f"model {model.name!r} predicts no emotion: nothing to attribute")
            argmax = logits.argmax(dim=-1)
            target = argmax if given is None else torch.where(given < 0, argmax, given)
        else:
            target = given
        keys = [
            m
            for m in model.inputs
            if isinstance(batch.get(m), torch.Tensor) and batch[m].is_floating_point()
        ]
        n = len(idx)
        result: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        if keys:
            inputs = tuple(batch[m].float() for m in keys)
            baselines = tuple(
                getattr(through, f"input_mean_{m}").to(x).expand_as(x)
                for m, x in zip(keys, inputs, strict=True)
            )

            forward = _with_inputs(through, batch, keys)
            with torch.enable_grad():
                attrs = IntegratedGradients(forward).attribute(
                    inputs,
                    baselines=baselines,
                    target=target,
                    n_steps=n_steps,
                    internal_batch_size=n,
                )
            for m, a in zip(keys, attrs, strict=True):
                per_step = a.detach().sum(dim=-1) if a.dim() == 3 else a.detach().sum(-1, True)
                mask = batch.get(f"{m}_mask")
                for j in range(n):
                    valid = (
                        mask[j].bool() if mask is not None else torch.ones_like(per_step[j]).bool()
                    )
                    if bool(valid.any()):
                        result[j][m] = per_step[j][valid].double().numpy()
        for j, i in enumerate(idx):
            steps = result[j]
            total = sum(abs(float(s.sum())) for s in steps.values())
            shares = {m: float(s.sum()) / total for m, s in steps.items()} if total > 0 else {}
            out[i] = Attribution(
                label=int(target[j]), steps=steps, shares=shares, through=through.name
            )
    return [a if a is not None else Attribution(label=-1) for a in out]


def _with_inputs(model: FusionModel, batch: dict[str, torch.Tensor], keys: list[str]) -> Any:
    """``f(*inputs) -> logits``: ``batch`` with its ``keys`` tensors replaced.

    Captum evaluates all path points at once in chunks of one batch's rows (one path point
    for the whole batch, ``internal_batch_size`` = the batch size), so the batch's other
    tensors (masks, dialogue structure) keep their meaning.
    """

    def forward(*xs: torch.Tensor) -> torch.Tensor:
        b = dict(batch)
        b.update(zip(keys, xs, strict=True))
        return model(b).emotion_logits  # type: ignore[return-value]

    return forward


CANONICAL = {
    "happy": "joy",
    "happiness": "joy",
    "excited": "joy",
    "angry": "anger",
    "frustrated": "anger",
    "sad": "sadness",
    "fearful": "fear",
    "worried": "fear",
    "surprised": "surprise",
    "disgusted": "disgust",
    "calm": "neutral",
    "neu": "neutral",
}
"""Dataset label names → the six basic emotions + neutral, to compare cues with labels."""

NEGATIVE = {"anger", "disgust", "fear", "sadness"}
POSITIVE = {"joy"}

_FACE_EVIDENCE = {
    "smile": "joy",
    "expression_anger": "anger",
    "expression_disgust": "disgust",
    "expression_fear": "fear",
    "expression_happiness": "joy",
    "expression_sadness": "sadness",
    "expression_surprise": "surprise",
}


def agrees(cue: Cue, label: str) -> bool | None:
    """Whether ``cue``'s own evidence points to ``label``; ``None`` when it does not say.

    Word cues carry the NRC emotions of their word (``unit="NRC"`` measurements) and VADER
    valence; a smile and a confident facial expression name their emotion. Positive valence
    agrees with joy, negative with anger, disgust, fear and sadness; strong valence disagrees
    with neutral. Other cues (pitch, loudness, brows…) are evidence of arousal or effort
    that several emotions share: they say nothing here.
    """
    target = CANONICAL.get(label.lower(), label.lower())
    emotions = {m.name for m in cue.values if m.unit == "NRC"}
    if emotions:
        return target in emotions
    if cue.name in _FACE_EVIDENCE:
        return _FACE_EVIDENCE[cue.name] == target
    valence = next((m.value for m in cue.values if m.unit == "VADER"), None)
    if valence is not None and valence != 0:
        if target == "neutral":
            return False
        if target in POSITIVE or target in NEGATIVE:
            return (valence > 0) == (target in POSITIVE)
    return None


def rank_cues(
    cues: Sequence[Cue],
    attribution: Attribution,
    start: float | None,
    end: float | None,
    label: str | None = None,
) -> list[Cue]:
    """``cues`` with their ``contribution`` set, supporting cues first (see the module docstring).

    Args:
        cues: One utterance's cues, of any modalities.
        attribution: That utterance's :class:`Attribution`.
        start: The utterance's start on the media's clock (for frame times), or ``None``.
        end: Its end.
        label: The predicted label: a cue whose own evidence points elsewhere (a joy word
            under a predicted sadness, see :func:`agrees`) counts against it, whatever its
            modality's share; cues that say nothing of a label take their modality's sign.

    Returns:
        The cues sorted by contribution (largest first; cues of a modality the model does not
        read keep ``contribution=None`` and come last, strongest first).
    """
    by_modality: dict[str, list[int]] = {}
    for k, c in enumerate(cues):
        by_modality.setdefault(c.modality, []).append(k)
    contribution: dict[int, float] = {}
    for modality, members in by_modality.items():
        key = CUE_INPUT[modality]
        share = attribution.shares.get(key)
        if share is None:
            continue
        steps = attribution.steps.get(key)
        weights = _weights([cues[k] for k in members], steps, start, end)
        for k, w in zip(members, weights, strict=True):
            says = agrees(cues[k], label) if label is not None else None
            size = abs(share * w)
            contribution[k] = share * w if says is None else (size if says else -size)
    ranked = [
        c.model_copy(update={"contribution": round(float(contribution[k]), 4)})
        if k in contribution
        else c
        for k, c in enumerate(cues)
    ]
    return sorted(
        ranked,
        key=lambda c: (c.contribution is None, -(c.contribution or 0.0), -c.strength),
    )


def _weights(
    cues: Sequence[Cue], steps: np.ndarray | None, start: float | None, end: float | None
) -> list[float]:
    """How a modality's share is divided among its cues (weights sum to 1)."""
    strengths = np.array([max(c.strength, 1e-6) for c in cues], dtype=float)
    if (
        steps is not None
        and len(steps) > 1
        and start is not None
        and end is not None
        and end > start
    ):
        # Frames spread evenly over the segment: the attribution in each cue's span.
        edges = np.linspace(start, end, len(steps) + 1)
        mass = np.abs(steps)
        spans = []
        for c in cues:
            a = start if c.start is None else c.start
            b = end if c.end is None else c.end
            overlap = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
            spans.append(float((mass * overlap / np.diff(edges)).sum()))
        w = np.array(spans) * strengths
        if w.sum() > 0:
            return list(w / w.sum())
    return list(strengths / strengths.sum())


__all__ = ["CANONICAL", "CUE_INPUT", "Attribution", "agrees", "attribute", "rank_cues"]

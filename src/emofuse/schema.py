"""What emofuse answers: :class:`Prediction`, :class:`Cue` and :class:`EvaluationResult`.

One schema, serialised once. The Python API returns these objects, ``emofuse predict`` writes
their JSON (``model_dump(mode="json")``) or their flat CSV rows (:func:`prediction_rows`), the
reports read them, and the HTTP service will send them as its response model. Nothing else in
emofuse builds prediction dicts.

The module sits on the bottom floor (rank 0: pydantic only), so every stage can import it.

Example:
    >>> p = Prediction(id="u1", emotion="joy", probabilities={"joy": 0.9, "anger": 0.1})
    >>> p.model_dump(mode="json")["emotion"]
    'joy'
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Modality = Literal["text", "audio", "face"]
"""The three input modalities, always named (never positional)."""


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Measurement(_Schema):
    """One measured value behind a cue.

    Attributes:
        name: What was measured (``"f0_mean"``, ``"AU12"``, ``"token"``).
        value: The number.
        unit: Its unit (``"Hz"``, ``"dB"``, ``"s"``, ``"z"`` for a z-score, ``""`` if none).
        reference: The value it is compared with (e.g. the speaker's or the corpus mean), if any.
    """

    name: str
    value: float
    unit: str = ""
    reference: float | None = None


class Cue(_Schema):
    """An observable piece of evidence for a prediction (XEmoGPT's cue level).

    Attributes:
        modality: Where the cue was observed.
        start: Start in seconds within the clip (``None`` for text or whole-clip cues).
        end: End in seconds.
        name: Machine name of the cue (``"raised_pitch"``, ``"smile"``, ``"negation"``).
        phrase: The cue in words, as an explanation would cite it ("pitch rises 40 Hz above
            the speaker's mean").
        values: The measurements behind it, with units.
        strength: How pronounced the cue is, in ``[0, 1]``.
        contribution: Signed share of the cue in the predicted label (positive supports it).
    """

    modality: Modality
    start: float | None = Field(None, ge=0.0)
    end: float | None = Field(None, ge=0.0)
    name: str
    phrase: str
    values: list[Measurement] = Field(default_factory=list)
    strength: float = Field(ge=0.0, le=1.0)
    contribution: float | None = None

    @model_validator(mode="after")
    def _span(self) -> Cue:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"cue ends ({self.end}) before it starts ({self.start})")
        return self


class ExpertView(_Schema):
    """One expert's part in a prediction.

    Every expert of the model is listed for every prediction, so the keys are the same in each;
    one whose input was absent (the audio expert of a sentence) is marked ``usable: false``.

    Attributes:
        gate: Weight the gate gave this expert (rows of all experts sum to 1); ``None`` for
            models whose experts are not gated.
        usable: Whether the expert could be used for this utterance (e.g. the cross-modal
            expert needs two modalities); an unusable expert has gate 0 (unless no expert was
            usable) and no ``probabilities`` or ``units``: computed from no input, they would
            say nothing.
        probabilities: The expert's own emotion distribution, for models that train experts
            with their own heads (MiSTER-E) and only when it is usable; otherwise ``None``.
        units: Level-1 weights inside the expert over its units (modalities or modality pairs
            such as ``"text>audio"``), for EGMF's usable experts; empty otherwise.
    """

    gate: float | None = None
    usable: bool = True
    probabilities: dict[str, float] | None = None
    units: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unusable_says_nothing(cls, data: Any) -> Any:
        # results written before this rule (a stored job, a result.json) read the same way
        if isinstance(data, dict) and data.get("usable") is False:
            data = {**data, "probabilities": None, "units": {}}
        return data


class Prediction(_Schema):
    """What a model says about one utterance (or one segment of a longer recording).

    Attributes:
        id: The utterance or segment id.
        dialogue_id: Its dialogue, for conversations.
        source: The media file or text it came from, when known.
        start: Start in seconds within ``source`` (segments of long media).
        end: End in seconds.
        text: The transcript the model read, if any.
        emotion: The most probable emotion label (``None`` for sentiment-only models).
        probabilities: Probability of every label of the model (sums to 1).
        sentiment: Continuous sentiment score, clipped to the model's range (``None`` if the
            model has no sentiment head). Metrics use the unclipped score, as FIELD.md §D
            prescribes for MOSI/MOSEI MAE.
        sentiment_range: That range, so a score can be read without the model.
        modalities: The modalities that were present for this utterance.
        experts: Each expert's gate weight, usability, own probabilities and unit weights.
        target_emotion: The reference emotion label, when the input carries one. It may lie
            outside the model's labels (data from another dataset); it is then kept as given.
        target_sentiment: The reference sentiment score, when known.
        cues: Evidence that supports the prediction (see :class:`Cue`).
        explanation: The prediction and its cues in words (an LLM head's rationale when
            asked for one).
        answer: An LLM head's answer in words (``"emotion: anger; sentiment: -1.6"``), built
            from the label it scored highest and the sentiment it gave.
        evidence: ``modality → signed share`` of the evidence for the predicted emotion
            (integrated gradients of the model; absolute values sum to 1), filled with the
            cues; the modality with the largest positive share carried the decision. Not the
            gate weights, which say how a model mixes modalities in general.
    """

    id: str
    dialogue_id: str | None = None
    source: str | None = None
    start: float | None = Field(None, ge=0.0)
    end: float | None = Field(None, ge=0.0)
    text: str | None = None
    emotion: str | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)
    sentiment: float | None = None
    sentiment_range: tuple[float, float] | None = None
    modalities: list[Modality] = Field(default_factory=list)
    experts: dict[str, ExpertView] = Field(default_factory=dict)
    target_emotion: str | None = None
    target_sentiment: float | None = None
    cues: list[Cue] = Field(default_factory=list)
    explanation: str | None = None
    evidence: dict[str, float] = Field(default_factory=dict)
    answer: str | None = None

    @field_validator("sentiment", "target_sentiment")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Prediction:
        if self.probabilities:
            total = sum(self.probabilities.values())
            if abs(total - 1.0) > 1e-3:
                raise ValueError(f"probabilities sum to {total:.6f}, not 1")
            if self.emotion is not None and self.emotion not in self.probabilities:
                raise ValueError(f"emotion {self.emotion!r} has no probability")
        return self

    @property
    def confidence(self) -> float | None:
        """Probability of the predicted emotion."""
        if self.emotion is None:
            return None
        return self.probabilities[self.emotion]

    @property
    def gates(self) -> dict[str, float]:
        """``expert → gate weight`` (empty for models without a gate)."""
        return {k: v.gate for k, v in self.experts.items() if v.gate is not None}


class EvaluationResult(_Schema):
    """A saved model scored on one split of a dataset.

    Attributes:
        model: The model's registry name.
        model_dir: Where it was loaded from.
        dataset: Dataset name.
        split: Split name.
        task: The model's task (``TaskSpec`` as JSON).
        monitor: The task's headline metric.
        metrics: Every metric of ``emofuse.metrics.compute_metrics`` (per class included),
            over the predictions whose reference lies in the model's label set.
        predictions: One per scored utterance, in input order, with its references.
        skipped: ``utterance id → problem`` for utterances that could not be predicted.
        out_of_set: ``label → count`` of reference labels outside the model's labels; those
            predictions are kept but not scored.
        unscored: Targets of the dataset left unscored, each with the reason (e.g. sentiment on
            another scale).
        history: The model's training history (one row per epoch), when it was saved with it.
    """

    model: str
    model_dir: str | None = None
    dataset: str
    split: str
    task: dict[str, Any]
    monitor: str
    metrics: dict[str, Any]
    predictions: list[Prediction]
    skipped: dict[str, str] = Field(default_factory=dict)
    out_of_set: dict[str, int] = Field(default_factory=dict)
    unscored: list[str] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)


def prediction_rows(predictions: list[Prediction]) -> tuple[list[str], list[dict[str, Any]]]:
    """Flat rows of predictions for CSV: the columns and one dict per prediction.

    Columns: ``id``, ``dialogue_id``, ``source``, ``start``, ``end``, ``text``, ``emotion``,
    ``p_<label>`` for every label, ``sentiment``, ``modalities`` (``+``-joined),
    ``gate_<expert>`` for gated experts, ``target_emotion``, ``target_sentiment``, ``cues``
    (their names, ``;``-joined), ``explanation``, ``answer`` (an LLM head's answer in words).
    Columns no prediction has are left out.
    """
    labels: list[str] = []
    experts: list[str] = []
    for p in predictions:
        labels += [k for k in p.probabilities if k not in labels]
        experts += [k for k, v in p.experts.items() if v.gate is not None and k not in experts]
    rows = []
    for p in predictions:
        row: dict[str, Any] = {
            "id": p.id,
            "dialogue_id": p.dialogue_id,
            "source": p.source,
            "start": p.start,
            "end": p.end,
            "text": p.text,
            "emotion": p.emotion,
            **{f"p_{k}": p.probabilities.get(k) for k in labels},
            "sentiment": p.sentiment,
            "modalities": "+".join(p.modalities) or None,
            **{f"gate_{k}": p.gates.get(k) for k in experts},
            "target_emotion": p.target_emotion,
            "target_sentiment": p.target_sentiment,
            "cues": ";".join(c.name for c in p.cues) or None,
            "explanation": p.explanation,
            "answer": p.answer,
        }
        rows.append(row)
    columns = [c for c in (rows[0] if rows else {}) if any(r.get(c) is not None for r in rows)]
    if rows and "id" not in columns:
        columns.insert(0, "id")
    return columns, rows


__all__ = [
    "Cue",
    "EvaluationResult",
    "ExpertView",
    "Measurement",
    "Modality",
    "Prediction",
    "prediction_rows",
]

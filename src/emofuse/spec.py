"""What a dataset asks of a model: :class:`TaskSpec`.

A recipe declares its spec; a model builds its heads from it and saves it, so inference never
needs the dataset.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METRICS: dict[str, str] = {
    "accuracy": "emotion: fraction of correct predictions",
    "weighted_f1": "emotion: F1 averaged over classes weighted by support (sklearn average='weighted')",
    "macro_f1": "emotion: unweighted mean of per-class F1",
    "wa": "speech emotion: weighted accuracy (= accuracy)",
    "ua": "speech emotion: unweighted accuracy (= balanced accuracy, mean per-class recall)",
    "has0_acc2": "MOSI/MOSEI: binary accuracy, truth >= 0 vs pred >= 0, all samples",
    "has0_f1": "MOSI/MOSEI: weighted F1 of the has0 binary split",
    "non0_acc2": "MOSI/MOSEI: binary accuracy on samples with truth != 0, > 0 vs > 0",
    "non0_f1": "MOSI/MOSEI: weighted F1 of the non0 binary split",
    "acc7": "MOSI/MOSEI: clip to [-3, 3], round, exact match",
    "acc5": "MOSI/MOSEI: clip to [-2, 2], round; CH-SIMS: 5 bins at -0.7, -0.1, 0.1, 0.7",
    "acc3": "CH-SIMS: bins [-1, -0.1], (-0.1, 0.1], (0.1, 1]",
    "acc2": "CH-SIMS: bins [-1, 0] vs (0, 1]",
    "f1": "CH-SIMS: weighted F1 on the acc2 bins",
    "mae": "sentiment: mean absolute error (unclipped for MOSI/MOSEI; CH-SIMS clips to [-1, 1] as MMSA does)",
    "corr": "sentiment: Pearson correlation",
}
"""Metric names a :class:`TaskSpec` may list, with the definition each follows (FIELD.md §D)."""

SentimentScheme = Literal["mosi", "sims"]
"""How continuous sentiment is binned for metrics: MOSI/MOSEI in [-3, 3], CH-SIMS in [-1, 1]."""


class TaskSpec(BaseModel):
    """The prediction task of a dataset (or of a protocol of one).

    Attributes:
        name: E.g. ``"meld-7"``, ``"iemocap-erc6"``, ``"mosi"``.
        emotion_labels: Ordered discrete emotion classes; index ``i`` is class ``i``.
        sentiment_range: ``(low, high)`` of the continuous sentiment score.
        sentiment_scheme: Metric binning convention for sentiment (``FIELD.md`` §D2).
        sentiment_classes: Ordered discrete sentiment classes, if annotated.
        per_modality_labels: Modalities that carry their own emotion labels.
        conversational: Utterances form ordered dialogues worth modelling as context.
        language: Language of the text.
        metrics: Metric names reported for this task, headline first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    emotion_labels: list[str] | None = None
    sentiment_range: tuple[float, float] | None = None
    sentiment_scheme: SentimentScheme | None = None
    sentiment_classes: list[str] | None = None
    per_modality_labels: list[str] = Field(default_factory=list)
    conversational: bool = False
    language: str = "en"
    metrics: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_a_target(self) -> TaskSpec:
        if not self.emotion_labels and self.sentiment_range is None and not self.sentiment_classes:
            raise ValueError("a task needs emotion_labels, sentiment_range or sentiment_classes")
        if self.emotion_labels and len(set(self.emotion_labels)) != len(self.emotion_labels):
            raise ValueError("emotion_labels must be unique")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
        if self.sentiment_range and self.sentiment_range[0] >= self.sentiment_range[1]:
            raise ValueError("sentiment_range must be (low, high) with low < high")
        return self

    @property
    def num_emotions(self) -> int:
        """Number of emotion classes (0 when the task has none)."""
        return len(self.emotion_labels or [])

    def emotion_index(self, label: str) -> int:
        """Index of ``label`` in ``emotion_labels``; ``KeyError`` names the valid labels."""
        try:
            return (self.emotion_labels or []).index(label)
        except ValueError:
            raise KeyError(f"{label!r} is not one of {self.emotion_labels}") from None

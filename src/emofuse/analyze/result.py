"""What ``emofuse analyze`` answers about one file: :class:`Analysis`."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emofuse.schema import Prediction, prediction_rows

Segmentation = Literal["transcript", "speech", "whole", "windows", "turns"]
"""How a file was cut into segments: by its transcript's times, by voice activity (+ ASR), as one
piece (a short clip or an image), in fixed windows (video without speech), or into the turns
of a transcript without media."""


class Skipped(BaseModel):
    """A segment (or a part of one) left out of the analysis, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    start: float | None = None
    end: float | None = None
    what: str = Field(description="'segment' (left out whole) or the modality left out of it.")
    why: str


class Analysis(BaseModel):
    """The analysis of one file.

    Attributes:
        source: The file analysed.
        digest: BLAKE2b-128 of its bytes (how batch runs recognise files already done).
        kind: ``video``, ``audio``, ``image`` or ``transcript``.
        duration: Length of the media in seconds, when it has one.
        transcript: The transcript file used, if any.
        segmentation: How the file was cut (see :data:`Segmentation`).
        model: The model's name (its registry name and task).
        labels: The model's emotion labels.
        sentiment_range: The model's sentiment scale.
        predictions: One :class:`~emofuse.schema.Prediction` per analysed segment, in time order.
        skipped: Segments or modalities left out, with the reason.
        notes: What a reader should know (e.g. "no speech found: face only").
        seconds: Wall-clock time of the analysis.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    digest: str | None = None
    kind: Literal["video", "audio", "image", "transcript"]
    duration: float | None = None
    transcript: str | None = None
    segmentation: Segmentation
    model: str
    labels: list[str] = Field(default_factory=list)
    sentiment_range: tuple[float, float] | None = None
    predictions: list[Prediction] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    seconds: float | None = None

    def to_json(self, indent: int | None = 2) -> str:
        """The analysis as JSON (``None`` fields left out)."""
        return json.dumps(
            self.model_dump(mode="json", exclude_none=True), indent=indent, ensure_ascii=False
        )

    def to_csv(self) -> str:
        """One CSV row per segment (the columns of :func:`~emofuse.schema.prediction_rows`)."""
        return rows_csv(self.predictions)

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Write the self-contained HTML report (see :func:`emofuse.analyze.report.write_report`)."""
        from emofuse.analyze.report import write_report

        return write_report(self, path)


def rows_csv(predictions: list[Prediction], extra: dict[int, dict[str, str]] | None = None) -> str:
    """CSV text of predictions; ``extra[i]`` adds leading columns to row ``i`` (e.g. the file)."""
    columns, rows = prediction_rows(predictions)
    lead: list[str] = []
    if extra:
        for values in extra.values():
            lead += [k for k in values if k not in lead]
        rows = [{**extra.get(i, {}), **row} for i, row in enumerate(rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*lead, *columns], extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


__all__ = ["Analysis", "Segmentation", "Skipped", "rows_csv"]

"""The cue-detector interface and the ``CUE_DETECTORS`` registry (XEmoGPT's cue level).

A cue is an observable piece of evidence for an emotion — the voice rising, brows drawn
together, the word "furious" (:class:`~emofuse.schema.Cue`). A detector reads the arrays of one
or more feature extractors (declared in :attr:`CueDetector.needs`, e.g. openSMILE's low-level
descriptors, the face extractor's per-frame geometry) for every segment of a dialogue at once,
so it can compare a segment with the rest of its recording (a speaker's pitch is high or low
only against their own), and returns each segment's cues. Detectors never decide the emotion:
:mod:`emofuse.cues.rank` weighs their cues by what the model made of each modality.

Reference: XEmoGPT (cue-level emotion explanations); the cues of each modality follow the
descriptors the paper's EmoCue-360 lists group into visual, auditory and emotional cues.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from emofuse.config import Config, validate_config
from emofuse.errors import ConfigError, InputError
from emofuse.records import Utterance
from emofuse.registry import Registry
from emofuse.schema import Cue, Modality

CUE_DETECTORS: Registry[type[CueDetector]] = Registry("cue detector", "emofuse.cues")
"""Every cue detector, by name (``prosody``, ``face``, ``words``)."""

Arrays = Mapping[str, np.ndarray]
"""One segment's inputs to a detector: ``"extractor:output" → array`` (see ``needs``)."""


class CueDetector(ABC):
    """Finds the cues of one modality in every segment of a dialogue.

    Subclasses set :attr:`modality`, a ``Config`` (a :class:`~emofuse.config.Config` subclass
    with defaults for every option), :attr:`needs` and implement :meth:`detect_dialogue`.

    Args:
        config: A ``Config`` instance, or keyword options for one (validated; unknown keys
            are an error naming the key).
    """

    name: ClassVar[str]
    modality: ClassVar[Modality]
    Config: ClassVar[type[Config]] = Config
    needs: ClassVar[dict[str, tuple[str, ...]]] = {}
    """``extractor name → outputs`` this detector reads (``{"egemaps": ("lld",)}``); the
    words detector reads the utterance's text and needs none."""

    def __init__(self, config: Config | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either a config object or keyword options, not both")
        self.config = config or validate_config(self.Config, options, f"cues {self.name!r}")

    def reads(self, utt: Utterance) -> bool:
        """Whether ``utt`` has the input this detector looks at (default: any media of it)."""
        if self.modality == "text":
            return bool(utt.text and utt.text.strip())
        if self.modality == "audio":
            return bool(utt.media.get("audio") or utt.media.get("video"))
        return bool(utt.media.get("video") or utt.media.get("image"))

    @abstractmethod
    def detect_dialogue(
        self, utts: Sequence[Utterance], arrays: Sequence[Arrays]
    ) -> list[list[Cue]]:
        """Cues of each segment of one dialogue (or of one lone clip).

        Args:
            utts: The segments, in order (one recording, or one utterance alone).
            arrays: For each segment, the outputs named in :attr:`needs`, keyed
                ``"extractor:output"``; a segment whose input could not be read has ``{}``.

        Returns:
            One list of cues per segment, strongest first; a segment without cues gets ``[]``.
            Cue times are in seconds on the media's clock (the segment's own span when the cue
            covers all of it).
        """


def detect(
    detector: CueDetector, utts: Sequence[Utterance], arrays: Sequence[Arrays]
) -> list[list[Cue]]:
    """Run ``detector`` dialogue by dialogue (segments sharing ``dialogue_id``; others alone).

    Returns:
        One list of cues per utterance, in input order.

    Raises:
        InputError: ``utts`` and ``arrays`` differ in length.
    """
    if len(utts) != len(arrays):
        raise InputError(None, f"{len(utts)} utterances but {len(arrays)} sets of arrays")
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(utts):
        groups.setdefault(u.dialogue_id or f"\0{u.id}", []).append(i)
    out: list[list[Cue]] = [[] for _ in utts]
    for members in groups.values():
        found = detector.detect_dialogue([utts[i] for i in members], [arrays[i] for i in members])
        for i, cues in zip(members, found, strict=True):
            out[i] = cues
    return out


def clamp01(x: float) -> float:
    """``x`` limited to ``[0, 1]`` (cue strengths)."""
    return float(min(1.0, max(0.0, x)))


def get_detector(name: str, **options: Any) -> CueDetector:
    """A registered cue detector built with ``options`` (unknown names list the known ones)."""
    return CUE_DETECTORS.get(name)(**options)


__all__ = ["CUE_DETECTORS", "Arrays", "CueDetector", "clamp01", "detect", "get_detector"]

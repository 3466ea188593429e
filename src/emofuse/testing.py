"""A test kit: synthetic speech, tiny media files (good and broken), and synthetic utterances.

emofuse's own tests use it, and so can anyone writing a dataset recipe, an extractor or a model
on top of emofuse. Everything is deterministic given ``seed``, small (kilobytes) and needs only
numpy, PyAV and soundfile (the ``dev`` extra: ``pip install "emofuse[dev]"``).

Example:
    >>> from emofuse.testing import synth_speech_like, write_wav
    >>> wave = synth_speech_like(1.0, sr=16000, seed=0)
    >>> wave.shape, wave.dtype.name
    ((16000,), 'float32')
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from emofuse.records import Labels, Utterance

PathLike = str | os.PathLike[str]

#: Mean F0 (Hz) used by :func:`make_utterances` per emotion, so audio carries a learnable cue.
EMOTION_PITCH = {"neutral": 120.0, "happy": 220.0, "sad": 100.0, "angry": 180.0}

_TEXT = {
    "neutral": ["the meeting is at three", "I will send the file later", "we took the train"],
    "happy": ["this is wonderful news", "I love it so much", "what a great day"],
    "sad": ["I miss her every day", "it was a terrible loss", "nothing feels right"],
    "angry": ["this is unacceptable", "stop lying to me", "I am furious with you"],
}
_SENTIMENT = {"neutral": 0.0, "happy": 2.0, "sad": -1.5, "angry": -2.5}


def synth_speech_like(
    duration: float = 1.5,
    sr: int = 16000,
    seed: int = 0,
    *,
    f0: float = 140.0,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a moving pitch in syllable bursts, plus noise.

    Pitch trackers (openSMILE, pYIN) find its F0, VAD-free analyses see voiced and unvoiced
    stretches, and the same ``seed`` always gives the same samples. It is not intelligible speech;
    ASR and neural VAD should not be expected to find words in it.

    Args:
        duration: Length in seconds.
        sr: Sample rate in Hz.
        seed: Seed of the pitch contour, syllable timing and noise.
        f0: Mean fundamental frequency in Hz.
        amplitude: Peak amplitude (in ``(0, 1]``).

    Returns:
        A 1-D float32 array of ``round(duration * sr)`` samples.
    """
    rng = np.random.default_rng(seed)
    n = round(duration * sr)
    t = np.arange(n) / sr
    # Pitch: slow declination + a rise-fall per "phrase" + vibrato-like jitter.
    phrase = np.sin(
        2 * np.pi * t / max(duration, 1e-3) * rng.uniform(0.8, 1.2) + rng.uniform(0, np.pi)
    )
    contour = f0 * (1.0 + 0.15 * phrase - 0.05 * t / max(duration, 1e-3))
    contour *= 1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(contour) / sr
    voiced = np.zeros(n)
    for h in range(1, 16):
        voiced += np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h**1.2
    # Syllables: ~4 per second, each a smooth burst with a short gap between.
    rate = rng.uniform(3.5, 4.5)
    syll = 0.5 * (1 - np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    envelope = np.clip(syll * 1.4 - 0.2, 0.0, 1.0) ** 0.7
    signal = voiced * envelope + 0.02 * rng.standard_normal(n)
    peak = float(np.max(np.abs(signal))) or 1.0
    return (amplitude * signal / peak).astype(np.float32)


def tone(
    duration: float = 1.0, sr: int = 16000, freq: float = 440.0, amplitude: float = 0.3
) -> np.ndarray:
    """A pure sine tone as float32."""
    t = np.arange(round(duration * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: PathLike, wave: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    """Write ``wave`` (``(n,)`` or ``(n, channels)`` floats in ``[-1, 1]``) as a WAV file.

    Args:
        path: Destination; parent folders are created.
        wave: Samples.
        sr: Sample rate in Hz.
        subtype: A soundfile subtype: ``"PCM_16"``, ``"PCM_24"``, ``"PCM_32"``, ``"PCM_U8"``,
            ``"FLOAT"`` …

    Returns:
        The path written.
    """
    try:
        import soundfile as sf
    except ImportError:
        from emofuse.errors import MissingDependencyError

        raise MissingDependencyError("emofuse.testing.write_wav", "soundfile", "dev") from None

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fspath(p), np.asarray(wave), sr, subtype=subtype, format="WAV")
    return p


def write_video(
    path: PathLike,
    *,
    duration: float = 1.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio: np.ndarray | None = None,
    sr: int = 16000,
    seed: int = 0,
) -> Path:
    """Write a small H.264 MP4 of moving colour patterns, with an optional AAC audio track.

    Frame ``i`` has a bright square whose position encodes ``i``, so tests can tell frames apart.

    Args:
        path: Destination (``.mp4``); parent folders are created.
        duration: Length in seconds.
        fps: Frame rate.
        size: ``(width, height)``; both even.
        audio: Mono samples at ``sr`` for the audio track, or ``None`` for no audio track.
        sr: Audio sample rate.
        seed: Seed of the background colours.

    Returns:
        The path written.
    """
    import av

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(seed)
    n_frames = max(1, round(duration * fps))
    with av.open(os.fspath(p), "w") as c:
        vs = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = (
            {"preset": "ultrafast", "crf": "28"} if vs.codec_context.name == "libx264" else {}
        )
        as_ = None
        if audio is not None:
            as_ = c.add_stream("aac", rate=sr)
            as_.layout = "mono"
        base = rng.integers(40, 200, size=3)
        for i in range(n_frames):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = (base + 3 * i) % 256
            side = max(4, h // 4)
            x = (i * 5) % max(1, w - side)
            img[h // 2 - side // 2 : h // 2 + side // 2, x : x + side] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                c.mux(packet)
        for packet in vs.encode():
            c.mux(packet)
        if as_ is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            hop = 1024
            for k in range(0, samples.shape[1], hop):
                chunk = np.ascontiguousarray(samples[:, k : k + hop])
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = sr
                frame.pts = k
                frame.time_base = Fraction(1, sr)
                for packet in as_.encode(frame):
                    c.mux(packet)
            for packet in as_.encode():
                c.mux(packet)
    return p


def write_image(path: PathLike, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB array as PNG (via PyAV, no OpenCV needed)."""
    import av

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img = np.ascontiguousarray(image, dtype=np.uint8)
    with av.open(os.fspath(p), "w", format="image2") as c:
        s = c.add_stream("png")
        s.height, s.width = img.shape[:2]
        s.pix_fmt = "rgb24"
        for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return p


def write_bad_media(directory: PathLike, seed: int = 0) -> dict[str, Path]:
    """Write a set of good and broken inputs for error-handling tests.

    Keys and files:

    * ``speech`` — ``speech.wav``: 1.5 s of :func:`synth_speech_like`, 16 kHz PCM-16 (a good file).
    * ``corrupt`` — ``corrupt.wav``: random bytes with a WAV name.
    * ``empty`` — ``empty.wav``: 0 bytes.
    * ``truncated`` — ``truncated.wav``: a valid WAV cut in the middle of its data.
    * ``truncated_header`` — ``truncated_header.wav``: a valid WAV cut inside its header.
    * ``silent`` — ``silent.wav``: 1 s of digital silence.
    * ``short`` — ``short.wav``: 0.05 s of speech-like signal.
    * ``stereo_44k`` — ``stereo_44k.wav``: 1.5 s stereo at 44.1 kHz (speech left, tone right).
    * ``u8`` — ``u8.wav``: 8-bit unsigned PCM.
    * ``pcm24`` — ``pcm24.wav``: 24-bit PCM.
    * ``noaudio`` — ``noaudio.mp4``: H.264 video without an audio track.
    * ``video`` — ``video.mp4``: 1 s video (10 fps, 64×48) with a 440 Hz AAC tone.
    * ``image`` — ``image.png``: a 32×24 RGB image.
    * ``corrupt_image`` — ``corrupt.jpg``: random bytes with a JPEG name.
    * ``transcript_latin1`` — ``transcript_latin1.txt``: text in Latin-1, not valid UTF-8.
    * ``transcript_empty`` — ``transcript_empty.txt``: 0 bytes.

    Args:
        directory: Folder to write into (created).
        seed: Seed of every random part.

    Returns:
        Paths by key.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sr = 16000
    speech = synth_speech_like(1.5, sr, seed)
    out: dict[str, Path] = {"speech": write_wav(d / "speech.wav", speech, sr)}

    out["corrupt"] = d / "corrupt.wav"
    out["corrupt"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["empty"] = d / "empty.wav"
    out["empty"].write_bytes(b"")

    whole = out["speech"].read_bytes()
    out["truncated"] = d / "truncated.wav"
    out["truncated"].write_bytes(whole[: 44 + (len(whole) - 44) // 3])
    out["truncated_header"] = d / "truncated_header.wav"
    out["truncated_header"].write_bytes(whole[:30])

    out["silent"] = write_wav(d / "silent.wav", np.zeros(sr, np.float32), sr)
    out["short"] = write_wav(d / "short.wav", synth_speech_like(0.05, sr, seed), sr)
    sr44 = 44100
    stereo = np.stack([synth_speech_like(1.5, sr44, seed), tone(1.5, sr44, 440.0)], axis=1)
    out["stereo_44k"] = write_wav(d / "stereo_44k.wav", stereo, sr44)
    out["u8"] = write_wav(d / "u8.wav", speech, sr, subtype="PCM_U8")
    out["pcm24"] = write_wav(d / "pcm24.wav", speech, sr, subtype="PCM_24")

    out["noaudio"] = write_video(d / "noaudio.mp4", duration=1.0, seed=seed)
    out["video"] = write_video(
        d / "video.mp4", duration=1.0, audio=tone(1.0, sr, 440.0), sr=sr, seed=seed
    )
    out["image"] = write_image(d / "image.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out["corrupt_image"] = d / "corrupt.jpg"
    out["corrupt_image"].write_bytes(
        b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    )

    out["transcript_latin1"] = d / "transcript_latin1.txt"
    out["transcript_latin1"].write_bytes(
        "Caf\u00e9 cr\u00e8me, tr\u00e8s \u00e9mu.\n".encode("latin-1")
    )
    out["transcript_empty"] = d / "transcript_empty.txt"
    out["transcript_empty"].write_bytes(b"")
    return out


def make_utterances(
    n: int = 8,
    modalities: Iterable[str] = ("text",),
    *,
    root: PathLike | None = None,
    seed: int = 0,
    dataset: str = "synthetic",
    emotions: Sequence[str] = ("neutral", "happy", "sad", "angry"),
    dialogue_size: int | None = None,
    duration: float = 1.0,
) -> list[Utterance]:
    """Synthetic labelled utterances whose inputs carry a (weak) cue of their emotion.

    Text is drawn from emotion-specific phrases; audio is :func:`synth_speech_like` at an
    emotion-specific pitch (:data:`EMOTION_PITCH`); video is a short clip with that audio. Labels
    include an emotion and a sentiment score in ``[-3, 3]``. Splits are 60 % train, 20 % val,
    20 % test (by position).

    Args:
        n: How many utterances.
        modalities: Any of ``"text"``, ``"audio"``, ``"video"``, ``"image"``.
        root: Folder for media files; required when a media modality is asked for.
        seed: Seed of every random choice.
        dataset: ``Utterance.dataset`` value.
        emotions: Emotion names to cycle through (names outside :data:`EMOTION_PITCH` use 150 Hz
            and neutral text).
        dialogue_size: Group consecutive utterances into dialogues of this many turns.
        duration: Audio/video length in seconds.

    Returns:
        ``n`` utterances with ids ``"{dataset}_{i:04d}"``.
    """
    mods = set(modalities)
    unknown = mods - {"text", "audio", "video", "image"}
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}")
    media_mods = mods - {"text"}
    if media_mods and root is None:
        raise ValueError(f"root is required to write {sorted(media_mods)} files")
    base = Path(root) if root is not None else None
    rng = np.random.default_rng(seed)
    sr = 16000
    out = []
    for i in range(n):
        emotion = emotions[i % len(emotions)]
        uid = f"{dataset}_{i:04d}"
        frac = i / max(n, 1)
        split = "train" if frac < 0.6 else "val" if frac < 0.8 else "test"
        phrases = _TEXT.get(emotion, _TEXT["neutral"])
        text = phrases[int(rng.integers(len(phrases)))] if "text" in mods else None
        sentiment = float(np.clip(_SENTIMENT.get(emotion, 0.0) + rng.normal(0, 0.3), -3, 3))
        media: dict[str, str] = {}
        if media_mods:
            assert base is not None
            f0 = EMOTION_PITCH.get(emotion, 150.0) * float(rng.uniform(0.95, 1.05))
            wave = synth_speech_like(duration, sr, seed * 100_003 + i, f0=f0)
            if "audio" in mods:
                media["audio"] = os.fspath(write_wav(base / f"{uid}.wav", wave, sr))
            if "video" in mods:
                media["video"] = os.fspath(
                    write_video(
                        base / f"{uid}.mp4", duration=duration, audio=wave, sr=sr, seed=seed + i
                    )
                )
            if "image" in mods:
                img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                media["image"] = os.fspath(write_image(base / f"{uid}.png", img))
        dialogue = turn = None
        if dialogue_size:
            dialogue, turn = f"{dataset}_dia{i // dialogue_size:03d}", i % dialogue_size
        out.append(
            Utterance(
                id=uid,
                dataset=dataset,
                split=split,
                dialogue_id=dialogue,
                turn=turn,
                speaker=None if turn is None else "AB"[turn % 2],
                media=media,  # type: ignore[arg-type]
                text=text,
                language="en" if text else None,
                labels=Labels(emotion=emotion, sentiment=round(sentiment, 3)),
            )
        )
    return out


__all__ = [
    "EMOTION_PITCH",
    "make_utterances",
    "synth_speech_like",
    "tone",
    "write_bad_media",
    "write_image",
    "write_video",
    "write_wav",
]


# -- synthetic model batches ------------------------------------------------------------------
# Appended below the media kit; torch and the model contract are imported inside make_batch only.
from collections.abc import Mapping  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from emofuse.data.inputs import InputSpec
    from emofuse.spec import TaskSpec


def make_batch(
    spec: TaskSpec,
    inputs: Mapping[str, InputSpec],
    n: int = 16,
    seed: int = 0,
    dialogues: bool = False,
    missing: Iterable[str] = (),
) -> dict[str, Any]:
    """A synthetic model batch (the contract of :mod:`emofuse.models.base`) with learnable labels.

    Each utterance has a latent vector ``z`` (8 numbers). Its emotion is a class whose prototype
    ``z`` is drawn around, and its sentiment is a fixed smooth function of ``z`` scaled into
    ``spec.sentiment_range``; every modality sees ``z`` through its own fixed random linear map
    plus noise (independently at every step of a sequence). So the labels are predictable from
    any one modality, better from several, and a model that trains on it must drive its loss
    down. The prototypes and maps depend only on the task and the input specs, never on
    ``seed``: batches with different seeds are fresh samples of the *same* task (train on one,
    evaluate on another).

    Sequence inputs get 2–8 valid steps per row (valid steps first, zero padding after); vector
    inputs are ``(N, 1, D)``. Every tensor is on the CPU; float features are ``float32``.

    Args:
        spec: The task; ``emotion`` targets are made when it has emotion labels, ``sentiment``
            targets when it has a ``sentiment_range``.
        inputs: ``modality → InputSpec`` (as given to the model).
        n: Number of utterances.
        seed: Seed of the sample (labels, noise, lengths).
        dialogues: Group rows into dialogues of up to 4 turns (``batch["dialogue"]``,
            ``batch["turn"]``); a turn keeps the previous turn's emotion with probability 0.7,
            so context carries information.
        missing: Modalities to leave out of the batch entirely (keys absent), e.g. ``("audio",)``.

    Returns:
        ``{modality: (N, T, D), f"{modality}_mask": (N, T) bool, "emotion": (N,) long,
        "sentiment": (N,) float, ["dialogue", "turn"]: (N,) long}``.

    Example:
        >>> from emofuse.data.inputs import InputSpec
        >>> from emofuse.spec import TaskSpec
        >>> spec = TaskSpec(name="toy", emotion_labels=["a", "b"], sentiment_range=(-3, 3))
        >>> batch = make_batch(spec, {"text": InputSpec(feature="minilm:tokens", dim=6, kind="sequence")})
        >>> batch["text"].shape[0], batch["emotion"].dtype
        (16, torch.int64)
    """
    import math

    import torch

    from emofuse.data.inputs import MODALITIES

    unknown = set(inputs) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
    k = 8
    n_cls = spec.num_emotions
    # The task (prototypes, maps) is fixed by the specs alone; the sample by `seed`.
    task = torch.Generator().manual_seed(20240611 + 97 * n_cls)
    protos = 2.0 * torch.randn(max(n_cls, 1), k, generator=task)
    direction = torch.randn(k, generator=task)
    direction = direction / direction.norm()
    gen = torch.Generator().manual_seed(int(seed))

    # balanced classes, in random order
    labels = torch.randperm(n, generator=gen) % max(n_cls, 1)
    batch: dict[str, Any] = {}
    if dialogues:
        turn = torch.arange(n) % 4
        batch["dialogue"] = torch.arange(n) // 4
        batch["turn"] = turn
        if n_cls:
            stick = torch.rand(n, generator=gen) < 0.7
            for i in range(1, n):
                if turn[i] > 0 and stick[i]:
                    labels[i] = labels[i - 1]
    z = (protos[labels] if n_cls else 0.0) + 0.7 * torch.randn(n, k, generator=gen)
    if n_cls:
        batch["emotion"] = labels.clone()
    if spec.sentiment_range is not None:
        lo, hi = spec.sentiment_range
        score = torch.tanh(0.6 * (z @ direction))  # in (-1, 1), smooth in z
        batch["sentiment"] = (lo + (hi - lo) * (score + 1) / 2).to(torch.float32)

    skip = set(missing)
    for m in MODALITIES:
        if m not in inputs:
            continue
        ispec = inputs[m]
        # a fixed map per (modality, dim): seeded from both, independent of `seed`
        g = torch.Generator().manual_seed(1009 * (MODALITIES.index(m) + 1) + ispec.dim)
        proj = torch.randn(k, ispec.dim, generator=g) / math.sqrt(k)
        if m in skip:
            continue
        t = 1 if ispec.kind == "vector" else 8
        steps = z[:, None, :] @ proj + torch.randn(n, t, ispec.dim, generator=gen)
        if ispec.kind == "vector":
            mask = torch.ones(n, 1, dtype=torch.bool)
        else:
            length = torch.randint(2, t + 1, (n,), generator=gen)
            mask = torch.arange(t)[None, :] < length[:, None]
        batch[m] = (steps * mask[..., None]).to(torch.float32)
        batch[f"{m}_mask"] = mask
    return batch


__all__ += ["make_batch"]


# -- synthetic prepared datasets --------------------------------------------------------------
def write_prepared(folder: PathLike, utterances: Sequence[Utterance], spec: TaskSpec) -> Path:
    """A prepared-dataset folder (``train/val/test.jsonl`` and ``spec.json``) of ``utterances``."""
    from emofuse.records import dump_json, write_manifest

    folder = Path(folder)
    for split in ("train", "val", "test"):
        write_manifest(folder / f"{split}.jsonl", [u for u in utterances if u.split == split])
    dump_json(folder / "spec.json", spec.model_dump(mode="json"))
    return folder


def cache_minilm_like(
    cache: PathLike, utterances: Sequence[Utterance], spec: TaskSpec, seed: int = 0
) -> Path:
    """Fill a feature store with MiniLM-shaped features of ``utterances`` (no model is run).

    ``tokens`` ``(4 + words, 384)`` are the prototype of the utterance's emotion (one random
    vector per label of ``spec``) plus noise of standard deviation 2; ``pooled`` ``(384,)`` is
    their mean. So a model can learn the labels, slowly.
    """
    from emofuse.features import FeatureStore, get_extractor

    ext = get_extractor("minilm")
    rng = np.random.default_rng(seed)
    proto = rng.normal(size=(len(spec.emotion_labels or [None]), 384)).astype(np.float32)
    rows = []
    for u in utterances:
        label = u.labels.emotion if u.labels is not None else None
        k = spec.emotion_index(label) if spec.emotion_labels and label is not None else 0
        words = len((u.text or "").split())
        tokens = proto[k] + rng.normal(scale=2.0, size=(4 + words, 384)).astype(np.float32)
        rows.append((u, ext.signature(u), {"pooled": tokens.mean(0), "tokens": tokens}))
    FeatureStore(cache).cache(ext).write(rows)
    return Path(cache)

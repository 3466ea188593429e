"""Media plumbing: decode audio, video frames and images from any container into numpy.

Everything that reads a media file goes through this module, so every extractor validates input
the same way and fails with the same messages. Decoding uses PyAV (FFmpeg bundled in the wheel),
so wav, flac, mp3, ogg, m4a, mp4, mkv, webm, avi … all work, including audio out of video files.
Resampling uses soxr.

Every unusable input raises :class:`~emofuse.errors.InputError` naming the file and the problem:
a missing or empty file, a corrupt or truncated one, a video without an audio track, a time span
outside the media, audio that is too short or silent.

Times are seconds on the media's own presentation clock (what ``ffprobe`` shows), which starts
at 0 for almost every file.

Example:
    >>> wave = load_audio("clip.mp4", sr=16000, start=1.0, end=2.5)  # doctest: +SKIP
    >>> frames, times = read_frames("clip.mp4", fps=5.0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emofuse.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    import av.container

PathLike = str | os.PathLike[str]

MIN_AUDIO_SECONDS = 0.1
"""Decoded audio shorter than this is refused (``"audio too short"``)."""

SILENCE_RMS = 1e-4
"""RMS below which :func:`check_not_silent` calls a signal silent (−80 dBFS)."""

_RESAMPLE_PAD_S = 0.05

TRUNCATION_TOLERANCE_S = 0.05
"""How much shorter than its header says a file may decode before it counts as truncated."""


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` finds in a media file.

    Attributes:
        path: The file.
        format: FFmpeg's container name (``"wav"``, ``"mov,mp4,m4a,3gp,3g2,mj2"`` …).
        duration: Length in seconds (the longest stream), or ``None`` if the container does not say.
        has_audio: Whether an audio stream exists.
        has_video: Whether a video stream exists (a still image counts as a one-frame video).
        sample_rate: Audio sample rate in Hz, if there is audio.
        channels: Audio channel count, if there is audio.
        audio_codec: Audio codec name, if there is audio.
        fps: Average video frame rate, if there is video and the container says.
        width: Video width in pixels, if there is video.
        height: Video height in pixels, if there is video.
        frames: Video frame count (from the container, or estimated from duration × fps).
        video_codec: Video codec name, if there is video.
    """

    path: str
    format: str
    duration: float | None
    has_audio: bool
    has_video: bool
    sample_rate: int | None = None
    channels: int | None = None
    audio_codec: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    video_codec: str | None = None


# -- opening ------------------------------------------------------------------------------------


DECODE_THREADS = "SLICE"
"""FFmpeg threading for decoding: slice threads only. Frame threading ("AUTO"/"FRAME") can hang
for ever in ``avcodec_free_context`` when a stream is closed before the decoder is drained,
which every span read does (PyAV issues #909, #1117); it did so here after Whisper had run in
the same process."""


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - av is a core dependency
        raise MissingDependencyError("media decoding", "av") from None
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own stderr chatter; we raise instead
    return av


def _check_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file does not exist")
    if not p.is_file():
        raise InputError(p, "is not a file")
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty (0 bytes)")
    return p


def _reason(err: BaseException) -> str:
    """A short, one-line reason from a decoder exception."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    text = text.splitlines()[0].strip()
    # PyAV appends "; last error log: [...]" and the file name; keep the first clause.
    for sep in ("; last error log", ": '"):
        text = text.split(sep, 1)[0]
    return text[:160]


def _decode_errors() -> tuple[type[BaseException], ...]:
    av = _av()
    return (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError, MemoryError)


def _open(p: Path, what: str) -> av.container.InputContainer:
    av = _av()
    try:
        return av.open(os.fspath(p), mode="r", metadata_errors="ignore")
    except _decode_errors() as err:
        raise InputError(p, f"cannot decode {what}: {_reason(err)}") from None


# -- probe --------------------------------------------------------------------------------------


def probe(path: PathLike) -> MediaInfo:
    """Read a media file's streams and durations without decoding it.

    Args:
        path: Any audio, video or image file FFmpeg can read.

    Returns:
        The file's :class:`MediaInfo`.

    Raises:
        InputError: The file is missing, empty or unreadable.
    """
    p = _check_file(path)
    with _open(p, "media") as c:
        a = c.streams.audio[0] if c.streams.audio else None
        v = c.streams.video[0] if c.streams.video else None
        durations = [d for d in (_stream_duration(s) for s in (a, v) if s is not None) if d]
        duration = max(durations) if durations else (c.duration / 1e6 if c.duration else None)
        info: dict[str, Any] = {
            "path": os.fspath(p),
            "format": c.format.name,
            "duration": duration,
            "has_audio": a is not None,
            "has_video": v is not None,
        }
        if a is not None:
            cc = a.codec_context
            info.update(
                sample_rate=cc.sample_rate or None,
                channels=cc.channels or None,
                audio_codec=cc.name,
            )
        if v is not None:
            cc = v.codec_context
            fps = float(v.average_rate) if v.average_rate else None
            frames = v.frames or None
            if frames is None and fps and duration:
                frames = round(duration * fps)
            info.update(
                fps=fps,
                width=cc.width or None,
                height=cc.height or None,
                frames=frames,
                video_codec=cc.name,
            )
    return MediaInfo(**info)


def _stream_duration(stream: Any) -> float | None:
    if stream is None:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    container = stream.container
    return container.duration / 1e6 if container.duration else None


# -- audio --------------------------------------------------------------------------------------


def load_audio(
    path: PathLike,
    sr: int = 16000,
    start: float | None = None,
    end: float | None = None,
    *,
    min_duration: float = MIN_AUDIO_SECONDS,
) -> np.ndarray:
    """Decode the audio of any audio or video file as mono float32 at ``sr`` Hz.

    Channels are averaged; every sample format (8-bit unsigned to 32-bit integer and float) is
    scaled to ``[-1, 1]``; the rate is converted with soxr (high quality).

    Args:
        path: An audio file, or a video file whose first audio track is read.
        sr: Output sample rate in Hz.
        start: Start of the span to read, in seconds (``None`` = from the beginning).
        end: End of the span, in seconds (``None`` = to the end). A span running past the end of
            the media is cut at the end.
        min_duration: Refuse decoded audio shorter than this many seconds.

    Returns:
        A 1-D float32 array.

    Raises:
        InputError: The file is missing, empty, corrupt or truncated; has no audio track; the
            span lies outside the media; or the audio is shorter than ``min_duration``.
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    p = _check_file(path)
    t0 = float(start) if start else 0.0
    t1 = math.inf if end is None else float(end)
    if t0 < 0 or t1 <= t0:
        raise InputError(p, f"invalid time span {_span(start, end)}")

    riff = _riff_shortfall(p)
    if riff:
        raise InputError(p, f"file is truncated ({riff} bytes short of its WAV header)")
    with _open(p, "audio") as c:
        if not c.streams.audio:
            raise InputError(p, "has no audio track")
        stream = c.streams.audio[0]
        stream.thread_type = DECODE_THREADS
        declared = _stream_duration(stream)
        # Decode a little context on both sides so the resampler's edges fall outside the span.
        pad = _RESAMPLE_PAD_S if sr != (stream.codec_context.sample_rate or sr) else 0.0
        try:
            wave, rate, decoded_from, decoded_to = _decode_audio(
                c, stream, max(0.0, t0 - pad), t1 + pad
            )
        except _decode_errors() as err:
            raise InputError(p, f"cannot decode audio: {_reason(err)}") from None

    if rate is None:
        if t0 > 0 or end is not None:
            raise InputError(
                p, f"time span {_span(start, end)} is outside the media{_dur(declared)}"
            )
        raise InputError(p, "cannot decode audio: no audio frames")
    if (wave.size == 0 or decoded_to <= t0) and (t0 > 0 or end is not None):
        raise InputError(
            p, f"time span {_span(start, end)} is outside the media (duration {decoded_to:.2f} s)"
        )
    # Truncation: the header promises more than the stream delivers.
    if (
        declared is not None
        and decoded_to < min(declared, t1) - max(TRUNCATION_TOLERANCE_S, 0.01 * declared)
        and _is_uncompressed(stream)
    ):
        raise InputError(
            p,
            f"file is truncated: header declares {declared:.2f} s, "
            f"only {decoded_to:.2f} s decodable",
        )

    if rate != sr and wave.size:
        import soxr

        wave = soxr.resample(wave, rate, sr, quality="HQ")
    if pad:
        lead = max(0, round((t0 - decoded_from) * sr))
        stop = (
            None
            if math.isinf(t1) or t1 >= decoded_to
            else lead + round((t1 - max(t0, decoded_from)) * sr)
        )
        wave = wave[lead:stop]
    wave = np.clip(wave, -1.0, 1.0, out=np.asarray(wave, dtype=np.float32))
    if wave.size < min_duration * sr:
        raise InputError(
            p, f"audio too short ({wave.size / sr:.3f} s, need at least {min_duration:g} s)"
        )
    return wave


def _riff_shortfall(p: Path) -> int:
    """Bytes missing from a RIFF/WAVE file according to its header (0 if complete or not RIFF).

    FFmpeg decodes a WAV cut short without complaint, so this reads the RIFF size field. Streamed
    WAVs that never filled in their size (0 or 0xFFFFFFFF) are not judged.
    """
    with p.open("rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0
    declared = int.from_bytes(head[4:8], "little") + 8
    if declared in (8, 0xFFFFFFFF + 8):
        return 0
    actual = p.stat().st_size
    return declared - actual if declared > actual + 8 else 0  # a missing pad byte is common


def _is_uncompressed(stream: Any) -> bool:
    name = stream.codec_context.name or ""
    return name.startswith("pcm_") or name in {"flac", "wavpack", "alac"}


def _decode_audio(
    c: av.container.InputContainer, stream: Any, t0: float, t1: float
) -> tuple[np.ndarray, int | None, float, float]:
    """Mono float32 samples in ``[t0, t1)`` at the native rate, the rate, their start and end.

    Times are on the media's clock: 0 is the container's start (a file cut from a longer
    recording often starts its timestamps at an offset; see :func:`_clock_offset`).
    """
    av = _av()
    tb = stream.time_base
    offset = _clock_offset(c)
    if t0 > 1.0 and tb:
        try:
            c.seek(int((t0 + offset) / tb), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            c.seek(0)
    resampler = av.AudioResampler(format="fltp")  # keeps layout and rate; converts any format
    chunks: list[np.ndarray] = []
    rate: int | None = None
    cursor: float | None = None  # time of the next sample, in seconds
    first: float | None = None  # time of the first sample kept

    def take(frames: list[Any]) -> bool:
        nonlocal rate, cursor, first
        for frame in frames:
            if rate is None:
                rate = frame.sample_rate
            if frame.sample_rate != rate:
                raise ValueError(
                    f"sample rate changes mid-stream ({rate} → {frame.sample_rate} Hz)"
                )
            data = frame.to_ndarray()  # (channels, samples), planar float
            mono = data.mean(axis=0) if data.shape[0] > 1 else data[0]
            start_s = frame.time - offset if frame.time is not None and cursor is None else cursor
            start_s = 0.0 if start_s is None else start_s
            cursor = start_s + mono.size / rate
            lo = max(0, round((t0 - start_s) * rate))
            hi = mono.size if math.isinf(t1) else min(mono.size, round((t1 - start_s) * rate))
            if hi > lo:
                if first is None:
                    first = start_s + lo / rate
                chunks.append(mono[lo:hi].astype(np.float32, copy=False))
            if cursor >= t1:
                return True
        return False

    done = False
    for packet in c.demux(stream):
        for frame in packet.decode():
            if take(resampler.resample(frame)):
                done = True
                break
        if done:
            break
    if not done:
        take(resampler.resample(None))
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return wave, rate, t0 if first is None else first, cursor or 0.0


def check_not_silent(
    wave: np.ndarray, path: PathLike | None, threshold: float = SILENCE_RMS
) -> None:
    """Raise if ``wave`` carries no signal, for extractors that need speech.

    Args:
        wave: Samples in ``[-1, 1]``.
        path: The file it came from (named in the error).
        threshold: RMS at or below which the signal counts as silent.

    Raises:
        InputError: ``"audio is silent"`` with the measured level.
    """
    if wave.size == 0:
        raise InputError(path, "audio is empty")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if not math.isfinite(rms) or rms <= threshold:
        level = "-inf" if rms <= 0 or not math.isfinite(rms) else f"{20 * math.log10(rms):.1f}"
        raise InputError(path, f"audio is silent (RMS {level} dBFS)")


# -- video --------------------------------------------------------------------------------------


def read_frames(
    path: PathLike,
    fps: float = 5.0,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Sample RGB frames uniformly in time.

    Targets are ``start + k / fps``; for each, the decoded frame whose timestamp is nearest is
    taken. A frame is returned once even if it is nearest to several targets (``fps`` above the
    video's own rate returns every frame). The result depends only on the file and the
    arguments. Frames no sample can be are not decoded where the codec allows (non-reference
    frames more than :data:`SKIP_MARGIN_S` before the span; see :func:`_sample_frames`).

    Args:
        path: A video file (a still image works too and gives one frame).
        fps: Samples per second.
        start: Start of the span in seconds (``None`` = 0).
        end: End of the span in seconds (``None`` = to the end).
        max_frames: Stop after this many frames.

    Returns:
        ``(frames, times)``: a list of ``(H, W, 3)`` uint8 RGB arrays, as a player displays them
        (turned by the container's display matrix, non-square pixels made square), and a
        float64 array of their presentation times in seconds.

    Raises:
        InputError: The file is missing, empty, corrupt, has no video stream, or no frame lies in
            the span.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    p = _check_file(path)
    t0 = float(start) if start else 0.0
    t1 = math.inf if end is None else float(end)
    if t0 < 0 or t1 <= t0:
        raise InputError(p, f"invalid time span {_span(start, end)}")
    limit = math.inf if max_frames is None else max_frames
    sampled = _read_span(p, t0, t1, fps, limit, skip_before=t0 - SKIP_MARGIN_S)
    if sampled is None:  # a frame let be skipped may be the one before the span
        sampled = _read_span(p, t0, t1, fps, limit, skip_before=-math.inf)
    assert sampled is not None  # nothing skipped, nothing to doubt
    frames, times = sampled
    if not frames:
        raise InputError(p, f"no video frame in time span {_span(start, end)}")
    return frames, np.asarray(times, dtype=np.float64)


SKIP_MARGIN_S = 0.5
""":func:`read_frames` decodes every frame from this long before the span's start on."""


def _read_span(
    p: Path, t0: float, t1: float, fps: float, limit: float, *, skip_before: float
) -> tuple[list[np.ndarray], list[float]] | None:
    """:func:`_sample_frames` in the file opened afresh; ``None`` when it cannot be sure."""
    frames: list[np.ndarray] = []
    times: list[float] = []
    with _open(p, "video") as c:
        if not c.streams.video:
            raise InputError(p, "has no video stream")
        stream = c.streams.video[0]
        stream.thread_type = DECODE_THREADS
        try:
            sure = _sample_frames(c, stream, t0, t1, fps, limit, frames, times, skip_before)
        except _decode_errors() as err:
            raise InputError(p, f"cannot decode video: {_reason(err)}") from None
    return (frames, times) if sure else None


def _as_displayed(frame: Any, sar: float) -> np.ndarray:
    """The frame as a player shows it: square pixels, turned upright.

    Non-square pixels are stretched to square ones (sample aspect ratio), and the image is
    turned by the display matrix (phone video stored sideways).

    PyAV's ``frame.rotation`` is the display matrix's angle in degrees, counter-clockwise
    (``av_display_rotation_get``); a player turns the stored image counter-clockwise by it
    (``np.rot90`` with ``k = rotation / 90``), which is what FFmpeg's own auto-rotation does
    (``theta = -rotation``, then ``transpose=clock`` for 90). Checked against FFmpeg 5.1's
    auto-rotated frames of ``tests/data/media/phone-rot90.mp4`` and ``phone-rot270.mp4``.
    """
    img = frame.to_ndarray(format="rgb24")
    if abs(sar - 1.0) > 1e-3:
        import cv2

        h, w = img.shape[:2]
        if sar > 1:
            img = cv2.resize(img, (round(w * sar), h), interpolation=cv2.INTER_LINEAR)
        else:
            img = cv2.resize(img, (w, round(h / sar)), interpolation=cv2.INTER_LINEAR)
    turns = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4
    if turns:
        img = np.rot90(img, k=turns)
    return np.ascontiguousarray(img)


def _clock_offset(c: Any) -> float:
    """Seconds of the container's first timestamp, which players show as 0:00.

    Files cut or remuxed from a longer recording (``-output_ts_offset``, broadcast captures,
    some phone and camera files) start their timestamps there; times in emofuse — utterance
    spans, transcript cues, frame times — count from the media's start, as a player shows them.
    """
    start = getattr(c, "start_time", None)
    return float(start) / 1_000_000 if start and start > 0 else 0.0  # AV_TIME_BASE units


def _sample_frames(
    c: av.container.InputContainer,
    stream: Any,
    t0: float,
    t1: float,
    fps: float,
    limit: float,
    frames: list[np.ndarray],
    times: list[float],
    skip_before: float = -math.inf,
) -> bool:
    """Fill ``frames`` and ``times`` with the span's samples (see :func:`read_frames`).

    Samples are taken from the frames decoded after seeking to the key frame before ``t0``.
    Non-reference frames (H.264's are about half of a stream with B-frames: no other frame is
    predicted from them, so skipping them changes no other frame) timed before
    ``skip_before`` are not decoded (FFmpeg's ``skip_frame``): with ``skip_before`` a little
    before ``t0``, no sample can be one of them. Returns ``False`` (the samples are then
    incomplete) when one may have been all the same: when the frame before the first one at
    or after ``t0`` may have been skipped (a gap in the stream longer than the margin), or
    frames without timestamps, timed by their count, follow skipped ones.
    """
    av = _av()
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    offset = _clock_offset(c)
    tb = stream.time_base
    if t0 > 0 and stream.time_base:
        try:
            c.seek(
                int((t0 + offset) / stream.time_base), stream=stream, backward=True, any_frame=False
            )
        except av.FFmpegError:
            c.seek(0)
    k = 0
    prev: tuple[Any, float] | None = None
    last_emitted: float | None = None
    index = 0

    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar = float(sar) if sar else 1.0

    def emit(frame: Any, t: float) -> bool:
        nonlocal last_emitted
        if last_emitted is not None and t == last_emitted:
            return False
        frames.append(_as_displayed(frame, sar))
        times.append(t)
        last_emitted = t
        return len(frames) >= limit

    early = -math.inf  # the latest time of a packet whose non-reference frame is skipped

    def decoded() -> Iterator[Any]:
        nonlocal early
        context = stream.codec_context
        for packet in c.demux(stream):
            skip = False
            if packet.pts is not None and tb:
                time = float(packet.pts * tb) - offset
                skip = time < skip_before
                if skip:
                    early = max(early, time)
            context.skip_frame = "NONREF" if skip else "DEFAULT"
            yield from packet.decode()

    def doubtful(before: tuple[Any, float] | None) -> bool:
        """Whether a skipped frame may lie between ``before`` and the next frame."""
        return early > -math.inf and (before is None or early > before[1])

    checked = False
    for frame in decoded():
        if frame.time is None and early > -math.inf:
            return False
        t = frame.time - offset if frame.time is not None else index / rate
        index += 1
        if not checked and t >= t0:
            if doubtful(prev):
                return False
            checked = True
        while True:
            target = t0 + k / fps
            if target >= t1 or target > t:
                break
            chosen = prev if prev is not None and target - prev[1] < t - target else (frame, t)
            k += 1
            if chosen[1] < t0 - 0.5 / rate:  # seek landed early and the frame is before the span
                continue
            if emit(*chosen):
                return True
        if t0 + k / fps >= t1:
            return True
        prev = (frame, t)
    if not checked and doubtful(prev):
        return False
    # Targets after the last decoded frame but within its display time.
    if prev is not None:
        target = t0 + k / fps
        if target < t1 and target < prev[1] + 1.0 / rate - 1e-6 and prev[1] >= t0 - 0.5 / rate:
            emit(*prev)
    return True


# -- images -------------------------------------------------------------------------------------


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    EXIF orientation is applied; alpha is dropped; grey images are expanded to three channels.
    Non-ASCII paths work.

    Raises:
        InputError: The file is missing, empty, or not a readable image.
    """
    p = _check_file(path)
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("read_image", "opencv-python-headless", "face") from None
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as err:
        raise InputError(p, f"cannot read image: {_reason(err)}") from None
    # OpenCV's own "[ERROR:0] ... readHeader" lines would repeat what the InputError says
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None:
        raise InputError(p, "cannot decode image: not an image or corrupt")
    return np.ascontiguousarray(img[:, :, ::-1])


# -- helpers ------------------------------------------------------------------------------------


def _span(start: float | None, end: float | None) -> str:
    a = "start" if start is None else f"{start:g}"
    b = "end" if end is None else f"{end:g}"
    return f"{a}–{b} s"


def _dur(d: float | None) -> str:
    return "" if d is None else f" (duration {d:.2f} s)"


__all__ = [
    "MIN_AUDIO_SECONDS",
    "SILENCE_RMS",
    "MediaInfo",
    "check_not_silent",
    "load_audio",
    "probe",
    "read_frames",
    "read_image",
]

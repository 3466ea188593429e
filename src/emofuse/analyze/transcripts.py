"""Transcripts of a recording: SRT, WebVTT, JSON with speakers and times, or plain text.

Every reader returns the same :class:`Turn` records, on the media's clock, in file order:

* ``.srt`` / ``.vtt`` — subtitle cues through ``webvtt-py``; a WebVTT voice tag
  (``<v Ann>``) becomes the speaker, and so does a ``Name:`` prefix when at least half of the
  cues have one; markup is dropped;
* ``.json`` — ``[{"text": …, "start": s, "end": s, "speaker": …}, …]`` or
  ``{"turns": [...]}`` (``start`` / ``end`` optional, in seconds, but both or neither);
* ``.txt`` — one turn per non-empty line, no times; ``Name: words`` lines (or a ``Name:`` line
  over the lines below it) give a speaker when every line has one; a ``Name:`` line with no
  words under it is a heading and is dropped.

Bad files fail with one :class:`~emofuse.errors.InputError` naming the file and the problem
(line or cue number where there is one).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emofuse.errors import InputError, MissingDependencyError

TRANSCRIPT_SUFFIXES = (".srt", ".vtt", ".json", ".txt")
"""File suffixes read as transcripts, in the order a transcript beside a media file is looked for."""

_OVERRIDE = re.compile(r"\{\\[^{}]*\}")
r"""SubRip/ASS override tags such as ``{\an8}`` or ``{\i1}``: styling, not words."""

_SPEAKER = re.compile(r"^\s*([^:\s][^:]{0,40}):\s+(\S.*)$")
_LABEL = re.compile(r"^\s*([^:\s][^:]{0,40}):\s*$")
"""A line that is only ``Name:`` (a speaker over the lines below it, or a heading)."""

_CUE_TIMING = re.compile(r"^\s*-?\d\S*\s*-->")
"""A cue's time line, readable or not: a time-like run (``00:00:0x,000``, ``00:00:-1,000``)
starting with a digit, then ``-->`` (words such as ``this --> that`` are not one)."""
_GOOD_TIMING = re.compile(
    r"^\s*(\d+:)?\d{1,2}:\d{2}[,.]\d{1,3}\s*-->\s*(\d+:)?\d{1,2}:\d{2}[,.]\d{1,3}(\s.*)?$"
)
"""A cue's time line as webvtt-py reads it (``00:00:01,000 --> 00:00:02,500 [settings]``)."""


class Turn(BaseModel):
    """One transcript turn.

    Attributes:
        text: The words (markup removed; never empty).
        start: Start in seconds on the media's clock, or ``None`` when the transcript has no times.
        end: End in seconds (``> start``), or ``None``.
        speaker: Speaker tag, if the transcript names one (kept for the reader; models never need it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    start: float | None = Field(None, ge=0.0)
    end: float | None = Field(None, ge=0.0)
    speaker: str | None = None


def is_transcript(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a transcript suffix."""
    return Path(path).suffix.lower() in TRANSCRIPT_SUFFIXES


def read_transcript(path: str | os.PathLike[str]) -> list[Turn]:
    """Read a transcript file into turns (see the module docstring).

    Raises:
        InputError: missing, unreadable, empty, malformed, a turn with ``end <= start``, or times
            that are not finite numbers.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such transcript file")
    suffix = p.suffix.lower()
    if suffix not in TRANSCRIPT_SUFFIXES:
        raise InputError(p, f"not a transcript (expected one of {', '.join(TRANSCRIPT_SUFFIXES)})")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(p, f"not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise InputError(p, f"cannot read ({err.strerror or err})") from None
    if not text.strip():
        raise InputError(p, "transcript is empty")
    if suffix in (".srt", ".vtt"):
        turns = _subtitles(p, suffix)
    elif suffix == ".json":
        turns = _json(p, text)
    else:
        turns = _plain(text)
    if not turns:
        raise InputError(p, "transcript has no words")
    return turns


def _subtitles(p: Path, suffix: str) -> list[Turn]:
    try:
        import webvtt
    except ImportError:
        raise MissingDependencyError("subtitle transcripts", "webvtt-py") from None
    try:
        captions = webvtt.from_srt(os.fspath(p)) if suffix == ".srt" else webvtt.read(os.fspath(p))
    except (
        Exception
    ) as err:  # webvtt raises MalformedFileError / MalformedCaptionError / ValueError
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        kind = "SRT" if suffix == ".srt" else "WebVTT"
        raise InputError(p, f"malformed {kind} file ({problem})") from None
    _check_every_cue_read(p, len(captions))
    turns = []
    for i, c in enumerate(captions, start=1):
        words = " ".join(_OVERRIDE.sub("", c.text).split())
        if not words:
            continue
        start, end = _ms(c.start_time) / 1000.0, _ms(c.end_time) / 1000.0
        if end <= start:
            raise InputError(p, f"cue {i} ends ({c.end}) at or before it starts ({c.start})")
        turns.append(
            Turn(text=words, start=start, end=end, speaker=getattr(c, "voice", None) or None)
        )
    return _named_speakers(turns)


def _named_speakers(turns: list[Turn]) -> list[Turn]:
    """Turns whose text starts ``Name: …`` carry that speaker.

    Only when at least half of the untagged turns do: subtitles often name speakers so, while
    a lone ``Note: …`` is words.
    """
    untagged = [t for t in turns if t.speaker is None]
    named = [m for t in untagged if (m := _SPEAKER.match(t.text)) and _is_name(m.group(1))]
    if not untagged or 2 * len(named) < len(untagged):
        return turns
    out = []
    for t in turns:
        m = _SPEAKER.match(t.text) if t.speaker is None else None
        if m and _is_name(m.group(1)):
            t = t.model_copy(update={"speaker": m.group(1).strip(), "text": m.group(2).strip()})
        out.append(t)
    return out


def _is_name(label: str) -> bool:
    """A speaker label: at most three words, starting with a capital letter or a digit."""
    words = label.split()
    return 0 < len(words) <= 3 and (label.strip()[0].isupper() or label.strip()[0].isdigit())


def _check_every_cue_read(p: Path, read: int) -> None:
    """Refuse a subtitle file with a cue webvtt-py skipped, naming the line.

    webvtt-py silently drops a cue whose time line it cannot parse (a negative time,
    ``1:2:3``); its words would be lost unsaid.
    """
    lines = p.read_text(encoding="utf-8-sig").splitlines()
    timings = [(n, ln) for n, ln in enumerate(lines, start=1) if _CUE_TIMING.search(ln)]
    for n, ln in timings:
        if not _GOOD_TIMING.match(ln):
            raise InputError(p, f"line {n}: unreadable cue times {ln.strip()[:60]!r}")
    if len(timings) != read:
        raise InputError(
            p, f"{len(timings) - read} of {len(timings)} cue(s) could not be read (malformed cue)"
        )


def _ms(ts: object) -> float:
    value = ts.in_milliseconds  # type: ignore[attr-defined]
    return float(value() if callable(value) else value)


def _json(p: Path, text: str) -> list[Turn]:
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(p, "JSON nested too deeply to be a transcript") from None
    except json.JSONDecodeError as err:
        raise InputError(
            p, f"invalid JSON at line {err.lineno}, column {err.colno} ({err.msg})"
        ) from None
    if isinstance(data, dict):
        data = data.get("turns", data.get("segments"))
    if not isinstance(data, list):
        raise InputError(p, 'expected a list of turns, or {"turns": [...]}')
    turns = []
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise InputError(p, f"turn {i} is not an object")
        unknown = set(row) - {"text", "start", "end", "speaker", "id"}
        if unknown:
            raise InputError(
                p, f"turn {i} has unknown keys {sorted(unknown)} (known: text, start, end, speaker)"
            )
        words = row.get("text")
        if not isinstance(words, str):
            raise InputError(p, f"turn {i} has no text")
        if not words.strip():
            continue
        start, end = row.get("start"), row.get("end")
        if (start is None) != (end is None):
            raise InputError(p, f"turn {i} gives only one of start and end")
        for name, v in (("start", start), ("end", end)):
            if v is not None and (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
            ):
                raise InputError(
                    p, f"turn {i}: {name} must be a non-negative number of seconds, got {v!r}"
                )
        if start is not None and end <= start:
            raise InputError(p, f"turn {i} ends ({end}) at or before it starts ({start})")
        speaker = row.get("speaker")
        try:
            turns.append(
                Turn(
                    text=" ".join(words.split()),
                    start=None if start is None else float(start),
                    end=None if end is None else float(end),
                    speaker=None if speaker is None else str(speaker),
                )
            )
        except ValidationError as err:  # pragma: no cover - guarded above
            raise InputError(p, f"turn {i}: {err.errors()[0]['msg']}") from None
    timed = {t.start is not None for t in turns}
    if len(timed) > 1:
        raise InputError(p, "some turns have times and others not: give times for all or none")
    return turns


def _plain(text: str) -> list[Turn]:
    """Turns of a plain-text transcript: one per line, speakers when every line names one.

    A speaker is named by a ``Name: words`` prefix, or by a ``Name:`` line of its own over the
    lines that follow (screenplay style). A ``Name:`` line followed by no words of its own
    (``Meeting notes:`` above ``Ann: …`` lines) is a heading, not a speaker, and is dropped.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    rows: list[tuple[str | None, str]] = []  # (speaker, words)
    label: str | None = None
    for ln in lines:
        if m := _LABEL.match(ln):
            label = m.group(1).strip()
        elif m := _SPEAKER.match(ln):
            rows.append((m.group(1).strip(), m.group(2).strip()))
            label = None
        else:
            rows.append((label, ln))
    if rows and all(speaker is not None for speaker, _ in rows):
        return [Turn(text=" ".join(words.split()), speaker=speaker) for speaker, words in rows]
    return [Turn(text=" ".join(ln.split())) for ln in lines]


def transcript_beside(media: str | os.PathLike[str]) -> Path | None:
    """The transcript next to a media file with the same stem (``clip.srt`` for ``clip.mp4``), if any."""
    p = Path(media)
    for suffix in TRANSCRIPT_SUFFIXES:
        for candidate in (p.with_suffix(suffix), p.with_suffix(suffix.upper())):
            if candidate.is_file() and candidate != p:
                return candidate
    return None


__all__ = ["TRANSCRIPT_SUFFIXES", "Turn", "is_transcript", "read_transcript", "transcript_beside"]

"""The records that flow through emofuse: :class:`Utterance` and JSONL manifests.

Everything downstream of a dataset recipe reads manifests, never dataset-specific code. Records
are immutable; edits return copies (``utt.model_copy(update=...)`` or the ``with_*`` helpers).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emofuse.config import format_validation_error
from emofuse.errors import InputError

Modality = Literal["text", "audio", "video", "image"]
"""Input kinds an utterance can carry. ``video`` files are also the source of face and audio features."""

SPLITS = ("train", "val", "test")


class Labels(BaseModel):
    """Ground-truth annotations of one utterance. Every field is optional.

    Attributes:
        emotion: Discrete emotion label, a name from the dataset's ``TaskSpec.emotion_labels``.
        sentiment: Continuous sentiment score in the dataset's ``TaskSpec.sentiment_range``.
        sentiment_class: Discrete sentiment (e.g. MELD's negative/neutral/positive).
        per_modality: Emotion labels given per modality (``{"audio": "happy", "text": "neutral"}``),
            as EmotionTalk and CH-SIMS annotate them.
        extra: Any other dataset-specific annotation, kept verbatim.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    emotion: str | None = None
    sentiment: float | None = None
    sentiment_class: str | None = None
    per_modality: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, str | float | int | None] = Field(default_factory=dict)


class DialogueContext(BaseModel):
    """Transcripts of the turns around an utterance, for text encoders that read context.

    Filled by :func:`with_dialogue_context`, never by dataset recipes. Speakers are not part of
    it: context-aware models in emofuse need no speaker identity.

    Attributes:
        past: Transcripts of the preceding turns, oldest first.
        future: Transcripts of the following turns, nearest first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    past: tuple[str, ...] = ()
    future: tuple[str, ...] = ()


class Utterance(BaseModel):
    """One unit of analysis: a clip, a turn of a dialogue, an image, or a sentence.

    Attributes:
        id: Unique within its dataset; safe to use as a file-name stem.
        dataset: Name of the recipe that produced it (``"meld"``, ``"folder"``, …).
        split: ``"train"``, ``"val"`` or ``"test"``, or ``None`` for unlabelled inputs.
        dialogue_id: The conversation it belongs to, if any.
        turn: Its 0-based position in the dialogue.
        speaker: Speaker tag, if known. Models never need it.
        start: Start time in seconds within ``media`` (``None`` = from the beginning).
        end: End time in seconds within ``media`` (``None`` = to the end).
        media: Paths of the media carrying it, by kind (``{"audio": ..., "video": ...}``).
        text: Transcript or sentence.
        language: BCP-47 language of ``text`` (``"en"``, ``"zh"``).
        labels: Ground truth, if annotated.
        context: Neighbouring turns' transcripts (see :func:`with_dialogue_context`); ``None``
            unless a context-aware text encoder asked for them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    dataset: str
    split: str | None = None
    dialogue_id: str | None = None
    turn: int | None = None
    speaker: str | None = None
    start: float | None = None
    end: float | None = None
    media: dict[Literal["audio", "video", "image"], str] = Field(default_factory=dict)
    text: str | None = None
    language: str | None = None
    labels: Labels = Field(default_factory=Labels)
    context: DialogueContext | None = None

    @field_validator("id")
    @classmethod
    def _id_is_usable(cls, v: str) -> str:
        if not v or v != v.strip() or any(c in v for c in "\n\r\t/\\"):
            raise ValueError("id must be non-empty, without slashes, tabs or newlines")
        return v

    @model_validator(mode="after")
    def _times_are_ordered(self) -> Utterance:
        if self.start is not None and self.start < 0:
            raise ValueError("start must be >= 0")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    def with_text(self, text: str | None, language: str | None = None) -> Utterance:
        """A copy with a new transcript (e.g. from ASR)."""
        return self.model_copy(update={"text": text, "language": language or self.language})

    def with_media(self, **paths: str) -> Utterance:
        """A copy with media paths added or replaced."""
        return self.model_copy(update={"media": {**self.media, **paths}})

    def modalities(self) -> set[str]:
        """The input kinds this utterance carries."""
        kinds = set(self.media)
        if self.text is not None and self.text.strip():
            kinds.add("text")
        return kinds


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """Read a JSONL manifest; errors name the file and the line."""
    return list(iter_manifest(path))


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[Utterance]:
    """Lazily read a JSONL manifest, one :class:`Utterance` per non-empty line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "manifest does not exist")
    with p.open(encoding="utf-8") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield Utterance.model_validate_json(line)
                except ValidationError as err:
                    raise InputError(p, format_validation_error(err, f"line {lineno}")) from None
        except UnicodeDecodeError as err:
            raise InputError(
                p, f"manifest is not UTF-8 ({err.reason} at byte {err.start})"
            ) from None


def write_manifest(path: str | os.PathLike[str], utterances: Iterable[Utterance]) -> Path:
    """Write utterances as JSONL, atomically (a temp file renamed into place). Ids must be unique."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for utt in utterances:
                if utt.id in seen:
                    raise InputError(p, f"duplicate utterance id {utt.id!r}")
                seen.add(utt.id)
                fh.write(utt.model_dump_json(exclude_defaults=True) + "\n")
        ordinary_mode(tmp)  # mkstemp made it 0600
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def group_dialogues(utterances: Iterable[Utterance]) -> dict[str, list[Utterance]]:
    """Group utterances by ``dialogue_id`` (ordered by ``turn``); stand-alone ones form singletons."""
    groups: dict[str, list[Utterance]] = {}
    for utt in utterances:
        groups.setdefault(utt.dialogue_id or utt.id, []).append(utt)
    for turns in groups.values():
        turns.sort(key=lambda u: (u.turn is None, u.turn or 0))
    return groups


def with_dialogue_context(
    utterances: Iterable[Utterance], past: int, future: int
) -> list[Utterance]:
    """Copies of ``utterances`` carrying the transcripts of their neighbouring turns.

    Turns are ordered by ``turn`` within each ``dialogue_id`` (:func:`group_dialogues`); only
    turns present in ``utterances`` and with a non-empty transcript count, so give a whole split
    at once. An utterance outside any dialogue gets an empty context.

    Args:
        utterances: The utterances, in any order; the result keeps that order.
        past: Preceding turns to attach (0 for none).
        future: Following turns to attach (0 for none).

    Returns:
        New records whose ``context`` is set (the input records are not changed).

    Raises:
        ValueError: ``past`` or ``future`` is negative.
    """
    if past < 0 or future < 0:
        raise ValueError(f"context sizes must be >= 0, got past={past}, future={future}")
    utts = list(utterances)
    found: dict[str, DialogueContext] = {}
    for turns in group_dialogues(utts).values():
        texts = [(u.text or "").strip() for u in turns]
        spoken = [i for i, t in enumerate(texts) if t]
        for i, u in enumerate(turns):
            if u.dialogue_id is None:
                found[u.id] = DialogueContext()
                continue
            before = [texts[j] for j in spoken if j < i]
            after = [texts[j] for j in spoken if j > i]
            found[u.id] = DialogueContext(
                past=tuple(before[len(before) - past :] if past else ()),
                future=tuple(after[:future]),
            )
    return [u.model_copy(update={"context": found[u.id]}) for u in utts]


# -- the one rule for text that has no words ---------------------------------------------
CONTROL_TOKENS = re.compile(
    r"\[(?:CLS|SEP|PAD|MASK|UNK)\]"  # BERT / MiniLM
    r"|</?s>|<(?:pad|unk|mask)>"  # XLM-R / E5
    r"|<\|[^<>|\s]{1,40}\|>"  # chat and document tokens: <|im_start|>, <|im_end|>, <|endoftext|>
    r"|<(?:repo_name|reponame|file_sep|filename|gh_stars|issue_start|issue_comment"
    r"|issue_closed|jupyter_start|jupyter_text|jupyter_code|jupyter_output|jupyter_script"
    r"|empty_output)>"  # SmolLM2's other special tokens
)
"""Tokenizer control tokens written out as text (the special tokens of the tokenizers emofuse
uses). In a user's text they are never parsed as control tokens (every tokenizer call on user
text splits them into ordinary pieces), and a text made only of them has no words."""

EMPTY_TEXT = "empty text"
NOT_UTF8 = "text holds bytes that are not UTF-8"


def text_problem(text: str) -> str | None:
    """Why ``text`` has no words to read, or ``None`` when it has some.

    The one rule for every front end (``model.predict``, ``emofuse predict``, transcripts of
    ``emofuse analyze``, the service) and every text extractor: a text is left out when it is
    empty or only whitespace and invisible characters, when it holds undecodable bytes, or when
    it is made only of tokenizer control tokens such as ``[CLS]`` or ``<|im_end|>``
    (:data:`CONTROL_TOKENS`). A text that has words besides such tokens is read, the tokens as
    the ordinary characters they are.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (surrogateescape)
        return NOT_UTF8
    if not _visible(text):
        return EMPTY_TEXT
    found = CONTROL_TOKENS.findall(text)
    if found and not _visible(CONTROL_TOKENS.sub(" ", text)):
        shown = ", ".join(repr(t) for t in dict.fromkeys(found))
        return f"no words, only tokenizer control tokens ({_cut(shown, 80)})"
    return None


def _visible(text: str) -> bool:
    """Whether ``text`` has a character other than whitespace, controls and format marks."""
    return any(not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf") for c in text)


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_writable(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """Fail before any work if a file (with ``folder``, a folder) cannot be made at ``path``.

    That is when ``path`` is a folder (a file), or one of its parents is a file.

    Raises:
        InputError: naming the path and the problem.
    """
    p = Path(path).expanduser()
    if folder and p.is_file():
        raise InputError(p, "is a file; give a folder to write into")
    if not folder and p.is_dir():
        raise InputError(p, "is a folder; give a file name to write to")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(p, f"cannot be created: {parent} is a file")
            break
    return p


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create a folder to write into (and its parents), failing in one line that names it.

    Raises:
        InputError: a file has that name, a parent is a file, or it cannot be created there.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(p, "is a file; give a folder to write into") from None
    except OSError as err:
        raise InputError(p, f"cannot create this folder ({err.strerror or err})") from None
    return p


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic, but brief)
    os.umask(mask)
    return mask


def ordinary_mode(*paths: str | os.PathLike[str]) -> None:
    """Give files the mode ``open()`` would have given them: ``0666`` (folders ``0777``) less the umask.

    For what is written through a private temporary file and renamed into place, or by another
    library: ``tempfile.mkstemp`` makes files ``0600`` and ``mkdtemp`` folders ``0700``, and
    ``safetensors`` (so also ``transformers`` and ``peft`` saves) writes weight files ``0600``,
    while a user's saved model, manifest or feature cache should be as readable as the other
    files beside it. A folder is given its mode with everything inside; links are left alone.
    """
    mask = current_umask()
    for path in paths:
        p = Path(path)
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
            for root, dirs, files in os.walk(p):
                for name in dirs:
                    if not os.path.islink(os.path.join(root, name)):
                        os.chmod(os.path.join(root, name), 0o777 & ~mask)
                for name in files:
                    if not os.path.islink(os.path.join(root, name)):
                        os.chmod(os.path.join(root, name), 0o666 & ~mask)
        elif p.is_file():
            os.chmod(p, 0o666 & ~mask)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text under a temporary name, then rename it into place (never half-written).

    Text holding undecodable file names (Python's ``surrogateescape``) is written back as the
    original bytes. A symbolic link is written through to its target (the link stays); a path
    that is not a regular file (``/dev/stdout``, a FIFO, a device) is written to directly, never
    replaced.

    Raises:
        InputError: the file cannot be written there (a folder of that name, a parent that is a
            file, no permission, a full disk); no temporary file is left behind.
    """
    p = Path(path)
    target = p.resolve() if p.is_symlink() else p
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        if target.is_dir():
            raise InputError(p, "is a folder; give a file name to write to")
        if target.exists() and not target.is_file():  # a device, a FIFO: write, never replace
            with open(target, "w", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write(text)
            return p
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InputError(p, f"cannot write here ({err.strerror or err})") from None
    return p


def read_json(
    path: str | os.PathLike[str], *, missing_ok: bool = False, expect: type | None = None
) -> Any:
    """A JSON file emofuse or its user wrote, failing in one line that names it.

    Args:
        path: The file.
        missing_ok: Return ``None`` for a file that does not exist.
        expect: The top-level type it must have (e.g. ``dict``).

    Raises:
        InputError: missing (unless ``missing_ok``), not UTF-8, not JSON, or of another type.
    """
    p = Path(path)
    if not p.is_file():
        if missing_ok:
            return None
        raise InputError(p, "does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise InputError(p, f"not valid JSON ({err})") from None
    if expect is not None and not isinstance(data, expect):
        raise InputError(p, f"expected a JSON {expect.__name__}, found {type(data).__name__}")
    return data


def dump_json(path: str | os.PathLike[str], data: object) -> Path:
    """Write JSON atomically; NaN and infinities become ``null`` (JSON has no such numbers)."""
    text = json.dumps(_finite(data), indent=2, sort_keys=True, default=str, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def _finite(data: object) -> object:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal counts as alive)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

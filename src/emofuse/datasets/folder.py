"""Bring your own data: a folder of media files and/or a CSV manifest.

Dataset card
============

**What it is.** Your own recordings, face images or sentences, turned into emofuse
:class:`~emofuse.records.Utterance` records so every later stage (features, models,
evaluation) can run on them.

**Licence.** Whatever licence your data carries; emofuse copies nothing.

**Two ways in.**

1. *A CSV manifest* (``csv=`` option, or ``root=`` pointing at the ``.csv`` file itself). UTF-8,
   one row per utterance, a header with these columns (only ``path`` is required):

   ========== ==========================================================================
   column     meaning
   ========== ==========================================================================
   path       media file, relative to the CSV's folder or absolute; may be empty in a
              row that has ``text`` (text-only utterance)
   id         utterance id (default: the path without its suffix, ``/`` → ``__``)
   text       transcript or sentence
   label      emotion name (checked against the ``labels`` option when given)
   sentiment  continuous sentiment score (a number)
   split      ``train`` / ``val`` / ``test`` (``dev``, ``valid``, ``validation`` → ``val``)
   dialogue   conversation id; rows of one dialogue form an ordered context
   turn       integer position in the dialogue (default: order of the rows)
   speaker    speaker tag (models never need it)
   start/end  segment bounds in seconds within the media file
   language   BCP-47 language of ``text`` (default: the ``language`` option)
   ========== ==========================================================================

   Any other column is an error (``extra_columns="keep"`` stores them in ``labels.extra``).
2. *A plain folder* (no CSV). Every media file under ``root`` becomes one utterance; files
   sharing a path stem (``clip.wav`` + ``clip.mp4``) become one utterance with both media, and a
   sidecar ``clip.txt`` gives its transcript. ``label_from_parent=True`` reads the emotion from
   the parent folder name (``<root>/happy/clip.wav``).

Media kinds by suffix — audio: wav, flac, mp3, m4a, ogg; video: mp4, mkv, mov, avi, webm;
image: jpg, jpeg, png, bmp. Files are not decoded here (feature extractors do that and report
unreadable files).

**Expected tree** (either form)::

    my_data/                          my_data/
      labels.csv   (path,text,label)    happy/a.wav  happy/a.txt
      clips/a.wav  clips/b.mp4          sad/b.wav    sad/b.mp4

**Splits.** From the ``split`` column, else every utterance is in the ``split`` option
(default ``test``: bring-your-own data is usually for evaluation or inference).

**Label map.** The ``labels`` option (ordered), else the sorted set of labels seen. Continuous
sentiment uses the ``sentiment_range`` option, else ``(-1, 1)`` when every score lies in it and
``(-3, 3)`` otherwise. A folder with no labels at all gets a placeholder task (sentiment in
``(-1, 1)``, no metrics); models bring their own task for inference.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from emofuse.config import format_validation_error
from emofuse.datasets.base import DATASETS, BadValue, DatasetRecipe, RecipeConfig, number, span
from emofuse.errors import ConfigError, InputError
from emofuse.records import EMPTY_TEXT, Labels, Utterance, text_problem
from emofuse.spec import TaskSpec

DEFAULT_CSV = "labels.csv"
"""The manifest a folder is read from when no ``csv`` is given and the folder holds one."""

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".wma"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".3gp"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Known suffixes (a fast path); files with other suffixes are probed by content."""

CSV_COLUMNS = (
    "id", "path", "text", "label", "sentiment", "split",
    "dialogue", "turn", "speaker", "start", "end", "language",
)  # fmt: skip
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "dev": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
_UNSAFE = re.compile(r"[/\\\t\r\n]+")
_MAX_LISTED = 5


def media_kind(path: str | os.PathLike[str]) -> Literal["audio", "video", "image"] | None:
    """The media kind of a file from its suffix (case-insensitive), or ``None``."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


_NOT_MEDIA = frozenset({".txt", ".csv", ".json", ".jsonl", ".md", ".yaml", ".yml", ".srt", ".vtt"})
"""Files a media folder holds beside its media (transcripts, manifests): never probed."""


def probe_kind(path: str | os.PathLike[str]) -> Literal["audio", "video", "image"] | None:
    """The media kind of a file from its content, for suffixes :func:`media_kind` does not know.

    Opens the file with PyAV (FFmpeg): a video stream of one frame in an image format is an
    image, other video streams are video, audio streams alone are audio. ``None`` when FFmpeg
    cannot read it.
    """
    try:
        import av
    except ImportError:  # pragma: no cover - av is a core dependency
        return None
    try:
        with av.open(os.fspath(path), metadata_errors="ignore") as c:
            if c.streams.video:
                stream = c.streams.video[0]
                still = c.format.name.endswith("_pipe") or c.format.name == "image2"
                return "image" if still or (stream.frames or 0) == 1 else "video"
            if c.streams.audio:
                return "audio"
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def safe_id(relative: str | os.PathLike[str]) -> str:
    """An utterance id from a relative path: suffix dropped, separators → ``__``.

    Example:
        >>> safe_id("spk1/take 2.wav")
        'spk1__take 2'
    """
    p = Path(relative)
    stem = p.with_suffix("").as_posix() if p.suffix else p.as_posix()
    return _UNSAFE.sub("__", stem).strip().strip("_") or "utt"


def read_csv_rows(
    path: str | os.PathLike[str], lines: list[int] | None = None
) -> tuple[list[str], list[dict[str, str]]]:
    """Read a UTF-8 CSV (a BOM is accepted) into its header and rows of stripped strings.

    Args:
        path: The CSV.
        lines: When given, the line number of each row is appended (blank lines are skipped
            by the reader, so a row's number is not its position + 1).

    Raises:
        InputError: naming the file when it is missing, not UTF-8, empty or malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "CSV file does not exist")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            p,
            f"CSV is not UTF-8 (invalid byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "re-save it as UTF-8",
        ) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise InputError(p, "CSV is empty (no header row)")
        reader.fieldnames = header
        rows = []
        for row in reader:
            if None in row:
                raise InputError(p, f"line {reader.line_num}: more fields than header columns")
            rows.append({k: (v or "").strip() for k, v in row.items()})
            if lines is not None:
                lines.append(reader.line_num)
    except csv.Error as err:
        raise InputError(p, f"malformed CSV (line {reader.line_num}: {err})") from None
    return header, rows


class FolderConfig(RecipeConfig):
    """Options of the ``folder`` recipe."""

    csv: Path | None = Field(
        None,
        description="CSV manifest (relative to root or absolute). None: root itself when it is a "
        ".csv file, else <root>/labels.csv when it exists, else scan the folder for media.",
    )
    labels: list[str] | None = Field(
        None, description="Ordered emotion label set. None: the sorted labels seen in the data."
    )
    split: str = Field("test", description="Split of utterances whose CSV row has no split.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Your CSV's column names for ours, e.g. {path: wav_file, label: emotion}; "
        f"ours are {', '.join(CSV_COLUMNS)}.",
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Your label codes to label names, e.g. EmoDB's {W: anger, L: boredom, "
        "E: disgust, A: fear, F: happiness, T: sadness, N: neutral}; codes not listed are "
        "kept as they are.",
    )
    val_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="When the data has a train split but no val split, move about this fraction "
        "of train to val, whole groups at a time (dialogue, else speaker, else utterance), so "
        "no dialogue or speaker sits in both; the draw is a function of split_seed.",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the val_fraction draw.")
    language: str | None = Field(None, description="BCP-47 language of the transcripts, e.g. 'en'.")
    sentiment_range: tuple[float, float] | None = Field(
        None,
        description="(low, high) of the sentiment column. "
        "None: (-1, 1) if every score fits, else (-3, 3).",
    )
    label_from_parent: bool = Field(
        False,
        description="Without a CSV: take each file's emotion label from its parent folder name.",
    )
    extra_columns: Literal["error", "keep"] = Field(
        "error", description="Unknown CSV columns: 'error', or 'keep' them in labels.extra."
    )
    recursive: bool = Field(True, description="Without a CSV: also scan subfolders.")


@DATASETS.register("folder")
class FolderRecipe(DatasetRecipe):
    """Your own media folder or CSV manifest (see the module docstring for the dataset card)."""

    folder = None
    Config = FolderConfig
    config: FolderConfig

    def __init__(self, config: FolderConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self._loaded: list[Utterance] | None = None
        if self.config.split not in ("train", "val", "test"):
            raise ConfigError(
                f"dataset {self.name!r}: split {self.config.split!r} is not one of train, val, test"
            )

    # -- locating the inputs -------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The data folder (the CSV's folder when ``root`` names a CSV file)."""
        given = self.config.root
        if given is not None and Path(given).expanduser().is_file():
            return Path(given).expanduser().absolute().parent
        return super().root

    def csv_path(self) -> Path | None:
        """The CSV manifest in use, or ``None`` for a plain media folder."""
        given = self.config.root
        if self.config.csv is not None:
            p = Path(self.config.csv).expanduser()
            return p if p.is_absolute() else self.root / p
        if given is not None and Path(given).expanduser().is_file():
            return Path(given).expanduser().absolute()
        default = self.root / DEFAULT_CSV
        return default if default.is_file() else None

    def source_files(self) -> list[Path]:
        """The CSV manifest; without one, the transcripts and other text files of the folder.

        The media files themselves enter :meth:`fingerprint` by their listing (names, sizes,
        modification times), not their content.
        """
        csv_file = self.csv_path()
        if csv_file is not None:
            return [csv_file]
        files = self.root.rglob("*") if self.config.recursive else self.root.glob("*")
        return sorted(f for f in files if f.is_file() and f.suffix.lower() in _NOT_MEDIA)

    def fingerprint(self) -> str:
        """As every recipe's, plus (without a CSV) the listing of the media files."""
        from emofuse.config import fingerprint

        listing = []
        if self.csv_path() is None:
            files = self.root.rglob("*") if self.config.recursive else self.root.glob("*")
            for f in sorted(files):
                if f.is_file():
                    st = f.stat()
                    listing.append(
                        (f.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns)
                    )
        return fingerprint(super().fingerprint(), listing)

    def check(self) -> None:
        """Check that the root exists and that the CSV (if any) does."""
        root = self.root
        csv_file = self.csv_path()
        if csv_file is not None and not csv_file.is_file():
            raise InputError(csv_file, f"CSV manifest not found (root {root})")

    # -- the task ------------------------------------------------------------------------
    def spec(self) -> TaskSpec:
        """Labels seen (or configured) and the sentiment range of the data."""
        utts = self._utterances()
        seen = sorted({u.labels.emotion for u in utts if u.labels.emotion})
        labels = self.config.labels or seen or None
        scores = [u.labels.sentiment for u in utts if u.labels.sentiment is not None]
        rng = self.config.sentiment_range
        if rng is None and scores:
            rng = (-1.0, 1.0) if all(-1.0 <= s <= 1.0 for s in scores) else (-3.0, 3.0)
        metrics: list[str] = []
        if labels:
            metrics += ["weighted_f1", "wa", "ua"]
        if rng is not None:
            metrics += ["mae", "corr"]
        if not labels and rng is None:
            rng = (-1.0, 1.0)  # unlabelled: placeholder task, models bring their own
        return TaskSpec(
            name=self.name,
            emotion_labels=labels,
            sentiment_range=rng,
            conversational=any(u.dialogue_id for u in utts),
            language=self.config.language or next((u.language for u in utts if u.language), "en"),
            metrics=metrics,
        )

    def load(self) -> list[Utterance]:
        """Read the CSV manifest, or scan the folder for media."""
        self._loaded = None
        return list(self._utterances())

    def _utterances(self) -> list[Utterance]:
        if self._loaded is None:
            csv_file = self.csv_path()
            utts = (
                self._from_csv(csv_file) if csv_file is not None else self._from_folder(self.root)
            )
            self._check_labels(utts, csv_file or self.root)
            self._loaded = carve_val(utts, self.config.val_fraction, self.config.split_seed)
        return self._loaded

    # -- CSV -------------------------------------------------------------------------------
    def _from_csv(self, csv_file: Path) -> list[Utterance]:
        lines: list[int] = []
        header, rows = read_csv_rows(csv_file, lines)
        if self.config.columns:
            header, rows = _rename_columns(csv_file, header, rows, self.config.columns)
        lowered = [h.lower() for h in header]
        if len(set(lowered)) != len(lowered):
            raise InputError(csv_file, f"duplicate column names in header {header}")
        if "path" not in lowered:
            raise InputError(
                csv_file,
                f"CSV needs a 'path' column; header is {header}. Columns: {', '.join(CSV_COLUMNS)}",
            )
        unknown = [h for h in header if h.lower() not in CSV_COLUMNS]
        if unknown and self.config.extra_columns == "error":
            raise InputError(
                csv_file,
                f"unknown column(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(CSV_COLUMNS)} "
                "(or set extra_columns='keep' to store them in labels.extra)",
            )
        base = csv_file.parent
        problems: list[str] = []
        out: list[Utterance] = []
        turns: dict[str, int] = {}
        ids: dict[str, int] = {}
        for n, raw in enumerate(rows, 1):
            row = {k.lower(): v for k, v in raw.items()}
            where = f"row {n} (line {lines[n - 1]})"
            try:
                utt = self._row_to_utterance(n, row, raw, base, unknown, turns)
            except BadValue as err:
                problems.append(f"{where}: {err}")
                continue
            if utt.id in ids:
                fix = "make the 'id' column unique" if row.get("id") else "add an 'id' column"
                problems.append(
                    f"{where}: duplicate id {utt.id!r} (first in row {ids[utt.id]}); {fix}"
                )
                continue
            ids[utt.id] = n
            out.append(utt)
        if problems and not out:
            more = (
                f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
            )
            raise InputError(csv_file, "no usable row: " + "; ".join(problems[:_MAX_LISTED]) + more)
        if not out:
            raise InputError(csv_file, "CSV has a header but no rows")
        for problem in problems:  # bad rows are reported and left out; the rest is kept
            where, _, why = problem.partition(": ")
            self.skipped[f"{csv_file.name} {where}"] = why
        return out

    def _row_to_utterance(
        self,
        n: int,
        row: dict[str, str],
        raw: dict[str, str],
        base: Path,
        unknown: list[str],
        turns: dict[str, int],
    ) -> Utterance:
        media: dict[str, str] = {}
        text = row.get("text") or None
        rel = row.get("path", "")
        if rel:
            p = Path(rel).expanduser()
            full = p if p.is_absolute() else base / p
            if not full.is_file():
                raise _RowError(f"file not found: {full}")
            kind = media_kind(full) or probe_kind(full)
            if kind is None:
                raise _RowError(
                    f"{rel!r} is not audio, video or an image (it could not be decoded)"
                )
            media[kind] = str(full)
        elif text is None:
            raise _RowError("needs a path or a text")
        uid = row.get("id") or (safe_id(rel) if rel else f"row{n}")
        label = row.get("label") or None
        if label is not None:
            label = self.config.label_map.get(label, label)
        sentiment = number(row.get("sentiment"), "sentiment", required=False)
        rng = self.config.sentiment_range
        if sentiment is not None and rng is not None and not rng[0] <= sentiment <= rng[1]:
            raise _RowError(f"sentiment {sentiment:g} lies outside sentiment_range {tuple(rng)}")
        start = number(row.get("start"), "start", low=0, required=False)
        end = number(row.get("end"), "end", low=0, required=False)
        span(start, end)
        split = self.config.split
        if row.get("split"):
            split = SPLIT_ALIASES.get(row["split"].lower())
            if split is None:
                raise _RowError(f"split {row['split']!r} is not one of train, val, test")
        dialogue = row.get("dialogue") or None
        turn: int | None = None
        if row.get("turn"):
            turn = number(row["turn"], "turn", low=0, integer=True)
        elif dialogue is not None:
            turn = turns.get(dialogue, 0)
        if dialogue is not None:
            turns[dialogue] = max(turns.get(dialogue, 0), (turn or 0) + 1)
        extra = {k: raw[k] or None for k in unknown}
        try:
            return Utterance(
                id=uid,
                dataset=self.name,
                split=split,
                dialogue_id=dialogue,
                turn=turn,
                speaker=row.get("speaker") or None,
                start=start,
                end=end,
                media=media,
                text=text,
                language=row.get("language") or self.config.language,
                labels=Labels(emotion=label, sentiment=sentiment, extra=extra),
            )
        except ValidationError as err:
            raise _RowError(format_validation_error(err, "invalid record")) from None

    # -- plain folder ------------------------------------------------------------------------
    def _from_folder(self, root: Path) -> list[Utterance]:
        files = root.rglob("*") if self.config.recursive else root.glob("*")
        groups: dict[str, dict[str, Path]] = {}
        for f in sorted(files):
            if f.name.startswith(".") or not f.is_file():
                continue
            kind = media_kind(f)
            if kind is None and f.suffix.lower() not in _NOT_MEDIA:
                kind = probe_kind(f)
                if kind is None:
                    self.skipped[str(f.relative_to(root))] = "not audio, video or an image"
            if kind is None:
                continue
            rel = f.relative_to(root)
            key = rel.with_suffix("").as_posix()
            kinds = groups.setdefault(key, {})
            if kind in kinds:
                raise InputError(
                    f,
                    f"two {kind} files share the stem {key!r} "
                    f"({kinds[kind].name}, {f.name}); rename one",
                )
            kinds[kind] = f
        if not groups:
            raise InputError(
                root,
                "no media files found (audio: "
                + ", ".join(sorted(AUDIO_SUFFIXES | VIDEO_SUFFIXES | IMAGE_SUFFIXES))
                + "); pass csv=… for a manifest",
            )
        out = []
        seen: set[str] = set()
        for key, kinds in groups.items():
            first = next(iter(kinds.values()))
            sidecar = first.with_suffix(".txt")
            text = None
            if sidecar.is_file():
                try:
                    text = sidecar.read_text(encoding="utf-8-sig").strip() or None
                except UnicodeDecodeError:
                    raise InputError(
                        sidecar, "transcript is not UTF-8; re-save it as UTF-8"
                    ) from None
            label = (
                first.parent.name
                if self.config.label_from_parent and first.parent != root
                else None
            )
            uid = safe_id(key)
            if uid in seen:
                raise InputError(
                    first, f"utterance id {uid!r} is not unique after making it file-name safe"
                )
            seen.add(uid)
            out.append(
                Utterance(
                    id=uid,
                    dataset=self.name,
                    split=self.config.split,
                    media={k: str(p) for k, p in kinds.items()},
                    text=text,
                    language=self.config.language,
                    labels=Labels(emotion=label),
                )
            )
        return out

    def _check_labels(self, utts: Iterable[Utterance], source: Path) -> None:
        allowed = self.config.labels
        if not allowed:
            return
        bad = sorted(
            {u.labels.emotion for u in utts if u.labels.emotion and u.labels.emotion not in allowed}
        )
        if bad:
            raise InputError(
                source, f"label(s) {', '.join(map(repr, bad))} not in the labels option {allowed}"
            )


def _rename_columns(
    csv_file: Path, header: list[str], rows: list[dict[str, str]], columns: dict[str, str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Rows with the CSV's own column names replaced by ours (``columns``: ours → theirs)."""
    unknown = [ours for ours in columns if ours not in CSV_COLUMNS]
    if unknown:
        raise InputError(
            csv_file, f"columns: {', '.join(unknown)} not ours; ours are {', '.join(CSV_COLUMNS)}"
        )
    missing = [theirs for theirs in columns.values() if theirs not in header]
    if missing:
        raise InputError(
            csv_file, f"columns: no column {', '.join(map(repr, missing))}; header is {header}"
        )
    rename = {theirs: ours for ours, theirs in columns.items()}
    header = [rename.get(h, h) for h in header]
    rows = [{rename.get(k, k): v for k, v in row.items()} for row in rows]
    return header, rows


def carve_val(utts: list[Utterance], fraction: float, seed: int = 0) -> list[Utterance]:
    """Move about ``fraction`` of the train split to a new val split, whole groups at a time.

    Groups are dialogues (``dialogue_id``), else speakers, else single utterances, so that no
    conversation or voice is in both splits (speaker-independent selection). Nothing changes
    when ``fraction`` is 0, there is no train split, or a val split already exists.
    """
    import numpy as np

    if fraction <= 0 or any(u.split == "val" for u in utts):
        return utts
    train = [u for u in utts if u.split == "train"]
    if not train:
        return utts

    def group(u: Utterance) -> str:
        return u.dialogue_id or (f"speaker:{u.speaker}" if u.speaker else f"utt:{u.id}")

    sizes: dict[str, int] = {}
    for u in train:
        sizes[group(u)] = sizes.get(group(u), 0) + 1
    if len(sizes) < 2:
        raise InputError(
            None, "val_fraction: the train split is one dialogue or speaker; it cannot be split"
        )
    names = sorted(sizes)
    order = np.random.default_rng(seed).permutation(len(names))
    chosen: set[str] = set()
    taken = 0
    for i in order:
        if taken >= fraction * len(train) or len(chosen) == len(names) - 1:
            break
        chosen.add(names[i])
        taken += sizes[names[i]]
    return [
        u.model_copy(update={"split": "val"}) if u.split == "train" and group(u) in chosen else u
        for u in utts
    ]


class _RowError(BadValue):
    """A problem with one CSV row (collected, then reported and the row left out)."""


def as_utterances(
    inputs: Iterable[str | os.PathLike[str] | Utterance], dataset: str = "input"
) -> tuple[list[Utterance], dict[str, str]]:
    """Records for ad-hoc inputs: sentences, media files or ready records.

    * ``str`` — always a sentence: an utterance with that ``text`` (id ``text-<i>``), even when
      it looks like the name of a file (``"clip.wav"``, ``"/etc/passwd"``): a plain string is
      never opened, so a front end may pass raw user text safely;
    * ``os.PathLike`` (e.g. ``pathlib.Path``) — the only way to name a file: a media file, its
      kind by suffix (audio, video or image); a ``.txt`` file beside it with the same stem is
      read as its transcript; the id is the file's stem (``-<i>`` added when two inputs share
      one). Convert file names you trust to ``Path`` (the CLI does so with its arguments);
    * :class:`~emofuse.records.Utterance` — kept as it is.

    A bad item is reported and left out, the others are kept.

    Returns:
        The records, and ``item → problem`` for every input left out (or read without its
        transcript).

    Raises:
        InputError: ``inputs`` is a single string or path, or empty, or an item is of another
            type, or two records share an id.
    """
    if isinstance(inputs, str | bytes | os.PathLike):
        raise InputError(None, "expected a list of inputs, got a single one (wrap it in a list)")
    out: list[Utterance] = []
    problems: dict[str, str] = {}
    seen: set[str] = set()
    items = list(inputs)
    if not items:
        raise InputError(None, "no inputs given")
    for i, item in enumerate(items):
        if isinstance(item, Utterance):
            utt = item
        elif isinstance(item, str):
            uid = f"text-{i}"
            if media_kind(item) and not any(c.isspace() for c in item.strip()):
                import warnings

                from emofuse.errors import EmofuseWarning

                warnings.warn(  # a string is never opened: say so to whoever meant a file
                    f"input {i} ({item[:60]!r}) is read as a sentence, not as a file; pass "
                    "pathlib.Path(...) to read a file",
                    EmofuseWarning,
                    stacklevel=3,
                )
            problem = text_problem(item)  # the rule of every text extractor, said first
            if problem is not None:
                problems[uid] = problem
                continue
            utt = Utterance(id=uid, dataset=dataset, text=item)
        elif isinstance(item, os.PathLike):
            path = Path(item).expanduser().absolute()
            if path.is_dir():
                problems[str(path)] = (
                    "is a folder; give media files (a prepared dataset: --prepared DIR)"
                )
                continue
            if not path.is_file():
                problems[str(path)] = "file does not exist"
                continue
            kind = media_kind(path) or probe_kind(path)
            if kind is None:
                problems[str(path)] = "not audio, video or an image (it could not be decoded)"
                continue
            uid = safe_id(path.name)
            uid = uid if uid not in seen else f"{uid}-{i}"
            text = None
            sidecar = path.with_suffix(".txt")
            if sidecar.is_file():
                try:
                    text = sidecar.read_text(encoding="utf-8-sig").strip() or None
                except UnicodeDecodeError:
                    problems[str(sidecar)] = "transcript is not UTF-8; the clip is read without it"
                else:
                    problem = EMPTY_TEXT if text is None else text_problem(text)
                    if problem is not None:
                        text = None
                        problems[str(sidecar)] = (
                            f"transcript: {problem}; the clip is read without it"
                        )
            utt = Utterance(id=uid, dataset=dataset, media={kind: str(path)}, text=text)
        else:
            raise InputError(
                None,
                f"input {i} is a {type(item).__name__}; give sentences (str), media files "
                "(pathlib.Path) or Utterance records",
            )
        if utt.id in seen:
            raise InputError(None, f"two inputs have the id {utt.id!r}")
        seen.add(utt.id)
        out.append(utt)
    return out, problems

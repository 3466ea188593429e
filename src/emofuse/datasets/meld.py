r"""MELD — Multimodal EmotionLines Dataset (multi-party conversations from *Friends*).

Dataset card
============

What it is
    13,708 utterances in 1,432 multi-party dialogues from the TV series *Friends*, each labelled
    with one of seven emotions and a three-way sentiment (Poria et al., ACL 2019). Text, audio
    and video per utterance; the standard benchmark for emotion recognition in conversation
    (ERC), reported with weighted F1 because the classes are very imbalanced.

Licence
    The annotation CSVs come from ``declare-lab/MELD`` (repository licence GPL-3.0). The video
    clips are excerpts of *Friends*; MELD asks users to cite the paper. Research use.

How to get it
    CSVs: ``data/MELD/{train,dev,test}_sent_emo.csv`` and
    ``data/MELD_Dyadic/{train,dev,test}_sent_emo_dya.csv`` of https://github.com/declare-lab/MELD.
    Clips: ``MELD.Raw.tar.gz`` from https://affective-meld.github.io/ (about 10 GB). It unpacks to
    ``train.tar.gz``, ``dev.tar.gz``, ``test.tar.gz``, which unpack to the folders
    ``train_splits/``, ``dev_splits_complete/`` and ``output_repeated_splits_test/``.

Expected folder tree (``root``)::

    meld/
      train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv
      dyadic/                                 # only for dyadic=True
        train_sent_emo_dya.csv  dev_sent_emo_dya.csv  test_sent_emo_dya.csv

    MELD.Raw/                                 # optional, option raw_root
      train_splits/dia0_utt0.mp4 …
      dev_splits_complete/dia0_utt0.mp4 …
      output_repeated_splits_test/dia0_utt0.mp4 …

Splits (official; ``dev`` is called ``val`` here)

    ======  =======  =========  ===========================================
    split   utts     dialogues  dyadic variant (utts / dialogues)
    ======  =======  =========  ===========================================
    train   9,989    1,038      12,840 / 2,160
    val     1,109    114        1,462 / 270
    test    2,610    280        3,400 / 577
    ======  =======  =========  ===========================================

    Many ERC code bases train on train+val (11,098 utterances); this recipe keeps them apart.

Label maps
    Emotion, in the official MELD index order: neutral 0, surprise 1, fear 2, sadness 3, joy 4,
    disgust 5, anger 6. Sentiment (``labels.sentiment_class``), official order: neutral 0,
    positive 1, negative 2.

Records
    * ``id`` = ``{split}_dia{D}_utt{U}`` and ``dialogue_id`` = ``{split}_dia{D}``: MELD restarts
      dialogue numbering in every split, so ``dia0_utt0`` exists three times. ``turn`` = ``U``.
    * ``speaker`` = the character name (models never need it).
    * ``labels.extra``: ``season``, ``episode``, ``sr_no`` (official row number, not in the dyadic
      files), and ``episode_start_s`` / ``episode_end_s``: the ``StartTime`` / ``EndTime`` columns
      (``00:16:16,059``) in seconds. They locate the utterance in the *episode*, not in the clip;
      the MELD.Raw clips are already cut, so ``start``/``end`` stay unset. In the dyadic variant
      ``old_dialogue_id`` / ``old_utterance_id`` point at the original MELD utterance.
    * ``media["video"]`` (only with ``raw_root``) =
      ``raw_root/<split folder>/dia{D}_utt{U}.mp4``. In the dyadic variant ``D``/``U`` are the
      *old* ids, because MELD-Dyadic re-numbers dialogues but reuses the original clips. A few
      clips are missing from MELD.Raw (e.g. ``dev dia110_utt7``); paths are set regardless and the
      feature stage reports the missing files.

Text normalisation
    CSVs are read as UTF-8 with pandas. Typographic punctuation (’ ‘ “ ” — …) is genuine and is
    kept unless ``ascii_punctuation=True``. Some MELD releases contain Windows-1252 bytes that
    were decoded as Latin-1, leaving C1 control characters (``"\x92"`` for ’, ``"\x85"`` for …)
    or double-encoded sequences (``"â€™"``); every such character is re-decoded as Windows-1252
    (the copy checked in ``shared/data`` has none, so this is a no-op there). Then Unicode NFC,
    whitespace runs collapse to one space, and the text is stripped.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from pathlib import Path
from typing import Any

from pydantic import Field

from emofuse.datasets.base import (
    DATASETS,
    BadValue,
    DatasetRecipe,
    RecipeConfig,
    number,
    read_csv_table,
    span,
)
from emofuse.errors import InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

EMOTIONS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
"""MELD emotions in the official index order."""

SENTIMENTS = ["neutral", "positive", "negative"]
"""MELD sentiments in the official index order."""

CSV_SPLITS = {"train": "train", "val": "dev", "test": "test"}
"""emofuse split → split name in the CSV file names."""

RAW_FOLDERS = {
    "train": "train_splits",
    "val": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
"""emofuse split → clip folder inside MELD.Raw."""

_C1 = re.compile("[\u0080-\u009f]")
_DOUBLE_ENCODED = re.compile(
    "[\u00c2\u00c3\u00e2][\u0080-\u00bf\u20ac\u201a-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2122]"
)
_ASCII = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2014": "-",
        "\u2013": "-",
        "\u2026": "...",
    }
)
_TIME = re.compile(r"^(\d+):(\d\d):(\d\d)[,.](\d{1,3})$")


def normalize_text(text: str, ascii_punctuation: bool = False) -> str:
    r"""Repair Windows-1252 mojibake, apply NFC and collapse whitespace.

    Args:
        text: An utterance as read from a MELD CSV.
        ascii_punctuation: Also replace typographic quotes, dashes and ellipses by ASCII.

    Example:
        >>> normalize_text("You must\x92ve had  your hands full.")
        'You must’ve had your hands full.'
        >>> normalize_text("It\u00e2\u20ac\u2122s")
        'It’s'
    """
    if _DOUBLE_ENCODED.search(text):
        with contextlib.suppress(UnicodeError):
            text = text.encode("cp1252").decode("utf-8")
    if _C1.search(text):
        text = _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="replace"), text)
    text = unicodedata.normalize("NFC", text)
    if ascii_punctuation:
        text = text.translate(_ASCII)
    return " ".join(text.split())


def parse_time(value: str, path: Path | str = "") -> float:
    """``"00:16:16,059"`` → ``976.059`` seconds.

    Raises:
        InputError: naming ``path`` when the value is not an ``H:MM:SS,mmm`` time (minutes
            and seconds below 60).
    """
    try:
        return _seconds(value, "time")
    except BadValue as err:
        raise InputError(path or None, str(err)) from None


def _seconds(value: str, name: str) -> float:
    m = _TIME.match(str(value).strip())
    if not m:
        raise BadValue(f"{name} {value!r} is a bad time, expected H:MM:SS,mmm")
    h, mi, s, ms = m.groups()
    if int(mi) >= 60 or int(s) >= 60:
        raise BadValue(f"{name} {value!r} is a bad time, minutes and seconds must be below 60")
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


class MeldConfig(RecipeConfig):
    """Options of the ``meld`` recipe."""

    dyadic: bool = Field(
        False, description="Read the MELD-Dyadic files under dyadic/ instead of the official CSVs."
    )
    raw_root: Path | None = Field(
        None,
        description="MELD.Raw folder holding the clip folders; adds media['video'].",
    )
    raw_split_folders: dict[str, str] = Field(
        default_factory=lambda: dict(RAW_FOLDERS),
        description="Clip folder (relative to raw_root) per split: train/val/test.",
    )
    ascii_punctuation: bool = Field(
        False, description="Replace typographic quotes, dashes and ellipses by ASCII."
    )


@DATASETS.register("meld")
class Meld(DatasetRecipe):
    """MELD recipe (see the module docstring for the dataset card)."""

    folder = "meld"
    Config = MeldConfig
    config: MeldConfig

    def spec(self) -> TaskSpec:
        """``meld-7``: seven emotions, three sentiments, conversational, weighted F1 first."""
        return TaskSpec(
            name="meld-7",
            emotion_labels=list(EMOTIONS),
            sentiment_classes=list(SENTIMENTS),
            conversational=True,
            language="en",
            metrics=["weighted_f1", "accuracy"],
        )

    def _csv(self, split: str) -> str:
        name = CSV_SPLITS[split]
        return f"dyadic/{name}_sent_emo_dya.csv" if self.config.dyadic else f"{name}_sent_emo.csv"

    def required_files(self) -> list[str]:
        """The three split CSVs (official or dyadic)."""
        return [self._csv(s) for s in CSV_SPLITS]

    def _raw_folders(self) -> dict[str, Path]:
        raw = self.config.raw_root
        if raw is None:
            return {}
        raw = Path(raw).expanduser()
        missing_keys = set(CSV_SPLITS) - set(self.config.raw_split_folders)
        if missing_keys:
            raise InputError(raw, f"raw_split_folders lacks the split(s) {sorted(missing_keys)}")
        folders = {s: raw / self.config.raw_split_folders[s] for s in CSV_SPLITS}
        missing = [str(p) for p in folders.values() if not p.is_dir()]
        if missing:
            raise InputError(
                raw,
                f"not a MELD.Raw folder: missing clip folder(s) {', '.join(missing)} "
                "(set raw_split_folders if yours are named differently)",
            )
        return folders

    def load(self) -> list[Utterance]:
        """Read the three CSVs in order train, val, test.

        A row whose ids, season, episode or times are unusable (not whole numbers ≥ 0, a season
        outside 1–10, a time that is not ``H:MM:SS,mmm`` or ends before it starts) is reported
        in :attr:`skipped` (by utterance id, or by file and line when the ids are bad) and left
        out.
        """
        raw = self._raw_folders()
        root = self.root
        cols = [
            "Utterance",
            "Speaker",
            "Emotion",
            "Sentiment",
            "Dialogue_ID",
            "Utterance_ID",
            "Season",
            "Episode",
            "StartTime",
            "EndTime",
        ]
        if self.config.dyadic:
            cols += ["Old_Dialogue_ID", "Old_Utterance_ID"]
        out: list[Utterance] = []
        for split in CSV_SPLITS:
            path = root / self._csv(split)
            df = read_csv_table(path, keep_default_na=False, dtype=str)
            absent = [c for c in cols if c not in df.columns]
            if absent:
                raise InputError(path, f"missing column(s) {', '.join(absent)}")
            for i, row in enumerate(df.to_dict("records")):
                try:
                    out.append(self._record(row, split, path, i + 2, raw.get(split)))
                except _Skip as bad:  # reported, and the utterance left out
                    self.skip(bad.item or bad.where, bad.where if bad.item else "", bad.problem)
        return out

    def _record(
        self, row: dict[str, Any], split: str, path: Path, line: int, raw: Path | None
    ) -> Utterance:
        where = f"{path} (line {line})"
        emotion, sentiment = row["Emotion"].strip().lower(), row["Sentiment"].strip().lower()
        if emotion not in EMOTIONS:
            raise InputError(
                where, f"unknown emotion {row['Emotion']!r}; expected one of {EMOTIONS}"
            )
        if sentiment not in SENTIMENTS:
            raise InputError(
                where, f"unknown sentiment {row['Sentiment']!r}; expected one of {SENTIMENTS}"
            )
        try:
            dia = number(row["Dialogue_ID"], "Dialogue_ID", low=0, integer=True)
            utt = number(row["Utterance_ID"], "Utterance_ID", low=0, integer=True)
        except BadValue as err:
            raise _Skip(self.where(path, line), str(err)) from None
        uid = f"{split}_dia{dia}_utt{utt}"
        try:
            extra: dict[str, str | float | int | None] = {
                "season": number(row["Season"], "Season", low=1, high=10, integer=True),
                "episode": number(row["Episode"], "Episode", low=1, integer=True),
            }
            if self.config.dyadic:
                clip_dia = number(row["Old_Dialogue_ID"], "Old_Dialogue_ID", low=0, integer=True)
                clip_utt = number(row["Old_Utterance_ID"], "Old_Utterance_ID", low=0, integer=True)
                extra.update(old_dialogue_id=clip_dia, old_utterance_id=clip_utt)
            else:
                clip_dia, clip_utt = dia, utt
                if row.get("Sr No."):
                    extra["sr_no"] = number(row["Sr No."], "Sr No.", low=1, integer=True)
            start = _seconds(row["StartTime"], "StartTime")
            end = _seconds(row["EndTime"], "EndTime")
            # one official test row (dia155_utt3) has StartTime == EndTime: kept, zero-length
            span(start, end, ("StartTime", "EndTime"), empty=True)
        except BadValue as err:
            raise _Skip(self.where(path, line), str(err), uid) from None
        extra["episode_start_s"], extra["episode_end_s"] = start, end
        media = {"video": str(raw / f"dia{clip_dia}_utt{clip_utt}.mp4")} if raw is not None else {}
        return Utterance(
            id=uid,
            dataset=self.name,
            split=split,
            dialogue_id=f"{split}_dia{dia}",
            turn=utt,
            speaker=row["Speaker"].strip() or None,
            media=media,
            text=normalize_text(row["Utterance"], self.config.ascii_punctuation),
            language="en",
            labels=Labels(emotion=emotion, sentiment_class=sentiment, extra=extra),
        )


class _Skip(Exception):
    """A MELD row with an unusable number: where it is, what is wrong, its id if known."""

    def __init__(self, where: str, problem: str, item: str | None = None) -> None:
        super().__init__(problem)
        self.where, self.problem, self.item = where, problem, item

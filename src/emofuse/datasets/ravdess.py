"""RAVDESS — acted emotional speech (and song) of 24 actors, audio and video.

Dataset card
============

**What it is.** The Ryerson Audio-Visual Database of Emotional Speech and Song: 24 professional
actors (12 female, 12 male; odd actor numbers are male) say two lexically matched statements in
eight emotions at two intensities, two repetitions each. Each performance exists as audio-only
(``03-…wav``), full audio-video (``01-…mp4``) and video-only (``02-…mp4``) files. 1,440 speech
and 1,012 song audio files in the full corpus.

**Licence.** CC BY-NC-SA 4.0. Cite Livingstone & Russo (2018), *PLoS ONE* 13(5): e0196391.

**How to get it.** https://zenodo.org/record/1188976 (``Audio_Speech_Actors_01-24.zip``,
``Video_Speech_Actor_XX.zip``, …); unzip everything under one folder.

**Expected tree.** Any tree whose files carry RAVDESS names
``MM-VV-EE-II-SS-RR-AA.wav|mp4`` (modality, vocal channel, emotion, intensity, statement,
repetition, actor) — labels are read from the names::

    ravdess/                            ravdess/   (emofuse's 16 kHz selection)
      Actor_01/03-01-01-01-01-01-01.wav   labels.csv
      Actor_01/01-01-01-01-01-01-01.mp4   speech16k/03-01-01-01-01-01-01.wav
      ...                                 av/01-01-01-01-01-01-01.mp4

When ``labels.csv`` (column ``file``, relative to the root) exists, its files are the audio of
the corpus; otherwise every audio-only file found is. Audio-only and video files of the same
performance (same code apart from the modality) are merged into one utterance:
``media = {"audio": …wav, "video": …mp4}`` (full AV preferred over video-only). Videos whose
performance has no audio file become video-only utterances. Two audio files of one
performance are an error.

**Utterance.** id = the code without the modality (``VV-EE-II-SS-RR-AA``), text = the statement
(01 "Kids are talking by the door", 02 "Dogs are sitting by the door"), speaker ``actorNN``;
``labels.extra`` holds ``actor``, ``sex``, ``intensity`` (normal/strong), ``statement``,
``repetition`` and ``vocal_channel`` (speech/song).

**Splits (speaker-independent).** Actors 1–24 are cut into ``folds`` contiguous groups
(default 6 groups of 4: fold 0 = actors 1–4, fold 1 = 5–8, …, fold 5 = 21–24). For ``fold=k``
the test split is group ``k``, val is group ``(k + 1) mod folds`` and train is the rest, so
every actor is tested exactly once over the folds. ``fold=None`` puts everything in ``test``.

**Label map** (task ``ravdess-8``, metrics UA/WA): 0 neutral, 1 calm, 2 happy, 3 sad, 4 angry,
5 fearful, 6 disgust, 7 surprised (= emotion code − 1). Song has no disgust or surprised.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from emofuse.datasets.base import DATASETS, DatasetRecipe, RecipeConfig
from emofuse.datasets.folder import read_csv_rows
from emofuse.errors import ConfigError, InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
NUM_ACTORS = 24
CODE = re.compile(
    r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-"
    r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)\.(?P<ext>wav|mp4)$",
    re.IGNORECASE,
)
_LOOKS_LIKE_CODE = re.compile(r"^\d\d-\d\d-\d\d-\d\d-\d\d-\d\d-\d\d\.(wav|mp4)$", re.IGNORECASE)


class RavdessConfig(RecipeConfig):
    """Options of the ``ravdess`` recipe."""

    folds: int = Field(6, description="Number of contiguous actor groups; must divide 24.")
    fold: int | None = Field(
        0, description="0-based fold: its actors are test, the next fold's are val. None: all test."
    )
    vocal_channel: Literal["speech", "song", "all"] = Field(
        "speech", description="Which RAVDESS vocal channel to keep."
    )

    @field_validator("folds")
    @classmethod
    def _divides(cls, v: int) -> int:
        if v < 2 or NUM_ACTORS % v:
            raise ValueError(
                "folds must be a divisor of 24 between 2 and 24 (2, 3, 4, 6, 8, 12, 24)"
            )
        return v


def parse_code(name: str) -> dict[str, str] | None:
    """Parse a RAVDESS file name (``03-01-05-02-01-01-12.wav``) into its code fields.

    Returns:
        The fields (``modality``, ``channel``, ``emotion``, …) as two-digit strings, or ``None``
        when the name does not look like a RAVDESS name at all.

    Raises:
        InputError: when the name looks like a RAVDESS code but holds an impossible value.
    """
    m = CODE.match(name)
    if m is None:
        if _LOOKS_LIKE_CODE.match(name):
            raise InputError(
                name,
                "not a valid RAVDESS code (modality 01-03, channel 01-02, "
                "emotion 01-08, intensity/statement/repetition 01-02, actor 01-24)",
            )
        return None
    fields = m.groupdict()
    if not 1 <= int(fields["actor"]) <= NUM_ACTORS:
        raise InputError(name, f"actor {fields['actor']} is outside 01-24")
    return fields


def actor_split(actor: int, folds: int, fold: int | None) -> str:
    """Split of ``actor`` (1-24) under the contiguous-group protocol described above."""
    if fold is None:
        return "test"
    group = (actor - 1) // (NUM_ACTORS // folds)
    if group == fold:
        return "test"
    if group == (fold + 1) % folds:
        return "val"
    return "train"


@DATASETS.register("ravdess")
class RavdessRecipe(DatasetRecipe):
    """RAVDESS, labels from file names (see the module docstring for the dataset card)."""

    folder = "ravdess"
    Config = RavdessConfig
    config: RavdessConfig

    def __init__(self, config: RavdessConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        if self.config.fold is not None and not 0 <= self.config.fold < self.config.folds:
            raise ConfigError(
                f"dataset 'ravdess': fold {self.config.fold} is outside 0..{self.config.folds - 1}"
            )

    def spec(self) -> TaskSpec:
        """``ravdess-8``: eight emotions, UA (headline) and WA."""
        return TaskSpec(
            name="ravdess-8", emotion_labels=EMOTIONS, language="en", metrics=["ua", "wa"]
        )

    def check(self) -> None:
        """The root must exist and hold RAVDESS-named files (checked while loading)."""
        _ = self.root

    def load(self) -> list[Utterance]:
        """Every performance of the chosen vocal channel, with its actor-fold split."""
        root = self.root
        audio, video = self._collect(root)
        if not audio and not video:
            raise InputError(
                root,
                "not a RAVDESS root: no files named like 03-01-05-02-01-01-12.wav or "
                "01-01-05-02-01-01-12.mp4 were found (see `emofuse datasets show ravdess`)",
            )
        out = []
        for key in sorted(set(audio) | set(video), key=_order):
            fields, wav = audio.get(key, (None, None))
            vfields, mp4 = video.get(key, (None, None))
            fields = fields or vfields
            assert fields is not None
            media: dict[str, str] = {}
            if wav is not None:
                media["audio"] = str(wav)
            if mp4 is not None:
                media["video"] = str(mp4)
            actor = int(fields["actor"])
            out.append(
                Utterance(
                    id=key,
                    dataset=self.name,
                    split=actor_split(actor, self.config.folds, self.config.fold),
                    speaker=f"actor{actor:02d}",
                    media=media,
                    text=STATEMENTS[fields["statement"]],
                    language="en",
                    labels=Labels(
                        emotion=EMOTIONS[int(fields["emotion"]) - 1],
                        extra={
                            "actor": actor,
                            "sex": "male" if actor % 2 else "female",
                            "intensity": "normal" if fields["intensity"] == "01" else "strong",
                            "statement": int(fields["statement"]),
                            "repetition": int(fields["repetition"]),
                            "vocal_channel": "speech" if fields["channel"] == "01" else "song",
                        },
                    ),
                )
            )
        return out

    def _collect(
        self, root: Path
    ) -> tuple[dict[str, tuple[dict[str, str], Path]], dict[str, tuple[dict[str, str], Path]]]:
        labels_csv = root / "labels.csv"
        if labels_csv.is_file():
            header, rows = read_csv_rows(labels_csv)
            if "file" not in header:
                raise InputError(labels_csv, f"needs a 'file' column; header is {header}")
            audio_files = []
            for n, row in enumerate(rows, 1):
                f = root / row["file"]
                if not f.is_file():
                    raise InputError(labels_csv, f"row {n} (line {n + 1}): file not found: {f}")
                audio_files.append(f)
            candidates = audio_files + sorted(p for p in root.rglob("*.mp4") if p.is_file())
        else:
            candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".wav", ".mp4"})
        audio: dict[str, tuple[dict[str, str], Path]] = {}
        video: dict[str, tuple[dict[str, str], Path]] = {}
        for path in candidates:
            try:
                fields = parse_code(path.name)
            except InputError as err:
                raise InputError(path, err.problem) from None
            if fields is None or not self._keep(fields):
                continue
            key = "-".join(
                fields[k]
                for k in ("channel", "emotion", "intensity", "statement", "repetition", "actor")
            )
            if fields["modality"] == "03":
                if fields["ext"].lower() != "wav":
                    raise InputError(path, "RAVDESS modality 03 (audio-only) files must be .wav")
                if key in audio:
                    raise InputError(
                        path, f"performance {key} already has audio {audio[key][1]}; keep one copy"
                    )
                audio[key] = (fields, path)
            else:
                if fields["ext"].lower() != "mp4":
                    raise InputError(path, "RAVDESS modalities 01/02 (video) files must be .mp4")
                old = video.get(key)
                if old is not None and old[0]["modality"] == fields["modality"]:
                    raise InputError(
                        path, f"performance {key} already has video {old[1]}; keep one copy"
                    )
                if old is None or fields["modality"] == "01":  # full AV beats video-only
                    video[key] = (fields, path)
        return audio, video

    def _keep(self, fields: dict[str, str]) -> bool:
        wanted = self.config.vocal_channel
        return wanted == "all" or (wanted == "speech") == (fields["channel"] == "01")


def _order(key: str) -> tuple[int, str]:
    return int(key.rsplit("-", 1)[1]), key

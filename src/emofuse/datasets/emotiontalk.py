"""EmotionTalk — Chinese dyadic conversations with per-modality emotion labels.

Dataset card
============

**What it is.** EmotionTalk (FlagEval / BAAI, 2025): 19,250 utterances of acted-spontaneous
Mandarin dyadic conversations (742 sessions, two speakers each), every utterance labelled four
times — from the audio alone, the video alone, the text alone and all modalities together —
with 7 emotions, plus a continuous sentiment score in [-2, 2] (steps of 0.2) and a transcript.
Unimodal labels agree with the multimodal one for 67.8 % (audio), 66.3 % (video) and 42.3 %
(text) of utterances, so the per-modality labels are real information, not copies.

**Licence.** CC BY-NC-SA 4.0 (``flageval-baai/EmotionTalk`` README).

**How to get it.** https://github.com/flageval-baai/EmotionTalk (labels, transcripts); the
media come from the links in that README. The release names media
``<group>/<session>/<speaker track>/<utterance>.wav|mp4`` (e.g.
``G00003/G00003_11/G00003_11_02/G00003_11_02_002.wav``).

**Expected tree**::

    emotiontalk/
      derived/emotiontalk_utterances.csv   key,group,session,dialogue_id,utt_index,split,
                                           label_multimodal,sentiment,label_audio,label_video,
                                           label_text,text_zh
      (optional, options audio_root / video_root)
      <audio_root>/G00003/G00003_11/G00003_11_02/G00003_11_02_002.wav
      <video_root>/G00003/G00003_11/G00003_11_02/G00003_11_02_002.mp4

**Conversations.** A *session* (``G00003_11``) is one conversation; the CSV's ``dialogue_id``
(``G00003_11_02``) is one speaker's track of it — its utterance indices interleave with the
other track's (02 speaks turns 2, 4, 6, …; 13 speaks 1, 7, 9, …). emofuse therefore sets
``dialogue_id`` = session, ``speaker`` = the track id, and ``turn`` = the 0-based position in
the session ordered by ``utt_index``; the original index is ``labels.extra["utt_index"]``
(indices have gaps where utterances were not released). ``context="track"`` instead keeps the
CSV's per-speaker tracks as dialogues (1,476 of them, the count in the source README).

**Splits** (by speaker group; test G00003/G00015, val G00001/G00012):
train 15,413 utterances / 587 sessions, val 1,908 / 71, test 1,929 / 84.

**Label map** (EmotionTalk class ids): 0 neutral, 1 happy, 2 sad, 3 angry, 4 surprised,
5 disgusted, 6 fearful. ``labels.emotion`` is the label chosen by ``label_source`` (default the
multimodal one); ``labels.per_modality`` always holds ``audio``, ``video`` and ``text``;
``labels.extra["label_multimodal"]`` the multimodal one. ``labels.sentiment`` in [-2, 2].
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from emofuse.datasets.base import DATASETS, BadValue, DatasetRecipe, RecipeConfig, number
from emofuse.datasets.folder import SPLIT_ALIASES, read_csv_rows
from emofuse.errors import InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

EMOTIONS = ["neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful"]
CSV = "derived/emotiontalk_utterances.csv"
SENTIMENT_RANGE = (-2.0, 2.0)
"""The declared EmotionTalk sentiment range (steps of 0.2)."""
COLUMNS = [
    "key", "group", "session", "dialogue_id", "utt_index", "split", "label_multimodal",
    "sentiment", "label_audio", "label_video", "label_text", "text_zh",
]  # fmt: skip


class EmotionTalkConfig(RecipeConfig):
    """Options of the ``emotiontalk`` recipe."""

    label_source: Literal["multimodal", "audio", "video", "text"] = Field(
        "multimodal", description="Which annotation becomes labels.emotion."
    )
    context: Literal["session", "track"] = Field(
        "session",
        description="Dialogue unit: the two-speaker session, or one speaker's track of it.",
    )
    audio_root: Path | None = Field(
        None, description="Folder of the release's audio (<group>/<session>/<track>/<key>.wav)."
    )
    video_root: Path | None = Field(
        None, description="Folder of the release's video (<group>/<session>/<track>/<key>.mp4)."
    )


@DATASETS.register("emotiontalk")
class EmotionTalkRecipe(DatasetRecipe):
    """EmotionTalk (see the module docstring for the dataset card)."""

    folder = "emotiontalk"
    Config = EmotionTalkConfig
    config: EmotionTalkConfig

    def spec(self) -> TaskSpec:
        """7-class conversational emotion with per-modality labels, plus sentiment in [-2, 2]."""
        return TaskSpec(
            name=f"emotiontalk-7-{self.config.label_source}",
            emotion_labels=EMOTIONS,
            sentiment_range=SENTIMENT_RANGE,
            per_modality_labels=["audio", "video", "text"],
            conversational=True,
            language="zh",
            metrics=["weighted_f1", "wa", "ua", "mae", "corr"],
        )

    def required_files(self) -> list[str]:
        """The utterance table."""
        return [CSV]

    def load(self) -> list[Utterance]:
        """Every labelled utterance, sessions in corpus order, turns by utterance index.

        An utterance whose ``sentiment`` (a finite number in [-2, 2], or empty) or ``utt_index``
        (a whole number ≥ 0) is unusable is reported in :attr:`skipped` and left out.
        """
        path = self.root / CSV
        lines: list[int] = []
        header, rows = read_csv_rows(path, lines)
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)}; header is {header}")
        parsed = []
        low, high = SENTIMENT_RANGE
        for n, row in enumerate(rows, 1):
            where = f"row {n} (line {lines[n - 1]})"
            labels = {}
            for src in ("multimodal", "audio", "video", "text"):
                value = row[f"label_{src}"]
                if value not in EMOTIONS:
                    raise InputError(
                        path, f"{where}: label_{src} {value!r} is not one of {EMOTIONS}"
                    )
                labels[src] = value
            split = SPLIT_ALIASES.get(row["split"].lower())
            if split is None:
                raise InputError(path, f"{where}: unknown split {row['split']!r}")
            try:
                index = number(row["utt_index"], "utt_index", low=0, integer=True)
                sentiment = number(
                    row["sentiment"], "sentiment", low=low, high=high, required=False
                )
            except BadValue as err:  # reported, and the utterance left out
                self.skip(row["key"], self.where(path, lines[n - 1]), str(err))
                continue
            parsed.append((row, labels, split, index, sentiment))
        unit = "session" if self.config.context == "session" else "dialogue_id"
        order: dict[str, list[int]] = {}
        for row, *_, index, _s in parsed:
            order.setdefault(row[unit], []).append(index)
        position = {(d, i): p for d, idx in order.items() for p, i in enumerate(sorted(idx))}
        audio_root, video_root = self._media_root("audio"), self._media_root("video")
        out = []
        for row, labels, split, index, sentiment in parsed:
            rel = Path(row["group"], row["session"], row["dialogue_id"], row["key"])
            media = {}
            if audio_root is not None:
                media["audio"] = str(self._media(audio_root, rel, ".wav"))
            if video_root is not None:
                media["video"] = str(self._media(video_root, rel, ".mp4"))
            out.append(
                Utterance(
                    id=row["key"],
                    dataset=self.name,
                    split=split,
                    dialogue_id=row[unit],
                    turn=position[(row[unit], index)],
                    speaker=row["dialogue_id"],
                    media=media,
                    text=row["text_zh"] or None,
                    language="zh",
                    labels=Labels(
                        emotion=labels[self.config.label_source],
                        sentiment=sentiment,
                        per_modality={m: labels[m] for m in ("audio", "video", "text")},
                        extra={"utt_index": index, "label_multimodal": labels["multimodal"]},
                    ),
                )
            )
        first = {d: i for i, d in reversed(list(enumerate(u.dialogue_id for u in out)))}
        return sorted(out, key=lambda u: (first[u.dialogue_id], u.turn))

    def _media_root(self, kind: str) -> Path | None:
        given = getattr(self.config, f"{kind}_root")
        if given is None:
            return None
        p = given if given.is_absolute() else self.root / given
        if not p.is_dir():
            raise InputError(p, f"{kind}_root does not exist or is not a folder")
        return p

    @staticmethod
    def _media(root: Path, rel: Path, suffix: str) -> Path:
        path = root / rel.with_suffix(suffix)
        if not path.is_file():
            raise InputError(path, f"media file missing under {root} (expected the release layout)")
        return path

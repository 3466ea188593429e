"""CMU-MOSEI — Multimodal Opinion Sentiment and Emotion Intensity corpus.

Dataset card
============

What it is
    22,856 sentence-level clips (in the MERBench key set) from 3,225 English YouTube monologue
    videos on about 250 topics, each with sentiment intensity in [-3, 3] and six emotion
    intensities (happy, sad, anger, surprise, disgust, fear; Zadeh et al., ACL 2018).

Licence
    CMU-MOSEI is distributed by CMU MultiComp Lab for research.
    ``label.npz``: ``zeroQiaoba/MERTools``
    (Apache-2.0, non-commercial). ``CMU_MOSEI_Labels.csv``: ``s3prl/s3prl`` (Apache-2.0).
    ``label_text.csv`` (source of the transcripts): ``ailiwood/mme_0621`` (no licence file).

How to get it
    ``MERBench/dataset/cmumosei-process/label.npz`` of https://github.com/zeroQiaoba/MERTools;
    ``s3prl/downstream/mosei/utility/CMU_MOSEI_Labels.csv`` of https://github.com/s3prl/s3prl;
    ``derived/mosei_text_by_merbench_key.csv`` joins transcripts to the MERBench keys (see
    ``shared/data/README.md`` §4). Media: the MMSA release (``MOSEI/Raw``) or the CMU-MultimodalSDK.

Expected folder tree::

    mosei/                                   # root
      label.npz                              # {split}_corpus: key → {'val': sentiment}
      derived/mosei_text_by_merbench_key.csv  # key,video_id,clip_index,start_s,split,sentiment,text
      CMU_MOSEI_Labels.csv                   # only for emotions=True
    Raw/                                     # optional, option raw_root (MMSA layout)
      <video_id>/<clip_index>.mp4

Splits (standard CMU-SDK folds, as in MERBench)

    =====  ======  ======  ==========================
    split  clips   videos  sentiment < 0 / = 0 / > 0
    =====  ======  ======  ==========================
    train  16,326  2,249   4,738 / 3,540 / 8,048
    val    1,871   300     506 / 433 / 932
    test   4,659   676     1,350 / 1,025 / 2,284
    =====  ======  ======  ==========================

Label maps
    ``labels.sentiment`` ∈ [-3, 3] from ``label.npz`` (float32 there, rounded to 6 decimals).
    MOSI binning (``FIELD.md`` §D2). With ``emotions=True``, ``labels.emotion`` ∈
    {happy 0, sad 1, anger 2, surprise 3, disgust 4, fear 5} = s3prl's ``label6``, the *argmax* of
    the six intensities. Caveat: MOSEI is multi-label and many clips have all-zero intensities;
    argmax then returns index 0, which is one reason "happy" dominates (14,567 of 23,259
    segments). Use it as a coarse single-label view, not as the MOSEI emotion benchmark.

Records and the two joins
    * Every key of ``label.npz`` is an utterance: ``id`` = key (``{video_id}_{clip_index}``),
      ``dialogue_id`` = ``video_id``, ``turn`` = rank of the clip in its video (monologue; not
      conversational).
    * Text: 22,749 of 22,856 clips have a transcript in the derived table (it was joined only where
      a video's clip count and every sentiment value agree). **The other 107 clips are still
      utterances, with ``text=None``** (they can be used with audio/video, or transcribed by ASR).
      ``labels.extra["start_s"]`` = the clip's start in the full video, when known.
    * Emotion (``emotions=True``): s3prl's segments (folds 0/1/2; fold 3 = outside the standard
      folds is dropped) sorted by start time are matched one-to-one to the keys of the same video
      sorted by clip index, **only for videos whose segment counts are equal**. Measured on
      ``shared/data``: 3,221 of 3,225 videos, 22,846 clips; for every one of them s3prl's rounded
      sentiment ``label7`` equals ``sign(s)·ceil(|s|)`` of our score, its ``label2b`` equals the
      sign, and its fold equals our split, so the join is exact. The 10 clips of the other 4 videos
      get no emotion (``labels.emotion=None``). The recipe re-checks the sign on load and raises if
      any joined clip disagrees.
    * ``media["video"]`` = ``raw_root/<video_id>/<clip_index>.mp4`` when ``raw_root`` is set and the
      file exists. Check that your Raw clip numbering follows the MERBench key index.
"""

from __future__ import annotations

import math
from pathlib import Path

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
from emofuse.datasets.mosi import (
    MSA_METRICS,
    SENTIMENT_RANGE,
    check_raw_root,
    raw_clip,
    read_label_npz,
)
from emofuse.errors import InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

EMOTIONS = ["happy", "sad", "anger", "surprise", "disgust", "fear"]
"""s3prl ``label6`` classes in id order."""

TEXT_CSV = "derived/mosei_text_by_merbench_key.csv"
S3PRL_CSV = "CMU_MOSEI_Labels.csv"


class MoseiConfig(RecipeConfig):
    """Options of the ``mosei`` recipe."""

    emotions: bool = Field(
        False,
        description=(
            "Attach s3prl's argmax emotion (6 classes) from CMU_MOSEI_Labels.csv where it "
            "joins exactly."
        ),
    )
    raw_root: Path | None = Field(
        None,
        description="MMSA-style Raw/ folder: <video_id>/<clip_index>.mp4; adds media['video'].",
    )


@DATASETS.register("mosei")
class Mosei(DatasetRecipe):
    """CMU-MOSEI recipe (see the module docstring for the dataset card)."""

    folder = "mosei"
    Config = MoseiConfig
    config: MoseiConfig

    def spec(self) -> TaskSpec:
        """``mosei``: sentiment in [-3, 3] (MOSI binning); 6 emotions with ``emotions=True``."""
        return TaskSpec(
            name="mosei",
            sentiment_range=SENTIMENT_RANGE,
            sentiment_scheme="mosi",
            emotion_labels=list(EMOTIONS) if self.config.emotions else None,
            metrics=list(MSA_METRICS),
        )

    def required_files(self) -> list[str]:
        """Labels, transcripts and (with ``emotions``) the s3prl table."""
        return ["label.npz", TEXT_CSV] + ([S3PRL_CSV] if self.config.emotions else [])

    def load(self) -> list[Utterance]:
        """Every ``label.npz`` key, in split then key order.

        A clip whose score (in ``label.npz`` or the transcript table) or start time is unusable
        is reported in :attr:`skipped` and left out.
        """
        root = self.root
        bad: dict[str, str] = {}
        labels = read_label_npz(root / "label.npz", bad)
        keys = [*labels, *bad]  # the join to s3prl's segments counts every clip of a video
        for key, problem in bad.items():
            self.skip(key, "", problem)
        text_path = root / TEXT_CSV
        tdf = read_csv_table(text_path, keep_default_na=False, dtype=str)
        absent = [c for c in ("key", "start_s", "sentiment", "text") if c not in tdf.columns]
        if absent:
            raise InputError(text_path, f"missing column(s) {', '.join(absent)}")
        texts: dict[str, tuple[str, float]] = {}
        low, high = SENTIMENT_RANGE
        for line, (key, start, sentiment, text) in enumerate(
            zip(tdf["key"], tdf["start_s"], tdf["sentiment"], tdf["text"], strict=True), 2
        ):
            if key not in labels and key not in bad:
                raise InputError(text_path, f"key {key!r} is not in label.npz")
            try:
                score = number(sentiment, "sentiment", low=low, high=high)
                start_s = number(start, "start_s", low=0)
            except BadValue as err:
                labels.pop(key, None)
                self.skip(key, self.where(text_path, line), str(err))
                continue
            if key in bad:
                continue
            if abs(score - labels[key][1]) > 1e-4:
                raise InputError(
                    text_path,
                    f"{key}: sentiment {sentiment} disagrees with label.npz ({labels[key][1]})",
                )
            texts[key] = (" ".join(str(text).split()), start_s)
        emotions = self._emotions(root / S3PRL_CSV, keys, labels) if self.config.emotions else {}

        parsed = []
        for key, (split, sentiment) in labels.items():
            video, _, index = key.rpartition("_")
            if not video or not index.isdigit():
                raise InputError(root / "label.npz", f"key {key!r} is not <video_id>_<clip_index>")
            parsed.append((key, video, int(index), split, sentiment))
        order = {s: i for i, s in enumerate(("train", "val", "test"))}
        parsed.sort(key=lambda r: (order[r[3]], r[1], r[2]))
        turns: dict[str, list[int]] = {}
        for _, video, index, _, _ in parsed:
            turns.setdefault(video, []).append(index)
        rank = {(v, i): n for v, idx in turns.items() for n, i in enumerate(sorted(idx))}

        raw = Path(self.config.raw_root).expanduser() if self.config.raw_root else None
        out, found = [], 0
        for key, video, index, split, sentiment in parsed:
            text, start = texts.get(key, (None, None))
            extra: dict[str, str | float | int | None] = {"clip_index": index}
            if start is not None:
                extra["start_s"] = start
            clip = raw_clip(raw, video, str(index))
            found += clip is not None
            out.append(
                Utterance(
                    id=key,
                    dataset=self.name,
                    split=split,
                    dialogue_id=video,
                    turn=rank[(video, index)],
                    media={"video": clip} if clip else {},
                    text=text or None,
                    language="en",
                    labels=Labels(sentiment=sentiment, emotion=emotions.get(key), extra=extra),
                )
            )
        check_raw_root(raw, found)
        return out

    def _emotions(
        self, path: Path, keys: list[str], labels: dict[str, tuple[str, float]]
    ) -> dict[str, str]:
        """Join s3prl's ``label6`` to our keys (see "Records and the two joins").

        Every number of a segment in the standard folds is checked (times finite with
        ``end > start``; s3prl's first segments may start up to half a second before 0, as the
        CMU-SDK intervals do, so a negative start is kept), ``label2b`` in −1…1, ``label6``
        in 0…5. A bad segment is reported in :attr:`skipped` and its video gets no emotion.
        ``keys`` are every clip of ``label.npz`` (left-out ones too, so they keep their place
        in the join); ``labels`` the usable ones.
        """
        df = read_csv_table(path, keep_default_na=False, dtype=str)
        absent = [c for c in ("file", "start", "label2b", "label6", "split") if c not in df.columns]
        if absent:
            raise InputError(path, f"missing column(s) {', '.join(absent)}")
        segments: dict[str, list[tuple[float, int, int, int]]] = {}
        for line, row in enumerate(df.to_dict("records"), 2):
            try:
                fold = number(row["split"], "split", low=0, high=3, integer=True)
                if fold == 3:  # outside the standard folds
                    continue
                start = number(row["start"], "start")
                end = number(row.get("end", ""), "end", required=False)
                span(start, end)
                sign = number(row["label2b"], "label2b", low=-1, high=1, integer=True)
                emotion = number(
                    row["label6"], "label6", low=0, high=len(EMOTIONS) - 1, integer=True
                )
            except BadValue as err:
                self.skip(
                    self.where(path, line),
                    "",
                    f"{err}; video {row['file']!r} gets no emotion",
                )
                segments.setdefault(row["file"], []).append((math.nan, 0, 0, -1))
                continue
            segments.setdefault(row["file"], []).append((start, sign, emotion, fold))
        ours: dict[str, list[tuple[int, str]]] = {}
        for key in keys:
            video, _, index = key.rpartition("_")
            if index.isdigit():
                ours.setdefault(video, []).append((int(index), key))
        fold_of = {"train": 0, "val": 1, "test": 2}
        out: dict[str, str] = {}
        for video, clips in ours.items():
            seg = segments.get(video)
            if seg is None or len(seg) != len(clips) or any(f < 0 for *_, f in seg):
                continue
            seg = sorted(seg, key=lambda t: t[0])  # stable: ties keep the file's order
            for (_, key), (_, b, e, f) in zip(sorted(clips), seg, strict=True):
                if key not in labels:
                    continue  # left out and reported
                split, sentiment = labels[key]
                sign = 0 if sentiment == 0 else int(math.copysign(1, sentiment))
                if b != sign or f != fold_of[split]:
                    raise InputError(
                        path,
                        f"join broke at {key}: s3prl sign/fold {b}/{f}, ours {sign}/{split}",
                    )
                out[key] = EMOTIONS[e]
        return out

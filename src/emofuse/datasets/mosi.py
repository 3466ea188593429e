"""CMU-MOSI — Multimodal Opinion Sentiment Intensity corpus.

Dataset card
============

What it is
    2,199 opinion clips (utterance-level segments) from 93 English YouTube movie-review videos,
    each annotated by five workers with sentiment intensity in [-3, 3] (Zadeh et al., 2016).
    The score here is their mean. Text, audio and video per clip.

Licence
    CMU-MOSI is distributed by CMU MultiComp Lab for research. The label/transcript files come
    from ``zeroQiaoba/MERTools`` (Apache-2.0, non-commercial research); the two sample media files
    from ``jiangbing22/MMCPanda`` (README badge CC BY-NC 4.0).

How to get it
    ``MERBench/dataset/cmumosi-process/{label.npz,transcription-engchi-polish.csv}`` of
    https://github.com/zeroQiaoba/MERTools; ``derived/mosi.csv`` is their join (see
    ``shared/data/README.md`` §3). Full media: the MMSA release (``MOSI/Raw``) from
    https://github.com/thuiar/MMSA or the CMU-MultimodalSDK.

Expected folder tree::

    mosi/                                    # root
      label.npz                              # {split}_corpus: key → {'val': sentiment}
      derived/mosi.csv                       # key,video_id,clip_id,split,sentiment,text,text_zh
      media/                                 # optional, any <key>.mp4 / <key>.wav found is used
        Oz06ZWiO20M_6.mp4  03bSnISJMiM_1.wav
    Raw/                                     # optional, option raw_root (MMSA layout)
      <video_id>/<clip_id>.mp4

Splits (the standard CMU-SDK folds)

    =====  =====  ======  ==========================
    split  clips  videos  sentiment < 0 / = 0 / > 0
    =====  =====  ======  ==========================
    train  1,284  52      552 / 53 / 679
    val    229    10      92 / 13 / 124
    test   686    31      379 / 30 / 277
    =====  =====  ======  ==========================

Label map
    ``labels.sentiment`` ∈ [-3, 3] (float, from ``label.npz``, stored as float32 there and
    rounded to 6 decimals here). Binning follows the MOSI scheme (``FIELD.md`` §D2): report
    Acc-2/F1 both *has-0* (non-negative vs negative) and *non-0* (zeros dropped), Acc-7, Acc-5,
    MAE and Pearson correlation.

Records
    ``id`` = ``{video_id}_{clip_id}`` (the MERTools key), ``dialogue_id`` = ``video_id``,
    ``turn`` = rank of the clip within its video (clips of one video are one speaker's monologue;
    the task is not conversational). Text = the MOSI transcript (upper case, no punctuation, as
    released). ``labels.extra["text_zh"]`` = MERTools' Chinese translation. ``media["video"]`` /
    ``media["audio"]`` from ``media/`` when a file is there (two clips in ``shared/data``), or
    ``raw_root/<video_id>/<clip_id>.mp4`` when ``raw_root`` is set and the file exists.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from pydantic import Field

from emofuse.datasets.base import (
    DATASETS,
    BadValue,
    DatasetRecipe,
    RecipeConfig,
    number,
    read_csv_table,
)
from emofuse.errors import InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

MSA_METRICS = ["non0_acc2", "has0_acc2", "non0_f1", "has0_f1", "acc7", "acc5", "mae", "corr"]
"""Metrics of the MOSI/MOSEI sentiment scheme, headline first."""

NPZ_SPLITS = {"train": "train_corpus", "val": "val_corpus", "test": "test_corpus"}
SENTIMENT_RANGE = (-3.0, 3.0)
"""The declared MOSI/MOSEI sentiment range (mean of annotators' -3…3 ratings)."""


def read_label_npz(
    path: Path,
    problems: dict[str, str] | None = None,
    sentiment_range: tuple[float, float] = SENTIMENT_RANGE,
) -> dict[str, tuple[str, float]]:
    """Read a MERTools ``label.npz`` (``{split}_corpus``: ``key → {'val': score}``).

    Only call this on the known dataset file: ``.npz`` dicts are pickled, so loading one runs
    the unpickler (``allow_pickle=True``).

    Every score is checked (a finite number inside ``sentiment_range``). A key whose score
    fails is left out of the result and, when ``problems`` is given, recorded there as
    ``key → "label.npz (train_corpus): sentiment nan is not a finite number"``.

    Returns:
        ``key → (split, sentiment)`` in file order, sentiment rounded to 6 decimals.

    Raises:
        InputError: naming the file when it is unreadable or lacks a split, or (without
            ``problems``) naming the first bad score.
    """
    import numpy as np

    low, high = sentiment_range
    try:
        with np.load(path, allow_pickle=True) as z:
            corpora = {split: z[key].item() for split, key in NPZ_SPLITS.items() if key in z.files}
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise InputError(path, f"cannot read label archive ({err})") from None
    missing = [NPZ_SPLITS[s] for s in NPZ_SPLITS if s not in corpora]
    if missing:
        raise InputError(path, f"missing array(s) {', '.join(missing)}")
    out: dict[str, tuple[str, float]] = {}
    for split, corpus in corpora.items():
        if not isinstance(corpus, dict):
            raise InputError(
                path, f"{NPZ_SPLITS[split]} holds a {type(corpus).__name__}, not key → entry"
            )
        for key, value in corpus.items():
            try:
                if not isinstance(value, dict):
                    raise BadValue(f"entry is a {type(value).__name__}, not {{'val': score}}")
                score = number(value.get("val"), "sentiment", low=low, high=high)
            except BadValue as err:
                where = f"{Path(path).name} ({NPZ_SPLITS[split]})"
                if problems is None:
                    raise InputError(path, f"{NPZ_SPLITS[split]} {key!r}: {err}") from None
                problems[str(key)] = f"{where}: {err}"
                continue
            out[str(key)] = (split, round(score, 6))
    return out


def raw_clip(raw_root: Path | None, video_id: str, clip_id: str) -> str | None:
    """``raw_root/<video_id>/<clip_id>.mp4`` when it exists (MMSA ``Raw/`` layout)."""
    if raw_root is None:
        return None
    p = raw_root / video_id / f"{clip_id}.mp4"
    return str(p) if p.is_file() else None


def check_raw_root(raw_root: Path | None, found: int) -> None:
    """Raise when ``raw_root`` was given but not a single clip was found under it."""
    if raw_root is not None and found == 0:
        raise InputError(
            raw_root, "no clip found; expected the MMSA layout <video_id>/<clip_id>.mp4"
        )


class MosiConfig(RecipeConfig):
    """Options of the ``mosi`` recipe."""

    raw_root: Path | None = Field(
        None,
        description="MMSA-style Raw/ folder holding <video_id>/<clip_id>.mp4; adds media['video'].",
    )


@DATASETS.register("mosi")
class Mosi(DatasetRecipe):
    """CMU-MOSI recipe (see the module docstring for the dataset card)."""

    folder = "mosi"
    Config = MosiConfig
    config: MosiConfig

    def spec(self) -> TaskSpec:
        """``mosi``: sentiment in [-3, 3], MOSI binning."""
        return TaskSpec(
            name="mosi",
            sentiment_range=SENTIMENT_RANGE,
            sentiment_scheme="mosi",
            metrics=list(MSA_METRICS),
        )

    def required_files(self) -> list[str]:
        """Labels and the derived transcript table."""
        return ["label.npz", "derived/mosi.csv"]

    def load(self) -> list[Utterance]:
        """Clips in ``derived/mosi.csv`` order; labels and splits checked against ``label.npz``.

        A clip whose score or clip id is unusable is reported in :attr:`skipped` and left out.
        """
        root = self.root
        bad: dict[str, str] = {}
        labels = read_label_npz(root / "label.npz", bad)
        path = root / "derived" / "mosi.csv"
        df = read_csv_table(path, keep_default_na=False, dtype=str)
        absent = [
            c for c in ("key", "video_id", "clip_id", "text", "text_zh") if c not in df.columns
        ]
        if absent:
            raise InputError(path, f"missing column(s) {', '.join(absent)}")
        unknown = sorted(set(df["key"]) ^ (set(labels) | set(bad)))
        if unknown:
            raise InputError(
                path, f"{len(unknown)} key(s) differ from label.npz, e.g. {unknown[:3]}"
            )
        for key, problem in bad.items():
            self.skip(key, "", problem)
        rows = []
        for line, row in enumerate(df.to_dict("records"), 2):
            if row["key"] in bad:
                continue
            try:
                clip = number(row["clip_id"], "clip_id", low=0, integer=True)
            except BadValue as err:
                self.skip(row["key"], self.where(path, line), str(err))
                continue
            rows.append((row, clip))
        clips: dict[str, list[tuple[int, int]]] = {}
        for i, (row, clip) in enumerate(rows):
            clips.setdefault(row["video_id"], []).append((clip, i))
        turn = {i: n for cs in clips.values() for n, (_, i) in enumerate(sorted(cs))}
        media_dir = root / "media"
        local = {p.name: str(p) for p in media_dir.iterdir()} if media_dir.is_dir() else {}
        raw = Path(self.config.raw_root).expanduser() if self.config.raw_root else None
        out, found = [], 0
        for i, (row, _) in enumerate(rows):
            key = row["key"]
            split, sentiment = labels[key]
            media: dict[str, str] = {}
            if f"{key}.mp4" in local:
                media["video"] = local[f"{key}.mp4"]
            if f"{key}.wav" in local:
                media["audio"] = local[f"{key}.wav"]
            found_clip = raw_clip(raw, row["video_id"], row["clip_id"])
            if found_clip:
                media["video"], found = found_clip, found + 1
            out.append(
                Utterance(
                    id=key,
                    dataset=self.name,
                    split=split,
                    dialogue_id=row["video_id"],
                    turn=turn[i],
                    media=media,  # type: ignore[arg-type]
                    text=row["text"].strip() or None,
                    language="en",
                    labels=Labels(sentiment=sentiment, extra={"text_zh": row["text_zh"] or None}),
                )
            )
        check_raw_root(raw, found)
        return out

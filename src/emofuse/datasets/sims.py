"""CH-SIMS and CH-SIMS v2(s) — Chinese multimodal sentiment analysis (movie/TV clips).

Dataset card
============

**What it is.** CH-SIMS (Yu et al., ACL 2020): 2,281 clips from 60 Chinese films and TV
series, each with one overall sentiment score in [-1, 1] (mean of 5 annotators; steps of
0.2) and — in the official release — separate text / audio / visual scores. CH-SIMS v2(s)
(Liu et al., ICMI 2022): 4,403 supervised clips, scores also in [-1, 1] (some -0.1 values).

**Licence.** Research use only (THUIAR terms; request access). The MERTools files emofuse
can read are Apache-2.0, "non-commercial use only".

**How to get it.** Official: https://github.com/thuiar/MMSA (cloud-drive links) →
``label.csv`` + ``Raw/<video_id>/<clip_id>.mp4``. MERBench: ``zeroQiaoba/MERTools``,
``MERBench/dataset/{sims,simsv2}-process/`` → ``label.npz`` + ``transcription-engchi-polish.csv``.

**Expected tree** (any one; checked in this order)::

    sims/derived/sims.csv                 key,video_id,clip_id,split,sentiment,text_zh,text_en
    sims/label.npz + sims/transcription-engchi-polish.csv     (MERBench)
    sims/label.csv                        video_id,clip_id,text,label,label_T,label_A,label_V,
                                          annotation,mode          (official THUIAR release)
    sims/Raw/<video_id>/<clip_id>.mp4     optional media (or the raw_root option)

(``simsv2`` likewise, with ``derived/simsv2.csv``.) ``label.npz`` holds pickled dicts and is
loaded with ``allow_pickle=True`` — only that known file, never a user-chosen path.

**Utterance.** id ``video_0001_0001``; ``dialogue_id`` = source video, ``turn`` = 0-based clip
order within it (clips of one video are neighbouring scenes; the task is not conversational);
``text`` Chinese (``text_language="en"`` picks the English translation; the other language goes
to ``labels.extra["text_en"|"text_zh"]``); ``labels.sentiment`` in [-1, 1]. With the official
``label.csv`` (``label_csv`` option, or ``<root>/label.csv``) the unimodal scores go to
``labels.extra`` as ``sentiment_text``, ``sentiment_audio``, ``sentiment_video``.
``media = {"video": Raw/<video_id>/<clip_id>.mp4}`` when ``raw_root`` (or ``<root>/Raw``) exists.

**Splits.** The standard MMSA train / val / test (``valid`` → ``val``):
CH-SIMS 1,368 / 456 / 457; CH-SIMS v2(s) 2,722 / 647 / 1,034.

**Label map.** Regression only: ``sentiment_scheme="sims"`` (Acc-2 bins [-1, 0] vs (0, 1],
Acc-3 at ±0.1, Acc-5 at ±0.1 and ±0.7; ``FIELD.md`` §D2); metrics acc2, acc3, acc5, f1, mae,
corr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from emofuse.datasets.base import DATASETS, BadValue, DatasetRecipe, RecipeConfig, number
from emofuse.datasets.folder import SPLIT_ALIASES, read_csv_rows
from emofuse.errors import InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

_NPZ_SPLITS = {"train_corpus": "train", "val_corpus": "val", "test_corpus": "test"}
SENTIMENT_RANGE = (-1.0, 1.0)
"""The declared CH-SIMS sentiment range, overall and unimodal."""
_LOW, _HIGH = SENTIMENT_RANGE
_UNIMODAL = {
    "label_T": "sentiment_text",
    "label_A": "sentiment_audio",
    "label_V": "sentiment_video",
}


class SimsConfig(RecipeConfig):
    """Options of the ``sims`` and ``simsv2`` recipes."""

    text_language: Literal["zh", "en"] = Field(
        "zh", description="Transcript language: original Chinese or the English translation."
    )
    raw_root: Path | None = Field(
        None,
        description="Folder of <video_id>/<clip_id>.mp4 clips (MMSA Raw/). Default: <root>/Raw.",
    )
    label_csv: Path | None = Field(
        None,
        description="Official CH-SIMS label.csv with label_T/label_A/label_V (unimodal scores). "
        "Default: <root>/label.csv when present.",
    )


@DATASETS.register("sims")
class SimsRecipe(DatasetRecipe):
    """CH-SIMS (see the module docstring for the dataset card)."""

    folder = "sims"
    Config = SimsConfig
    config: SimsConfig

    def spec(self) -> TaskSpec:
        """Sentiment regression in [-1, 1] under the SIMS metric scheme."""
        return TaskSpec(
            name=self.name,
            sentiment_range=SENTIMENT_RANGE,
            sentiment_scheme="sims",
            language=self.config.text_language,
            metrics=["acc2", "acc3", "acc5", "f1", "mae", "corr"],
        )

    def _layouts(self) -> list[list[str]]:
        return [
            [f"derived/{self.name}.csv"],
            ["label.npz", "transcription-engchi-polish.csv"],
            ["label.csv"],
        ]

    def check(self) -> None:
        """The root must hold one of the three layouts of the dataset card."""
        root = self.root
        if any(all((root / f).is_file() for f in files) for files in self._layouts()):
            return
        options = " or ".join(" + ".join(files) for files in self._layouts())
        raise InputError(root, f"not a {self.name} root: missing {options}")

    def load(self) -> list[Utterance]:
        """Clips of every split, in corpus order."""
        root = self.root
        if (root / f"derived/{self.name}.csv").is_file():
            rows = self._from_derived(root / f"derived/{self.name}.csv")
        elif (root / "label.npz").is_file():
            rows = self._from_npz(root / "label.npz", root / "transcription-engchi-polish.csv")
        else:
            rows = self._from_official(root / "label.csv")
        unimodal = self._unimodal(root)
        rows = [r for r in rows if r["key"] not in self.skipped]
        raw = self._raw_root(root)
        order: dict[str, list[str]] = {}
        for r in sorted(rows, key=lambda r: (r["video_id"], r["clip_id"])):
            order.setdefault(r["video_id"], []).append(r["clip_id"])
        turn = {(v, c): i for v, clips in order.items() for i, c in enumerate(clips)}
        lang = self.config.text_language
        other = "en" if lang == "zh" else "zh"
        out = []
        missing = []
        for r in rows:
            media = {}
            if raw is not None:
                clip = raw / r["video_id"] / f"{r['clip_id']}.mp4"
                if clip.is_file():
                    media["video"] = str(clip)
                else:
                    missing.append(clip)
            extra: dict[str, str | float | int | None] = {f"text_{other}": r[f"text_{other}"]}
            extra.update(unimodal.get(r["key"], {}))
            out.append(
                Utterance(
                    id=r["key"],
                    dataset=self.name,
                    split=r["split"],
                    dialogue_id=r["video_id"],
                    turn=turn[(r["video_id"], r["clip_id"])],
                    media=media,
                    text=r[f"text_{lang}"],
                    language=lang,
                    labels=Labels(sentiment=r["sentiment"], extra=extra),
                )
            )
        if missing:
            raise InputError(
                raw, f"{len(missing)} of {len(rows)} clips are missing, e.g. {missing[0]}"
            )
        return out

    # -- sources ---------------------------------------------------------------------------
    # Every number read is checked with the shared ``number`` rule; a clip with a bad one is
    # reported in ``skipped`` (its key → file, line and problem) and left out by ``load``.
    def _from_derived(self, path: Path) -> list[dict[str, Any]]:
        lines: list[int] = []
        header, rows = read_csv_rows(path, lines)
        need = ["key", "video_id", "clip_id", "split", "sentiment", "text_zh", "text_en"]
        _require(path, header, need)
        out = []
        for n, row in enumerate(rows, 1):
            try:
                sentiment = number(row["sentiment"], "sentiment", low=_LOW, high=_HIGH)
            except BadValue as err:
                self.skip(row["key"], self.where(path, lines[n - 1]), str(err))
                continue
            out.append(
                dict(
                    key=row["key"],
                    video_id=row["video_id"],
                    clip_id=row["clip_id"],
                    split=_split(path, lines[n - 1], row["split"]),
                    sentiment=sentiment,
                    text_zh=row["text_zh"] or None,
                    text_en=row["text_en"] or None,
                )
            )
        return out

    def _from_npz(self, npz: Path, transcripts: Path) -> list[dict[str, Any]]:
        import pickle

        import numpy as np

        header, rows = read_csv_rows(transcripts)
        _require(transcripts, header, ["name", "chinese", "english"])
        text = {r["name"]: r for r in rows}
        try:
            with np.load(npz, allow_pickle=True) as z:  # known MERBench file (dataset card)
                corpora = {k: z[k].item() for k in _NPZ_SPLITS if k in z.files}
        except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
            raise InputError(npz, f"not a MERBench label.npz ({err})") from None
        if len(corpora) != len(_NPZ_SPLITS):
            raise InputError(npz, f"needs keys {sorted(_NPZ_SPLITS)}")
        out = []
        for corpus, split in _NPZ_SPLITS.items():
            if not isinstance(corpora[corpus], dict):
                raise InputError(npz, f"{corpus} holds a {type(corpora[corpus]).__name__}")
            for key, ann in corpora[corpus].items():
                key = str(key)
                try:
                    video_id, sep, clip_id = key.rpartition("_")
                    if not sep or not video_id:
                        raise BadValue("key is not <video_id>_<clip_id>")
                    if not isinstance(ann, dict):
                        raise BadValue(f"entry is a {type(ann).__name__}, not {{'val': score}}")
                    sentiment = number(ann.get("val"), "sentiment", low=_LOW, high=_HIGH)
                except BadValue as err:
                    self.skip(key, f"{self.where(npz)} ({corpus})", str(err))
                    continue
                t = text.get(key, {})
                out.append(
                    dict(
                        key=key,
                        video_id=video_id,
                        clip_id=clip_id,
                        split=split,
                        sentiment=sentiment,
                        text_zh=t.get("chinese") or None,
                        text_en=t.get("english") or None,
                    )
                )
        return out

    def _from_official(self, path: Path) -> list[dict[str, Any]]:
        lines: list[int] = []
        header, rows = read_csv_rows(path, lines)
        _require(path, header, ["video_id", "clip_id", "text", "label", "mode"])
        out = []
        for n, row in enumerate(rows, 1):
            item = f"{row['video_id']}_{row['clip_id']}"
            try:
                clip = _clip_id(row["clip_id"])
                item = f"{row['video_id']}_{clip}"
                sentiment = number(row["label"], "label", low=_LOW, high=_HIGH)
            except BadValue as err:
                self.skip(item, self.where(path, lines[n - 1]), str(err))
                continue
            out.append(
                dict(
                    key=f"{row['video_id']}_{clip}",
                    video_id=row["video_id"],
                    clip_id=clip,
                    split=_split(path, lines[n - 1], row["mode"]),
                    sentiment=sentiment,
                    text_zh=row["text"] or None,
                    text_en=None,
                )
            )
        return out

    def _unimodal(self, root: Path) -> dict[str, dict[str, float]]:
        path = self.config.label_csv
        if path is None:
            path = root / "label.csv"
            if not path.is_file():
                return {}
        elif not path.is_absolute():
            path = root / path
        lines: list[int] = []
        header, rows = read_csv_rows(path, lines)
        _require(path, header, ["video_id", "clip_id", *_UNIMODAL])
        out = {}
        for n, row in enumerate(rows, 1):
            item = f"{row['video_id']}_{row['clip_id']}"
            try:
                item = f"{row['video_id']}_{_clip_id(row['clip_id'])}"
                scores = {
                    name: number(row[col], col, low=_LOW, high=_HIGH)
                    for col, name in _UNIMODAL.items()
                }
            except BadValue as err:
                self.skip(item, self.where(path, lines[n - 1]), str(err))
                continue
            out[item] = scores
        return out

    def _raw_root(self, root: Path) -> Path | None:
        raw = self.config.raw_root
        if raw is None:
            return root / "Raw" if (root / "Raw").is_dir() else None
        raw = raw if raw.is_absolute() else root / raw
        if (raw / "Raw").is_dir():
            raw = raw / "Raw"
        if not raw.is_dir():
            raise InputError(raw, "raw_root does not exist or is not a folder")
        return raw


@DATASETS.register("simsv2")
class SimsV2Recipe(SimsRecipe):
    """CH-SIMS v2(s), the supervised part of CH-SIMS v2 (same card as ``sims``)."""

    folder = "simsv2"


def _require(path: Path, header: list[str], need: list[str]) -> None:
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; header is {header}")


def _split(path: Path, line: int, value: str) -> str:
    split = SPLIT_ALIASES.get(value.lower())
    if split is None:
        raise InputError(path, f"line {line}: unknown split {value!r}")
    return split


def _clip_id(value: str) -> str:
    """Official files write clip ids as integers (``1``); MERBench keys pad them (``0001``)."""
    return f"{number(value, 'clip_id', low=0, integer=True):04d}"

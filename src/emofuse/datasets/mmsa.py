"""MMSA feature pickles — import and export of the multimodal-sentiment interchange format.

Dataset card
============

What it is
    Not a corpus but a file format: the processed-feature pickles of thuiar/MMSA
    (``MOSI/Processed/{aligned,unaligned}_50.pkl``, ``MOSEI/...``,
    ``SIMS/Processed/unaligned_39.pkl``)
    that most multimodal sentiment analysis code reads (``FIELD.md`` §D1). This module reads one
    into :class:`~emofuse.records.Utterance` records plus per-utterance feature arrays, writes
    one from records and arrays, and registers the recipe ``mmsa`` that yields the records.

Licence
    That of the corpus the pickle was made from (CMU-MOSI/MOSEI: CMU research terms; CH-SIMS:
    research use). MMSA itself is MIT.

How to get it
    Links and SHA-256 sums in https://github.com/thuiar/MMSA (README, "Datasets"); or produce
    one with MMSA-FET, or with :func:`write_mmsa_pickle`.

Trust
    A pickle can run arbitrary code when loaded. **Only load pickles you trust** (verify the
    SHA-256 published with the MMSA release). Pickle is accepted here only because it is the
    field's interchange format; emofuse never writes pickles for anything else.

Layout (top-level dict)::

    {"train" | "valid" | "test": {
        "id":                    ["<video_id>$_$<clip_id>", ...],
        "raw_text":              [str, ...],
        "text":                  float array (N, L, 768) or (N, 3, L) for BERT inputs,
        "text_bert":             optional, (N, 3, L) token ids / masks / segment ids,
        "audio":                 float array (N, T_a, d_a), zero-padded,
        "vision":                float array (N, T_v, d_v), zero-padded,
        "audio_lengths":         [int, ...],  "vision_lengths": [int, ...],   (optional)
        "annotations":           ["Negative" | "Neutral" | "Positive", ...],
        "classification_labels": Negative 0 / Neutral 1 / Positive 2,
        "regression_labels":     sentiment (MOSI/MOSEI [-3, 3], SIMS [-1, 1]),
        "regression_labels_T|A|V": optional SIMS unimodal sentiments,
    }}

Splits
    ``train``, ``valid`` (→ ``val``), ``test``, as stored in the pickle.

Label map
    ``labels.sentiment`` = ``regression_labels``; ``labels.sentiment_class`` = ``annotations``
    lower-cased (``negative``/``neutral``/``positive``); SIMS unimodal scores go to
    ``labels.extra`` as ``sentiment_text``/``sentiment_audio``/``sentiment_vision``.

Records
    ``id`` = ``<video_id>_<clip_id>`` (the MERTools key style, so records line up with the
    ``mosi``/``mosei`` recipes; ``/`` and surrounding spaces in MMSA ids become ``__`` and are
    stripped), ``dialogue_id`` = ``video_id``, ``turn`` = rank of the clip in its
    video, ``labels.extra["mmsa_id"]`` = the original id. Features per id:
    ``{"text": (L, d) or (3, L), "audio": (audio_length, d_a), "vision": (vision_length, d_v)}``
    with padding removed (plus ``"text_bert"`` when present); a pickle without ``*_lengths``
    (aligned data) is read whole, as MMSA's loader reads it. A non-finite sentiment label is an
    error naming the split and item. :func:`write_mmsa_pickle` pads back to the longest
    sequence (or ``seq_len``). Models train on the arrays through the ``mmsa`` extractor
    (:mod:`emofuse.features.mmsa`, ``docs/mmsa.md``).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from emofuse.datasets.base import DATASETS, BadValue, DatasetRecipe, RecipeConfig, number
from emofuse.errors import InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

if TYPE_CHECKING:
    import numpy as np

SPLIT_NAMES = {"train": "train", "valid": "val", "test": "test"}
"""MMSA split key → emofuse split."""
_MMSA_SPLIT = {v: k for k, v in SPLIT_NAMES.items()}

REQUIRED_KEYS = (
    "id",
    "raw_text",
    "text",
    "audio",
    "vision",
    "annotations",
    "classification_labels",
    "regression_labels",
)
LENGTH_KEYS = ("audio_lengths", "vision_lengths")
"""Optional: without them (aligned pickles) sequences are read whole, as MMSA's loader does."""
_UNIMODAL = {"T": "sentiment_text", "A": "sentiment_audio", "V": "sentiment_vision"}
_CLASSES = ["Negative", "Neutral", "Positive"]
SIMS_METRICS = ["acc2", "acc3", "acc5", "f1", "mae", "corr"]
MOSI_METRICS = ["non0_acc2", "has0_acc2", "non0_f1", "has0_f1", "acc7", "acc5", "mae", "corr"]


def read_mmsa_pickle(
    path: str | os.PathLike[str], dataset: str = "mmsa"
) -> tuple[dict[str, list[Utterance]], dict[str, dict[str, np.ndarray]]]:
    """Read an MMSA feature pickle. Only load pickles you trust (see the module docstring).

    Args:
        path: The ``.pkl`` file.
        dataset: Value of ``Utterance.dataset`` for the records.

    Returns:
        ``(split → utterances, utterance id → {"text", "audio", "vision"[, "text_bert"]} arrays)``;
        audio and vision are cut to their stored lengths.

    Raises:
        InputError: naming the file when it is unreadable or not in the MMSA layout.
    """
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "MMSA pickle does not exist")
    try:
        with p.open("rb") as fh:
            data = pickle.load(fh)
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        ValueError,
        OSError,
    ) as err:
        raise InputError(p, f"not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not set(data) & set(SPLIT_NAMES):
        raise InputError(
            p, f"expected a dict with keys {list(SPLIT_NAMES)}, found {type(data).__name__}"
        )
    splits: dict[str, list[Utterance]] = {}
    features: dict[str, dict[str, np.ndarray]] = {}
    for key, split in SPLIT_NAMES.items():
        if key not in data:
            continue
        block = data[key]
        missing = [k for k in REQUIRED_KEYS if k not in block]
        if missing:
            raise InputError(p, f"split {key!r} lacks {', '.join(missing)}")
        n = len(block["id"])
        for k in (*REQUIRED_KEYS, *(k for k in LENGTH_KEYS if k in block)):
            if len(block[k]) != n:
                raise InputError(
                    p, f"split {key!r}: {k!r} has {len(block[k])} entries, 'id' has {n}"
                )
        ids = [str(i) for i in block["id"]]
        videos = [_clean(i.split("$_$", 1)[0]) for i in ids]
        clips = [_clean(i.split("$_$", 1)[1]) if "$_$" in i else "0" for i in ids]
        turn_of = _turns(videos, clips)
        utts = []
        labels = np.asarray(block["regression_labels"], dtype=np.float64).reshape(n, -1)[:, 0]
        bad = np.flatnonzero(~np.isfinite(labels))
        if bad.size:
            j = int(bad[0])
            raise InputError(
                p,
                f"split {key!r}: {bad.size} regression label(s) are not finite (first: item {j}, "
                f"id {ids[j]!r}, value {labels[j]})",
            )
        for j, mmsa_id in enumerate(ids):
            uid = f"{videos[j]}_{clips[j]}" if "$_$" in mmsa_id else _clean(mmsa_id)
            extra: dict[str, str | float | int | None] = {"mmsa_id": mmsa_id}
            for m, name in _UNIMODAL.items():
                if f"regression_labels_{m}" in block:
                    extra[name] = round(float(block[f"regression_labels_{m}"][j]), 6)
            annotation = str(block["annotations"][j]).strip().lower() or None
            text = str(block["raw_text"][j])
            utts.append(
                Utterance(
                    id=uid,
                    dataset=dataset,
                    split=split,
                    dialogue_id=videos[j],
                    turn=turn_of[j],
                    text=text or None,
                    labels=Labels(
                        sentiment=round(float(labels[j]), 6),
                        sentiment_class=annotation,
                        extra=extra,
                    ),
                )
            )
            audio, vision = np.asarray(block["audio"][j]), np.asarray(block["vision"][j])
            try:
                if "audio_lengths" in block:
                    audio = audio[: _length(block["audio_lengths"][j], "audio_lengths", audio)]
                if "vision_lengths" in block:
                    vision = vision[: _length(block["vision_lengths"][j], "vision_lengths", vision)]
            except BadValue as err:
                raise InputError(p, f"split {key!r}: item {j}, id {mmsa_id!r}: {err}") from None
            feats = {"text": np.asarray(block["text"][j]), "audio": audio, "vision": vision}
            if "text_bert" in block:
                feats["text_bert"] = np.asarray(block["text_bert"][j])
            if uid in features:
                raise InputError(p, f"duplicate id {mmsa_id!r}")
            features[uid] = feats
        splits[split] = utts
    return splits, features


def write_mmsa_pickle(
    path: str | os.PathLike[str],
    utterances_by_split: dict[str, list[Utterance]],
    features: dict[str, dict[str, np.ndarray]],
    *,
    seq_len: int | None = None,
) -> Path:
    """Write utterances and their features as an MMSA pickle (atomically).

    Args:
        path: Output ``.pkl``.
        utterances_by_split: ``"train"``/``"val"``/``"test"`` → utterances (``val`` is written as
            ``valid``); each needs ``labels.sentiment``.
        features: ``utterance id → {"text", "audio", "vision"}`` arrays (``text`` of one shape for
            all utterances; ``audio``/``vision`` as ``(T, d)``, zero-padded here).
        seq_len: Pad/truncate audio and vision to this length (MMSA uses 50 for MOSI/MOSEI, 39 for
            SIMS); default: the longest sequence of each split.

    Raises:
        InputError: an utterance lacks a sentiment or a feature, a label or feature value is not
            finite or overflows float32, or shapes disagree.
    """
    import numpy as np

    p = Path(path)
    back = {v: k for k, v in SPLIT_NAMES.items()}
    out: dict[str, dict[str, Any]] = {}
    for split, utts in utterances_by_split.items():
        if split not in back:
            raise InputError(
                p, f"split {split!r} cannot be written; MMSA splits are train/val/test"
            )
        block: dict[str, Any] = {k: [] for k in ("id", "raw_text", "annotations")}
        texts, audios, visions, berts, sentiments = [], [], [], [], []
        unimodal: dict[str, list[float]] = {m: [] for m in _UNIMODAL}
        for u in utts:
            if u.labels.sentiment is None:
                raise InputError(u.id, "has no labels.sentiment; MMSA needs regression_labels")
            f = features.get(u.id)
            if f is None or any(k not in f for k in ("text", "audio", "vision")):
                raise InputError(
                    u.id, "needs 'text', 'audio' and 'vision' features to be written as MMSA"
                )
            mmsa_id = u.labels.extra.get("mmsa_id")
            if not isinstance(mmsa_id, str):
                video, _, clip = u.id.rpartition("_")
                mmsa_id = f"{video}$_${clip}" if video else f"{u.id}$_$0"
            block["id"].append(mmsa_id)
            block["raw_text"].append(u.text or "")
            try:
                s = number(u.labels.sentiment, "labels.sentiment")
                for name in _UNIMODAL.values():
                    if isinstance(u.labels.extra.get(name), int | float):
                        number(u.labels.extra[name], name)
            except BadValue as err:
                raise InputError(u.id, f"{err}; MMSA stores it as float32") from None
            cls = 0 if s < 0 else (1 if s == 0 else 2)
            block["annotations"].append((u.labels.sentiment_class or _CLASSES[cls]).capitalize())
            sentiments.append(s)
            texts.append(_float32(f["text"], u.id, "text"))
            audios.append(_float32(f["audio"], u.id, "audio"))
            visions.append(_float32(f["vision"], u.id, "vision"))
            if "text_bert" in f:
                berts.append(np.asarray(f["text_bert"]))
            for m, name in _UNIMODAL.items():
                v = u.labels.extra.get(name)
                if isinstance(v, int | float):
                    unimodal[m].append(float(v))
        if len({t.shape for t in texts}) > 1:
            raise InputError(
                p, f"split {split!r}: text features differ in shape; pad them to one length first"
            )
        n = len(utts)
        block["text"] = np.stack(texts) if texts else np.zeros((0, 0, 0), np.float32)
        if berts and len(berts) == n:
            block["text_bert"] = np.stack(berts)
        block["audio"], block["audio_lengths"] = _pad(audios, seq_len, p, split, "audio")
        block["vision"], block["vision_lengths"] = _pad(visions, seq_len, p, split, "vision")
        block["regression_labels"] = np.asarray(sentiments, dtype=np.float32)
        block["classification_labels"] = np.asarray(
            [0 if s < 0 else (1 if s == 0 else 2) for s in sentiments], dtype=np.float32
        )
        for m, vals in unimodal.items():
            if vals and len(vals) == n:
                block[f"regression_labels_{m}"] = np.asarray(vals, dtype=np.float32)
        out[back[split]] = block
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        pickle.dump(out, fh, protocol=4)
    os.replace(tmp, p)
    return p


def _pad(
    arrays: list[np.ndarray], seq_len: int | None, path: Path, split: str, kind: str
) -> tuple[np.ndarray, list[int]]:
    import numpy as np

    if not arrays:
        return np.zeros((0, seq_len or 0, 0), np.float32), []
    if any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) > 1:
        raise InputError(path, f"split {split!r}: {kind} features must all be (T, d) with one d")
    length = seq_len if seq_len is not None else max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), length, arrays[0].shape[1]), np.float32)
    lengths = []
    for i, a in enumerate(arrays):
        k = min(length, a.shape[0])
        out[i, :k] = a[:k]
        lengths.append(k)
    return out, lengths


def _float32(values: Any, uid: str, kind: str) -> np.ndarray:
    """``values`` as float32; NaN, infinities and values that overflow float32 are refused."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InputError(
            uid,
            f"{kind} features hold {int(bad.sum())} value(s) that are NaN, infinite or "
            "overflow float32; MMSA stores float32",
        )
    return arr


def _length(value: Any, name: str, array: np.ndarray) -> int:
    """A stored sequence length: a whole number in ``0 … len(array)``."""
    return number(value, name, low=0, high=len(array), integer=True)


def _clean(part: str) -> str:
    """An id part that is safe as a file-name stem (MMSA ids may hold ``/`` or spaces)."""
    import re

    return re.sub(r"[/\\\t\r\n]+", "__", part).strip().strip("_") or "0"


def _turns(videos: list[str], clips: list[str]) -> list[int]:
    """Rank of each clip within its video (numeric clip ids sort numerically)."""

    def order(c: str) -> tuple[int, float | str]:
        try:
            return (0, float(c.replace("_", ".")))
        except ValueError:
            return (1, c)

    by_video: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        by_video.setdefault(v, []).append(i)
    turns = [0] * len(videos)
    for idx in by_video.values():
        for rank, i in enumerate(sorted(idx, key=lambda i: order(clips[i]))):
            turns[i] = rank
    return turns


class MmsaConfig(RecipeConfig):
    """Options of the ``mmsa`` recipe (``root`` is unused; give ``pickle``)."""

    pickle: Path = Field(..., description="The MMSA .pkl file (only load pickles you trust).")

    @model_validator(mode="after")
    def _absolute(self) -> MmsaConfig:
        # recorded in run configs: must resolve from any working folder
        object.__setattr__(self, "pickle", self.pickle.expanduser().absolute())
        return self

    dataset_name: str = Field(
        "mmsa", description="Task name for the TaskSpec (e.g. 'mosi', 'sims')."
    )
    scheme: Literal["mosi", "sims"] = Field(
        "mosi", description="mosi: sentiment in [-3,3]; sims: in [-1,1]."
    )
    language: str = Field("en", description="Language of raw_text (use 'zh' for CH-SIMS).")


@DATASETS.register("mmsa")
class Mmsa(DatasetRecipe):
    """Recipe over an MMSA feature pickle (see the module docstring)."""

    folder = None
    Config = MmsaConfig
    config: MmsaConfig

    def spec(self) -> TaskSpec:
        """Sentiment regression under the configured scheme."""
        sims = self.config.scheme == "sims"
        return TaskSpec(
            name=self.config.dataset_name,
            sentiment_range=(-1.0, 1.0) if sims else (-3.0, 3.0),
            sentiment_scheme=self.config.scheme,
            sentiment_classes=["negative", "neutral", "positive"],
            language=self.config.language,
            metrics=list(SIMS_METRICS if sims else MOSI_METRICS),
        )

    def source_files(self) -> list[Path]:
        """The pickle."""
        return [Path(self.config.pickle)]

    def check(self) -> None:
        """The pickle must exist (there is no root folder)."""
        p = Path(self.config.pickle).expanduser()
        if not p.is_file():
            raise InputError(p, "MMSA pickle does not exist")

    def load(self) -> list[Utterance]:
        """Utterances of every split in the pickle.

        A regression label (or a SIMS unimodal one) outside the scheme's range ([-3, 3] for
        ``mosi``, [-1, 1] for ``sims``) or not finite is reported in :attr:`skipped` and the
        utterance left out (a non-finite overall label already stops :func:`read_mmsa_pickle`).

        The feature arrays are read by the ``mmsa`` extractor
        (:mod:`emofuse.features.mmsa`), so models train on them like on any cached features.
        """
        path = Path(self.config.pickle).expanduser()
        splits, _ = read_mmsa_pickle(path, dataset=self.name)
        lang = self.config.language
        low, high = self.spec().sentiment_range or (None, None)
        out = []
        for split, utts in splits.items():
            for u in utts:
                try:
                    number(u.labels.sentiment, "regression label", low=low, high=high)
                    for name in _UNIMODAL.values():
                        if name in u.labels.extra:
                            number(u.labels.extra[name], name, low=low, high=high)
                except BadValue as err:  # reported, and the utterance left out
                    mmsa_id = u.labels.extra["mmsa_id"]
                    self.skip(u.id, f"{path.name} ({_MMSA_SPLIT[split]} {mmsa_id!r})", str(err))
                    continue
                out.append(u.model_copy(update={"language": lang}))
        return out

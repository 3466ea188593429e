"""From cached features to model batches: feature references, in-memory tables, collation, samplers.

A model reads, per modality, one output of one extractor, named ``"<extractor>:<output>"``
(e.g. ``"minilm:tokens"``, ``"egemaps:functionals"``). :class:`FeatureTable` makes sure those
arrays exist in the feature store (extracting what is missing), loads them into memory once,
and :func:`collate` turns a list of its items into a batch that follows the contract in
:mod:`emofuse.models.base`.

Two batch samplers cover the two kinds of models:

* :class:`UtteranceBatchSampler` — shuffled utterances, for models that see one clip at a time;
* :class:`DialogueBatchSampler` — whole dialogues packed to about ``batch_size`` utterances, for
  conversational models (``FusionModel.conversational``).

Both shuffle deterministically from ``(seed, epoch)`` and split their batches between the
processes of a distributed run, so a resumed or a two-process run sees the same data order.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from emofuse.config import Config, validate_config
from emofuse.errors import ConfigError, EmofuseError, InputError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, has_input
from emofuse.features.pipeline import extract_features
from emofuse.features.store import FeatureStore
from emofuse.features.text import context_chars
from emofuse.models.base import IGNORE_INDEX, MODALITIES, InputSpec
from emofuse.records import DialogueContext, Utterance, with_dialogue_context
from emofuse.spec import TaskSpec

DEFAULT_MAX_LEN = {"text": 96, "audio": 300, "face": 300}
"""Steps kept per sequence feature when a :class:`FeatureRef` sets no ``max_len``: 96 word
pieces of text; 300 frames of audio (3 s of 10 ms LLDs) or face tracks."""

LoadProgress = Callable[[str, int, int], None]
"""Called as ``progress(extractor_name, finished_now, total)`` while features are extracted."""

Tokenizer = Callable[[list[str], list[DialogueContext | None]], Mapping[str, Tensor]]
"""``tokenizer(texts, contexts) -> {"input_ids": (N, L), "attention_mask": (N, L), ...}``
(optionally ``token_type_ids``; ``contexts`` holds each utterance's
:class:`~emofuse.records.DialogueContext` or ``None``)."""


class FeatureRef(Config):
    """One extractor output read by a model, with the extractor's options.

    In YAML, a string ``"minilm:tokens"`` is short for ``{extractor: minilm, output: tokens}``.

    Example:
        >>> FeatureRef.parse("egemaps:lld").key
        'egemaps:lld'
    """

    extractor: str = Field(description="Extractor registry name (`emofuse features list`).")
    output: str = Field(description="One of the extractor's declared outputs.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extractor config options (they key the feature cache)."
    )
    max_len: int | None = Field(
        None,
        gt=0,
        description="Steps kept of a sequence feature; default 96 for text, 300 for audio/face.",
    )
    shorten: Literal["head", "even"] | None = Field(
        None,
        description="How a longer sequence is shortened: keep the first steps ('head', the default "
        "for text) or evenly spaced steps over the whole utterance ('even', the default for "
        "audio and face).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return _split_ref(data) if isinstance(data, str) else data

    @classmethod
    def parse(
        cls, value: str | Mapping[str, Any] | FeatureRef, source: str = "feature"
    ) -> FeatureRef:
        """Validate ``"extractor:output"`` or a mapping; errors name ``source``."""
        if isinstance(value, FeatureRef):
            return value
        if isinstance(value, str):
            try:
                value = _split_ref(value)
            except ValueError as err:
                raise ConfigError(f"{source}: {err}") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: expected 'extractor:output' or a mapping, got {value!r}")
        return validate_config(cls, dict(value), source)

    @property
    def key(self) -> str:
        """``"extractor:output"``, as stored in :attr:`InputSpec.feature`."""
        return f"{self.extractor}:{self.output}"

    def build(self) -> FeatureExtractor:
        """The configured extractor (cheap: models load only when extracting)."""
        cls = EXTRACTORS.get(self.extractor)
        return cls(validate_config(cls.Config, self.options, f"extractor {self.extractor!r}"))


def _split_ref(text: str) -> dict[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ValueError(f"feature {text!r} must look like 'extractor:output'")
    return {"extractor": parts[0].strip(), "output": parts[1].strip()}


def parse_features(
    features: Mapping[str, str | Mapping[str, Any] | FeatureRef], source: str = "features"
) -> dict[str, FeatureRef]:
    """``{modality: ref}`` from config values; unknown modalities are errors."""
    out = {}
    for modality, value in features.items():
        if modality not in MODALITIES:
            raise ConfigError(f"{source}: unknown modality {modality!r}; known: {list(MODALITIES)}")
        out[modality] = FeatureRef.parse(value, f"{source}.{modality}")
    return dict(sorted(out.items()))


def input_specs(refs: Mapping[str, FeatureRef]) -> dict[str, InputSpec]:
    """``{modality: InputSpec}`` from the outputs each extractor declares.

    Raises:
        ConfigError: an extractor reads another modality, or has no such output.
    """
    specs = {}
    for modality, ref in refs.items():
        ext = ref.build()
        if ext.modality != modality:
            raise ConfigError(
                f"features.{modality}: extractor {ref.extractor!r} reads {ext.modality}, "
                f"not {modality}"
            )
        outputs = ext.outputs()
        if ref.output not in outputs:
            raise ConfigError(
                f"features.{modality}: extractor {ref.extractor!r} has no output {ref.output!r}; "
                f"outputs: {', '.join(outputs)}"
                + (" (enable it in the extractor options)" if ref.output == "tokens" else "")
            )
        out = outputs[ref.output]
        specs[modality] = InputSpec(feature=ref.key, dim=out.dim, kind=out.kind)
    return specs


@dataclass
class Item:
    """One utterance ready for collation.

    Attributes:
        utt: The record (ids, dialogue, text, labels).
        features: ``modality → (T, D)`` float32; a modality it lacks is absent.
        emotion: Class index, or :data:`IGNORE_INDEX` when unlabelled.
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
    """

    spec: TaskSpec
    inputs: dict[str, InputSpec]
    items: list[Item] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

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
        store: FeatureStore,
        spec: TaskSpec,
        *,
        extract_missing: bool = True,
        on_failure: Literal["skip", "missing"] = "skip",
        progress: LoadProgress | None = None,
        batch_size: int | None = None,
    ) -> FeatureTable:
        """Extract what the store lacks, then load every utterance's arrays.

        Args:
            utterances: What to load (ids unique).
            refs: ``modality → FeatureRef``.
            store: The feature store.
            spec: The task; labels outside it make an utterance skipped.
            extract_missing: Run the extractors for utterances without cached features;
                when ``False`` those utterances are skipped.
            on_failure: An utterance whose input exists but could not be extracted is
                ``"skip"``-ped, or keeps its other modalities with this one ``"missing"``.
                An utterance left with no modality at all is always skipped.
            progress: Optional callback, see :data:`LoadProgress`.
            batch_size: Utterances per extraction batch (default: the extractor's own).

        Returns:
            The table; ``skipped`` says which utterances were left out and why.
        """
        if not refs:
            raise ConfigError("no features given: map at least one modality to 'extractor:output'")
        inputs = input_specs(refs)
        utts = list(utterances)
        problems: dict[str, list[str]] = {}
        arrays: dict[str, dict[str, np.ndarray]] = {u.id: {} for u in utts}
        for modality, ref in refs.items():
            ext = ref.build()
            with_input = ext.prepare([u for u in utts if has_input(u, modality)])
            if extract_missing and with_input:
                total = len(with_input)
                report = extract_features(
                    with_input,
                    ext,
                    store,
                    batch_size=batch_size,
                    progress=(lambda n, _e=ext.name, _t=total: progress(_e, n, _t))
                    if progress
                    else None,
                )
                failed = report.failed
            else:
                failed = {}
            cache = store.cache(ext)
            index = cache.index()
            max_len = ref.max_len or DEFAULT_MAX_LEN[modality]
            shorten = ref.shorten or ("head" if modality == "text" else "even")
            kind = inputs[modality].kind
            for u in with_input:
                problem = failed.get(u.id)
                row = index.get(u.id)
                if problem is None and (row is None or row.sig != ext.signature(u)):
                    problem = "no cached features (run `emofuse features extract`)"
                if problem is None:
                    try:
                        arr = cache.get(u.id)[ref.output]
                    except (KeyError, InputError) as err:
                        problem = str(err)
                    else:
                        arrays[u.id][modality] = _fit_length(
                            np.asarray(arr, dtype=np.float32), kind, max_len, shorten
                        )
                if problem is not None:
                    problems.setdefault(u.id, []).append(f"{ref.key}: {problem}")
        table = cls(spec, inputs)
        for u in utts:
            feats = arrays[u.id]
            why = problems.get(u.id, [])
            if (why and on_failure == "skip") or not feats:
                table.skipped[u.id] = "; ".join(why) or (f"no input for any of {', '.join(refs)}")
                continue
            try:
                table.items.append(_item(u, feats, spec))
            except InputError as err:
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


def _item(utt: Utterance, feats: dict[str, np.ndarray], spec: TaskSpec) -> Item:
    emotion = IGNORE_INDEX
    if spec.emotion_labels and utt.labels.emotion is not None:
        try:
            emotion = spec.emotion_index(utt.labels.emotion)
        except KeyError as err:
            raise InputError(utt.id, f"emotion label {err.args[0]}") from None
    sentiment = math.nan
    if spec.sentiment_range is not None and utt.labels.sentiment is not None:
        sentiment = float(utt.labels.sentiment)
    return Item(utt, feats, emotion, sentiment)


def collate(
    items: Sequence[Item],
    spec: TaskSpec,
    inputs: Mapping[str, InputSpec],
    tokenizer: Tokenizer | None = None,
    *,
    indices: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """Stack items into a batch that follows the contract of :mod:`emofuse.models.base`.

    Args:
        items: The utterances of the batch.
        spec: The task (which targets to include).
        inputs: ``modality → InputSpec``; every modality gets a tensor and a mask (all ``False``
            for the items that lack it).
        tokenizer: When the model fine-tunes its text encoder: turns the texts into
            ``text_input_ids`` / ``text_attention_mask`` (``text_present`` says which rows had text).
        indices: Positions of the items in their table, returned as ``batch["index"]``.

    Returns:
        The batch dict of tensors.
    """
    n = len(items)
    if n == 0:
        raise EmofuseError("cannot collate an empty batch")
    batch: dict[str, Tensor] = {}
    for modality, spec_in in inputs.items():
        arrs = [it.features.get(modality) for it in items]
        t = max([a.shape[0] for a in arrs if a is not None], default=1)
        x = np.zeros((n, t, spec_in.dim), np.float32)
        mask = np.zeros((n, t), bool)
        for i, a in enumerate(arrs):
            if a is None:
                continue
            if a.shape[-1] != spec_in.dim:
                raise InputError(
                    items[i].utt.id,
                    f"{modality} feature has dim {a.shape[-1]}, expected {spec_in.dim}",
                )
            x[i, : a.shape[0]] = a
            mask[i, : a.shape[0]] = True
        batch[modality] = torch.from_numpy(x)
        batch[f"{modality}_mask"] = torch.from_numpy(mask)
    if any(it.utt.dialogue_id is not None for it in items):
        groups: dict[str, int] = {}
        dialogue = [
            groups.setdefault(it.utt.dialogue_id or f"\0{it.utt.id}", len(groups)) for it in items
        ]
        turn = [0] * n
        members: dict[int, list[int]] = {}
        for i, g in enumerate(dialogue):
            members.setdefault(g, []).append(i)
        for rows in members.values():
            rows.sort(key=lambda i: (items[i].utt.turn is None, items[i].utt.turn or 0, i))
            for rank, i in enumerate(rows):
                turn[i] = rank
        batch["dialogue"] = torch.tensor(dialogue, dtype=torch.long)
        batch["turn"] = torch.tensor(turn, dtype=torch.long)
    if spec.emotion_labels:
        batch["emotion"] = torch.tensor([it.emotion for it in items], dtype=torch.long)
    if spec.sentiment_range is not None:
        batch["sentiment"] = torch.tensor([it.sentiment for it in items], dtype=torch.float32)
    if tokenizer is not None and "text" in inputs:
        texts = [(it.utt.text or "").strip() for it in items]
        tok = tokenizer(texts, [it.utt.context for it in items])
        batch["text_input_ids"] = torch.as_tensor(tok["input_ids"])
        batch["text_attention_mask"] = torch.as_tensor(tok["attention_mask"])
        if "token_type_ids" in tok:
            batch["text_token_type_ids"] = torch.as_tensor(tok["token_type_ids"])
        batch["text_present"] = torch.tensor([bool(s) for s in texts], dtype=torch.bool)
    if indices is not None:
        batch["index"] = torch.as_tensor(list(indices), dtype=torch.long)
    return batch


class Collator:
    """A picklable ``collate_fn`` for a :class:`FeatureTable` (items arrive as indices).

    Args:
        table: The items.
        tokenizer: Turns texts (and contexts) into token ids, for a fine-tuned text encoder.
        context: ``(past, future)`` turns of dialogue context the tokenizer should see,
            gathered from the table's own utterances (:func:`~emofuse.records.with_dialogue_context`);
            ``None`` or ``(0, 0)`` for none.
    """

    def __init__(
        self,
        table: FeatureTable,
        tokenizer: Tokenizer | None = None,
        context: tuple[int, int] | None = None,
    ) -> None:
        self.table = table
        self.tokenizer = tokenizer
        self._with_context: list[Item] | None = None
        if tokenizer is not None and context is not None and any(context):
            utts = with_dialogue_context([it.utt for it in table.items], *context)
            self._with_context = [
                dataclasses.replace(it, utt=u) for it, u in zip(table.items, utts, strict=True)
            ]

    def lengths(self) -> list[int] | None:
        """Characters each item feeds the tokenizer (text and context), or ``None`` without one.

        A cheap proxy of word pieces, for bucketing batches by length.
        """
        if self.tokenizer is None:
            return None
        source = self._with_context if self._with_context is not None else self.table.items
        return [len(it.utt.text or "") + context_chars(it.utt.context) for it in source]

    def __call__(self, indices: list[int]) -> dict[str, Tensor]:
        """Collate the items at ``indices``."""
        source = self._with_context if self._with_context is not None else self.table.items
        items = [source[i] for i in indices]
        return collate(items, self.table.spec, self.table.inputs, self.tokenizer, indices=indices)


# -- samplers ----------------------------------------------------------------------------------
class _BatchSampler:
    """Common part: ``(seed, epoch)`` shuffling and splitting batches between processes."""

    def __init__(
        self,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad rank {rank} of world size {world_size}")
        self.shuffle, self.seed, self.rank, self.world_size, self.pad = (
            shuffle,
            seed,
            rank,
            world_size,
            pad,
        )
        self.epoch = 0
        self.epoch_source = epoch_source

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order to produce (when no ``epoch_source`` is given)."""
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        # Lightning does not call set_epoch on a batch sampler, so the trainer's epoch is read
        # directly when the sampler was given a source for it.
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        return np.random.default_rng([self.seed, epoch])

    def all_batches(self) -> list[list[int]]:
        """Every batch of this epoch, for all processes."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.all_batches()
        if self.world_size > 1:
            if self.pad and len(batches) % self.world_size:
                # every process must run the same number of steps
                extra = self.world_size - len(batches) % self.world_size
                batches = batches + batches[:extra]
            batches = batches[self.rank :: self.world_size]
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.all_batches())
        if self.world_size == 1:
            return n
        if self.pad:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))


class UtteranceBatchSampler(_BatchSampler):
    """Batches of ``batch_size`` utterances, shuffled by ``(seed, epoch)`` when ``shuffle``.

    With ``lengths`` (e.g. word pieces per input, for a fine-tuned text encoder), batches are
    bucketed: the shuffled order is cut into pools of ``pool`` batches, each pool is sorted by
    length and cut into batches, and the batches are shuffled again. Batches then hold inputs of
    similar length, so little compute goes to padding, while the data order stays random and a
    function of ``(seed, epoch)`` only. Without shuffling, batches follow length order.

    Example:
        >>> s = UtteranceBatchSampler(5, 2, shuffle=False)
        >>> list(s)
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        pool: int = 50,
        **kw: Any,
    ):
        super().__init__(shuffle=shuffle, seed=seed, **kw)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if lengths is not None and len(lengths) != n:
            raise ConfigError(f"{len(lengths)} lengths for {n} items")
        if pool < 1:
            raise ConfigError(f"pool must be >= 1, got {pool}")
        self.n, self.batch_size = n, batch_size
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.pool = pool

    def all_batches(self) -> list[list[int]]:  # noqa: D102
        rng = self._rng() if self.shuffle else None
        order = rng.permutation(self.n) if rng is not None else np.arange(self.n)
        if self.lengths is None:
            order = order.tolist()
            return [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        size = self.pool * self.batch_size if rng is not None else self.n
        batches = []
        for start in range(0, self.n, size):
            chunk = order[start : start + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")].tolist()
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches


class DialogueBatchSampler(_BatchSampler):
    """Whole dialogues packed into batches of about ``batch_size`` utterances.

    ``ceil(utterances / batch_size)`` batches every epoch; dialogues are shuffled (by
    ``(seed, epoch)``) and each is added to the batch with the fewest utterances so far, so
    batches hold about ``batch_size`` utterances (a long dialogue may overfill one). Utterances
    keep their turn order inside each dialogue.

    Args:
        dialogues: Item indices of each dialogue, in turn order.
        batch_size: Target utterances per batch.
    """

    def __init__(
        self,
        dialogues: Sequence[Sequence[int]],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        **kw: Any,
    ):
        super().__init__(shuffle=shuffle, seed=seed, **kw)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.dialogues = [list(d) for d in dialogues if len(d)]
        self.batch_size = batch_size

    @classmethod
    def from_table(cls, table: FeatureTable, batch_size: int, **kw: Any) -> DialogueBatchSampler:
        """Group a table's items by ``dialogue_id`` (ordered by turn)."""
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(table.items):
            groups.setdefault(it.utt.dialogue_id or f"\0{it.utt.id}", []).append(i)
        for rows in groups.values():
            rows.sort(key=lambda i: (table.items[i].utt.turn is None, table.items[i].utt.turn or 0))
        return cls(list(groups.values()), batch_size, **kw)

    def all_batches(self) -> list[list[int]]:  # noqa: D102
        # The number of batches is the same every epoch (Lightning fixes an epoch's length when
        # training starts: a varying count silently skips its end-of-epoch validation). Shuffled
        # dialogues go, each, to the batch holding the fewest utterances so far.
        order = (
            self._rng().permutation(len(self.dialogues)).tolist()
            if self.shuffle
            else list(range(len(self.dialogues)))
        )
        total = sum(len(d) for d in self.dialogues)
        k = max(1, min(len(self.dialogues), math.ceil(total / self.batch_size)))
        batches: list[list[int]] = [[] for _ in range(k)]
        heap = [(0, i) for i in range(k)]
        for d in order:
            size, i = heapq.heappop(heap)
            batches[i].extend(self.dialogues[d])
            heapq.heappush(heap, (size + len(self.dialogues[d]), i))
        return batches


def batch_sampler(
    table: FeatureTable,
    batch_size: int,
    *,
    conversational: bool,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pad: bool = True,
    epoch_source: Callable[[], int] | None = None,
    lengths: Sequence[int] | None = None,
) -> _BatchSampler:
    """The right sampler for a model: dialogue-grouped when ``conversational``.

    ``lengths`` (one per item) bucket utterance batches by length
    (see :class:`UtteranceBatchSampler`); dialogue batches ignore them.
    """
    kw = {
        "shuffle": shuffle,
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
        "pad": pad,
        "epoch_source": epoch_source,
    }
    if conversational:
        return DialogueBatchSampler.from_table(table, batch_size, **kw)
    return UtteranceBatchSampler(len(table), batch_size, lengths=lengths, **kw)


__all__ = [
    "DEFAULT_MAX_LEN",
    "Collator",
    "DialogueBatchSampler",
    "FeatureRef",
    "FeatureTable",
    "Item",
    "UtteranceBatchSampler",
    "batch_sampler",
    "collate",
    "input_specs",
    "parse_features",
]

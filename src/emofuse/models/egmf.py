"""EGMF: expert-guided multimodal fusion with hierarchical dynamic gating.

After Qiao, Xu, Li, Liu, "EGMF" (arXiv 2601.07565, 2026). Only the paper's abstract is public
and no code was released, so what follows implements the abstract's description — a
fine-grained local expert, a semantic-correlation expert, a global-context expert, hierarchical
dynamic gating, joint emotion classification and sentiment regression — with internals of our
own design, each stated here and in the expert modules. The paper's optional LLM head
(pseudo-tokens into a LoRA'd causal LM) is a separate component.

**Pipeline** for a batch of ``N`` utterances (batch contract: :mod:`emofuse.models.base`):

1. *Input projection*, per modality ``m``: ``x_m ← LayerNorm(Linear_{D_m→H}(x_m)) + e_m + P_t``
   with a learned modality embedding ``e_m`` and sinusoidal time positions ``P_t``, dropout, and
   padded steps set to zero. Features at padded steps are replaced by zeros *before* the
   projection (``NaN`` padding cannot leak). A modality absent from the batch becomes an
   all-missing ``(N, 1, H)`` sequence, so every expert sees every modality key.
2. *Modality dropout* (training only, ``modality_dropout``): each present modality of each
   utterance is hidden with that probability; when all of an utterance's modalities would be
   hidden, one of them (chosen at random) is kept. Hiding = clearing the mask, exactly what a
   missing modality looks like at inference.
3. *Experts* (``experts``, default all three; each returns ``(N, H)``, layer-normalised):
   ``"local"`` (:mod:`~emofuse.models.experts.local`), ``"cross-modal"``
   (:mod:`~emofuse.models.experts.cross_modal`), ``"global-context"``
   (:mod:`~emofuse.models.experts.global_context`). Inside each, level 1 of the gating weighs
   modalities (or modality pairs) with feature gates renormalised over the present ones.
4. *Level 2 gate* (:class:`~emofuse.models.gating.HierarchicalGate`): softmax over experts
   conditioned on their concatenated outputs, with temperature, restricted to the experts usable
   for each utterance (the cross-modal expert needs two present modalities; a text-only model
   therefore mixes the two other experts only, and its cross-modal gate column is always 0),
   plus the weighted load-balance loss ``aux["load_balance"]``.
5. *Fusion*: ``f = Σ_e G_e h_e``; ``fused = LayerNorm(f + FFN(f))``.
6. *Joint heads* on ``fused``: emotion logits and a sentiment score (the base loss trains them
   together where a dataset has both; either may be absent from the task).

:class:`~emofuse.models.base.ModelOutput` carries ``experts`` (each expert's ``(N, H)``),
``gates`` ``(N, E)`` over ``gate_names`` (the expert names, in ``experts`` order) and ``aux``.
Each expert's level-1 weights of the last call are on ``model.experts[name].unit_weights``
(columns ``model.experts[name].units``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from emofuse.errors import ConfigError, InputError
from emofuse.models.base import (
    MODALITIES,
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    drop_modalities,
)
from emofuse.models.experts import EXPERTS
from emofuse.models.experts._ops import sinusoidal_positions
from emofuse.models.experts.cross_modal import CrossModalExpertConfig
from emofuse.models.experts.global_context import GlobalContextExpertConfig
from emofuse.models.experts.local import LocalExpertConfig
from emofuse.models.gating import GateConfig, HierarchicalGate
from emofuse.spec import TaskSpec

ExpertName = Literal["local", "cross-modal", "global-context"]
_CONFIG_FIELD = {"local": "local", "cross-modal": "cross_modal", "global-context": "global_context"}


class EGMFConfig(ModelConfig):
    """Options of EGMF (plus the shared :class:`~emofuse.models.base.ModelConfig` ones)."""

    experts: list[ExpertName] = Field(
        default_factory=lambda: ["local", "cross-modal", "global-context"],
        description="Experts to build and gate, in gate-column order (a subset is an ablation).",
    )
    local: LocalExpertConfig = Field(
        default_factory=LocalExpertConfig,
        description="Local expert: kernel_sizes, layers.",
    )
    cross_modal: CrossModalExpertConfig = Field(
        default_factory=CrossModalExpertConfig,
        description="Cross-modal expert: heads, ff_mult, max_steps.",
    )
    global_context: GlobalContextExpertConfig = Field(
        default_factory=GlobalContextExpertConfig,
        description="Global-context expert: heads, layers, ff_mult, max_steps, dialogue_context, "
        "dialogue_layers, dialogue_causal.",
    )
    gate: GateConfig = Field(
        default_factory=GateConfig,
        description="Gate across experts: hidden, temperature, load_balance.",
    )
    fusion_ff_mult: int = Field(
        2,
        gt=0,
        description="Width of the residual feed-forward block after the mixture (× hidden).",
    )

    @field_validator("experts")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one expert is needed")
        if len(set(v)) != len(v):
            raise ValueError(f"experts are listed twice: {v}")
        return v


class _InputProjection(nn.Module):
    """``(N, T, D_m) → (N, T, H)``: linear, LayerNorm, modality embedding, time positions."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.embedding = nn.Parameter(torch.randn(hidden) * 0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(-1)
        x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
        y = self.norm(self.linear(x)) + self.embedding
        y = y + sinusoidal_positions(y.shape[1], y.shape[2], y.device, y.dtype)
        return self.dropout(y) * m.to(y.dtype)


@MODELS.register("egmf")
class EGMF(FusionModel):
    """Expert-guided multimodal fusion (see the module docstring for the design).

    Args:
        config: :class:`EGMFConfig` (``None`` for defaults).
        spec: The task (which heads to build).
        inputs: ``modality → InputSpec``; any non-empty subset of ``text``/``audio``/``face``.

    Example:
        >>> from emofuse.models.base import InputSpec, build_model
        >>> from emofuse.spec import TaskSpec
        >>> spec = TaskSpec(name="demo", emotion_labels=["neg", "pos"], sentiment_range=(-3, 3))
        >>> model = build_model("egmf", spec, {"text": InputSpec(feature="minilm:tokens",
        ...                                                      dim=384, kind="sequence")})
        >>> out = model({"text": torch.randn(2, 5, 384), "text_mask": torch.ones(2, 5, dtype=torch.bool)})
        >>> out.emotion_logits.shape, out.gates.shape
        (torch.Size([2, 2]), torch.Size([2, 3]))
    """

    Config = EGMFConfig
    conversational = True
    config: EGMFConfig

    def __init__(
        self, config: EGMFConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]
    ) -> None:
        super().__init__(config, spec, inputs)
        cfg = self.config
        hidden = cfg.hidden
        for name, heads in (
            ("cross_modal", cfg.cross_modal.heads),
            ("global_context", cfg.global_context.heads),
        ):
            if hidden % heads:
                raise ConfigError(f"egmf: {name}.heads={heads} does not divide hidden={hidden}")
        self.modalities = list(self.inputs)
        self.projections = nn.ModuleDict(
            {m: _InputProjection(s.dim, hidden, cfg.dropout) for m, s in self.inputs.items()}
        )
        self.gate_names = list(cfg.experts)
        self.experts = nn.ModuleDict(
            {
                name: EXPERTS.get(name)(
                    getattr(cfg, _CONFIG_FIELD[name]), hidden, self.modalities, cfg.dropout
                )
                for name in self.gate_names
            }
        )
        self.gate = HierarchicalGate(self.gate_names, hidden, cfg.gate, cfg.dropout)
        self.fusion_ff = nn.Sequential(
            nn.Linear(hidden, cfg.fusion_ff_mult * hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fusion_ff_mult * hidden, hidden),
        )
        self.fusion_norm = nn.LayerNorm(hidden)
        self.build_heads(hidden)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (contract: :mod:`emofuse.models.base`)."""
        batch = self.encode_inputs(batch)
        feats = self._project(batch)
        outputs = {name: expert(feats) for name, expert in self.experts.items()}
        usable = torch.stack([self.experts[n].usable(feats) for n in self.gate_names], dim=1)
        mixed = self.gate(outputs, usable)
        f = mixed.fused
        fused = self.fusion_norm(f + self.fusion_ff(f))
        emotion, sentiment = self.apply_heads(fused)
        return ModelOutput(
            emotion_logits=emotion,
            sentiment=sentiment,
            fused=fused,
            experts=outputs,
            gates=mixed.gates,
            gate_names=list(self.gate_names),
            aux=mixed.aux,
        )

    def _project(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Projected ``(N, T, H)`` sequences and ``(N, T)`` masks of every model modality."""
        n = _batch_size(batch, self.modalities)
        param = self.fusion_norm.weight
        masks: dict[str, Tensor] = {}
        raw: dict[str, Tensor] = {}
        for m in self.modalities:
            x = batch.get(m)
            if x is None:
                raw[m] = param.new_zeros(n, 1, self.inputs[m].dim)
                masks[m] = torch.zeros(n, 1, dtype=torch.bool, device=param.device)
                continue
            want = self.inputs[m].dim
            if x.dim() != 3 or x.shape[0] != n or x.shape[-1] != want:
                raise InputError(
                    None,
                    f"batch[{m!r}] has shape {tuple(x.shape)}; the model expects ({n}, T, {want}) "
                    f"({self.inputs[m].feature})",
                )
            mask = batch.get(f"{m}_mask")
            if mask is None:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            elif mask.shape != x.shape[:2]:
                raise InputError(
                    None,
                    f"batch['{m}_mask'] has shape {tuple(mask.shape)}; expected {tuple(x.shape[:2])}",
                )
            raw[m] = x.to(param.dtype)
            masks[m] = mask.bool()
        if self.training and self.config.modality_dropout > 0:
            masks = drop_modalities(masks, self.config.modality_dropout)
        feats: dict[str, Tensor] = {}
        for m in self.modalities:
            feats[m] = self.projections[m](raw[m], masks[m])
            feats[f"{m}_mask"] = masks[m]
        for key in ("dialogue", "turn"):
            if key in batch:
                feats[key] = batch[key]
        return feats


def _batch_size(batch: dict[str, Tensor], modalities: list[str]) -> int:
    """``N`` from the first modality, dialogue or target key the batch carries."""
    for key in (*modalities, *MODALITIES, "dialogue", "emotion", "sentiment"):
        value = batch.get(key)
        if isinstance(value, Tensor) and value.dim() >= 1:
            return int(value.shape[0])
    raise InputError(
        None,
        f"the batch carries none of the model's modalities {modalities} and no other key that "
        "gives its size",
    )


__all__ = ["EGMF", "EGMFConfig", "drop_modalities"]

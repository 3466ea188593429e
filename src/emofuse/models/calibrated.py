"""``calibrated-late`` — per-modality heads trained apart, calibrated, pooled by reliability.

The model for data where no corpus labels every modality together (the bundled default model:
words from MELD and CMU-MOSEI, voice from RAVDESS, faces from FER2013). Each modality ``m``
has its own linear emotion head (and, optionally, sentiment head) over its mean-pooled
features, trained on its own corpus; its emotion logits are divided by a temperature ``T_m``
fitted on that corpus's validation split (Guo et al., *On Calibration of Modern Neural
Networks*, ICML 2017), so that every modality's probabilities mean what they say before they
are combined. The combination is a weighted log-linear pool (a product of experts, Hinton
2002) over the modalities present in the row:

    log p(y | x) ∝ Σ_m g_m · log softmax(z_m / T_m),   g_m = w_m [m present] / Σ_k w_k [k present]

with fixed reliability weights ``w_m`` from the config (the default model sets them from each
head's validation skill, see ``configs/default-model.yaml``). Sentiment is the ``g``-weighted
mean of the sentiment heads of the present modalities that have one, and undefined (NaN,
reported as ``None``) when none is present.

Outputs follow :mod:`emofuse.models.base`: ``gates`` are the pooling weights ``g`` over
``gate_names`` (the emotion modalities), ``gate_mask`` marks the modalities present, each
modality's calibrated logits are in ``expert_logits`` and its pooled input in ``experts``;
``fused`` is the pooled log-probability vector ``(N, C)``.

Because the pooled logits are differentiable, the same model also trains end to end with
``emofuse train --model calibrated-late`` on a corpus that labels several modalities at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from emofuse.data.inputs import MODALITIES
from emofuse.errors import ConfigError
from emofuse.models.base import (
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    masked_mean,
)
from emofuse.models.baselines import batch_size, read_modality
from emofuse.spec import TaskSpec


class CalibratedLateConfig(ModelConfig):
    """Options of the ``calibrated-late`` model."""

    emotion_from: list[str] | None = Field(
        None, description="Modalities with an emotion head (default: every input)."
    )
    sentiment_from: list[str] | None = Field(
        None,
        description="Modalities with a sentiment head (default: every input, when the task "
        "has sentiment).",
    )
    temperatures: dict[str, float] = Field(
        default_factory=dict,
        description="Emotion temperature T_m per modality, fitted on its validation split "
        "(default 1).",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Reliability weight w_m of each modality in the pooled decision (default 1).",
    )
    provenance: dict[str, str] = Field(
        default_factory=dict,
        description="Where each head was trained (free text, shown by the model card).",
    )

    @model_validator(mode="after")
    def _check(self) -> CalibratedLateConfig:
        for name, values in (("temperatures", self.temperatures), ("weights", self.weights)):
            bad = {m: v for m, v in values.items() if not (math.isfinite(v) and v > 0)}
            if bad:
                raise ValueError(f"{name} must be positive and finite, got {bad}")
        for name, mods in (
            ("emotion_from", self.emotion_from),
            ("sentiment_from", self.sentiment_from),
        ):
            unknown = set(mods or ()) - set(MODALITIES)
            if unknown:
                raise ValueError(f"{name}: unknown modalities {sorted(unknown)}")
        return self


@MODELS.register("calibrated-late")
class CalibratedLate(FusionModel):
    """Per-modality linear heads, temperature-calibrated, pooled log-linearly (module docstring).

    Args:
        config: A :class:`CalibratedLateConfig`.
        spec: The task (its label set is shared by every head).
        inputs: ``modality → InputSpec``; every input is mean-pooled over its valid steps.

    Raises:
        ConfigError: A modality named in ``emotion_from`` / ``sentiment_from`` /
            ``temperatures`` / ``weights`` is not an input.
    """

    Config = CalibratedLateConfig
    conversational = False

    def __init__(
        self, config: CalibratedLateConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]
    ):
        super().__init__(config, spec, inputs)
        c: CalibratedLateConfig = self.config  # type: ignore[assignment]
        names = list(self.inputs)
        self.emotion_names = [m for m in names if c.emotion_from is None or m in c.emotion_from]
        self.sentiment_names = [
            m for m in names if c.sentiment_from is None or m in c.sentiment_from
        ]
        for what, mods in (
            ("emotion_from", c.emotion_from or []),
            ("sentiment_from", c.sentiment_from or []),
            ("temperatures", list(c.temperatures)),
            ("weights", list(c.weights)),
        ):
            missing = sorted(set(mods) - set(names))
            if missing:
                raise ConfigError(f"calibrated-late: {what} names {missing}, not inputs {names}")
        n = spec.num_emotions
        if n and not self.emotion_names:
            raise ConfigError("calibrated-late: the task has emotions but no modality has a head")
        self.emotion_heads = nn.ModuleDict(
            {m: nn.Linear(self.inputs[m].dim, n) for m in self.emotion_names} if n else {}
        )
        has_sentiment = spec.sentiment_range is not None
        self.sentiment_heads = nn.ModuleDict(
            {m: nn.Linear(self.inputs[m].dim, 1) for m in self.sentiment_names}
            if has_sentiment
            else {}
        )

    def _pool_weights(self, pres: Tensor, names: list[str], like: Tensor) -> Tensor:
        """``(N, M)`` pooling weights ``g``: reliability over the present modalities.

        Rows sum to 1, or to 0 where no modality is present.
        """
        c: CalibratedLateConfig = self.config  # type: ignore[assignment]
        w = like.new_tensor([c.weights.get(m, 1.0) for m in names]) * pres.to(like.dtype)
        total = w.sum(dim=1, keepdim=True)
        return torch.where(total > 0, w / total.clamp_min(1e-12), w)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (see the module docstring and :mod:`emofuse.models.base`)."""
        batch = self.encode_inputs(batch)
        c: CalibratedLateConfig = self.config  # type: ignore[assignment]
        like = next(self.parameters())
        pooled: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        for m, s in self.inputs.items():
            x, mask = read_modality(batch, m, s, like)
            pooled[m], present[m] = masked_mean(x, mask), mask.any(dim=1)
        emo = fused = gates = gate_mask = None
        expert_logits: dict[str, Tensor] = {}
        if self.emotion_heads:
            names = self.emotion_names
            for m in names:
                expert_logits[m] = self.emotion_heads[m](pooled[m]) / c.temperatures.get(m, 1.0)
            gate_mask = torch.stack([present[m] for m in names], dim=1)
            gates = self._pool_weights(gate_mask, names, like)
            logp = torch.stack([F.log_softmax(expert_logits[m], dim=-1) for m in names], dim=1)
            emo = (gates.unsqueeze(-1) * logp).sum(dim=1)  # (N, C); log-softmax renormalises
            fused = F.log_softmax(emo, dim=-1)
        sent = None
        if self.sentiment_heads:
            names = self.sentiment_names
            pres = torch.stack([present[m] for m in names], dim=1)
            g = self._pool_weights(pres, names, like)
            scores = torch.stack([self.sentiment_heads[m](pooled[m]).squeeze(-1) for m in names], 1)
            sent = (g * scores).sum(dim=1)
            sent = torch.where(pres.any(dim=1), sent, torch.full_like(sent, math.nan))
        if fused is None:
            fused = like.new_zeros((batch_size(batch), 0))
        return ModelOutput(
            emotion_logits=emo,
            sentiment=sent,
            fused=fused,
            experts=pooled,
            expert_logits=expert_logits,
            gates=gates,
            gate_names=list(self.emotion_names) if gates is not None else [],
            gate_mask=gate_mask,
        )

    def loss(self, out: ModelOutput, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The base joint loss, without rows whose sentiment is undefined.

        A row is undefined when no modality with a sentiment head is present.
        """
        if out.sentiment is not None and "sentiment" in batch:
            undefined = torch.isnan(out.sentiment)
            if undefined.any():
                batch = dict(batch)
                batch["sentiment"] = batch["sentiment"].masked_fill(undefined, math.nan)
                out.sentiment = torch.nan_to_num(out.sentiment)
        return super().loss(out, batch)

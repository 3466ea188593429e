"""Baseline fusion models: early-fusion / unimodal MLP, late fusion, TFN and MulT.

Every model here reads the batch contract of :mod:`emofuse.models.base`, predicts with any
subset of its input modalities (a modality absent from the batch, or a row whose mask is all
``False``, is *missing*), and grows the joint emotion / sentiment heads the task asks for.

* ``mlp`` — masked-mean pool each modality, concatenate (zeros plus a presence flag for a
  missing one), a 2-layer MLP. With a single input modality it is the unimodal baseline.
* ``late-fusion`` — one MLP per modality; the per-modality predictions are averaged over the
  modalities present in each row (decision-level fusion).
* ``tfn`` — Tensor Fusion Network (Zadeh et al., EMNLP 2017): per-modality subnetworks,
  each vector extended with a constant 1, outer product across modalities, MLP.
* ``mult`` — Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019):
  crossmodal attention for every ordered modality pair, then self-attention per target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from emofuse.errors import InputError
from emofuse.models.base import (
    MODALITIES,
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    masked_mean,
)
from emofuse.spec import TaskSpec

# -- helpers shared by the baselines --------------------------------------------------------


def batch_size(batch: dict[str, Tensor]) -> int:
    """Number of utterances ``N`` in a batch (from any modality, else from the targets)."""
    for key in (*MODALITIES, "text_input_ids", "emotion", "sentiment"):
        value = batch.get(key)
        if value is not None:
            return int(value.shape[0])
    raise InputError("batch", "carries no modality and no target, so its size is unknown")


def read_modality(
    batch: dict[str, Tensor], modality: str, spec: InputSpec, like: Tensor
) -> tuple[Tensor, Tensor]:
    """One modality of a batch as ``(x, mask)``, safe to compute with.

    ``x`` is ``(N, T, D)`` with every invalid step set to exactly zero (padding that holds NaN
    or garbage cannot leak into sums), ``mask`` is ``(N, T)`` bool. A modality absent from the
    batch comes back as one all-zero, all-invalid step per row.

    Args:
        batch: The model batch.
        modality: ``"text"``, ``"audio"`` or ``"face"``.
        spec: The model's input spec of that modality (its ``dim`` is checked).
        like: Any tensor of the model's dtype and device.

    Raises:
        InputError: When the feature dimension differs from ``spec.dim``.
    """
    n = batch_size(batch)
    x = batch.get(modality)
    if x is None:
        return like.new_zeros((n, 1, spec.dim)), torch.zeros(
            (n, 1), dtype=torch.bool, device=like.device
        )
    if x.dim() == 2:  # tolerate (N, D) vectors
        x = x.unsqueeze(1)
    if x.shape[-1] != spec.dim:
        raise InputError(
            f"batch[{modality!r}]",
            f"feature dim {x.shape[-1]} != {spec.dim} expected for {spec.feature!r}",
        )
    mask = batch.get(f"{modality}_mask")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    mask = mask.to(torch.bool)
    x = torch.where(mask.unsqueeze(-1), x.to(like.dtype), x.new_zeros((), dtype=like.dtype))
    return x, mask


def drop_modalities(
    masks: dict[str, Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Modality dropout: hide each present modality of each row with probability ``p``.

    A row never loses all of its present modalities: when every one of them is drawn, one of
    them (chosen at random) is kept. Rows that had none stay as they were.

    Args:
        masks: ``modality → (N, T)`` bool masks.
        p: Drop probability.
        generator: Optional random generator (else torch's global one, so ``torch.manual_seed``
            makes it reproducible).

    Returns:
        New masks (the inputs are not modified).
    """
    if p <= 0 or not masks:
        return masks
    names = list(masks)
    pres = torch.stack([masks[m].any(dim=1) for m in names], dim=1)  # (N, M)
    device = pres.device
    drop = torch.rand(pres.shape, generator=generator, device=device) < p
    keep = pres & ~drop
    lost = pres.any(dim=1) & ~keep.any(dim=1)
    if lost.any():
        # pick one present modality at random for each row that lost them all
        score = torch.rand(pres.shape, generator=generator, device=device).masked_fill(~pres, -1.0)
        rescue = F.one_hot(score.argmax(dim=1), len(names)).bool()
        keep = keep | (rescue & lost.unsqueeze(1))
    return {m: masks[m] & keep[:, i : i + 1] for i, m in enumerate(names)}


def _mlp(inp: int, hidden: int, dropout: float, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*mods)


class _Baseline(FusionModel):
    """Shared input handling: read every modality, apply modality dropout while training."""

    def _read(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        like = next(self.parameters())
        xs: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        for m, spec in self.inputs.items():
            xs[m], masks[m] = read_modality(batch, m, spec, like)
        if self.training and self.config.modality_dropout > 0:
            masks = drop_modalities(masks, self.config.modality_dropout)
            xs = {m: xs[m] * masks[m].unsqueeze(-1).to(xs[m].dtype) for m in xs}
        return xs, masks


# -- mlp --------------------------------------------------------------------------------------


class MLPConfig(ModelConfig):
    """Options of the ``mlp`` model (early fusion; unimodal with one input)."""

    layers: int = Field(2, ge=1, description="Hidden layers of the MLP (each hidden wide).")
    input_norm: bool = Field(
        True,
        description="LayerNorm each pooled modality before concatenation (features such as "
        "eGeMAPS functionals come on very different scales).",
    )


@MODELS.register("mlp")
class MLPFusion(_Baseline):
    """Early-fusion MLP; with a single input modality, the unimodal baseline.

    Each modality's sequence is mean-pooled over its valid steps, layer-normalised, zeroed when
    the modality is missing and followed by a presence flag (1 present, 0 missing); the
    concatenation goes through an MLP to the fused ``(N, hidden)`` representation and the heads.
    """

    Config = MLPConfig
    conversational = False

    def __init__(self, config: MLPConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]):
        super().__init__(config, spec, inputs)
        c: MLPConfig = self.config  # type: ignore[assignment]
        self.norms = nn.ModuleDict(
            {
                m: nn.LayerNorm(s.dim) if c.input_norm else nn.Identity()
                for m, s in self.inputs.items()
            }
        )
        width = sum(s.dim + 1 for s in self.inputs.values())
        self.mlp = _mlp(width, c.hidden, c.dropout, c.layers)
        self.build_heads(c.hidden)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (see :mod:`emofuse.models.base`)."""
        batch = self.encode_inputs(batch)
        xs, masks = self._read(batch)
        parts = []
        for m in self.inputs:
            flag = masks[m].any(dim=1, keepdim=True).to(xs[m].dtype)
            parts += [self.norms[m](masked_mean(xs[m], masks[m])) * flag, flag]
        fused = self.mlp(torch.cat(parts, dim=-1))
        emo, sent = self.apply_heads(fused)
        return ModelOutput(emotion_logits=emo, sentiment=sent, fused=fused)

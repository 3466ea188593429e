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

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from emofuse.errors import ConfigError, InputError
from emofuse.models.base import (
    IGNORE_INDEX,
    MODALITIES,
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    drop_modalities,
    masked_mean,
)
from emofuse.models.ops import masked_downsample, safe_key_padding_mask, sinusoidal_positions
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


def _presence_weights(pres: Tensor) -> Tensor:
    """``(N, M)`` bool presence → row weights, uniform over the present columns.

    A row with nothing present gets uniform weights over all columns, so rows always sum to 1.
    """
    w = pres.to(torch.get_default_dtype())
    none = ~pres.any(dim=1, keepdim=True)
    w = torch.where(none, torch.ones_like(w), w)
    return w / w.sum(dim=1, keepdim=True)


# -- late fusion ----------------------------------------------------------------------------


class LateFusionConfig(ModelConfig):
    """Options of the ``late-fusion`` model."""

    layers: int = Field(2, ge=1, description="Hidden layers of each per-modality MLP.")
    input_norm: bool = Field(True, description="LayerNorm each pooled modality first.")
    unimodal_weight: float = Field(
        0.5,
        ge=0.0,
        description="Weight of the auxiliary loss that trains each modality's prediction on its "
        "own (rows where that modality is present), as separately trained unimodal classifiers "
        "would be; 0 trains only the averaged prediction.",
    )


@MODELS.register("late-fusion")
class LateFusion(_Baseline):
    """Decision-level fusion: one MLP per modality, predictions averaged over present modalities.

    Every modality is mean-pooled over its valid steps and mapped by its own MLP to ``h_m``;
    the heads (shared, linear) turn each ``h_m`` into that modality's emotion logits and
    sentiment. The output is the average of those predictions over the modalities present in
    each row, which - the heads being linear - equals the heads applied to
    ``fused = Σ_m w_m h_m``. ``gates`` holds the weights ``w`` (uniform over present modalities,
    rows sum to 1; a row with no modality at all averages over every one) and ``gate_names`` the
    modalities; ``experts`` / ``expert_logits`` hold each modality's representation and logits.
    """

    Config = LateFusionConfig
    conversational = False

    def __init__(
        self, config: LateFusionConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]
    ):
        super().__init__(config, spec, inputs)
        c: LateFusionConfig = self.config  # type: ignore[assignment]
        self.branches = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.LayerNorm(s.dim) if c.input_norm else nn.Identity(),
                    _mlp(s.dim, c.hidden, c.dropout, c.layers),
                )
                for m, s in self.inputs.items()
            }
        )
        self.build_heads(c.hidden)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (see :mod:`emofuse.models.base`)."""
        batch = self.encode_inputs(batch)
        xs, masks = self._read(batch)
        names = list(self.inputs)
        hidden = {m: self.branches[m](masked_mean(xs[m], masks[m])) for m in names}
        pres = torch.stack([masks[m].any(dim=1) for m in names], dim=1)
        gates = _presence_weights(pres).to(hidden[names[0]].dtype)
        stacked = torch.stack([hidden[m] for m in names], dim=1)  # (N, M, H)
        fused = (gates.unsqueeze(-1) * stacked).sum(dim=1)
        emo, sent = self.apply_heads(fused)
        per = {m: self.apply_heads(hidden[m]) for m in names}
        expert_logits = {m: e for m, (e, _) in per.items() if e is not None}
        aux = {}
        weight = self.config.unimodal_weight  # type: ignore[attr-defined]
        if weight > 0:
            uni = self._unimodal_loss(per, pres, batch)
            if uni is not None:
                aux["unimodal"] = weight * uni
        return ModelOutput(
            emotion_logits=emo,
            sentiment=sent,
            fused=fused,
            experts=hidden,
            expert_logits=expert_logits,
            gates=gates,
            gate_names=names,
            aux=aux,
        )

    def _unimodal_loss(
        self,
        per: dict[str, tuple[Tensor | None, Tensor | None]],
        pres: Tensor,
        batch: dict[str, Tensor],
    ) -> Tensor | None:
        """Mean over modalities of each modality's own joint loss on the rows that carry it."""
        c = self.config
        terms = []
        for i, (emo, sent) in enumerate(per.values()):
            rows = pres[:, i]
            total = None
            if emo is not None and "emotion" in batch:
                target = batch["emotion"].masked_fill(~rows, IGNORE_INDEX)
                if (target != IGNORE_INDEX).any():
                    weight = None if c.class_weights is None else emo.new_tensor(c.class_weights)
                    ce = F.cross_entropy(
                        emo,
                        target,
                        weight=weight,
                        ignore_index=IGNORE_INDEX,
                        label_smoothing=c.label_smoothing,
                    )
                    total = c.emotion_weight * ce
            if sent is not None and "sentiment" in batch:
                ok = rows & ~torch.isnan(batch["sentiment"])
                if ok.any():
                    l1 = c.sentiment_weight * F.l1_loss(sent[ok], batch["sentiment"][ok])
                    total = l1 if total is None else total + l1
            if total is not None:
                terms.append(total)
        return torch.stack(terms).mean() if terms else None


# -- TFN ------------------------------------------------------------------------------------


class TFNConfig(ModelConfig):
    """Options of the ``tfn`` model (Tensor Fusion Network)."""

    subnet_dim: int = Field(
        32,
        gt=0,
        description="Output width of each modality subnetwork; the fusion tensor has "
        "(subnet_dim + 1) ** M entries for M input modalities.",
    )
    lstm_modalities: list[Literal["text", "audio", "face"]] = Field(
        default_factory=lambda: ["text"],
        description="Sequence modalities read by an LSTM (the paper's language subnetwork); "
        "the others are mean-pooled and read by a 3-layer ReLU network (its audio and visual "
        "subnetworks). Vector features always take the pooled path.",
    )
    post_layers: int = Field(2, ge=1, description="Hidden layers after the fusion tensor.")


class _LSTMSubnet(nn.Module):
    """The TFN language subnetwork: LSTM over the valid steps, last state, two ReLU layers."""

    def __init__(self, dim: int, out: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.lstm = nn.LSTM(dim, out, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Sequential(nn.Linear(out, out), nn.ReLU(), nn.Linear(out, out), nn.ReLU())

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence

        # move the valid steps to the front (stable), so a non-prefix mask still packs right
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.norm(x), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.fc(self.drop(h[-1]))


@MODELS.register("tfn")
class TensorFusion(_Baseline):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017), for 1, 2 or 3 modalities.

    Each modality's subnetwork gives ``z_m`` (``subnet_dim`` wide); the fusion tensor is the
    outer product of the vectors ``[z_m; 1]`` over the input modalities, so it holds every
    unimodal, bimodal and trimodal product term. It is flattened and fed to a ReLU MLP (the
    paper's sentiment inference subnetwork) that gives ``fused``. A missing modality has
    ``z_m = 0`` with its constant 1 kept, so the tensor degrades to the lower-order terms of the
    modalities present. (The paper prepends the 1; appending it is the same up to a permutation
    of the flattened tensor.)
    """

    Config = TFNConfig
    conversational = False

    def __init__(self, config: TFNConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]):
        super().__init__(config, spec, inputs)
        c: TFNConfig = self.config  # type: ignore[assignment]
        d = c.subnet_dim
        subnets: dict[str, nn.Module] = {}
        for m, s in self.inputs.items():
            if s.kind == "sequence" and m in c.lstm_modalities:
                subnets[m] = _LSTMSubnet(s.dim, d, c.dropout)
            else:
                subnets[m] = nn.Sequential(
                    nn.LayerNorm(s.dim),
                    nn.Dropout(c.dropout),
                    nn.Linear(s.dim, d),
                    nn.ReLU(),
                    nn.Linear(d, d),
                    nn.ReLU(),
                    nn.Linear(d, d),
                    nn.ReLU(),
                )
        self.subnets = nn.ModuleDict(subnets)
        self.tensor_size = (d + 1) ** len(self.inputs)
        self.post = nn.Sequential(
            nn.Dropout(c.dropout), _mlp(self.tensor_size, c.hidden, c.dropout, c.post_layers)
        )
        self.build_heads(c.hidden)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (see :mod:`emofuse.models.base`)."""
        batch = self.encode_inputs(batch)
        xs, masks = self._read(batch)
        experts: dict[str, Tensor] = {}
        tensor: Tensor | None = None
        for m, net in self.subnets.items():
            pres = masks[m].any(dim=1, keepdim=True)
            lstm = isinstance(net, _LSTMSubnet)
            z = net(xs[m], masks[m]) if lstm else net(masked_mean(xs[m], masks[m]))
            z = z * pres.to(z.dtype)
            experts[m] = z
            z1 = torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)
            tensor = z1 if tensor is None else (tensor.unsqueeze(2) * z1.unsqueeze(1)).flatten(1)
        assert tensor is not None
        fused = self.post(tensor)
        emo, sent = self.apply_heads(fused)
        return ModelOutput(emotion_logits=emo, sentiment=sent, fused=fused, experts=experts)


# -- MulT -----------------------------------------------------------------------------------


class MulTConfig(ModelConfig):
    """Options of the ``mult`` model (Multimodal Transformer, unaligned)."""

    dim: int = Field(
        32, gt=0, description="Width of each modality's sequence (divisible by heads)."
    )
    heads: int = Field(4, gt=0, description="Attention heads.")
    layers: int = Field(2, ge=1, description="Layers of each crossmodal transformer.")
    self_layers: int = Field(
        2, ge=1, description="Layers of the self-attention transformer over each target."
    )
    conv_kernel: int = Field(
        1, ge=1, description="Kernel of the temporal Conv1d projection (odd; the paper uses 1)."
    )
    max_steps: int | None = Field(
        64,
        gt=0,
        description="Longer sequences are mean-pooled over non-overlapping windows (valid steps "
        "only) to at most this many steps before the projection, keeping attention affordable "
        "on CPU (e.g. eGeMAPS LLDs at 100 Hz); None keeps every step.",
    )
    pool: Literal["last", "mean"] = Field(
        "last",
        description="Sequence summary of each target: its last valid step (the paper) or the "
        "mean over valid steps.",
    )


class CrossmodalLayer(nn.Module):
    """One crossmodal attention block: the target sequence attends to a source sequence.

    Pre-norm, as in MulT: ``x += Attn(LN(x), LN(src), LN(src))`` then ``x += FFN(LN(x))``. Rows
    whose source is missing skip the attention update (the source then has nothing to add).

    Args:
        dim: Model width.
        heads: Attention heads.
        dropout: Dropout on attention weights and residual branches.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, src: Tensor, src_pad: Tensor, src_present: Tensor) -> Tensor:
        """Update ``x`` ``(N, Tt, d)`` from ``src`` ``(N, Ts, d)``; ``src_pad`` is ``True`` at padding."""
        kv = self.norm_kv(src)
        a, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=src_pad, need_weights=False)
        x = x + self.drop(a) * src_present.to(a.dtype)[:, None, None]
        return x + self.drop(self.ff(self.norm_ff(x)))


@MODELS.register("mult")
class MulT(_Baseline):
    """Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

    Each modality is projected by a temporal ``Conv1d`` to ``dim`` and given sinusoidal
    positions. For every ordered pair (target ``α``, source ``β``) a crossmodal transformer lets
    ``α`` attend to ``β`` (key padding masks; no alignment is assumed); each target
    concatenates its crossmodal outputs and runs a self-attention transformer over them; its
    last valid step (or mean) summarises it. The summaries of all targets are concatenated
    (zeros for a missing target) and an MLP gives ``fused``. No CTC module: inputs are never
    word-aligned here. Sequences longer than ``max_steps`` are first mean-pooled in windows
    (see :func:`~emofuse.models.ops.masked_downsample`) so attention stays affordable on CPU. A
    row whose modality is missing opens its first step as a key
    (:func:`~emofuse.models.ops.safe_key_padding_mask`, no ``NaN``) and its results are zeroed.

    With a single input modality there is no pair, and the model reduces to that modality's
    Conv1d projection followed by the self-attention transformer (a unimodal transformer).
    """

    Config = MulTConfig
    conversational = False

    def __init__(self, config: MulTConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]):
        super().__init__(config, spec, inputs)
        c: MulTConfig = self.config  # type: ignore[assignment]
        if c.dim % c.heads:
            raise ConfigError(f"mult: dim {c.dim} is not divisible by heads {c.heads}")
        if c.conv_kernel % 2 == 0:
            raise ConfigError(f"mult: conv_kernel must be odd, got {c.conv_kernel}")
        names = list(self.inputs)
        self.proj = nn.ModuleDict(
            {
                m: nn.Conv1d(s.dim, c.dim, c.conv_kernel, padding=c.conv_kernel // 2, bias=False)
                for m, s in self.inputs.items()
            }
        )
        self.embed_drop = nn.Dropout(c.dropout)
        self.cross = nn.ModuleDict(
            {
                f"{t}<{s}": nn.ModuleList(
                    [CrossmodalLayer(c.dim, c.heads, c.dropout) for _ in range(c.layers)]
                )
                for t in names
                for s in names
                if s != t
            }
        )
        self.cross_norm = nn.ModuleDict({k: nn.LayerNorm(c.dim) for k in self.cross})
        width = c.dim * max(len(names) - 1, 1)
        self.memory = nn.ModuleDict(
            {
                m: nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(
                        width,
                        c.heads,
                        dim_feedforward=4 * width,
                        dropout=c.dropout,
                        batch_first=True,
                        norm_first=True,
                    ),
                    c.self_layers,
                    norm=nn.LayerNorm(width),
                    enable_nested_tensor=False,
                )
                for m in names
            }
        )
        self.out = _mlp(len(names) * (width + 1), c.hidden, c.dropout, 2)
        self.build_heads(c.hidden)

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (see :mod:`emofuse.models.base`)."""
        batch = self.encode_inputs(batch)
        xs, masks = self._read(batch)
        c: MulTConfig = self.config  # type: ignore[assignment]
        names = list(self.inputs)
        seq: dict[str, Tensor] = {}
        pads: dict[str, Tensor] = {}
        pres: dict[str, Tensor] = {}
        for m in names:
            if c.max_steps is not None:
                xs[m], masks[m] = masked_downsample(xs[m], masks[m], c.max_steps)
            h = self.proj[m](xs[m].transpose(1, 2)).transpose(1, 2)  # (N, T, dim)
            # MulT's positions: computed in its own dtype, frequencies over `dim`
            pe = sinusoidal_positions(
                h.shape[1], c.dim, h.device, h.dtype, compute_dtype=None, period_dim=c.dim
            )
            h = math.sqrt(c.dim) * h + pe
            seq[m] = self.embed_drop(h)
            pads[m], pres[m] = safe_key_padding_mask(masks[m], "first"), masks[m].any(dim=1)
        experts: dict[str, Tensor] = {}
        parts = []
        for t in names:
            sources = [s for s in names if s != t]
            if sources:
                outs = []
                for s in sources:
                    h = seq[t]
                    for layer in self.cross[f"{t}<{s}"]:
                        h = layer(h, seq[s], pads[s], pres[s])
                    outs.append(self.cross_norm[f"{t}<{s}"](h))
                h = torch.cat(outs, dim=-1)
            else:
                h = seq[t]
            h = self.memory[t](h, src_key_padding_mask=pads[t])
            if c.pool == "last":
                valid = ~pads[t]
                steps = torch.arange(h.shape[1], device=h.device)
                last = torch.where(valid, steps, -1).argmax(dim=1)
                summary = h[torch.arange(h.shape[0], device=h.device), last]
            else:
                summary = masked_mean(h, ~pads[t])
            flag = pres[t].to(summary.dtype).unsqueeze(1)
            summary = summary * flag
            experts[t] = summary
            parts += [summary, flag]
        fused = self.out(torch.cat(parts, dim=-1))
        emo, sent = self.apply_heads(fused)
        return ModelOutput(emotion_logits=emo, sentiment=sent, fused=fused, experts=experts)

"""MiSTER-E: mixture of speech–text experts for emotion recognition in conversation.

Dutta, Balaji & Ganapathy, *A Mixture-of-Experts Model for Multimodal Emotion Recognition in
Conversations* (arXiv 2602.23300, 2026). Reference code: ``iiscleap/MiSTER-E``
(``hierarchical_moe.py``, ``train_moe.py``); this is an independent implementation.

Architecture (per utterance, ``H`` = ``config.hidden``):

1. **Utterance vectors.** Speech = the ``audio`` input, text = the ``text`` input; a sequence
   feature is mean-pooled over its valid steps. Each is standardised by a ``BatchNorm1d``
   fitted on the rows that carry the modality (eGeMAPS functionals span orders of magnitude).
   MiSTER-E is a speech–text model: ``face`` inputs are accepted and ignored; a model with
   neither ``audio`` nor ``text`` is a :class:`~emofuse.errors.ConfigError`.
2. **Context layer** per modality over the dialogue (rows regrouped with
   :func:`~emofuse.models.base.to_dialogues`): parallel ``Conv1d`` of width 1, 3 and 5 over
   the turns, each followed by ReLU and summed, then a bidirectional GRU (``context_layers``
   layers, ``H/2`` per direction) plus a linear skip from the utterance vectors → ``(N, H)``.
   The GRU is run on packed sequences, so a dialogue's outputs do not depend on how long the
   other dialogues of the batch are. Without ``batch["dialogue"]`` every utterance is its own
   dialogue of length 1 (the layer still runs).
3. **Experts.** *speech*: audio context → linear classifier. *text*: text context → linear
   classifier. *cross-modal*: both contexts projected, ``cross_blocks`` blocks of text↔audio
   cross-attention over the dialogue turns followed by per-stream self-attention (each
   sub-layer residual + LayerNorm), concatenation → LayerNorm → Linear → ReLU → classifier.
4. **Gate.** An MLP over the concatenated expert *outputs* (emotion logits, plus sentiment
   scores for a joint task; ``gate_input="representations"`` uses the expert representations
   instead), softmax with temperature ``gate_temperature``. ``emotion_logits`` (and
   ``sentiment``) are the gate-weighted sums of the experts' predictions; ``fused`` is the
   gate-weighted sum of their representations (for plots and explainers).
5. **Loss** (:meth:`MisterModel.loss`): the mixture loss (cross-entropy, or focal when
   ``focal_gamma > 0``; L1 on sentiment) + ``expert_weight`` × the same loss on each expert
   + ``contrastive_weight`` × supervised contrastive loss between the paired speech and text
   context representations + ``kl_weight`` × mean pairwise symmetric KL between the experts.

No speaker identity is read anywhere (no speaker embeddings, ids or speaker-aware context).

**Outputs.** ``gates`` ``(N, E)`` over ``gate_names``; ``gate_mask`` (the same tensor as
``available``) is ``True`` where an expert's modalities are present; a row with neither modality
is all ``False`` and gets equal gates. MiSTER-E's experts have no level-1 unit gating, so
``unit_weights`` is empty. Nothing is stored on the modules during a forward pass except the
``BatchNorm`` running statistics while training.

**Why these experts are not** :class:`~emofuse.models.experts.base.Expert` **plugins.** The
expert interface shared with EGMF takes per-utterance sequences ``{m: (N, T, H)}`` and returns
an ``(N, H)`` vector. MiSTER-E's experts are not separate modules of that shape: the speech and
text experts are a ``BatchNorm`` + context layer over the *dialogue* (``norms[k]``,
``contexts[k]``) plus heads held in ``expert_emotion`` / ``expert_sentiment`` (whose context
outputs the contrastive loss also reads), and the cross-modal expert (:class:`CrossModalExpert`,
``cross``) reads the two context layers' ``(G, U, H)`` dialogue tensors, not the inputs. Wrapping
them as registry experts would regroup their parameters under new module paths (new state-dict
keys, so saved MiSTER-E models would no longer load) and change the order in which parameters
are created (so seeded training would draw different initial weights). They therefore stay
internal to this model; what MiSTER-E shares with the experts is the tensor helpers of
:mod:`emofuse.models.ops` (its attention guard is
:func:`~emofuse.models.ops.safe_key_padding_mask` with ``empty_rows="all"``).

**Missing modalities.** A row without audio (key absent or mask all ``False``) has its speech
and cross-modal experts removed from the gate (the softmax is renormalised over the rest);
likewise for text. Expert, contrastive and KL terms skip rows where the expert (or pair) is
unavailable. A row with neither modality is predicted by all experts with equal weight (from
the dialogue context only) and contributes only to the mixture loss. A model configured with
only one of the two modalities has just that one expert (``gate_names == ["text"]``, gates
``(N, 1)``).

**Where this differs from the public reference code** (we follow the paper's description or
sound practice, and say so):

* The reference training script builds its "validation" loader from the *test* split and keeps
  the checkpoint with the best test F1. emofuse selects models on the validation split only.
* Reference gate: an MLP ``3C → 10 → 3`` over the concatenated expert logits, softmax with
  temperature 2 — our default (``gate_input="logits"``, ``gate_hidden`` default 16,
  ``gate_temperature`` 2.0); masked experts contribute zeros to the gate input.
* Reference focal loss uses ``gamma=3`` on the mixture and every expert and averages over
  padding positions; here ``focal_gamma`` defaults to 0 (plain cross-entropy, so the shared
  ``class_weights`` / ``label_smoothing`` options apply) and averages only over labelled rows.
* Reference contrastive loss (β=2, temperature 1 — our defaults) is computed on the
  cross-modal expert's audio/text streams and treats the padding label −1 as a class. Here it
  is computed between the speech and text *context* representations (the paired speech–text
  representations of the paper's abstract) on labelled rows with both modalities only.
* Reference symmetric KL (weight 0.1, our default) averages over padded positions too; here
  only over rows where both experts of a pair are available.
* Reference cross-modal expert attends over the raw LLM utterance embeddings without a padding
  mask (padded turns are attended to); here it attends over the context-layer outputs with
  padded and modality-missing turns masked out as keys.
* Sizes scaled for CPU training on frozen features: 2 GRU layers (reference 3, hidden 512 per
  direction), 2 cross-attention blocks (reference 4, width 1024).
* Joint sentiment regression (a head per expert, mixed with the same gates) is an emofuse
  extension for datasets with continuous sentiment (MOSI/MOSEI/SIMS).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emofuse.errors import ConfigError, InputError
from emofuse.models.base import (
    IGNORE_INDEX,
    MODALITIES,
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    from_dialogues,
    masked_mean,
    to_dialogues,
)
from emofuse.models.losses import focal_loss, pairwise_symmetric_kl, supervised_contrastive
from emofuse.models.ops import safe_key_padding_mask
from emofuse.spec import TaskSpec

EXPERT_NAMES = {"speech": "speech", "text": "text", "cross": "cross-modal"}
"""Internal module key → public gate name."""

_SOURCE = {"speech": "audio", "text": "text"}


@dataclass
class MisterOutput(ModelOutput):
    """:class:`ModelOutput` plus what MiSTER-E's loss needs.

    Attributes:
        expert_sentiment: ``gate name → (N,)`` each expert's sentiment score (joint tasks).
        available: ``(N, E)`` bool, column order of ``gate_names``: whether the row carries the
            modalities that expert needs (after training-time modality dropout).
    """

    expert_sentiment: dict[str, Tensor] = field(default_factory=dict)
    available: Tensor | None = None


class ContextLayer(nn.Module):
    """Parallel Conv1d (k = 1, 3, 5; ReLU; summed) over turns → BiGRU + linear skip.

    Args:
        dim: Utterance vector size.
        hidden: Output width (even; the GRU has ``hidden // 2`` units per direction).
        layers: GRU layers.
        dropout: Dropout between GRU layers.
    """

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, hidden, k, padding=k // 2) for k in (1, 3, 5))
        self.gru = nn.GRU(
            hidden,
            hidden // 2,
            num_layers=layers,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.skip = nn.Linear(dim, hidden)

    def forward(self, x: Tensor, turns: Tensor) -> Tensor:
        """``x``: ``(G, U, D)`` with zeros at padded/missing turns; ``turns``: ``(G, U)`` bool.

        Valid turns of a dialogue are the first ``turns.sum(1)`` slots (as ``to_dialogues``
        lays them out).
        """
        h = x.transpose(1, 2)
        conv = sum(F.relu(c(h)) for c in self.convs).transpose(1, 2)
        lengths = turns.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(conv, lengths, batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return y + self.skip(x)


class CrossModalBlock(nn.Module):
    """Text↔audio cross-attention, then self-attention per stream; residual + LayerNorm."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()

        def mha() -> nn.MultiheadAttention:
            return nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)

        self.text_from_audio, self.audio_from_text = mha(), mha()
        self.text_self, self.audio_self = mha(), mha()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def _attend(attn: nn.MultiheadAttention, q: Tensor, kv: Tensor, pad: Tensor) -> Tensor:
        return attn(q, kv, kv, key_padding_mask=pad, need_weights=False)[0]

    def forward(self, t: Tensor, a: Tensor, t_pad: Tensor, a_pad: Tensor) -> tuple[Tensor, Tensor]:
        """``t``, ``a``: ``(G, U, W)``; ``*_pad``: ``(G, U)`` True at turns not to attend to."""
        t1 = self.norms[0](t + self.drop(self._attend(self.text_from_audio, t, a, a_pad)))
        a1 = self.norms[1](a + self.drop(self._attend(self.audio_from_text, a, t, t_pad)))
        t2 = self.norms[2](t1 + self.drop(self._attend(self.text_self, t1, t1, t_pad)))
        a2 = self.norms[3](a1 + self.drop(self._attend(self.audio_self, a1, a1, a_pad)))
        return t2, a2


class CrossModalExpert(nn.Module):
    """Projected contexts → cross-attention blocks → concat → LayerNorm → Linear → ReLU."""

    def __init__(self, hidden: int, blocks: int, heads: int, dropout: float):
        super().__init__()
        self.proj_text = nn.Linear(hidden, hidden)
        self.proj_audio = nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(CrossModalBlock(hidden, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(2 * hidden)
        self.fc = nn.Linear(2 * hidden, hidden)

    def forward(self, t: Tensor, a: Tensor, t_ok: Tensor, a_ok: Tensor) -> Tensor:
        """``t``, ``a``: ``(G, U, H)`` contexts; ``*_ok``: ``(G, U)`` turns carrying the modality."""
        # a dialogue with no valid key at all would make attention NaN: let it attend to all its
        # (zero-input) turns instead — those rows are gated out of the mixture anyway
        t_pad = safe_key_padding_mask(t_ok, "all")
        a_pad = safe_key_padding_mask(a_ok, "all")
        t, a = self.proj_text(t), self.proj_audio(a)
        for block in self.blocks:
            t, a = block(t, a, t_pad, a_pad)
        return F.relu(self.fc(self.norm(torch.cat([t, a], dim=-1))))


@MODELS.register("mister")
class MisterModel(FusionModel):
    """MiSTER-E: speech, text and cross-modal experts mixed by a temperature-softmax gate.

    See the module docstring for the architecture, the loss and the differences from the
    reference code.
    """

    conversational = True

    class Config(ModelConfig):
        """MiSTER-E options (defaults follow the reference code where it is stated)."""

        context_layers: int = Field(
            2, ge=1, description="Bidirectional GRU layers in each context layer (reference: 3)."
        )
        cross_blocks: int = Field(
            2,
            ge=1,
            description="Cross-attention + self-attention blocks in the cross-modal expert (reference: 4).",
        )
        heads: int = Field(4, ge=1, description="Attention heads in the cross-modal expert.")
        gate_input: Literal["logits", "representations"] = Field(
            "logits",
            description="What the gate reads: the experts' predictions (logits, plus sentiment "
            "scores for joint tasks; as the reference) or their representations.",
        )
        gate_hidden: int = Field(
            16, ge=1, description="Hidden units of the gate MLP (reference: 10)."
        )
        gate_temperature: float = Field(
            2.0, gt=0.0, description="Softmax temperature of the gate (reference: 2)."
        )
        expert_weight: float = Field(
            1.0, ge=0.0, description="Weight of each expert's own emotion/sentiment loss."
        )
        contrastive_weight: float = Field(
            2.0,
            ge=0.0,
            description="Weight (beta) of the supervised contrastive loss between the speech and "
            "text context representations (reference: 2).",
        )
        contrastive_temperature: float = Field(
            1.0,
            gt=0.0,
            description="Temperature of the supervised contrastive loss (reference: 1).",
        )
        kl_weight: float = Field(
            0.1, ge=0.0, description="Weight of the mean pairwise symmetric KL between experts."
        )
        focal_gamma: float = Field(
            0.0,
            ge=0.0,
            description="Focal-loss gamma for the mixture and expert emotion losses; 0 = "
            "cross-entropy (reference: 3).",
        )

        @model_validator(mode="after")
        def _check(self) -> MisterModel.Config:
            if self.hidden % 2:
                raise ValueError(
                    "hidden must be even (bidirectional GRU of hidden/2 per direction)"
                )
            if self.hidden % self.heads:
                raise ValueError(
                    f"hidden ({self.hidden}) must be divisible by heads ({self.heads})"
                )
            if self.focal_gamma > 0 and self.label_smoothing > 0:
                raise ValueError("label_smoothing is not supported with focal_gamma > 0")
            return self

    config: MisterModel.Config

    def __init__(self, config: ModelConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]):
        super().__init__(config, spec, inputs)
        cfg = self.config
        h = cfg.hidden
        self.sources = [k for k in ("speech", "text") if _SOURCE[k] in self.inputs]
        if not self.sources:
            raise ConfigError(
                f"model 'mister' is a speech-text model and needs an 'audio' and/or 'text' input; "
                f"got {sorted(self.inputs)}"
            )
        self.expert_keys = list(self.sources) + (["cross"] if len(self.sources) == 2 else [])
        self.gate_names = [EXPERT_NAMES[k] for k in self.expert_keys]
        self.norms = nn.ModuleDict(
            {k: nn.BatchNorm1d(self.inputs[_SOURCE[k]].dim) for k in self.sources}
        )
        self.contexts = nn.ModuleDict(
            {
                k: ContextLayer(self.inputs[_SOURCE[k]].dim, h, cfg.context_layers, cfg.dropout)
                for k in self.sources
            }
        )
        self.cross = (
            CrossModalExpert(h, cfg.cross_blocks, cfg.heads, cfg.dropout)
            if "cross" in self.expert_keys
            else None
        )
        self.drop = nn.Dropout(cfg.dropout)
        n_cls = spec.num_emotions
        self.expert_emotion = (
            nn.ModuleDict({k: nn.Linear(h, n_cls) for k in self.expert_keys}) if n_cls else None
        )
        self.expert_sentiment = (
            nn.ModuleDict({k: nn.Linear(h, 1) for k in self.expert_keys})
            if spec.sentiment_range is not None
            else None
        )
        e = len(self.expert_keys)
        per_expert = (
            h
            if cfg.gate_input == "representations"
            else n_cls + (1 if self.expert_sentiment is not None else 0)
        )
        self.gate = nn.Sequential(
            nn.Linear(e * per_expert, cfg.gate_hidden), nn.ReLU(), nn.Linear(cfg.gate_hidden, e)
        )
        # predictions come from the experts' own heads, mixed by the gate
        self.emotion_head = None
        self.sentiment_head = None

    # -- inputs ------------------------------------------------------------------------------
    def _utterances(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Pooled, standardised utterance vectors ``(N, D)`` and presence ``(N,)`` per source."""
        ref = next(
            (batch[k] for k in (*MODALITIES, "dialogue", "emotion", "sentiment") if k in batch),
            None,
        )
        if ref is None:
            raise InputError(
                None, "batch has no modality features and no targets (see the batch contract)"
            )
        n = ref.shape[0]
        device = self.gate[0].weight.device
        dtype = self.gate[0].weight.dtype
        vectors: dict[str, Tensor] = {}
        avail: dict[str, Tensor] = {}
        for k in self.sources:
            m = _SOURCE[k]
            dim = self.inputs[m].dim
            if m not in batch:
                vectors[k] = torch.zeros(n, dim, device=device, dtype=dtype)
                avail[k] = torch.zeros(n, dtype=torch.bool, device=device)
                continue
            x = batch[m].to(dtype)
            if x.dim() == 2:
                x = x[:, None, :]
            if x.shape[-1] != dim:
                raise InputError(
                    None, f"batch[{m!r}] has feature size {x.shape[-1]}; the model expects {dim}"
                )
            mask = batch.get(f"{m}_mask")
            ok = (
                mask.any(1)
                if mask is not None
                else torch.ones(n, dtype=torch.bool, device=x.device)
            )
            pooled = masked_mean(torch.nan_to_num(x), mask)
            vectors[k], avail[k] = pooled, ok
        if self.training and self.config.modality_dropout > 0 and len(self.sources) == 2:
            hide = {
                k: (torch.rand(n, device=device) < self.config.modality_dropout) & avail[k]
                for k in self.sources
            }
            left = sum((avail[k] & ~hide[k]).long() for k in self.sources)
            for k in self.sources:  # never hide every modality of a row
                avail[k] = avail[k] & ~(hide[k] & (left > 0))
        for k in self.sources:
            vectors[k] = self._standardise(k, vectors[k], avail[k])
        return vectors, avail

    def _standardise(self, key: str, x: Tensor, ok: Tensor) -> Tensor:
        """BatchNorm over the rows that carry the modality; zeros elsewhere."""
        bn = self.norms[key]
        out = torch.zeros_like(x)
        if not bool(ok.any()):
            return out
        rows = x[ok]
        use_batch = self.training and rows.shape[0] > 1
        normed = F.batch_norm(
            rows,
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            training=use_batch,
            momentum=bn.momentum if bn.momentum is not None else 0.1,
            eps=bn.eps,
        )
        if use_batch:
            bn.num_batches_tracked.add_(1)
        out[ok] = normed
        return out

    # -- forward -----------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> MisterOutput:
        """Predict for one batch (see :mod:`emofuse.models.base` for the contract)."""
        batch = self.encode_inputs(batch)
        vectors, avail = self._utterances(batch)
        reps: dict[str, Tensor] = {}
        ctx_d: dict[str, Tensor] = {}
        ok_d: dict[str, Tensor] = {}
        index = None
        for k in self.sources:
            x_d, turns, index = to_dialogues(vectors[k], batch)
            ok_d[k] = to_dialogues(avail[k], batch)[0]
            ctx_d[k] = self.contexts[k](x_d, turns)
            reps[k] = from_dialogues(ctx_d[k], index)
        if self.cross is not None:
            cross_d = self.cross(ctx_d["text"], ctx_d["speech"], ok_d["text"], ok_d["speech"])
            reps["cross"] = from_dialogues(cross_d, index)
            avail["cross"] = avail["speech"] & avail["text"]

        keys = self.expert_keys
        available = torch.stack([avail[k] for k in keys], dim=1)
        emo = (
            {k: self.expert_emotion[k](self.drop(reps[k])) for k in keys}
            if self.expert_emotion
            else {}
        )
        sent = (
            {k: self.expert_sentiment[k](self.drop(reps[k])).squeeze(-1) for k in keys}
            if self.expert_sentiment
            else {}
        )

        if self.config.gate_input == "representations":
            parts = [reps[k] for k in keys]
        else:
            parts = [
                torch.cat(([emo[k]] if emo else []) + ([sent[k][:, None]] if sent else []), -1)
                for k in keys
            ]
        gate_in = torch.cat(
            [p * available[:, i, None].to(p.dtype) for i, p in enumerate(parts)], -1
        )
        scores = self.gate(gate_in).masked_fill(~available, float("-inf"))
        nothing = ~available.any(1, keepdim=True)  # no modality at all: equal weights
        scores = torch.where(nothing, torch.zeros_like(scores), scores)
        gates = torch.softmax(scores / self.config.gate_temperature, dim=-1)

        def mix(values: dict[str, Tensor]) -> Tensor:
            stacked = torch.stack([values[k] for k in keys], dim=1)  # (N, E, ...)
            w = gates.reshape(*gates.shape, *([1] * (stacked.dim() - 2)))
            return (w * stacked).sum(1)

        names = [EXPERT_NAMES[k] for k in keys]
        return MisterOutput(
            emotion_logits=mix(emo) if emo else None,
            sentiment=mix(sent) if sent else None,
            fused=mix(reps),
            experts={EXPERT_NAMES[k]: reps[k] for k in keys},
            expert_logits={EXPERT_NAMES[k]: emo[k] for k in emo},
            gates=gates,
            gate_names=names,
            gate_mask=available,
            expert_sentiment={EXPERT_NAMES[k]: sent[k] for k in sent},
            available=available,
        )

    # -- loss --------------------------------------------------------------------------------
    def loss(self, out: ModelOutput, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mixture loss (via :meth:`FusionModel.loss`) + per-expert, contrastive and KL terms.

        Returns a dict with ``"loss"`` (the total) and every term: ``emotion``, ``sentiment``,
        ``expert_<name>``, ``expert_<name>_sentiment``, ``contrastive``, ``kl`` (unweighted
        values; the total applies the config weights).
        """
        cfg = self.config
        gamma = cfg.focal_gamma
        terms = super().loss(
            dataclasses.replace(out, emotion_logits=None) if gamma > 0 else out, batch
        )
        total = terms.pop("loss")
        available = getattr(out, "available", None)
        if available is None:  # a plain ModelOutput: assume every expert ran on every row
            available = torch.ones(
                out.fused.shape[0], len(out.gate_names), dtype=torch.bool, device=out.fused.device
            )
        weight = None if cfg.class_weights is None else out.fused.new_tensor(cfg.class_weights)

        def emotion_loss(logits: Tensor, target: Tensor) -> Tensor:
            if gamma > 0:
                return focal_loss(logits, target, gamma, weight, IGNORE_INDEX)
            return F.cross_entropy(
                logits,
                target,
                weight=weight,
                ignore_index=IGNORE_INDEX,
                label_smoothing=cfg.label_smoothing,
            )

        target = batch.get("emotion") if out.emotion_logits is not None else None
        labelled = target is not None and bool((target != IGNORE_INDEX).any())
        if labelled and gamma > 0:
            terms["emotion"] = emotion_loss(out.emotion_logits, target)
            total = total + cfg.emotion_weight * terms["emotion"]
        col = {name: i for i, name in enumerate(out.gate_names)}
        if labelled and cfg.expert_weight > 0:
            for name, logits in out.expert_logits.items():
                t = target.masked_fill(~available[:, col[name]], IGNORE_INDEX)
                if bool((t != IGNORE_INDEX).any()):
                    terms[f"expert_{name}"] = emotion_loss(logits, t)
                    total = total + cfg.expert_weight * cfg.emotion_weight * terms[f"expert_{name}"]
        senti = batch.get("sentiment") if out.sentiment is not None else None
        expert_sentiment = getattr(out, "expert_sentiment", {})
        if senti is not None and cfg.expert_weight > 0:
            for name, score in expert_sentiment.items():
                ok = ~torch.isnan(senti) & available[:, col[name]]
                if bool(ok.any()):
                    terms[f"expert_{name}_sentiment"] = F.l1_loss(score[ok], senti[ok])
                    total = (
                        total
                        + cfg.expert_weight
                        * cfg.sentiment_weight
                        * terms[f"expert_{name}_sentiment"]
                    )
        if labelled and cfg.contrastive_weight > 0 and {"speech", "text"} <= set(out.experts):
            both = available[:, col["speech"]] & available[:, col["text"]]
            t = target.masked_fill(~both, IGNORE_INDEX)
            if bool((t != IGNORE_INDEX).any()):
                terms["contrastive"] = supervised_contrastive(
                    out.experts["speech"], out.experts["text"], t, cfg.contrastive_temperature
                )
                total = total + cfg.contrastive_weight * terms["contrastive"]
        if cfg.kl_weight > 0 and len(out.expert_logits) > 1:
            names = list(out.expert_logits)
            terms["kl"] = pairwise_symmetric_kl(
                [out.expert_logits[nm] for nm in names], [available[:, col[nm]] for nm in names]
            )
            total = total + cfg.kl_weight * terms["kl"]
        terms["loss"] = total
        return terms

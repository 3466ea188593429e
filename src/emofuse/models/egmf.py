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
3. *Experts* (``experts``, names in the :data:`~emofuse.models.experts.EXPERTS` registry,
   default the three built-ins; each is an :class:`~emofuse.models.experts.base.Expert` whose
   ``(N, H)`` vector is layer-normalised): ``"local"``
   (:mod:`~emofuse.models.experts.local`), ``"cross-modal"``
   (:mod:`~emofuse.models.experts.cross_modal`), ``"global-context"``
   (:mod:`~emofuse.models.experts.global_context`); a registered plugin expert is used the same
   way, by name. Inside each built-in, level 1 of the gating weighs modalities (or modality
   pairs) with feature gates renormalised over the present ones. Each expert's options are
   ``expert_options[name]`` (validated against its ``Config``).
4. *Level 2 gate* (:class:`~emofuse.models.gating.HierarchicalGate`): softmax over experts
   conditioned on their concatenated outputs, with temperature, restricted to the experts usable
   for each utterance (the cross-modal expert needs two present modalities; a text-only model
   therefore mixes the two other experts only, and its cross-modal gate column is always 0),
   plus the weighted load-balance loss ``aux["load_balance"]``.
5. *Fusion*: ``f = Σ_e G_e h_e``; ``fused = LayerNorm(f + FFN(f))``.
6. *Joint heads* on ``fused``: emotion logits and a sentiment score (the base loss trains them
   together where a dataset has both; either may be absent from the task).

:class:`~emofuse.models.base.ModelOutput` carries ``experts`` (each expert's ``(N, H)``),
``gates`` ``(N, E)`` over ``gate_names`` (the expert names, in ``experts`` order),
``gate_mask`` ``(N, E)`` (which experts were usable for each utterance; a row with no usable
expert is all ``False`` and gets uniform gates over zero vectors), ``aux``, and each expert's
level-1 weights ``unit_weights[name]`` ``(N, U)`` with their column names
``unit_names[name]`` (for every expert that gates units; ``U = 0`` for the cross-modal expert of
a single-modality model). Nothing is stored on the modules during a forward pass, so one model
can serve concurrent requests.

**Configs of older versions.** Before ``expert_options``, each built-in expert had its own
field (``local``, ``cross_modal``, ``global_context``); a config (e.g. the ``config.json`` of a
saved model) that still has them is read into ``expert_options`` and builds the same model.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import Tensor, nn

from emofuse.config import Config, format_validation_error
from emofuse.errors import InputError, UnknownComponentError
from emofuse.models.base import (
    MODALITIES,
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    drop_modalities,
)
from emofuse.models.experts import EXPERTS, Expert
from emofuse.models.gating import GateConfig, HierarchicalGate
from emofuse.models.ops import sinusoidal_positions
from emofuse.spec import TaskSpec

_LEGACY_FIELDS = {
    "local": "local",
    "cross_modal": "cross-modal",
    "global_context": "global-context",
}
"""Config keys of older versions (one per built-in expert) → the expert name they configure."""


class EGMFConfig(ModelConfig):
    """Options of EGMF (plus the shared :class:`~emofuse.models.base.ModelConfig` ones).

    The legacy keys ``local``, ``cross_modal`` and ``global_context`` (configs and saved models
    of older versions) are accepted and read into ``expert_options``.
    """

    experts: list[str] = Field(
        default_factory=lambda: ["local", "cross-modal", "global-context"],
        description="Experts to build and gate, by registered expert name, in gate-column order "
        "(a subset is an ablation; a plugin expert is used by its name).",
    )
    expert_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        validate_default=True,
        description="Options of each expert by name, validated against that expert's Config, "
        "e.g. {'cross-modal': {'heads': 4}}; stored complete (defaults filled in) for every "
        "listed expert. Built-ins: local (kernel_sizes, layers), cross-modal (heads, ff_mult, "
        "max_steps), global-context (heads, layers, ff_mult, max_steps, dialogue_context, "
        "dialogue_layers, dialogue_causal).",
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

    @model_validator(mode="before")
    @classmethod
    def _read_legacy_fields(cls, data: Any) -> Any:
        """Move the per-expert keys of older versions into ``expert_options``."""
        if not isinstance(data, dict):
            return data
        options = data.get("expert_options")
        legacy = [k for k in _LEGACY_FIELDS if k in data]
        if not legacy and not isinstance(options, dict):
            return data
        data = dict(data)
        if isinstance(options, dict):
            options = {k: _as_dict(v) for k, v in options.items()}
        elif options is None:
            options = {}
        else:  # not a mapping: leave it to the field's own error
            return data
        for key in legacy:
            name = _LEGACY_FIELDS[key]
            if name in options:
                raise ValueError(
                    f"the options of expert {name!r} are given twice: as {key!r} (the form of "
                    f"older versions) and as expert_options[{name!r}]"
                )
            options[name] = _as_dict(data.pop(key))
        data["expert_options"] = options
        return data

    @field_validator("experts")
    @classmethod
    def _known_and_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one expert is needed")
        if len(set(v)) != len(v):
            raise ValueError(f"experts are listed twice: {v}")
        for name in v:
            _expert_class(name)
        return v

    @field_validator("expert_options")
    @classmethod
    def _validate_options(
        cls, v: dict[str, dict[str, Any]], info: ValidationInfo
    ) -> dict[str, dict[str, Any]]:
        listed = list(info.data.get("experts") or [])
        out: dict[str, dict[str, Any]] = {}
        for name in [*listed, *(k for k in v if k not in listed)]:
            config_cls = _expert_class(name).Config
            try:
                options = config_cls.model_validate(v.get(name, {}))
            except ValidationError as err:
                raise ValueError(format_validation_error(err, f"expert {name!r}")) from None
            out[name] = options.model_dump(mode="json")
        return out

    @classmethod
    def option_config(cls, field: str, key: str) -> type[Config] | None:
        """The config class of the options ``field[key]`` (``expert_options`` → the expert's).

        Lets a printer of default configs (``emofuse config default model egmf``) document
        each expert's options; ``None`` for other fields and unknown experts.
        """
        if field != "expert_options":
            return None
        try:
            return _expert_class(key).Config
        except ValueError:
            return None

    def expert_config(self, name: str) -> Config:
        """The validated options of expert ``name`` (an instance of its ``Config``)."""
        return EXPERTS.get(name).Config.model_validate(self.expert_options.get(name, {}))


def _as_dict(value: Any) -> Any:
    """A config object as a plain mapping (other values unchanged, for pydantic to judge)."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _expert_class(name: str) -> type[Expert]:
    """The registered expert class ``name``, or a ``ValueError`` naming the closest match."""
    try:
        expert = EXPERTS.get(name)
    except UnknownComponentError as err:
        raise ValueError(str(err)) from None
    if not (isinstance(expert, type) and issubclass(expert, Expert)):
        raise ValueError(
            f"expert {name!r} ({expert!r}) does not subclass emofuse.models.experts.Expert"
        )
    return expert


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
        self.modalities = list(self.inputs)
        self.projections = nn.ModuleDict(
            {m: _InputProjection(s.dim, hidden, cfg.dropout) for m, s in self.inputs.items()}
        )
        self.gate_names = list(cfg.experts)
        self.experts = nn.ModuleDict(
            {
                name: EXPERTS.get(name)(
                    cfg.expert_config(name), hidden, self.modalities, cfg.dropout
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
        vectors = {name: out.vector for name, out in outputs.items()}
        mixed = self.gate(vectors, usable)
        f = mixed.fused
        fused = self.fusion_norm(f + self.fusion_ff(f))
        emotion, sentiment = self.apply_heads(fused)
        gated = [n for n in self.gate_names if outputs[n].unit_weights is not None]
        return ModelOutput(
            emotion_logits=emotion,
            sentiment=sentiment,
            fused=fused,
            experts=vectors,
            gates=mixed.gates,
            gate_names=list(self.gate_names),
            gate_mask=usable,
            unit_weights={n: outputs[n].unit_weights for n in gated},
            unit_names={n: list(self.experts[n].units) for n in gated},
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

r"""Hierarchical dynamic gating: feature gates inside each expert, then a gate across experts.

EGMF (arXiv 2601.07565) mixes its experts with "hierarchical dynamic gating"; the paper's
equations are not public, so the two levels below are our design.

**Level 1 — unit gates inside an expert** (:class:`ModalityGate`). An expert produces one vector
:math:`v_u \in \mathbb{R}^H` per *unit* :math:`u` — a modality for the local and global-context
experts, an ordered modality pair for the cross-modal expert — and a presence flag
:math:`\pi_u \in \{0, 1\}` per utterance. With :math:`c` the mean of the present units,

.. math::

    c &= \textstyle\sum_u \pi_u v_u \,/\, \max(1, \sum_u \pi_u) \\
    g_u &= \sigma\!\left(W_u [v_u; c] + b_u\right) \in (0, 1)^H
        &&\text{(feature gate: which features of } u \text{ to pass)} \\
    s_u &= \sigma\!\left(w_u^\top [v_u; c] + d_u\right) \in (0, 1)
        &&\text{(unit relevance)} \\
    \alpha_u &= \pi_u s_u \,/\, \textstyle\sum_{u'} \pi_{u'} s_{u'}
        &&\text{(zero for missing units, renormalised over present ones)} \\
    y &= \textstyle\sum_u \alpha_u \, (g_u \odot v_u).

Conditioning on :math:`c` lets a unit's gate depend on what the other modalities say (a noisy
face track can be turned down when text and voice agree). Renormalising over present units keeps
the scale of :math:`y` independent of how many modalities an utterance has, which is what makes
a missing modality at inference a change of weights rather than a change of scale. An utterance
with no present unit gets :math:`y = 0` and all-zero weights (never ``NaN``).

**Level 2 — the gate across experts** (:class:`HierarchicalGate`). Given expert outputs
:math:`h_e` (each layer-normalised by its expert, zero where the expert is unusable) and the
usability mask :math:`a_e` (e.g. the cross-modal expert is unusable for an utterance with fewer
than two modalities),

.. math::

    \ell &= W_2\, \mathrm{GELU}\!\left(W_1 [h_1; \dots; h_E] + b_1\right) + b_2 \\
    G_e &= \frac{a_e \exp(\ell_e / \tau)}{\sum_{e'} a_{e'} \exp(\ell_{e'} / \tau)} \\
    f &= \textstyle\sum_e G_e h_e.

The gate is conditioned on the experts' own outputs (what each expert "saw" in this utterance),
not only on a summary of the inputs, so it can learn which view is reliable per utterance. The
temperature :math:`\tau` sharpens (:math:`\tau < 1`) or flattens the mixture. Rows of :math:`G`
sum to one over usable experts; a row with no usable expert falls back to uniform weights over
all experts (their outputs are all zero then, so the fused vector is zero).

**Load balance.** A dense mixture computes every expert anyway, so balance is not about compute
(as in Switch Transformers, whose term :math:`E\sum_e f_e P_e` uses arg-max routing counts
:math:`f_e` and targets top-1 routing). What a dense gate must avoid is *collapse*: early on one
expert is slightly better, gets more weight, hence more gradient, and the others starve. We
penalise the KL divergence of the batch-mean gate from the batch-mean uniform-over-usable
distribution,

.. math::

    \bar G_e = \tfrac1N \textstyle\sum_i G_{ie}, \quad
    \bar U_e = \tfrac1N \textstyle\sum_i a_{ie} / \sum_{e'} a_{ie'}, \quad
    \mathcal{L}_{\text{balance}} = \lambda \, \mathrm{KL}(\bar G \,\|\, \bar U)
        = \lambda \textstyle\sum_e \bar G_e \log(\bar G_e / \bar U_e).

It is differentiable, zero when experts are used evenly *on average*, and leaves each
utterance's gate free to be sharp (specialisation). Using :math:`\bar U` instead of the uniform
distribution means an expert that cannot run (the cross-modal expert of a text-only model) is
not demanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import Field
from torch import Tensor, nn

from emofuse.config import Config


class ModalityGate(nn.Module):
    r"""Level 1: per-unit sigmoid feature gates and presence-renormalised unit weights.

    Args:
        units: Names of the gated units (modalities, or modality pairs such as ``"text<-audio"``).
        hidden: Width ``H`` of each unit vector.

    Shapes:
        ``forward({u: (N, H)}, {u: (N,) bool})`` → ``((N, H), (N, U))``: the gated mixture and the
        weights :math:`\alpha` (columns in ``units`` order; rows sum to 1, or to 0 when no unit is
        present).
    """

    def __init__(self, units: list[str], hidden: int) -> None:
        super().__init__()
        self.units = list(units)
        self.feature_gates = nn.ModuleDict({_key(u): nn.Linear(2 * hidden, hidden) for u in units})
        self.scores = nn.ModuleDict({_key(u): nn.Linear(2 * hidden, 1) for u in units})
        for lin in self.feature_gates.values():
            # start with the gates mostly open (sigmoid(1) ≈ 0.73) so early training sees signal
            nn.init.constant_(lin.bias, 1.0)

    def forward(
        self, vectors: dict[str, Tensor], present: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Gate and mix the unit vectors (see the module docstring for the equations)."""
        v = torch.stack([vectors[u] for u in self.units], dim=1)  # (N, U, H)
        p = torch.stack([present[u] for u in self.units], dim=1).to(v.dtype)  # (N, U)
        ctx = (v * p.unsqueeze(-1)).sum(dim=1) / p.sum(dim=1, keepdim=True).clamp_min(1.0)
        gated, scores = [], []
        for i, u in enumerate(self.units):
            z = torch.cat([v[:, i], ctx], dim=-1)
            gated.append(torch.sigmoid(self.feature_gates[_key(u)](z)) * v[:, i])
            scores.append(torch.sigmoid(self.scores[_key(u)](z)).squeeze(-1))
        s = torch.stack(scores, dim=1) * p
        alpha = s / s.sum(dim=1, keepdim=True).clamp_min(1e-6)
        out = (torch.stack(gated, dim=1) * alpha.unsqueeze(-1)).sum(dim=1)
        return out, alpha


class GateConfig(Config):
    """Options of the gate across experts (level 2)."""

    hidden: int = Field(
        64, gt=0, description="Width of the gate's MLP over the concatenated expert outputs."
    )
    temperature: float = Field(
        1.0, gt=0.0, description="Softmax temperature τ of the expert gate (< 1 sharpens)."
    )
    load_balance: float = Field(
        0.01,
        ge=0.0,
        description="Weight λ of the load-balance loss KL(mean gate ‖ mean uniform-over-usable); "
        "0 turns it off.",
    )


@dataclass
class GateOutput:
    """What :class:`HierarchicalGate` returns.

    Attributes:
        fused: ``(N, H)`` gate-weighted sum of the expert outputs.
        gates: ``(N, E)`` weights over the experts (rows sum to 1).
        aux: ``{"load_balance": scalar}`` already weighted (empty when λ = 0).
    """

    fused: Tensor
    gates: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


class HierarchicalGate(nn.Module):
    """Level 2: an input-conditioned softmax gate across experts, with a load-balance loss.

    Level 1 (the feature gates) lives inside each expert as a :class:`ModalityGate`; this module
    mixes what the experts return.

    Args:
        names: Expert names, in gate-column order.
        hidden: Width ``H`` of each expert output.
        config: Gate options.
        dropout: Dropout inside the gate MLP.
    """

    def __init__(
        self, names: list[str], hidden: int, config: GateConfig | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.names = list(names)
        self.config = config if config is not None else GateConfig()
        e = len(self.names)
        self.mlp = nn.Sequential(
            nn.Linear(e * hidden, self.config.hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(self.config.hidden, e),
        )
        # start from the uniform mixture: no expert is favoured before training says so
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, outputs: dict[str, Tensor], usable: Tensor | None = None) -> GateOutput:
        """Mix the experts.

        Args:
            outputs: ``name → (N, H)`` for every name in ``names``.
            usable: ``(N, E)`` bool, ``False`` where an expert has nothing to say for an
                utterance; ``None`` = all usable.

        Returns:
            The fused vector, the gates and the weighted load-balance loss.
        """
        h = torch.stack([outputs[n] for n in self.names], dim=1)  # (N, E, H)
        if usable is None:
            usable = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        # a row with no usable expert: treat all as usable (outputs are zero there anyway)
        usable = usable | ~usable.any(dim=1, keepdim=True)
        logits = self.mlp(h.flatten(1)) / self.config.temperature
        gates = torch.softmax(logits.masked_fill(~usable, float("-inf")), dim=-1)
        fused = (gates.unsqueeze(-1) * h).sum(dim=1)
        aux: dict[str, Tensor] = {}
        if self.config.load_balance > 0 and h.shape[0] > 0:
            aux["load_balance"] = self.config.load_balance * balance_kl(gates, usable)
        return GateOutput(fused=fused, gates=gates, aux=aux)


def balance_kl(gates: Tensor, usable: Tensor) -> Tensor:
    """``KL(mean gate ‖ mean uniform-over-usable)`` over a batch (``0`` when balanced).

    Args:
        gates: ``(N, E)`` rows summing to 1.
        usable: ``(N, E)`` bool, at least one ``True`` per row.
    """
    target = usable.to(gates.dtype)
    target = (target / target.sum(dim=1, keepdim=True)).mean(dim=0)
    mean = gates.mean(dim=0)
    ok = mean > 0
    return (mean[ok] * (mean[ok].log() - target[ok].log())).sum()


def _key(unit: str) -> str:
    """A ``ModuleDict`` key for a unit name (``.`` is not allowed there)."""
    return unit.replace(".", "_")


__all__ = ["GateConfig", "GateOutput", "HierarchicalGate", "ModalityGate", "balance_kl"]

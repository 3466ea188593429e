"""Loss functions shared by the fusion models (pure ``torch``, numerically stable).

* :func:`supervised_contrastive` — SupCon (Khosla et al., 2020) between paired views of the
  same utterances (e.g. speech and text), positives = every other view with the same label.
* :func:`symmetric_kl` / :func:`pairwise_symmetric_kl` — agreement between experts'
  predictive distributions.
* :func:`focal_loss` — focal loss (Lin et al., 2017) with class weights and an ignore index;
  ``gamma=0`` is exactly (weighted) cross-entropy.

All work in log space (``log_softmax`` / ``logsumexp``) and return a zero that keeps the
graph when there is nothing to average over, so a batch without labels never yields ``NaN``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from emofuse.models.base import IGNORE_INDEX

__all__ = ["focal_loss", "pairwise_symmetric_kl", "supervised_contrastive", "symmetric_kl"]


def _zero(*tensors: Tensor) -> Tensor:
    """A scalar zero connected to the inputs' graph (so ``backward`` still works)."""
    return sum((t.sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def supervised_contrastive(
    z_a: Tensor, z_b: Tensor, labels: Tensor, temperature: float = 1.0
) -> Tensor:
    """Supervised contrastive loss between two paired views of the same ``N`` utterances.

    Rows of ``z_a`` and ``z_b`` are paired (row ``i`` of both describe utterance ``i``). Rows
    whose label is :data:`~emofuse.models.base.IGNORE_INDEX` are dropped. With the remaining
    ``n`` pairs, the ``2n`` views ``v_1..v_2n`` (all of ``z_a``, then all of ``z_b``) are
    L2-normalised and, for each anchor ``i`` (the SupCon "L_out" form)::

        loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(v_i.v_p / t) / sum_{k != i} exp(v_i.v_k / t) )

    where ``P(i)`` is every other view with the same label as ``i`` — always including ``i``'s
    paired view in the other modality. The result is the mean of ``loss_i`` over the ``2n``
    anchors. Negatives come from both modalities.

    Args:
        z_a: ``(N, D)`` first view (e.g. speech representations).
        z_b: ``(N, D)`` second view (e.g. text representations), paired with ``z_a``.
        labels: ``(N,)`` long class labels; ``IGNORE_INDEX`` rows are left out.
        temperature: Softmax temperature ``t`` (> 0).

    Returns:
        Scalar loss; ``0`` (graph-connected) when no row is labelled.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2 or labels.shape != z_a.shape[:1]:
        raise ValueError(
            f"expected z_a, z_b of equal shape (N, D) and labels (N,); "
            f"got {tuple(z_a.shape)}, {tuple(z_b.shape)}, {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return _zero(z_a, z_b)
    views = F.normalize(torch.cat([z_a[keep], z_b[keep]]), dim=-1)
    y = torch.cat([labels[keep], labels[keep]])
    sim = views @ views.T / temperature
    self_mask = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)
    return per_anchor.mean()


def symmetric_kl(
    logits_p: Tensor, logits_q: Tensor, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Symmetric KL divergence ``KL(p||q) + KL(q||p)`` between two categorical predictions.

    ``p = softmax(logits_p)``, ``q = softmax(logits_q)`` over the last axis; computed as
    ``sum_c (p_c - q_c) (log p_c - log q_c)`` from ``log_softmax`` (never ``log(0)``).

    Args:
        logits_p: ``(..., C)`` logits.
        logits_q: ``(..., C)`` logits, same shape.
        reduction: ``"mean"`` over rows, or ``"none"`` for the ``(...,)`` per-row values.
    """
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"shape mismatch: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}")
    log_p = F.log_softmax(logits_p, dim=-1)
    log_q = F.log_softmax(logits_q, dim=-1)
    per_row = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)
    if reduction == "none":
        return per_row
    if per_row.numel() == 0:
        return _zero(logits_p, logits_q)
    return per_row.mean()


def pairwise_symmetric_kl(
    logits: Sequence[Tensor], masks: Sequence[Tensor] | None = None
) -> Tensor:
    """Mean symmetric KL over every pair of experts.

    For each pair ``(i, j)``, :func:`symmetric_kl` is averaged over the rows where both
    experts are valid (``masks[i] & masks[j]``); pairs with no such row are skipped and the
    result is the mean over the remaining pairs.

    Args:
        logits: ``E`` tensors ``(N, C)``, one per expert.
        masks: Optional ``E`` bool tensors ``(N,)``: rows where that expert is valid.

    Returns:
        Scalar; ``0`` (graph-connected) when there are fewer than two experts or no shared row.
    """
    if not logits:
        raise ValueError("pairwise_symmetric_kl needs at least one tensor")
    if masks is not None and len(masks) != len(logits):
        raise ValueError(f"{len(masks)} masks for {len(logits)} logits")
    values = []
    for i in range(len(logits)):
        for j in range(i + 1, len(logits)):
            if masks is None:
                values.append(symmetric_kl(logits[i], logits[j]))
                continue
            rows = masks[i] & masks[j]
            if bool(rows.any()):
                values.append(symmetric_kl(logits[i][rows], logits[j][rows]))
    if not values:
        return _zero(*logits)
    return torch.stack(values).mean()


def focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Focal loss ``-w_y (1 - p_y)^gamma log p_y``, averaged like ``F.cross_entropy``.

    The mean is weighted: ``sum_i w_{y_i} f_i / sum_i w_{y_i}`` over rows whose target is not
    ``ignore_index`` — so ``gamma=0`` equals ``F.cross_entropy(logits, target, weight=weight,
    ignore_index=ignore_index)`` exactly.

    Args:
        logits: ``(N, C)``.
        target: ``(N,)`` long class indices.
        gamma: Focusing parameter (``>= 0``).
        weight: Optional ``(C,)`` class weights.
        ignore_index: Target value of rows to skip.

    Returns:
        Scalar; ``0`` (graph-connected) when every row is ignored.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    keep = target != ignore_index
    if not bool(keep.any()):
        return _zero(logits)
    log_p = F.log_softmax(logits[keep], dim=-1)
    y = target[keep]
    log_pt = log_p.gather(1, y[:, None]).squeeze(1)
    per_row = -log_pt
    if gamma > 0:
        # 1 - p_t computed as -expm1(log p_t): accurate when p_t is close to 1
        per_row = per_row * (-torch.expm1(log_pt)).clamp_min(1e-12) ** gamma
    if weight is None:
        return per_row.mean()
    w = weight.to(per_row.dtype)[y]
    return (w * per_row).sum() / w.sum()

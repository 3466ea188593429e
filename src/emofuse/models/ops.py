"""Tensor helpers shared by the models and their experts.

Masked pooling and down-sampling of padded sequences, fixed sinusoidal positions, and the
key-padding guard every attention layer needs. Each helper is written once here; the experts
(:mod:`emofuse.models.experts`), EGMF, MiSTER-E and the baselines import it from this module.
(:func:`~emofuse.models.base.masked_mean` lives in :mod:`emofuse.models.base`.)

Sequences are ``(N, T, H)`` with ``(N, T)`` bool masks (``True`` = valid step). No helper
produces ``NaN`` for a row without a valid step: such rows pool to zeros.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over time at valid steps.

    Args:
        x: ``(N, T, H)`` sequence.
        mask: ``(N, T)`` bool validity.

    Returns:
        ``(N, H)``; zeros for rows without a valid step.
    """
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = filled.max(dim=1).values
    return torch.where(mask.any(dim=1, keepdim=True), out, torch.zeros_like(out))


def masked_downsample(x: Tensor, mask: Tensor, max_steps: int) -> tuple[Tensor, Tensor]:
    """Average consecutive valid steps so that at most ``max_steps`` remain.

    Sequences of ``T <= max_steps`` are returned as they are (the same tensors). Longer ones are
    cut into windows of ``s = ceil(T / max_steps)`` consecutive steps (the last one padded with
    invalid zero steps); each window becomes the mean of its valid steps, and is valid when it
    holds at least one (an all-invalid window is zeros). Attention cost then stays bounded for
    long frame-level features (e.g. 100 Hz acoustic LLDs) without dropping frames.

    Args:
        x: ``(N, T, H)`` sequence.
        mask: ``(N, T)`` bool validity.
        max_steps: Largest length kept.

    Returns:
        ``(N, T', H)`` and its ``(N, T')`` bool mask, ``T' = ceil(T / s) <= max_steps``.
    """
    n, t, h = x.shape
    if t <= max_steps:
        return x, mask
    s = math.ceil(t / max_steps)
    pad = (-t) % s
    if pad:
        x = torch.cat([x, x.new_zeros(n, pad, h)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(n, pad)], dim=1)
    m = mask.to(x.dtype).reshape(n, -1, s, 1)
    total = (x.reshape(n, -1, s, h) * m).sum(dim=2)
    count = m.sum(dim=2)
    return total / count.clamp_min(1.0), count.squeeze(-1) > 0


def sinusoidal_positions(
    length: int,
    dim: int,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    compute_dtype: torch.dtype | None = torch.float32,
    period_dim: int | None = None,
) -> Tensor:
    r"""Fixed sinusoidal position codes (Vaswani et al., 2017).

    ``P[t, 2i] = sin(t · ω_i)`` and ``P[t, 2i + 1] = cos(t · ω_i)`` with
    ``ω_i = 10000^(-2i / d)``, ``i = 0 … ceil(dim / 2) - 1`` (for an odd ``dim`` the last cosine
    column is dropped).

    Args:
        length: Number of positions ``T``.
        dim: Code width ``D``.
        device: Device of the result.
        dtype: dtype of the result.
        compute_dtype: dtype the codes are computed in before the cast to ``dtype``; ``None``
            computes in ``dtype`` itself. EGMF computes in float32 (the default); MulT in its
            own dtype.
        period_dim: The ``d`` of the frequencies. Default: ``dim`` rounded up to even (EGMF);
            MulT uses ``dim``. Both agree for an even ``dim``.

    Returns:
        ``(length, dim)`` codes.
    """
    work = dtype if compute_dtype is None else compute_dtype
    half = (dim + 1) // 2
    d = 2 * half if period_dim is None else period_dim
    pos = torch.arange(length, device=device, dtype=work).unsqueeze(1)
    freq = torch.exp(torch.arange(half, device=device, dtype=work) * (-2.0 * math.log(10000.0) / d))
    angles = pos * freq
    out = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, 2 * half)
    return out[:, :dim].to(dtype)


def safe_key_padding_mask(valid: Tensor, empty_rows: Literal["first", "all"] = "first") -> Tensor:
    """A ``key_padding_mask`` for attention that never masks a whole row.

    ``nn.MultiheadAttention`` (and ``nn.TransformerEncoder``) returns ``NaN`` for a query whose
    keys are all masked: the softmax divides by zero. A row of ``valid`` without any valid key
    is therefore opened — its first key (``empty_rows="first"``) or all of its keys
    (``"all"``) — and the caller discards that row's result (its presence is
    ``valid.any(dim=1)``).

    Args:
        valid: ``(N, T)`` bool, ``True`` at keys that may be attended to.
        empty_rows: Which keys of an all-invalid row to open.

    Returns:
        ``(N, T)`` bool, ``True`` at keys to ignore (``~valid`` except in all-invalid rows).
    """
    present = valid.any(dim=1, keepdim=True)
    if empty_rows == "all":
        return ~valid & present
    pad = ~valid
    pad[:, 0] &= present[:, 0]
    return pad


__all__ = [
    "masked_downsample",
    "masked_max",
    "safe_key_padding_mask",
    "sinusoidal_positions",
]

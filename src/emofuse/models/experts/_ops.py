"""Tensor helpers shared by the experts: masked pooling, masked down-sampling, positions.

All helpers take ``(N, T, H)`` sequences with ``(N, T)`` bool masks (``True`` = valid step) and
never produce ``NaN`` for rows without a valid step: those pool to zeros.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over time of ``(N, T, H)`` at valid steps; zeros for rows with none."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = filled.max(dim=1).values
    return torch.where(mask.any(dim=1, keepdim=True), out, torch.zeros_like(out))


def masked_downsample(x: Tensor, mask: Tensor, max_steps: int) -> tuple[Tensor, Tensor]:
    """Average consecutive valid steps so that at most ``max_steps`` remain.

    Sequences of ``T <= max_steps`` are returned as they are. Longer ones are cut into chunks of
    ``s = ceil(T / max_steps)`` steps; each chunk becomes the mean of its valid steps, and is
    valid when it holds at least one. Attention cost then stays bounded for long frame-level
    features (e.g. 100 Hz acoustic LLDs) without dropping frames.

    Args:
        x: ``(N, T, H)`` sequence.
        mask: ``(N, T)`` validity.
        max_steps: Largest length kept.

    Returns:
        ``(N, T', H)`` and its ``(N, T')`` mask, ``T' <= max_steps``.
    """
    n, t, h = x.shape
    if t <= max_steps:
        return x, mask
    s = math.ceil(t / max_steps)
    pad = (-t) % s
    if pad:
        x = torch.cat([x, x.new_zeros(n, pad, h)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(n, pad)], dim=1)
    m = mask.to(x.dtype).view(n, -1, s, 1)
    total = (x.view(n, -1, s, h) * m).sum(dim=2)
    count = m.sum(dim=2)
    return total / count.clamp_min(1.0), count.squeeze(-1) > 0


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(length, dim)`` fixed sinusoidal position codes (Vaswani et al., 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    half = (dim + 1) // 2
    freq = torch.exp(
        torch.arange(half, device=device, dtype=torch.float32) * (-math.log(10000.0) / half)
    )
    angles = pos * freq
    out = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, 2 * half)
    return out[:, :dim].to(dtype)

"""Experts shared by the fusion models, registered in ``EXPERTS``.

An expert is a ``torch.nn.Module`` with a pydantic ``Config`` whose ``forward`` takes the
model's per-modality sequences (``{modality: (N, T, H)}`` plus ``{modality_mask: (N, T)}``,
already projected to the model width ``H``) and returns ``(N, H)``.
"""

from emofuse.registry import Registry

EXPERTS: Registry[type] = Registry("expert", "emofuse.models.experts")

__all__ = ["EXPERTS"]

"""Experts shared by the fusion models, registered in ``EXPERTS``.

An expert is an :class:`~emofuse.models.experts.base.Expert` (a ``torch.nn.Module``) with a
pydantic ``Config``. Its ``forward`` takes the model's per-modality sequences
(``{modality: (N, T, H)}`` plus ``{modality_mask: (N, T)}``, already projected to the model
width ``H``) and returns an :class:`~emofuse.models.experts.base.ExpertOutput`: the ``(N, H)``
vector and the level-1 weights over its ``units``. Built-ins: ``local``, ``cross-modal``,
``global-context``; plugins register more with ``@EXPERTS.register(name)`` (or through the
entry-point group ``emofuse.experts``).
"""

from emofuse.models.experts.base import Expert, ExpertConfig, ExpertOutput
from emofuse.registry import Registry

EXPERTS: Registry[type[Expert]] = Registry("expert", "emofuse.models.experts")

__all__ = ["EXPERTS", "Expert", "ExpertConfig", "ExpertOutput"]

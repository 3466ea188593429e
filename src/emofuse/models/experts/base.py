"""The interface every expert implements: :class:`Expert` and its :class:`ExpertOutput`.

An expert reads the per-modality sequences of a fusion model, already projected to the model
width ``H``, and returns one ``(N, H)`` vector per utterance, plus (optionally) the level-1
weights it gave its *units* (the modalities or modality pairs it gates over, see
:class:`~emofuse.models.gating.ModalityGate`). Experts are registered in
:data:`~emofuse.models.experts.EXPERTS`, so a plugin expert can be used by EGMF by name::

    from emofuse.models.experts import EXPERTS, Expert, ExpertOutput

    @EXPERTS.register("my-expert")
    class MyExpert(Expert):
        Config = MyExpertConfig  # a pydantic emofuse.config.Config (extra keys forbidden)

        def __init__(self, config, hidden, modalities, dropout=0.1):
            super().__init__(config, hidden, modalities, dropout)
            self.units = list(modalities)
            ...  # build the layers

        def usable(self, feats): ...
        def forward(self, feats): return ExpertOutput(vector=..., unit_weights=...)

**Input** (``feats``): ``feats[m]`` ``(N, T_m, H)`` for every modality ``m`` of the model (a
modality absent from the batch is an all-missing ``(N, 1, H)`` sequence), ``feats[f"{m}_mask"]``
``(N, T_m)`` bool (``True`` = valid step), and, for conversations, ``feats["dialogue"]`` and
``feats["turn"]`` ``(N,)`` long (see :mod:`emofuse.models.base`).

**Thread safety.** ``forward`` must not write module attributes: everything a call produces is
returned in the :class:`ExpertOutput`, so one model can serve concurrent requests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from emofuse.config import Config


class ExpertConfig(Config):
    """Options of an expert without options (the default ``Expert.Config``)."""


@dataclass
class ExpertOutput:
    """What :meth:`Expert.forward` returns.

    Attributes:
        vector: ``(N, H)`` the expert's representation of each utterance (zeros where the
            expert is not :meth:`~Expert.usable`).
        unit_weights: ``(N, U)`` level-1 weights over :attr:`Expert.units` (columns in that
            order; a row sums to 1 over the units present in that utterance, to 0 when none
            is), or ``None`` for an expert without unit gating.
    """

    vector: Tensor
    unit_weights: Tensor | None = None


class Expert(nn.Module, ABC):
    """Base class of every expert (a ``torch.nn.Module``).

    Subclasses set ``Config``, build their layers in ``__init__`` after calling
    ``super().__init__(...)``, set :attr:`units`, and implement :meth:`usable` and
    :meth:`forward`. The registry sets ``name`` when the class is registered.

    Args:
        config: The expert's options, an instance of its ``Config`` (``None`` for defaults).
        hidden: Model width ``H`` (of the input sequences and of the output vector).
        modalities: Modalities the model reads (keys of ``feats``).
        dropout: Dropout rate.

    Attributes:
        units: Names of the level-1 units, the columns of ``ExpertOutput.unit_weights`` (empty
            for an expert without unit gating).
    """

    name: ClassVar[str]
    Config: ClassVar[type[Config]] = ExpertConfig

    def __init__(
        self,
        config: Config | None,
        hidden: int,
        modalities: list[str],
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.hidden = hidden
        self.modalities = list(modalities)
        self.dropout_rate = dropout
        self.units: list[str] = []

    @abstractmethod
    def usable(self, feats: dict[str, Tensor]) -> Tensor:
        """Which utterances the expert has something to say about.

        Args:
            feats: The expert input (see the module docstring).

        Returns:
            ``(N,)`` bool; the gate across experts gives the expert weight 0 where ``False``.
        """

    @abstractmethod
    def forward(self, feats: dict[str, Tensor]) -> ExpertOutput:
        """Represent each utterance.

        Args:
            feats: The expert input (see the module docstring).

        Returns:
            The ``(N, H)`` vector and, for experts with unit gating, the ``(N, U)`` weights.
        """


__all__ = ["Expert", "ExpertConfig", "ExpertOutput"]

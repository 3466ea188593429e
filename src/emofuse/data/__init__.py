"""③ The data stage: from features to model batches.

* :mod:`~emofuse.data.inputs` — :class:`FeatureRef` (what a model reads) and
  :class:`InputSpec` (the per-modality contract a model saves);
* :mod:`~emofuse.data.table` — :class:`FeatureTable` and its two feature sources,
  :class:`PrecomputedFeatures` (the feature store, for training) and :class:`OnTheFlyFeatures`
  (computed in memory, for inference on new inputs);
* :mod:`~emofuse.data.collate` — items → the batch dict of :mod:`emofuse.models.base`;
* :mod:`~emofuse.data.samplers` — utterance and dialogue batch samplers (deterministic from
  ``(seed, epoch)``, split across DDP processes).
"""

from emofuse.data.collate import Collator, Tokenizer, collate
from emofuse.data.inputs import (
    DEFAULT_MAX_LEN,
    IGNORE_INDEX,
    MODALITIES,
    FeatureRef,
    InputSpec,
    input_specs,
    parse_features,
)
from emofuse.data.samplers import DialogueBatchSampler, UtteranceBatchSampler, batch_sampler
from emofuse.data.table import (
    FeatureSource,
    FeatureTable,
    Item,
    OnTheFlyFeatures,
    PrecomputedFeatures,
)

__all__ = [
    "DEFAULT_MAX_LEN",
    "IGNORE_INDEX",
    "MODALITIES",
    "Collator",
    "DialogueBatchSampler",
    "FeatureRef",
    "FeatureSource",
    "FeatureTable",
    "InputSpec",
    "Item",
    "OnTheFlyFeatures",
    "PrecomputedFeatures",
    "Tokenizer",
    "UtteranceBatchSampler",
    "batch_sampler",
    "collate",
    "input_specs",
    "parse_features",
]

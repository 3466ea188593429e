"""Stage ① — dataset recipes: raw corpora → JSONL manifests of :class:`~emofuse.records.Utterance`."""

from emofuse.datasets.base import (
    DATASETS,
    Dataset,
    DatasetChoice,
    DatasetRecipe,
    RecipeConfig,
    load_dataset,
    open_prepared,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetChoice",
    "DatasetRecipe",
    "RecipeConfig",
    "load_dataset",
    "open_prepared",
]

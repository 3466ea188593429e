"""Stage ② — feature extraction: manifests → cached arrays per utterance."""

from emofuse.features.base import (
    EXTRACTORS,
    FeatureExtractor,
    OutputSpec,
    get_extractor,
    has_input,
)
from emofuse.features.pipeline import ExtractionReport, extract_features
from emofuse.features.store import FeatureCache, FeatureStore

__all__ = [
    "EXTRACTORS",
    "ExtractionReport",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureStore",
    "OutputSpec",
    "extract_features",
    "get_extractor",
    "has_input",
]

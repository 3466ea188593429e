"""Predictions with their cues and an explanation in words (XEmoGPT's cue-level explanations).

:class:`CueExplainer` runs the cue detectors over a model's feature table (reusing the arrays
the model already computed, e.g. the face extractor's frames), ranks each utterance's cues by
integrated gradients (:mod:`emofuse.cues.rank`) and writes a deterministic explanation that
names the modality that carried the decision and the cues it relied on::

    anger (82%), carried by the voice (69% of the evidence), then the words (31%).
    Voice: pitch 3.1 semitones above the speaker's usual level; loud voice.
    Words: says 'furious' (anger, disgust); exclaims.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from emofuse.cues.base import CUE_DETECTORS, CueDetector, detect
from emofuse.cues.rank import Attribution, attribute, rank_cues
from emofuse.errors import EmofuseError, EmofuseWarning, InputError
from emofuse.records import Utterance
from emofuse.schema import Cue, Prediction

if TYPE_CHECKING:
    from emofuse.data.table import FeatureTable
    from emofuse.models.base import FusionModel

MODALITY_WORDS = {"audio": "voice", "face": "face", "text": "words"}
"""How an explanation names each modality."""


class CueExplainer:
    """Cues, their ranking and an explanation for a model's predictions.

    Args:
        model: The model whose predictions are explained.
        detectors: Cue detectors (registered names or instances); default: every registered
            one (``emofuse.cues.CUE_DETECTORS``: prosody, face, words).
        max_cited: Cues named per modality in the explanation.
        n_steps: Integrated-gradients steps (:func:`emofuse.cues.rank.attribute`).
    """

    def __init__(
        self,
        model: FusionModel,
        detectors: Sequence[str | CueDetector] | None = None,
        *,
        max_cited: int = 2,
        n_steps: int = 16,
    ) -> None:
        self.model = model
        chosen = CUE_DETECTORS.names() if detectors is None else detectors
        self.detectors = [CUE_DETECTORS.get(d)() if isinstance(d, str) else d for d in chosen]
        self.max_cited = max_cited
        self.n_steps = n_steps
        self._extractors: dict[str, Any] = {}

    def without(self, modality: str) -> CueExplainer:
        """The same explainer without ``modality``'s detectors, sharing the loaded extractors.

        E.g. ``"audio"`` for media where no speech was found: a tone has a pitch, not prosody.
        """
        other = CueExplainer(
            self.model,
            [d for d in self.detectors if d.modality != modality],
            max_cited=self.max_cited,
            n_steps=self.n_steps,
        )
        other._extractors = self._extractors
        return other

    def also(self) -> dict[str, list[str]]:
        """``modality → outputs`` to keep in ``FusionModel.table``'s ``extras``.

        These are the detectors' inputs that the model's own extractors already compute.
        """
        wanted: dict[str, list[str]] = {}
        refs = self.model.feature_refs()
        for d in self.detectors:
            for name, outputs in d.needs.items():
                for modality, ref in refs.items():
                    if ref.extractor == name:
                        wanted.setdefault(modality, []).extend(outputs)
        return {m: sorted(set(v)) for m, v in wanted.items()}

    def load(self) -> None:
        """Set up the extractors the detectors read and the model does not (e.g. openSMILE).

        Now rather than on first use: the analyzer does it in a background thread.
        """
        self.extra_extractors()

    def extra_extractors(self) -> dict[str, Any]:
        """The set-up extractors of the detectors' inputs that the model does not read.

        Returns:
            ``extractor name → extractor``; those with an ``extract_wave`` method can be run on
            samples already in memory.
        """
        from emofuse.features.base import get_extractor, ready_extractor

        own = {ref.extractor for ref in self.model.feature_refs().values()}
        return {
            name: ready_extractor(self._extractors, get_extractor(name))
            for d in self.detectors
            for name in d.needs
            if name not in own
        }

    def explain(
        self,
        table: FeatureTable,
        predictions: Sequence[Prediction],
        known: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> list[Prediction]:
        """``predictions`` (of ``table``'s items) with ``cues`` ranked and ``explanation`` set.

        Args:
            table: The model's features of the utterances (its ``extras`` are reused).
            predictions: The model's predictions of ``table``'s items.
            known: ``utterance id → {"extractor:output": array}`` computed already (e.g.
                openSMILE's LLDs of speech segments still in memory).

        A detector whose input cannot be computed for an utterance (no audio, no face found)
        gives that utterance no cues of its modality; a detector that fails altogether (a
        missing optional dependency) is left out with one warning.
        """
        utts = [it.utt for it in table.items]
        have: dict[str, dict[str, np.ndarray]] = {u: dict(a) for u, a in table.extras.items()}
        for uid, arrays in (known or {}).items():
            have.setdefault(uid, {}).update(arrays)
        cues: dict[str, list[Cue]] = {u.id: [] for u in utts}
        for d in self.detectors:
            try:
                arrays = self._arrays(d, utts, have)
                found = detect(d, utts, arrays)
            except EmofuseError as err:
                warnings.warn(f"{d.name} cues left out: {err}", EmofuseWarning, stacklevel=2)
                continue
            for u, got in zip(utts, found, strict=True):
                cues[u.id].extend(got)
        labels = self.model.spec.emotion_labels or []
        said = {p.id: p.emotion for p in predictions}
        targets = [
            labels.index(said[u.id]) if said.get(u.id) in labels else -1 for u in utts
        ]  # the label each prediction names; the model is not run again
        attributions = attribute(self.model, table, n_steps=self.n_steps, targets=targets)
        by_id = {u.id: (u, a) for u, a in zip(utts, attributions, strict=True)}
        out = []
        for p in predictions:
            if p.id not in by_id:
                out.append(p)
                continue
            u, att = by_id[p.id]
            ranked = rank_cues(cues[p.id], att, u.start, u.end, p.emotion)
            text = explanation_text(p, ranked, att, self.max_cited)
            evidence = {m: round(v, 4) for m, v in att.shares.items()}
            out.append(
                p.model_copy(update={"cues": ranked, "explanation": text, "evidence": evidence})
            )
        return out

    def _arrays(
        self,
        detector: CueDetector,
        utts: list[Utterance],
        extras: Mapping[str, Mapping[str, np.ndarray]],
    ) -> list[dict[str, np.ndarray]]:
        """Each utterance's inputs to ``detector``: from ``extras``, else extracted now."""
        from emofuse.data.table import OnTheFlyFeatures
        from emofuse.features.base import get_extractor

        arrays: list[dict[str, np.ndarray]] = [{} for _ in utts]
        readable = [i for i, u in enumerate(utts) if detector.reads(u)]
        for name, outputs in detector.needs.items():
            keys = [f"{name}:{o}" for o in outputs]
            todo = []
            for i in readable:
                have = extras.get(utts[i].id, {})
                if all(k in have for k in keys):
                    arrays[i].update({k: have[k] for k in keys})
                else:
                    todo.append(i)
            if not todo:
                continue
            source = OnTheFlyFeatures(extractors=self._extractors)
            found, _failed = source.features([utts[i] for i in todo], get_extractor(name))
            for i in todo:
                feats = found.get(utts[i].id)
                if feats is not None:
                    arrays[i].update({f"{name}:{o}": feats[o] for o in outputs if o in feats})
        return arrays


def explanation_text(
    prediction: Prediction,
    cues: Sequence[Cue],
    attribution: Attribution | None,
    max_cited: int = 2,
) -> str:
    """The prediction and the cues behind it in words (deterministic; see the module docstring).

    Names the predicted label and its probability, the modalities in order of their positive
    share of the evidence, up to ``max_cited`` supporting cues of each, and the strongest cue
    against the label, if any.
    """
    label = prediction.emotion
    if label is None:
        return "no emotion predicted"
    prob = prediction.probabilities.get(label)
    head = label if prob is None else f"{label} ({prob:.0%})"
    shares = attribution.shares if attribution is not None else {}
    supporting = sorted(((m, s) for m, s in shares.items() if s > 0), key=lambda kv: -kv[1])
    if supporting:
        first, rest = supporting[0], supporting[1:]
        head += (
            f", carried by the {MODALITY_WORDS.get(first[0], first[0])} "
            f"({first[1]:.0%} of the evidence)"
        )
        if rest:
            head += ", then " + ", ".join(
                f"the {MODALITY_WORDS.get(m, m)} ({s:.0%})" for m, s in rest
            )
    parts = [head + "."]
    for modality in [m for m, _ in supporting] + [
        m for m in ("audio", "face", "text") if m not in dict(supporting)
    ]:
        cited = [
            c
            for c in cues
            if c.modality == modality and (c.contribution is None or c.contribution > 0)
        ][:max_cited]
        if cited:
            parts.append(
                f"{MODALITY_WORDS.get(modality, modality).capitalize()}: "
                + "; ".join(c.phrase for c in cited)
                + "."
            )
    against = [c for c in cues if c.contribution is not None and c.contribution < 0]
    if against:
        worst = min(against, key=lambda c: c.contribution or 0.0)
        parts.append(f"Against it: {worst.phrase}.")
    if len(parts) == 1:
        parts.append("No distinct cue was found.")
    return " ".join(parts)


@functools.lru_cache(maxsize=1)
def _default_model() -> Any:
    from emofuse.models.base import load_model
    from emofuse.resources import default_model_dir

    return load_model(default_model_dir())


def explain_text(text: str) -> str:
    """The bundled default model's explanation of one line of text (words only).

    Example:
        >>> explain_text("I am so furious with you!")  # doctest: +SKIP
        "anger (38%), carried by the words (100% of the evidence). Words: says 'furious' …"
    """
    from emofuse.models.inference import Inference

    if not isinstance(text, str):
        raise InputError(None, f"explain_text takes a string, got {type(text).__name__}")
    model = _default_model()
    utt = Utterance(id="text", dataset="text", text=text)
    explainer = CueExplainer(model, ["words"])
    table = model.table([utt])
    if not table.items:
        why = "; ".join([*table.skipped.values(), *(w for v in table.missing.values() for w in v)])
        raise InputError(None, f"no usable text in {text[:60]!r}: {why}")
    preds = Inference(model).predictions(table)
    return explainer.explain(table, preds)[0].explanation or ""


__all__ = ["MODALITY_WORDS", "CueExplainer", "explain_text", "explanation_text"]

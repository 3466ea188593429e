"""Offline cue extraction: split a free-text emotion explanation into EmoCue-360's three lists.

XEmoGPT (``EmoCue-360/extract_clue.py``, commit ``3b4aee91bf6b35eeac19ab7a892d4d4e500d5ce6``)
asks a hosted LLM (DeepSeek) to rewrite an explanation as ``{"visual": [...], "auditory": [...],
"emotional": [...]}``. This module does the same offline, in two steps.

**1. Clauses** (:func:`split_clauses`). Quoted spans (``"..."``, ``“...”``) are set aside first so
that nothing inside them splits. The text is cut into sentences at ``.``, ``!`` or ``?``
followed by a space and a capital, digit or quote (``Mr.``/``Dr.``-style abbreviations
excepted; a quote ending in ``.``, ``!`` or ``?`` ends a sentence too); each sentence at ``;``
and ``:``, at commas, and at the conjunctions *and*, *while*, *but*, *whereas*. Explanations
list cues as comma- and *and*-separated clauses ("He spoke quickly, with a trembling voice, and
furrowed his brows"), so these cuts give atomic cues. Leading connectives and boilerplate ("In
the video,", "Therefore,", "it can be inferred that", "his emotional state is") are removed; a
piece that is nothing else is dropped. A piece left with one word that was short to begin with
("and shy", "happy") is not a clause: it is joined back to the piece before it (to the next one
at the start of a sentence), so "sad, reluctant, and worried" stays whole — unless that word is
a visual or auditory keyword ("frowned", "sniffed", "stuttering"), a cue of its own.

**2. Classes** (:class:`CueExtractor`). Each clause gets a score per class — ``visual``,
``auditory``, ``emotional``, ``text`` (what the person *says*) — equal to the highest cosine
similarity between the clause and the class's hand-written prototype phrases
(:data:`PROTOTYPES`, embedded with the same all-MiniLM-L6-v2 as the metric) plus
``keyword_weight`` per keyword of the class in the clause (:data:`KEYWORDS`: face, brows,
smile → visual; voice, tone, pace, sighed → auditory; felt, angry, mood → emotional; said,
asked, the phrase → text). The best class wins; a clause whose best score is below
``min_score`` is ``other`` and is left out. Keywords carry the decision when present (a clause
naming a body part or the voice is a visual or auditory cue, whatever the feeling it conveys
next to it); the prototypes decide the rest (situations, interpretations with no keyword).
``text`` competes only when the clause has a speech-report keyword and no keyword of another
class: "the words he said show some concern" interprets the words, so it is emotional.

The keywords and prototypes were written by hand while reading EMER v1 reasons 31-100; the
splitting rules were also corrected after reading the extractor's errors on reasons 1-30, the
hand-split gold set of the tests (``tests/data/emocue_gold.jsonl``), so agreement with that set
is an optimistic estimate.

**Text cues.** What the person says — a subtitle quoted in an EMER reason, "he asked if ...",
"his words were intense" — is neither seen nor heard as sound. XEmoGPT's released convention
(the example in ``extract_clue.py``'s prompt) lists it under ``auditory`` as ``"Subtitle text:
'...'"``, and ``compute_prf.py`` then removes every auditory cue containing ``"text"`` from both
sides: the subtitle was the model's input. The extractor follows it: every quoted span becomes
an auditory cue ``Subtitle text: "..."`` (the rest of its clause is classified on its own), and
so does a clause of class ``text``. These cues are listed but never scored.

The same encoder that the metric uses is used here, and each distinct clause is embedded once.

Example:
    >>> CueExtractor().extract("He frowned and his voice was low. He felt sad.")  # doctest: +SKIP
    CueLists(visual=['He frowned'], auditory=['his voice was low'], emotional=['He felt sad'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from emofuse.evaluate.emocue import (
    DIMENSIONS,
    CueLists,
    Dimension,
    EmoCueReport,
    SentenceEncoder,
    drop_text_cues,
    embed_unique,
    emocue360,
)

CueClass = Literal["visual", "auditory", "emotional", "text", "other"]
_SCORED_CLASSES: tuple[CueClass, ...] = ("visual", "auditory", "emotional", "text")

SUBTITLE_PREFIX = "Subtitle text: "
"""How a cue of what the person says is written into the auditory list (XEmoGPT's example)."""

PROTOTYPES: dict[CueClass, tuple[str, ...]] = {
    "visual": (
        "frowning face, furrowed brows",
        "a smile with the corners of the mouth raised",
        "eyes wide open and eyebrows raised",
        "tears in the eyes",
        "looking down with the head lowered",
        "nodding and shaking the head",
        "a tense facial expression",
        "sitting in a dimly lit room",
        "gesturing with the hands",
        "staring at the other person",
        "wearing a white shirt",
        "hitting the table",
    ),
    "auditory": (
        "loud trembling voice, fast speech",
        "the voice is low and weak",
        "speaks slowly with long pauses",
        "a cheerful tone of voice",
        "the pitch of the voice rises",
        "sighing and sobbing",
        "laughing out loud",
        "the volume increases",
        "a hoarse, choked voice",
        "stuttering, hesitant speech",
    ),
    "emotional": (
        "the words express anger",
        "he feels sad and helpless",
        "she is happy and excited",
        "the emotional state is worry",
        "indicating a negative mood",
        "he is surprised by the news",
        "feeling guilty and sorry",
        "the situation makes him anxious",
        "showing dissatisfaction",
        "he is grateful and shy",
    ),
    "text": (
        "the subtitle says",
        "he said the sentence",
        "she asks a question",
        "the words he uses",
        "the phrase in the text",
    ),
}
"""Hand-written example cues of each class (generic, not taken from any dataset)."""

KEYWORDS: dict[CueClass, tuple[str, ...]] = {
    "visual": (
        r"face[sd]?",
        r"facial",
        r"expressions?",
        r"eyes?",
        r"eyed",
        r"eyebrows?",
        r"brows?",
        r"frown\w*",
        r"smil\w*",
        r"grin\w*",
        r"mouth",
        r"lips?",
        r"teeth",
        r"dimples?",
        r"tears?",
        r"gaze\w*",
        r"glanc\w*",
        r"star(?:e|es|ed|ing)",
        r"look(?:s|ed|ing)? (?:at|down|up|away|around|back)",
        r"head",
        r"nod\w*",
        r"cheeks?",
        r"forehead",
        r"chin",
        r"jaw",
        r"gestur\w*",
        r"hands?",
        r"arms?",
        r"fingers?",
        r"posture",
        r"body",
        r"sat",
        r"sitting",
        r"stood",
        r"standing",
        r"lean\w*",
        r"environment",
        r"scene",
        r"background",
        r"dim",
        r"pout\w*",
        r"squint\w*",
        r"blink\w*",
        r"wrinkl\w*",
        r"appearance",
        r"clench\w*",
    ),
    "auditory": (
        r"voices?",
        r"vocal",
        r"tones?",
        r"pitch",
        r"volume",
        r"loud\w*",
        r"speech",
        r"spoke",
        r"speak(?:s|ing)?",
        r"pace",
        r"paus\w*",
        r"sigh\w*",
        r"laugh\w*",
        r"sniff\w*",
        r"chok\w*",
        r"sob\w*",
        r"stutter\w*",
        r"hoarse\w*",
        r"roar\w*",
        r"shout\w*",
        r"yell\w*",
        r"scream\w*",
        r"whisper\w*",
        r"murmur\w*",
        r"mumbl\w*",
        r"groan\w*",
        r"gasp\w*",
        r"intonation",
        r"accent",
        r"hesitant\w*",
        r"breath\w*",
        r"sounds?",
        r"audio",
    ),
    "emotional": (
        r"feel\w*",
        r"felt",
        r"emotions?",
        r"emotional",
        r"mood",
        r"attitude",
        r"infer\w*",
        r"angry",
        r"anger",
        r"annoy\w*",
        r"furious",
        r"irritat\w*",
        r"(?:un)?happ(?:y|ily|iness)",
        r"joy\w*",
        r"delight\w*",
        r"cheer\w*",
        r"excite\w*",
        r"glad",
        r"pleas\w*",
        r"sad\w*",
        r"sorrow\w*",
        r"upset",
        r"depress\w*",
        r"grie\w*",
        r"disappoint\w*",
        r"worr\w*",
        r"concern\w*",
        r"anxi\w*",
        r"nervous\w*",
        r"fear\w*",
        r"afraid",
        r"scared",
        r"surpris\w*",
        r"astonish\w*",
        r"shock\w*",
        r"amaze\w*",
        r"disgust\w*",
        r"contempt\w*",
        r"dissatisf\w*",
        r"helpless\w*",
        r"guilt\w*",
        r"sorry",
        r"apolog\w*",
        r"shy\w*",
        r"timid\w*",
        r"embarrass\w*",
        r"gratitude",
        r"grateful",
        r"anticipat\w*",
        r"reluctan\w*",
        r"frustrat\w*",
        r"confus\w*",
        r"positive",
        r"negative",
        r"proud",
        r"lonel\w*",
        r"suspic\w*",
        r"tense",
        r"stress\w*",
    ),
    "text": (
        r"said",
        r"say(?:s|ing)?",
        r"ask(?:s|ed|ing)?",
        r"phrases?",
        r"words?",
        r"sentences?",
        r"subtitles?",
        r"text",
        r"(?:rhetorical|interrogative) (?:questions?|sentences?)",
        r"statements?",
        r"told",
        r"tell(?:s|ing)?",
        r"mention\w*",
        r"ultimatum",
    ),
}
"""Keyword evidence per class: regular expressions matched as whole words, case-insensitively."""

_KEYWORD_RES: dict[CueClass, re.Pattern[str]] = {
    cls: re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)
    for cls, words in KEYWORDS.items()
}

# -- clause splitting ---------------------------------------------------------------------------

_QUOTE = re.compile(r'"[^"\n]*"|“[^”\n]*”')
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_ABBREVIATIONS = re.compile(r"\b(Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?\x02])\s+(?=[A-Z0-9\x00\"“])")
_CLAUSE_SEP = re.compile(r"(\s*[;:]\s*|,\s+|\s+(?:and|while|but|whereas)\s+)", re.IGNORECASE)
_LEADING = re.compile(
    r"^(?:"
    r"in (?:the )?(?:\w+ ){0,4}?(?:video|audio|text|clip|scene|picture|image|footage)\b"
    r"|(?:it|this) (?:can|could|may|might) be (?:inferred|seen|concluded|deduced|observed)"
    r"(?: from)?(?: that)?"
    r"|(?:it|this) is (?:inferred|evident|clear|obvious)(?: that)?"
    r"|we can (?:infer|see|conclude)(?: that)?"
    r"|(?:indicating|suggesting|showing|meaning) that"
    r"|(?:based on|considering|from) (?:this|these|the above|the context|(?:the )?other clues)"
    r"|combined with"
    r"|(?:his|her|their|the (?:character|person|speaker)'s) emotional state (?:is|was|might be|may be)"
    r"(?: one of)?"
    r"|therefore|thus|hence|so|then|also|and|but|while|whereas|although|though|when"
    r"|at the same time|meanwhile|in addition|moreover|furthermore|overall|finally|as well as"
    r")\b[\s,]*",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+|\x00\d+\x00")


def _strip_leading(piece: str) -> str:
    """``piece`` without leading connectives and boilerplate, and without edge punctuation."""
    piece = piece.strip(" \t\n,;:.!?")
    while True:
        shorter = _LEADING.sub("", piece, count=1).strip(" \t\n,;:.!?")
        if shorter == piece:
            return piece
        piece = shorter


def _n_words(piece: str) -> int:
    return len(_WORD.findall(piece))


def _is_physical_word(piece: str) -> bool:
    """A one-word visual or auditory cue ("frowned", "sniffed"): a clause of its own."""
    return any(_KEYWORD_RES[c].fullmatch(piece) for c in ("visual", "auditory"))


def _mask_quotes(text: str, mark_ends: bool = False) -> tuple[str, list[str]]:
    r"""``text`` with quoted spans as ``\x00i\x00``, and the spans.

    With ``mark_ends``, a span that ends a sentence ("... said "Go!" He left") is followed by
    ``\x02``, which ``_SENTENCE_END`` treats as a full stop.
    """
    quotes: list[str] = []

    def keep(match: re.Match[str]) -> str:
        quotes.append(match.group(0))
        end = "\x02" if mark_ends and match.group(0)[-2:-1] in ".!?" else ""
        return f"\x00{len(quotes) - 1}\x00{end}"

    return _QUOTE.sub(keep, text), quotes


def _unmask(piece: str, quotes: list[str]) -> str:
    return _PLACEHOLDER.sub(lambda m: quotes[int(m.group(1))], piece)


def _masked_clauses(text: str) -> tuple[list[str], list[str]]:
    r"""Clauses with quoted spans as ``\x00i\x00`` placeholders, and the quotes."""
    masked, quotes = _mask_quotes(" ".join(text.split()), mark_ends=True)
    masked = _ABBREVIATIONS.sub(lambda m: m.group(0)[:-1] + "\x01", masked)
    clauses: list[str] = []
    for sentence in _SENTENCE_END.split(masked):
        parts = _CLAUSE_SEP.split(sentence.replace("\x01", ".").replace("\x02", ""))
        groups: list[str] = []
        pending = ""  # short pieces opening the sentence, waiting for a clause to join
        for i in range(0, len(parts), 2):
            sep, piece = (parts[i - 1] if i else ""), parts[i]
            cleaned = _strip_leading(piece)
            if not cleaned:  # boilerplate only ("In the video", "Therefore")
                continue
            short = _n_words(cleaned) < 2 and _n_words(piece) < 3  # "and shy", "happy"
            if not short or _is_physical_word(cleaned):
                groups.append(f"{pending}{sep}{piece}" if pending else piece)
                pending = ""
            elif groups:
                groups[-1] = f"{groups[-1]}{sep}{piece}"
            else:
                pending = f"{pending}{sep}{piece}" if pending else piece
        if pending:
            groups.append(pending)
        clauses.extend(c for c in (_strip_leading(g) for g in groups) if c)
    return clauses, quotes


def split_clauses(text: str) -> list[str]:
    """Split an explanation into clauses (the candidate cues), in order.

    Args:
        text: A free-text explanation (any length; whitespace is normalised).

    Returns:
        The clauses, boilerplate and connectives removed, quoted spans intact. Empty for a
        blank text.

    Example:
        >>> split_clauses("In the video, he frowned, spoke quickly, and sighed. Therefore, his "
        ...               "emotional state is sad and tired.")
        ['he frowned', 'spoke quickly', 'sighed', 'sad and tired']
    """
    clauses, quotes = _masked_clauses(text)
    return [_unmask(c, quotes) for c in clauses]


# -- classification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One classified clause.

    Attributes:
        text: The clause as it will be listed (quoted spans removed when ``quotes`` is set).
        label: Its class; ``other`` clauses are not listed.
        scores: Per class, prototype similarity plus keyword evidence.
        quotes: The quoted spans of the clause, each listed as a ``Subtitle text`` cue.
    """

    text: str
    label: CueClass
    scores: Mapping[str, float] = field(default_factory=dict)
    quotes: tuple[str, ...] = ()


def keyword_hits(clause: str) -> dict[CueClass, int]:
    """Number of :data:`KEYWORDS` of each class in ``clause`` (whole words, any case)."""
    return {cls: len(_KEYWORD_RES[cls].findall(clause)) for cls in _SCORED_CLASSES}


def _is_speech_report(hits: Mapping[CueClass, int]) -> bool:
    """Whether a clause may be a ``text`` cue: a speech-report keyword and no other class's."""
    return hits["text"] > 0 and not any(hits[c] for c in DIMENSIONS)


class CueExtractor:
    """Split free-text explanations into :class:`~emofuse.evaluate.emocue.CueLists`, offline.

    Args:
        encoder: Embeds clauses and prototypes (default: the shared all-MiniLM-L6-v2 of
            :func:`~emofuse.evaluate.emocue.minilm_encoder`).
        keyword_weight: Score added per keyword of a class found in the clause.
        min_score: A clause whose best class score is below this is ``other`` (not listed).
        prototypes: Example phrases per class (default :data:`PROTOTYPES`).

    Raises:
        ValueError: a class of ``visual``/``auditory``/``emotional``/``text`` has no prototype.
    """

    def __init__(
        self,
        encoder: SentenceEncoder | None = None,
        *,
        keyword_weight: float = 0.25,
        min_score: float = 0.25,
        prototypes: Mapping[CueClass, Sequence[str]] | None = None,
    ) -> None:
        self.encoder = encoder
        self.keyword_weight = keyword_weight
        self.min_score = min_score
        self.prototypes = {k: tuple(v) for k, v in (prototypes or PROTOTYPES).items()}
        missing = [c for c in _SCORED_CLASSES if not self.prototypes.get(c)]
        if missing:
            raise ValueError(f"no prototype phrases for class(es) {', '.join(missing)}")

    def classify(self, clauses: Sequence[str]) -> list[Clause]:
        """Classify clauses (as :func:`split_clauses` returns them) in one batched call.

        Quoted spans are taken out of each clause first; what remains is classified.
        """
        prepared: list[tuple[str, tuple[str, ...]]] = []
        for clause in clauses:
            masked, quotes = _mask_quotes(clause)
            rest = " ".join(_PLACEHOLDER.sub(" ", masked).split())
            prepared.append((_strip_leading(rest), tuple(quotes)))
        phrases = [p for cls in _SCORED_CLASSES for p in self.prototypes[cls]]
        vectors = embed_unique([*phrases, *(r for r, _ in prepared if r)], self.encoder)
        proto = {
            cls: np.stack([vectors[p] for p in self.prototypes[cls]]) for cls in _SCORED_CLASSES
        }
        out: list[Clause] = []
        for rest, quotes in prepared:
            if _n_words(rest) < 2 and quotes:  # the clause was the quote ("by saying '...'")
                out.append(Clause(rest, "text", {}, quotes))
                continue
            if not rest:
                out.append(Clause(rest, "other", {}, quotes))
                continue
            hits = keyword_hits(rest)
            scores = {
                cls: float((proto[cls] @ vectors[rest]).max()) + self.keyword_weight * hits[cls]
                for cls in _SCORED_CLASSES
                if cls != "text" or _is_speech_report(hits)
            }
            best = max(scores, key=scores.__getitem__)
            label: CueClass = best if scores[best] >= self.min_score else "other"  # type: ignore[assignment]
            out.append(Clause(rest, label, scores, quotes))
        return out

    def _lists(self, clauses: Sequence[Clause]) -> CueLists:
        lists: dict[Dimension, list[str]] = {d: [] for d in DIMENSIONS}
        for clause in clauses:
            lists["auditory"].extend(f"{SUBTITLE_PREFIX}{q}" for q in clause.quotes)
            if clause.label == "text" and not clause.quotes:
                lists["auditory"].append(f"{SUBTITLE_PREFIX}{clause.text}")
            elif clause.label in DIMENSIONS:
                lists[clause.label].append(clause.text)  # type: ignore[index]
        return CueLists(**lists)

    def extract_many(self, texts: Sequence[str]) -> list[CueLists]:
        """Cue lists of many explanations; all clauses are embedded in one batched call."""
        per_text = [split_clauses(t) for t in texts]
        labelled = self.classify([c for clauses in per_text for c in clauses])
        out, start = [], 0
        for clauses in per_text:
            out.append(self._lists(labelled[start : start + len(clauses)]))
            start += len(clauses)
        return out

    def extract(self, text: str) -> CueLists:
        """Cue lists of one explanation (visual, auditory, emotional; ``other`` left out)."""
        return self.extract_many([text])[0]


def extract_cues(texts: Sequence[str], *, encoder: SentenceEncoder | None = None) -> list[CueLists]:
    """Cue lists of many explanations with the default :class:`CueExtractor` settings."""
    return CueExtractor(encoder).extract_many(texts)


# -- agreement with hand-made lists -------------------------------------------------------------


class DimensionAgreement(BaseModel):
    """How one dimension of the extractor's lists agrees with hand-made (gold) lists.

    Attributes:
        precision: EmoCue-360 precision of the extracted lists against the gold lists.
        recall: EmoCue-360 recall.
        f1: EmoCue-360 F1 (mean per-sample F1); ``None`` when no gold list is non-empty.
        scored: Samples with a non-empty gold list (text rule applied to auditory).
        gold_cues: Cues in the gold lists (text rule applied).
        extracted_cues: Cues in the extracted lists (text rule applied).
        presence_agreement: Fraction of samples where both lists are empty or both are not.
        count_mae: Mean absolute difference of the list lengths, in cues per sample.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: float | None
    recall: float | None
    f1: float | None
    scored: int
    gold_cues: int
    extracted_cues: int
    presence_agreement: float
    count_mae: float


class CueAgreement(BaseModel):
    """The result of :func:`agreement`.

    Attributes:
        samples: Gold samples compared.
        missing: Gold samples with no extracted lists (scored as empty lists).
        visual: Visual agreement.
        auditory: Auditory agreement (subtitle cues removed by the text rule on both sides).
        emotional: Emotional agreement.
        report: The full EmoCue-360 report (``emofuse`` mode, gold as references).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int
    missing: int
    visual: DimensionAgreement
    auditory: DimensionAgreement
    emotional: DimensionAgreement
    report: EmoCueReport

    def dimension(self, dimension: Dimension) -> DimensionAgreement:
        """The agreement of one dimension."""
        return getattr(self, dimension)


def agreement(
    gold: Mapping[str, CueLists],
    extracted: Mapping[str, CueLists],
    *,
    encoder: SentenceEncoder | None = None,
) -> CueAgreement:
    """Agreement of extracted cue lists with gold (hand-split) lists, per dimension.

    Args:
        gold: ``sample id → CueLists`` split by hand (the references).
        extracted: ``sample id → CueLists`` from the extractor (the predictions); a gold
            sample missing here counts as three empty lists.
        encoder: Sentence encoder of the metric (default: all-MiniLM-L6-v2).

    Returns:
        Per dimension the EmoCue-360 P/R/F1 of the extracted lists against the gold ones, the
        fraction of samples where both agree on whether the list is empty, and the mean absolute
        difference in the number of cues.
    """
    report = emocue360(extracted, gold, mode="emofuse", encoder=encoder)
    empty = CueLists()
    dims: dict[str, DimensionAgreement] = {}
    for dim in DIMENSIONS:
        lengths = []
        for sid, ref in gold.items():
            g, e = ref.cues(dim), extracted.get(sid, empty).cues(dim)
            if dim == "auditory":
                g, e = drop_text_cues(g), drop_text_cues(e)
            lengths.append((len(g), len(e)))
        scores = report.dimension(dim)
        counts = np.asarray(lengths, dtype=float).reshape(-1, 2)
        dims[dim] = DimensionAgreement(
            precision=scores.precision,
            recall=scores.recall,
            f1=scores.f1,
            scored=scores.scored,
            gold_cues=int(counts[:, 0].sum()),
            extracted_cues=int(counts[:, 1].sum()),
            presence_agreement=float(np.mean((counts[:, 0] > 0) == (counts[:, 1] > 0)))
            if len(counts)
            else 1.0,
            count_mae=float(np.abs(counts[:, 0] - counts[:, 1]).mean()) if len(counts) else 0.0,
        )
    return CueAgreement(
        samples=len(gold),
        missing=sum(1 for sid in gold if sid not in extracted),
        report=report,
        **dims,
    )


__all__ = [
    "KEYWORDS",
    "PROTOTYPES",
    "SUBTITLE_PREFIX",
    "Clause",
    "CueAgreement",
    "CueClass",
    "CueExtractor",
    "DimensionAgreement",
    "agreement",
    "extract_cues",
    "keyword_hits",
    "split_clauses",
]

"""Word cues: emotion and valence words, negation, intensifiers, emoji, exclamations, capitals.

Lexicons (offline, inside their packages; ``docs/resources.md``):

* **NRC Emotion Lexicon** (Mohammad & Turney, 2013; ``NRCLex==4.1.0``, ``nrclex/data/nrc_en.json``):
  6,468 English words → the emotions they are associated with. Only the six basic emotions
  our label set shares (anger, disgust, fear, joy, sadness, surprise) make a word an
  *emotion word*; its research-only licence note applies to the lexicon.
* **VADER** (Hutto & Gilbert, ICWSM 2014; ``vaderSentiment==3.3.2``): word valence on −4…+4,
  its negation words, intensifiers ("boosters") and emoji descriptions. A negated word's
  valence is scaled by VADER's ``N_SCALAR`` (−0.74), as VADER itself does.

English only: text marked with another language gives no cues. Cues take the segment's span
(word times are not kept per segment).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, ClassVar

from pydantic import Field

from emofuse.config import Config
from emofuse.cues.base import CUE_DETECTORS, Arrays, CueDetector, clamp01
from emofuse.errors import InputError, MissingDependencyError
from emofuse.records import Utterance
from emofuse.schema import Cue, Measurement

BASIC = {
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "joy": "joy",
    "sadness": "sadness",
    "surprise": "surprise",
}
"""NRC categories that name one of the six basic emotions (our label set's names)."""

_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_CLAUSE_END = re.compile(r"[,;:.!?]")
_ZWJ = "\u200d"
_SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}


def _emoji(text: str, known: dict[str, str]) -> list[str]:
    """The emoji of ``text`` VADER describes.

    The parts of a joined sequence (family, profession emoji) and skin-tone modifiers are not
    emoji of their own.
    """
    out = []
    for k, ch in enumerate(text):
        joined = (k > 0 and text[k - 1] == _ZWJ) or (k + 1 < len(text) and text[k + 1] == _ZWJ)
        if ch in known and ch not in _SKIN_TONES and not joined:
            out.append(ch)
    return out


class WordCueConfig(Config):
    """Options of the ``words`` cue detector."""

    min_valence: float = Field(
        1.5,
        ge=0.0,
        le=4.0,
        description="A word without an NRC basic emotion is a cue when its VADER valence is at "
        "least this far from 0 (on -4..4).",
    )
    negation_window: int = Field(
        3, ge=0, description="Words before a cue word searched for a negation (VADER uses 3)."
    )
    min_compound: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The whole text is a cue when VADER's compound score is at least this far "
        "from 0.",
    )


@functools.lru_cache(maxsize=1)
def _lexicons() -> tuple[dict[str, list[str]], Any]:
    """``(NRC word → categories, VADER analyzer)``, loaded once."""
    try:
        nrc_file = resources.files("nrclex") / "data" / "nrc_en.json"
        nrc = json.loads(nrc_file.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError):
        raise MissingDependencyError("word cues", "NRCLex", "text") from None
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise MissingDependencyError("word cues", "vaderSentiment", "text") from None
    return nrc, SentimentIntensityAnalyzer()


@CUE_DETECTORS.register("words")
class WordCueDetector(CueDetector):
    """Lexical cues of a segment's words (see the module docstring for the lexicons).

    Cue names: ``emotion_word`` (a word of an NRC basic emotion, or of strong VADER valence;
    negated words say so and carry the flipped valence), ``intensifier`` (a VADER booster
    before a cue word), ``emoji``, ``exclamation``, ``capitals`` (a word in capitals, ≥ 2
    letters), ``question``, ``overall_valence`` (VADER's compound score of the whole text).
    """

    Config = WordCueConfig
    modality = "text"
    needs: ClassVar[dict[str, tuple[str, ...]]] = {}

    def reads(self, utt: Utterance) -> bool:
        """Text in English (or of unknown language)."""
        english = utt.language is None or utt.language.lower().split("-")[0] == "en"
        return bool(utt.text and utt.text.strip()) and english

    def detect_dialogue(
        self, utts: Sequence[Utterance], arrays: Sequence[Arrays]
    ) -> list[list[Cue]]:
        """Each segment's word cues (no baseline: words carry their meaning alone)."""
        return [
            self.detect_text(u.text or "", u.start, u.end) if self.reads(u) else [] for u in utts
        ]

    def detect_text(
        self, text: str, start: float | None = None, end: float | None = None
    ) -> list[Cue]:
        """The cues of one text, strongest first; ``start``/``end`` become the cues' span.

        A word that recurs gives one cue (its count in the phrase); a negation reaches only
        within its clause (not past ``, ; : . ! ?``).

        Raises:
            InputError: ``text`` is not a string.
        """
        from vaderSentiment.vaderSentiment import BOOSTER_DICT, N_SCALAR, NEGATE

        if not isinstance(text, str):
            raise InputError(None, f"word cues read a string, got {type(text).__name__}")
        nrc, vader = _lexicons()
        cfg: WordCueConfig = self.config  # type: ignore[assignment]
        span = {"start": start, "end": end if start is not None else None}
        cues: list[Cue] = []
        tokens = list(_TOKEN.finditer(text))
        lower = [t.group(0).lower() for t in tokens]
        negations = {w.lower() for w in NEGATE}
        seen: dict[tuple[str, str | None], list[int]] = {}  # (word, negator) → [cue index, count]
        for i, word in enumerate(lower):
            emotions = [BASIC[c] for c in nrc.get(word, []) if c in BASIC]
            valence = float(vader.lexicon.get(word, 0.0))
            if not emotions and abs(valence) < cfg.min_valence:
                continue
            first = max(0, i - cfg.negation_window)
            negator = next(
                (
                    lower[j]
                    for j in range(i - 1, first - 1, -1)
                    if not _CLAUSE_END.search(text, tokens[j].end(), tokens[j + 1].start())
                    and (lower[j] in negations or lower[j].endswith("n't"))
                ),
                None,
            )
            # a negation in another clause does not count ("Don't worry, be happy")
            if negator is not None:
                j = next(k for k in range(i - 1, first - 1, -1) if lower[k] == negator)
                if any(
                    _CLAUSE_END.search(text, tokens[k].end(), tokens[k + 1].start())
                    for k in range(j, i)
                ):
                    negator = None
            shown = tokens[i].group(0)
            if negator is not None:
                shown = f"{negator} … {shown}" if lower[i - 1] != negator else f"{negator} {shown}"
                valence *= N_SCALAR
            kinds = ", ".join(emotions) if emotions else ("positive" if valence > 0 else "negative")
            phrase = f"says '{shown}'" + (f" ({kinds}" + (", negated)" if negator else ")"))
            values = [
                Measurement(name="valence", value=round(valence, 3), unit="VADER", reference=0.0)
            ]
            if negator is None:  # what the word is evidence for (a negated one: unclear)
                values += [Measurement(name=e, value=1.0, unit="NRC") for e in emotions]
            strength = max(abs(valence) / 4.0, 0.5 if emotions and negator is None else 0.0)
            key = (shown.lower(), negator)
            if key in seen:  # a word that recurs is one cue, counted
                seen[key][1] += 1
                continue
            seen[key] = [len(cues), 1]
            cues.append(
                Cue(
                    modality="text",
                    name="emotion_word",
                    phrase=phrase,
                    values=values,
                    strength=clamp01(strength),
                    **span,
                )
            )
            booster = lower[i - 1] if i > 0 else None
            if booster in BOOSTER_DICT:
                cues.append(
                    Cue(
                        modality="text",
                        name="intensifier",
                        phrase=f"intensifies '{tokens[i].group(0)}' with '{tokens[i - 1].group(0)}'",
                        values=[Measurement(name="boost", value=float(BOOSTER_DICT[booster]))],
                        strength=clamp01(abs(BOOSTER_DICT[booster]) / 0.293 * 0.5),
                        **span,
                    )
                )
        for index, count in seen.values():
            if count > 1:
                c = cues[index]
                cues[index] = c.model_copy(update={"phrase": f"{c.phrase} ×{count}"})
        for ch in dict.fromkeys(_emoji(text, vader.emojis)):
            score = vader.polarity_scores(vader.emojis[ch])["compound"]
            cues.append(
                Cue(
                    modality="text",
                    name="emoji",
                    phrase=f"uses {ch} ({vader.emojis[ch]})",
                    values=[Measurement(name="compound", value=score, unit="VADER", reference=0.0)],
                    strength=clamp01(max(abs(score), 0.3)),
                    **span,
                )
            )
        bangs = text.count("!")
        if bangs:
            cues.append(
                Cue(
                    modality="text",
                    name="exclamation",
                    phrase="exclaims" + (f" ({bangs} '!')" if bangs > 1 else ""),
                    values=[Measurement(name="exclamation_marks", value=float(bangs))],
                    strength=clamp01(0.3 + 0.2 * bangs),
                    **span,
                )
            )
        capital = [t.group(0) for t in tokens if len(t.group(0)) >= 2 and t.group(0).isupper()]
        # short words in capitals are acronyms (TV, USA, OK), not shouting
        shouted = [w for w in capital if len(w) >= 4]
        if shouted:
            loudest = max(
                shouted,
                key=lambda w: (
                    abs(vader.lexicon.get(w.lower(), 0.0)) + bool(nrc.get(w.lower())),
                    len(w),
                ),
            )
            cues.append(
                Cue(
                    modality="text",
                    name="capitals",
                    phrase=f"writes in capitals ('{loudest}')",
                    values=[Measurement(name="words_in_capitals", value=float(len(shouted)))],
                    strength=clamp01(0.4 + 0.1 * len(shouted)),
                    **span,
                )
            )
        if text.rstrip().endswith("?"):
            cues.append(
                Cue(
                    modality="text", name="question", phrase="asks a question", strength=0.3, **span
                )
            )
        compound = float(vader.polarity_scores(text)["compound"]) if tokens else 0.0
        if abs(compound) >= cfg.min_compound:
            tone = "positive" if compound > 0 else "negative"
            cues.append(
                Cue(
                    modality="text",
                    name="overall_valence",
                    phrase=f"the words are {tone} overall (VADER {compound:+.2f})",
                    values=[
                        Measurement(name="compound", value=compound, unit="VADER", reference=0.0)
                    ],
                    strength=clamp01(abs(compound)),
                    **span,
                )
            )
        return sorted(cues, key=lambda c: -c.strength)


__all__ = ["BASIC", "WordCueConfig", "WordCueDetector"]

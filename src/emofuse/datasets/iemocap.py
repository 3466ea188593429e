"""IEMOCAP — Interactive Emotional Dyadic Motion Capture database (USC SAIL).

Dataset card
============

What it is
    About 12 hours of dyadic sessions (5 sessions × 2 actors, one female and one male each),
    improvised and scripted, with audio, video, motion capture and transcripts
    (Busso et al., 2008). Each turn is labelled by several annotators with a categorical emotion
    and valence/arousal/dominance. Two incompatible protocols are in use; never compare numbers
    across them:

    * ``protocol="erc6"`` — emotion recognition in conversation, 6 classes (COSMIC / DialogueRNN
      lineage): Sessions 1–4 train, the 12 COSMIC validation dialogues of Sessions 1–4 as
      ``val``, Session 5 ``test``. Weighted F1 and accuracy.
    * ``protocol="ser4"`` — speech emotion recognition, 4 classes (happy merged with excited),
      leave-one-session-out 5-fold (``fold`` = test session). Report UA (balanced accuracy) and
      WA (accuracy), averaged over the five folds.

Licence
    IEMOCAP is licensed by USC SAIL for research (no redistribution); request it at
    https://sail.usc.edu/iemocap/. The label/transcript files used here are as committed in
    ``declare-lab/conv-emotion`` (MIT) and ``zeroQiaoba/MERTools`` (Apache-2.0, non-commercial).

How to get it
    The light files (``root``): ``COSMIC/feature-extraction/iemocap/iemocap.pkl`` from
    ``declare-lab/conv-emotion`` (saved as ``cosmic_iemocap.pkl``);
    ``label_6way.npz``, ``label_4way.npz``, ``transcription-engchi-polish.csv`` from
    ``zeroQiaoba/MERTools`` ``MERBench/dataset/iemocap-process/``; and
    ``derived/iemocap_utterances.csv``, their join (see ``shared/data/README.md`` §2). The audio
    comes from the licensed ``IEMOCAP_full_release`` (option ``full_release_root``).

Expected folder tree::

    iemocap/                                   # root
      cosmic_iemocap.pkl  label_6way.npz  label_4way.npz  transcription-engchi-polish.csv
      derived/iemocap_utterances.csv           # the only file this recipe reads
    IEMOCAP_full_release/                      # optional, option full_release_root
      Session1/
        sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav …
        dialog/transcriptions/Ses01F_impro01.txt …
        dialog/EmoEvaluation/Ses01F_impro01.txt …
      Session2/ … Session5/

Splits
    ``erc6`` (7,433 utterances, 151 dialogues):

    =====  =========  =====  =====  ===  =======  =====  =======  ==========
    split  dialogues  utts   happy  sad  neutral  angry  excited  frustrated
    =====  =========  =====  =====  ===  =======  =====  =======  ==========
    train  108        5,163  451    771  1,221    831    593      1,296
    val    12         647    53     68   103      102    149      172
    test   31         1,623  144    245  384      170    299      381
    =====  =========  =====  =====  ===  =======  =====  =======  ==========

    ``ser4`` (5,531 utterances; happy 1,636 = 595 happy + 1,041 excited, sad 1,084,
    neutral 1,708, angry 1,103; 53 "happy" turns are absent from MERTools' 4-way file and so
    from this protocol). Fold ``k`` tests on Session ``k``. Validation (option ``validation``):

    * ``"next-session"`` (default): Session ``k % 5 + 1`` (fold 1 → Session 2, …, fold 5 →
      Session 1) is ``val``, the remaining three sessions ``train``. Speaker-independent (each
      session has its own two actors) and deterministic; the test session is never touched.
    * ``"none"``: all four other sessions are ``train`` (the common LOSO report); choose
      epochs/hyper-parameters some other way, never on the test session.

Label maps
    6-way (``label_6way.npz`` ids): 0 happy, 1 sad, 2 neutral, 3 angry, 4 excited, 5 frustrated.
    4-way (``label_4way.npz`` ids): 0 happy (happy + excited), 1 sad, 2 neutral, 3 angry.
    ``TaskSpec.emotion_labels`` follows these id orders.

Records
    ``id`` = the IEMOCAP utterance id (``Ses01F_impro01_F000``), ``dialogue_id`` = the dialogue
    (``Ses01F_impro01``), ``turn`` = position in the dialogue (order of the derived CSV, which
    keeps COSMIC's order), ``speaker`` = gender letter ``F``/``M`` (models never need it),
    ``labels.extra``: ``session``, ``text_zh`` (MERTools' Chinese translation), and for ser4 the
    6-way ``label6``. With ``full_release_root``: ``media["audio"]`` =
    ``Session{n}/sentences/wav/<dialogue>/<utt>.wav``; text is taken from the release's
    ``transcriptions/`` (identical wording, original casing and punctuation); ``EmoEvaluation/``
    adds ``emo_evaluation`` (the majority category code, e.g. ``"neu"``, ``"exc"``), ``valence``,
    ``arousal``, ``dominance`` and the turn's times in the dialogue recording
    (``dialog_start_s``/``dialog_end_s``) to ``labels.extra``. The emotion label itself always comes
    from the protocol files, which define the benchmark.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from emofuse.datasets.base import (
    DATASETS,
    BadValue,
    DatasetRecipe,
    RecipeConfig,
    number,
    read_csv_table,
    span,
)
from emofuse.errors import ConfigError, InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

LABELS_6 = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
"""6-way ERC classes in ``label_6way.npz`` id order."""

LABELS_4 = ["happy", "sad", "neutral", "angry"]
"""4-way SER classes in ``label_4way.npz`` id order (happy includes excited)."""

UTTERANCES_CSV = "derived/iemocap_utterances.csv"
_SPLITS = {"train": "train", "valid": "val", "test": "test"}

_TRANSCRIPT = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s?(.*)$")
_EVALUATION = re.compile(r"^\[([^\]]*)\]\s+(Ses\S+)\s+(\S+)\s+\[([^\]]*)\]")
_TIMES = re.compile(r"^\s*(\S+?)\s*-\s*(\S+)\s*$")
DIMENSION_RANGE = (1.0, 5.0)
"""IEMOCAP's valence/arousal/dominance scale (annotators rate 1–5; the summary is their mean)."""


def parse_transcription(path: str | Path) -> dict[str, str]:
    """Read one ``dialog/transcriptions/<dialogue>.txt`` of IEMOCAP_full_release.

    Lines look like ``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.``; lines without an
    utterance id (``M: [BREATHING]``, overlapping-speech notes) are skipped. The times in
    brackets are not read (``EmoEvaluation`` gives each turn's times).

    Returns:
        ``utterance id → text`` (whitespace collapsed).
    """
    out: dict[str, str] = {}
    for line in _read_lines(path):
        m = _TRANSCRIPT.match(line)
        if m:
            out[m.group(1)] = " ".join(m.group(2).split())
    return out


def parse_emo_evaluation(
    path: str | Path, problems: dict[str, str] | None = None
) -> dict[str, dict[str, float | str]]:
    """Read one ``dialog/EmoEvaluation/<dialogue>.txt`` of IEMOCAP_full_release.

    Summary lines look like
    ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``; the
    per-annotator lines below them (``C-E2:``, ``A-E1:`` …) are skipped.

    Every number is checked: times finite, ``start ≥ 0`` and ``end > start``; valence, arousal
    and dominance finite and in [1, 5]. A turn with a bad one is left out of the result and,
    when ``problems`` is given, recorded there (``utterance id → "line N: problem"``).

    Returns:
        ``utterance id → {"emo_evaluation", "valence", "arousal", "dominance", "dialog_start_s",
        "dialog_end_s"}``.

    Raises:
        InputError: the file cannot be read, or (without ``problems``) a number is bad.
    """
    low, high = DIMENSION_RANGE
    out: dict[str, dict[str, float | str]] = {}
    for n, line in enumerate(_read_lines(path), 1):
        m = _EVALUATION.match(line)
        if not m:
            continue
        times, utt, code, dims = m.groups()
        try:
            t = _TIMES.match(times)
            if t is None:
                raise BadValue(f"times [{times}] are not [start - end]")
            start = number(t.group(1), "start", low=0)
            end = number(t.group(2), "end", low=0)
            span(start, end)
            parts = [p.strip() for p in dims.split(",")]
            if len(parts) != 3:
                raise BadValue(f"[{dims}] is not [valence, arousal, dominance]")
            v, a, d = (
                number(x, name, low=low, high=high)
                for x, name in zip(parts, ("valence", "arousal", "dominance"), strict=True)
            )
        except BadValue as err:
            if problems is None:
                raise InputError(path, f"line {n} ({utt}): {err}") from None
            problems[utt] = f"line {n}: {err}"
            continue
        out[utt] = {
            "emo_evaluation": code,
            "valence": v,
            "arousal": a,
            "dominance": d,
            "dialog_start_s": start,
            "dialog_end_s": end,
        }
    return out


def _read_lines(path: str | Path) -> list[str]:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise InputError(p, f"cannot read ({err.strerror})") from None


class IemocapConfig(RecipeConfig):
    """Options of the ``iemocap`` recipe."""

    protocol: Literal["erc6", "ser4"] = Field(
        "erc6", description="erc6: COSMIC 6-class ERC split; ser4: 4-class leave-one-session-out."
    )
    fold: int = Field(5, ge=1, le=5, description="ser4 only: the test session (1–5).")
    validation: Literal["next-session", "none"] = Field(
        "next-session",
        description="ser4 only: 'next-session' = session fold%5+1 is val; 'none' = no val split.",
    )
    full_release_root: Path | None = Field(
        None,
        description=(
            "IEMOCAP_full_release folder; adds audio paths, original transcripts and EmoEvaluation."
        ),
    )


@DATASETS.register("iemocap")
class Iemocap(DatasetRecipe):
    """IEMOCAP recipe (see the module docstring for the dataset card)."""

    folder = "iemocap"
    Config = IemocapConfig
    config: IemocapConfig

    def spec(self) -> TaskSpec:
        """``iemocap-erc6`` (conversational, weighted F1) or ``iemocap-ser4`` (UA/WA)."""
        if self.config.protocol == "erc6":
            return TaskSpec(
                name="iemocap-erc6",
                emotion_labels=list(LABELS_6),
                conversational=True,
                metrics=["weighted_f1", "accuracy"],
            )
        return TaskSpec(name="iemocap-ser4", emotion_labels=list(LABELS_4), metrics=["ua", "wa"])

    def required_files(self) -> list[str]:
        """The derived utterance table."""
        return [UTTERANCES_CSV]

    def _split(self, session: int, cosmic: str) -> str | None:
        if self.config.protocol == "erc6":
            return _SPLITS[cosmic]
        fold = self.config.fold
        if session == fold:
            return "test"
        if self.config.validation == "next-session" and session == fold % 5 + 1:
            return "val"
        return "train"

    def load(self) -> list[Utterance]:
        """Read the derived table and, when given, the full release.

        An utterance whose session (1–5), index (whole, ≥ 0) or label id (in the protocol's
        range) is unusable, or whose ``EmoEvaluation`` line holds a bad number (times, or
        valence/arousal/dominance outside [1, 5]), is reported in :attr:`skipped` and left out.
        """
        if self.config.protocol == "erc6" and "fold" in self.config.model_fields_set:
            raise ConfigError("dataset 'iemocap': option 'fold' only applies to protocol='ser4'")
        path = self.root / UTTERANCES_CSV
        df = read_csv_table(path, keep_default_na=False, dtype=str)
        need = [
            "dialogue_id",
            "session",
            "utt_index",
            "utt_id",
            "speaker",
            "text",
            "text_zh",
            "label6",
            "label6_name",
            "label4",
            "label4_name",
            "split_cosmic",
        ]
        absent = [c for c in need if c not in df.columns]
        if absent:
            raise InputError(path, f"missing column(s) {', '.join(absent)}")
        full = (
            _FullRelease(self.config.full_release_root) if self.config.full_release_root else None
        )
        ser4 = self.config.protocol == "ser4"
        out: list[Utterance] = []
        for i, row in enumerate(df.to_dict("records")):
            where = f"{path} (line {i + 2})"
            if ser4 and not row["label4"]:
                continue
            try:
                session = number(row["session"], "session", low=1, high=5, integer=True)
                turn = number(row["utt_index"], "utt_index", low=0, integer=True)
                column, names = ("label4", LABELS_4) if ser4 else ("label6", LABELS_6)
                label = names[number(row[column], column, low=0, high=len(names) - 1, integer=True)]
            except BadValue as err:  # reported, and the utterance left out
                self.skip(row["utt_id"], self.where(path, i + 2), str(err))
                continue
            try:
                split = self._split(session, row["split_cosmic"])
            except KeyError:
                raise InputError(
                    where, f"split_cosmic {row['split_cosmic']!r} is not one of {list(_SPLITS)}"
                ) from None
            if not ser4 and label != row["label6_name"]:
                raise InputError(
                    where,
                    f"label6 {row['label6']} is {label!r}, label6_name {row['label6_name']!r}",
                )
            extra: dict[str, str | float | int | None] = {
                "session": session,
                "text_zh": row["text_zh"] or None,
            }
            if ser4:
                extra["label6"] = row["label6_name"]
            utt_id, text, media = row["utt_id"], row["text"], {}
            if full is not None:
                media = {"audio": str(full.wav(session, row["dialogue_id"], utt_id))}
                text = full.text(session, row["dialogue_id"], utt_id) or text
                evaluation, problem = full.evaluation(session, row["dialogue_id"], utt_id)
                if problem:
                    self.skip(utt_id, *problem)
                    continue
                extra.update(evaluation)
            out.append(
                Utterance(
                    id=utt_id,
                    dataset=self.name,
                    split=split,
                    dialogue_id=row["dialogue_id"],
                    turn=turn,
                    speaker=row["speaker"] or None,
                    media=media,
                    text=text,
                    language="en",
                    labels=Labels(emotion=label, extra=extra),
                )
            )
        return out


class _FullRelease:
    """Lazy, per-dialogue reader of an ``IEMOCAP_full_release`` folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        missing = [f"Session{n}" for n in range(1, 6) if not (self.root / f"Session{n}").is_dir()]
        if missing:
            raise InputError(
                self.root, f"not an IEMOCAP_full_release folder: missing {', '.join(missing)}"
            )
        self._texts: dict[str, dict[str, str]] = {}
        self._evals: dict[str, dict[str, dict[str, float | str]]] = {}
        self._problems: dict[str, dict[str, str]] = {}

    def wav(self, session: int, dialogue: str, utt: str) -> Path:
        return self.root / f"Session{session}" / "sentences" / "wav" / dialogue / f"{utt}.wav"

    def text(self, session: int, dialogue: str, utt: str) -> str | None:
        if dialogue not in self._texts:
            p = self.root / f"Session{session}" / "dialog" / "transcriptions" / f"{dialogue}.txt"
            self._texts[dialogue] = parse_transcription(p) if p.is_file() else {}
        return self._texts[dialogue].get(utt)

    def evaluation(
        self, session: int, dialogue: str, utt: str
    ) -> tuple[dict[str, float | str], tuple[str, str] | None]:
        """The turn's ``EmoEvaluation`` entry, and ``(file, problem)`` when a number is bad."""
        p = self.root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialogue}.txt"
        if dialogue not in self._evals:
            problems: dict[str, str] = {}
            self._evals[dialogue] = parse_emo_evaluation(p, problems) if p.is_file() else {}
            self._problems[dialogue] = problems
        problem = self._problems[dialogue].get(utt)
        if problem is None:
            return self._evals[dialogue].get(utt, {}), None
        line, _, why = problem.partition(": ")  # "line N: what is wrong"
        return {}, (f"{p.relative_to(self.root).as_posix()} {line}", why)

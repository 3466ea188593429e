"""Analyse one's own media: :class:`Analyzer` cuts a file into segments and predicts each.

How a file is cut (``Analysis.segmentation``):

* a **transcript** with times (SRT, WebVTT, JSON; given, or beside the media with the same
  stem) → one segment per turn, with its words; turns starting after the media's end are
  skipped (a transcript none of whose turns fits is refused as belonging to another file);
* no transcript → **speech**: Silero VAD finds the stretches of speech, Whisper tiny.en
  transcribes each (English; for ``language`` other than English no ASR runs and the voice and
  face are analysed alone); the audio is decoded a window at a time, never whole;
* a video without speech (or without audio) → fixed **windows** of the face alone;
* an image, or a clip with an untimed transcript of ≤ 30 s → **whole**;
* a transcript without media → its **turns**, words only.

Segments of one file form a dialogue (``dialogue_id`` = the file's stem, ``turn`` = the
segment's index), so conversational models read the context across segments.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from emofuse._loading import loading
from emofuse.analyze.result import Analysis, Segmentation, Skipped
from emofuse.analyze.transcripts import Turn, is_transcript, read_transcript, transcript_beside
from emofuse.datasets.folder import IMAGE_SUFFIXES
from emofuse.errors import ConfigError, EmofuseWarning, InputError
from emofuse.hooks import Hook
from emofuse.records import Utterance
from emofuse.resources import default_model_dir

WHOLE_CLIP_S = 30.0
"""Clips up to this long with an untimed transcript are analysed as one segment."""

FACE_WINDOW_S = 5.0
"""Window length for video analysed by the face alone (no speech)."""

MIN_SPEECH_COVERAGE = 0.2
"""A timed transcript whose turns hold less speech than this share is refused (wrong file)."""

DATASET = "analyze"


_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


def language_tag(value: str) -> str:
    """``value`` checked as a BCP-47 language tag (``en``, ``fr``, ``pt-BR``, ``zh-Hans``).

    The primary subtag is an ISO 639 code of two or three letters; ``eng`` is read as ``en``.

    Raises:
        ConfigError: not a language tag (e.g. ``"english"``), with examples.
    """
    tag = value.strip() if isinstance(value, str) else ""
    if not _LANGUAGE_TAG.match(tag):
        raise ConfigError(
            f"language {value!r} is not a language tag: give a BCP-47 tag such as 'en', 'fr', "
            "'de-CH' or 'zh-CN'"
        )
    primary, _, rest = tag.partition("-")
    primary = {"eng": "en"}.get(primary.lower(), primary.lower())
    return f"{primary}-{rest}" if rest else primary


class Analyzer:
    """Analyse media files, transcripts and folders of them with one model.

    Args:
        model: A saved model folder, a loaded :class:`~emofuse.models.FusionModel`, or ``None``
            for the bundled default model (see ``default_model/MODEL_CARD.md``).
        cache: Feature store folder to reuse and fill; ``None`` computes features in memory.
        language: Language spoken in the media, a BCP-47 tag (default ``"en"``; see
            :func:`language_tag`). ASR runs only for
            English; otherwise segments come from voice activity, and voice and face are
            analysed without words.
        batch_size: Segments per forward pass.
        hook: Progress hook (steps ``"segment"``, ``"features …"``, ``"inference"``).
        cues: Find each segment's cues (voice, face, words), rank them by what the model made
            of each modality and explain the prediction in words (:mod:`emofuse.cues`).
        rationale: Have the model's LLM head write each segment's explanation instead: a short
            free-text rationale conditioned on the predicted label and the segment's cues
            (:meth:`~emofuse.models.llm.LLMHead.explain`; models with an LLM head only, and
            several seconds a segment on 2 CPU cores: ``docs/analyze.md``).

    Raises:
        ConfigError: ``rationale`` with a model that has no LLM head, or a bad ``language``.

    Example:
        >>> from emofuse import Analyzer  # doctest: +SKIP
        >>> result = Analyzer().analyze("interview.mp4")  # doctest: +SKIP
        >>> result.predictions[0].emotion  # doctest: +SKIP
        'neutral'
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any | None = None,
        *,
        cache: str | os.PathLike[str] | None = None,
        language: str = "en",
        batch_size: int = 64,
        hook: Hook | None = None,
        cues: bool = True,
        rationale: bool = False,
    ) -> None:
        with loading():  # torch and the model's weights
            from emofuse.models.base import FusionModel, load_model

            if isinstance(model, FusionModel):
                self.model = model
                self.model_dir: Path | None = None
            else:
                self.model_dir = Path(model) if model is not None else default_model_dir()
                self.model = load_model(self.model_dir)
        self.cache = cache
        self.language = language_tag(language)
        self.batch_size = batch_size
        self.hook = hook
        if not isinstance(cues, bool):
            raise ConfigError(f"cues must be True or False, got {cues!r}")
        self.cues = cues
        if not isinstance(rationale, bool):
            raise ConfigError(f"rationale must be True or False, got {rationale!r}")
        if rationale and not self.model.writes_rationales:
            raise ConfigError(
                f"rationale: model {self.model.name!r} has no LLM head to write rationales "
                "(train an egmf-llm model); its cue-level explanations need no option"
            )
        self.rationale = rationale
        self._explainer: Any = None
        self._faceonly: Any = None
        self._asr: Any = None
        self._loading: threading.Thread | None = None

    @property
    def model_name(self) -> str:
        """``"<registry name> (<task>)"``."""
        return f"{self.model.name} ({self.model.spec.name})"

    # -- one file ----------------------------------------------------------------------------
    def analyze(
        self,
        path: str | os.PathLike[str],
        transcript: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
    ) -> Analysis:
        """Analyse one media file (video, audio, image) or transcript.

        Args:
            path: The file.
            transcript: Its transcript (default: a transcript file beside it with the same stem).
            name: What segment ids start with, and the dialogue id (default: the file's stem;
                a batch gives each file of a folder its own, so ids never repeat).

        Returns:
            The :class:`~emofuse.analyze.result.Analysis`; segments that could not be used are
            listed in ``skipped`` with the reason, and a file without speech has no predictions
            and says so in ``notes``.

        Raises:
            InputError: the file is missing, unreadable or of an unknown kind, or the transcript
                is malformed or does not fit the media (the message names the file).
        """
        from emofuse.features.media import probe

        t0 = time.perf_counter()
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(
                None,
                f"analyze() takes one file path, got a {type(path).__name__}; for many files "
                "use emofuse.analyze.batch.analyze_files",
            )
        p = Path(path)
        if p.is_dir():
            raise InputError(
                p, "is a folder; give its files, or use emofuse.analyze.batch.analyze_files"
            )
        if not p.is_file():
            raise InputError(p, "no such file")
        notes: list[str] = []
        skipped: list[Skipped] = []
        stem = _safe(name) if name else _stem(p)
        if is_transcript(p):
            if transcript is not None:
                raise InputError(p, "is a transcript itself; give its media file with a transcript")
            turns = read_transcript(p)
            media = _media_beside(p)
            if media is None:
                utts = [
                    Utterance(
                        id=f"{stem}_turn{i:03d}",
                        dataset=DATASET,
                        dialogue_id=stem,
                        turn=i,
                        speaker=t.speaker,
                        start=t.start,
                        end=t.end,
                        text=t.text,
                        language=self.language,
                    )
                    for i, t in enumerate(turns)
                ]
                return self._finish(p, "transcript", None, p, "turns", utts, notes, skipped, t0)
            transcript, p = p, media
        info = probe(p)
        kind: Literal["video", "audio", "image"]
        if p.suffix.lower() in IMAGE_SUFFIXES or (
            info.has_video and not info.has_audio and not info.duration
        ):
            kind = "image"
        elif info.has_video:
            kind = "video"
        elif info.has_audio:
            kind = "audio"
        else:
            raise InputError(p, "has neither audio nor video")
        duration = info.duration
        tfile = Path(transcript) if transcript is not None else transcript_beside(p)
        segmentation: Segmentation
        if kind == "image":
            from emofuse.features.media import read_image

            read_image(p)  # a file that is not a readable image is an error, not an empty result
            if tfile is not None:
                notes.append(f"transcript {tfile.name} ignored: an image has no time line")
            utts = [Utterance(id=stem, dataset=DATASET, media={"image": os.fspath(p)})]
            return self._finish(p, kind, None, None, "whole", utts, notes, skipped, t0)
        turns = None
        if tfile is not None:
            try:
                turns = read_transcript(tfile)
            except InputError as err:
                if transcript is not None or tfile.suffix.lower() in (".srt", ".vtt"):
                    raise  # asked for, or a subtitle file: meant as the transcript
                # a .json / .txt beside the media that merely shares its stem (metadata, notes)
                notes.append(
                    f"{tfile.name} beside it is not a usable transcript, ignored ({err.problem})"
                )
                tfile = None
        if turns is not None and turns[0].start is not None:
            utts, skipped = _timed_segments(
                p,
                kind,
                stem,
                turns,
                duration,
                tfile,
                self.language,  # type: ignore[arg-type]
            )
            if info.has_audio:
                self._check_speech_coverage(p, utts, tfile)  # type: ignore[arg-type]
            segmentation = "transcript"
        elif turns is not None and (duration or 0.0) <= WHOLE_CLIP_S:
            text = " ".join(t.text for t in turns)
            utts = [
                Utterance(
                    id=stem,
                    dataset=DATASET,
                    media={kind: os.fspath(p)},
                    text=text,
                    language=self.language,
                )
            ]
            segmentation = "whole"
        else:
            if turns is not None:
                notes.append(
                    f"transcript {tfile.name if tfile else ''} has no times and the recording "
                    "lasts "
                    f"{duration:.0f} s: segmented by speech instead"
                )
                tfile = None
            voice: dict[str, Any] = {}
            heard: dict[str, dict[str, Any]] = {}
            utts, segmentation = self._speech_segments(
                p, stem, kind, duration, info.has_audio, notes, voice, heard
            )
            return self._finish(
                p,
                kind,
                duration,
                tfile,
                segmentation,
                utts,
                notes,
                skipped,
                t0,
                {"audio": voice},
                heard,
            )
        return self._finish(p, kind, duration, tfile, segmentation, utts, notes, skipped, t0)

    def _speech_segments(
        self,
        p: Path,
        stem: str,
        kind: Literal["video", "audio"],
        duration: float | None,
        has_audio: bool,
        notes: list[str],
        voice: dict[str, Any],
        heard: dict[str, dict[str, Any]],
    ) -> tuple[list[Utterance], Segmentation]:
        """Cut by speech.

        ``voice`` is filled with the segments' voice features when the model's voice encoder
        is Whisper's, whose states the ASR then decodes (one encoder pass for both), and
        ``heard`` with the inputs of the voice cues (openSMILE's LLDs) computed from the same
        samples, so no segment is decoded twice.
        """
        english = self.language.lower().split("-")[0] == "en"
        utts: list[Utterance] = []
        if has_audio:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", EmofuseWarning)
                utts = self._transcriber().segment_media(
                    p,
                    DATASET,
                    transcribe=english,
                    hook=self.hook,
                    require_speech=False,
                    encoder=self._shared_encoder(),
                    features=voice,
                    on_speech=lambda _: self._load_in_background(),
                    on_segment=self._cue_inputs(heard),
                )
            notes += [str(w.message) for w in caught if issubclass(w.category, EmofuseWarning)]
            if not english:
                notes.append(
                    f"language {self.language!r}: no speech recognition (Whisper tiny.en is "
                    "English only); voice and face analysed without words"
                )
        if utts:
            ids = {u.id: f"{stem}_seg{i:03d}" for i, u in enumerate(utts)}
            for found in (voice, heard):
                moved = {ids[k]: found.pop(k) for k in list(found) if k in ids}
                found.clear()
                found.update(moved)
            return [
                u.model_copy(update={"id": ids[u.id], "dialogue_id": stem, "turn": i})
                for i, u in enumerate(utts)
            ], "speech"
        if kind == "audio":
            notes.append("no speech found: nothing to analyse")
            return [], "speech"
        notes.append(
            ("no speech found" if has_audio else "no audio track")
            + f": the face alone, in {FACE_WINDOW_S:g}-s windows"
        )
        total = duration or FACE_WINDOW_S
        n = max(1, math.ceil(total / FACE_WINDOW_S - 1e-6))
        return [
            Utterance(
                id=f"{stem}_win{i:03d}",
                dataset=DATASET,
                dialogue_id=stem,
                turn=i,
                start=round(i * FACE_WINDOW_S, 3),
                end=round(min(total, (i + 1) * FACE_WINDOW_S), 3),
                media={"video": os.fspath(p)},
            )
            for i in range(n)
        ], "windows"

    def _check_speech_coverage(self, p: Path, utts: list[Utterance], tfile: Path) -> None:
        """Refuse a timed transcript whose turns fall where the media has no speech.

        Voice activity is found over the whole file (decoded a window at a time); when less
        than :data:`MIN_SPEECH_COVERAGE` of the turns' time holds speech, the transcript most
        likely belongs to another recording.
        """
        stretches = [
            (u.start or 0.0, u.end or 0.0)
            for u in self._transcriber().segment_media(
                p, DATASET, transcribe=False, hook=self.hook, require_speech=False, min_duration=0.0
            )
        ]
        total = sum((u.end or 0.0) - (u.start or 0.0) for u in utts)
        covered = sum(
            max(0.0, min(u.end or 0.0, b) - max(u.start or 0.0, a))
            for u in utts
            for a, b in stretches
        )
        share = covered / total if total > 0 else 0.0
        if share < MIN_SPEECH_COVERAGE:
            raise InputError(
                tfile,
                f"does not fit {p.name}: only {share:.0%} of its turns' time holds speech; "
                "is it this file's transcript?",
            )

    def _load_in_background(self) -> None:
        """Load the model's text encoder in a thread while speech is transcribed.

        It takes seconds (the transformers import, the weights)
        that would otherwise wait until the segments are known. Transcription spends its time
        in long native calls that free the interpreter; the thread is joined before work made
        of many short steps (face frames) would have to share the interpreter with it. It
        starts after voice activity detection, which is made of such steps too. The voice and
        face extractors, which run native thread pools of their own, load where they are used.
        """
        if self.cache is None and self._loading is None:
            explainer = self._cue_explainer()

            def load() -> None:
                if "text" in self.model.inputs:
                    self.model.load_extractors(["text"])
                if explainer is not None:
                    explainer.load()

            self._loading = threading.Thread(target=_quietly, args=(load,), daemon=True)
            self._loading.start()

    def _cue_inputs(self, heard: dict[str, dict[str, Any]]) -> Any:
        """A ``segment_media`` ``on_segment`` callback, or ``None`` without cues.

        It computes the voice cues' inputs (openSMILE's LLDs) from the samples in memory into
        ``heard``.
        """
        explainer = self._cue_explainer()
        if explainer is None:
            return None
        needs = {n: outs for d in explainer.detectors for n, outs in d.needs.items()}

        loaded: dict[str, Any] = {}

        def compute(uid: str, samples: Any) -> None:
            if not loaded:  # once: set up (waits for the background thread), then reused
                loaded.update(explainer.extra_extractors())
            for name, ext in loaded.items():
                if not hasattr(ext, "extract_wave"):
                    continue
                with contextlib.suppress(InputError):  # the extractor path says why later
                    feats = ext.extract_wave(samples, 16000, outputs=tuple(needs[name]))
                    heard.setdefault(uid, {}).update(
                        {f"{name}:{o}": feats[o] for o in needs[name] if o in feats}
                    )

        return compute

    def _shared_encoder(self) -> Any:
        """The model's ``whisper-encoder`` extractor, or ``None``.

        Only when this analyzer computes features itself and the extractor pads to 30 s
        windows, as Whisper's ASR reads them.
        """
        if self.cache is not None or "audio" not in self.model.inputs:
            return None
        if self.model.inputs["audio"].feature_ref().extractor != "whisper-encoder":
            return None
        encoder = self.model.extractor("audio")
        return encoder if encoder.config.pad else None

    def _cue_explainer(self, voice: bool = True) -> Any:
        """The cue explainer (built once), or ``None`` without cues or an emotion head.

        ``voice=False``: one without the voice's detectors, for media where no speech was found
        (a tone or noise has a pitch, but no prosody).
        """
        if not self.cues or not self.model.spec.emotion_labels:
            return None
        if self._explainer is None:
            from emofuse.cues.explain import CueExplainer

            self._explainer = CueExplainer(self.model)
        if voice:
            return self._explainer
        if self._faceonly is None:
            self._faceonly = self._explainer.without("audio")
        return self._faceonly

    def _transcriber(self) -> Any:
        if self._asr is None:
            from emofuse.features.asr import Transcriber

            self._asr = Transcriber()
        return self._asr

    def _finish(
        self,
        p: Path,
        kind: Literal["video", "audio", "image", "transcript"],
        duration: float | None,
        transcript: Path | None,
        segmentation: Segmentation,
        utts: list[Utterance],
        notes: list[str],
        skipped: list[Skipped],
        t0: float,
        precomputed: dict[str, dict[str, Any]] | None = None,
        heard: dict[str, dict[str, Any]] | None = None,
    ) -> Analysis:
        from emofuse.features.base import file_digest
        from emofuse.models.inference import Inference

        predictions = []
        if self._loading is not None:
            self._loading.join()  # a failure there is raised again where it is used
        if utts:
            explainer = self._cue_explainer(voice=segmentation != "windows")
            also: dict[str, list[str]] = {"face": ["faces"]}
            for modality, outputs in (explainer.also() if explainer else {}).items():
                also[modality] = sorted({*also.get(modality, []), *outputs})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", EmofuseWarning)
                table = self.model.table(
                    utts,
                    cache=self.cache,
                    hook=self.hook,
                    also=also,
                    precomputed=precomputed,
                )
            notes += [str(w.message) for w in caught if issubclass(w.category, EmofuseWarning)]
            if segmentation == "windows":
                _without_voice(table)
            by_id = {u.id: u for u in utts}
            for uid, why in table.skipped.items():
                u = by_id[uid]
                skipped.append(Skipped(id=uid, start=u.start, end=u.end, what="segment", why=why))
            for uid, problems in table.missing.items():
                u = by_id[uid]
                for problem in problems:
                    modality = problem.split(":", 1)[0]
                    skipped.append(
                        Skipped(id=uid, start=u.start, end=u.end, what=modality, why=problem)
                    )
            crowded = _faces_note(table.extras, self.model)
            if crowded:
                notes.append(crowded)
            if table.items:
                predictions = Inference(
                    self.model, batch_size=self.batch_size, hook=self.hook
                ).predictions(table)
                if explainer is not None:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", EmofuseWarning)
                        predictions = explainer.explain(table, predictions, heard)
                    notes += [
                        str(w.message) for w in caught if issubclass(w.category, EmofuseWarning)
                    ]
                if self.rationale:  # written from the label and the cues found above
                    predictions = self.model.explain(predictions)
            if not predictions:
                notes.append("no segment could be analysed (see skipped)")
        return Analysis(
            source=os.fspath(p),
            digest=file_digest(p),
            kind=kind,
            duration=None if duration is None else round(duration, 3),
            transcript=None if transcript is None else os.fspath(transcript),
            segmentation=segmentation,
            model=self.model_name,
            labels=list(self.model.spec.emotion_labels or []),
            sentiment_range=self.model.spec.sentiment_range,
            predictions=sorted(predictions, key=lambda q: (q.start or 0.0, q.id)),
            skipped=skipped,
            notes=notes,
            seconds=round(time.perf_counter() - t0, 3),
        )


def _without_voice(table: Any) -> None:
    """Windows of a video where no speech was found: the model reads the face alone.

    The audio track there is silence, music or noise, not a voice: its features are dropped
    (the voice of a pure tone read as "sadness, carried by the voice" before). A window left
    with no input is skipped, with its modalities' problems as the reason.
    """
    kept = []
    for item in table.items:
        item.features.pop("audio", None)
        if item.features:
            kept.append(item)
        else:
            problems = table.missing.pop(item.utt.id, [])
            table.skipped[item.utt.id] = "; ".join(problems) or "no input left without the voice"
    table.items = kept


def _quietly(load: Any, *args: Any) -> None:
    """Run ``load`` in a background thread; its errors recur when the extractors are used."""
    with contextlib.suppress(Exception):  # raised again, as one line, on first use
        load(*args)


def _faces_note(extras: dict[str, dict[str, Any]], model: Any) -> str | None:
    """Say which face was analysed when segments show several (the face extractor's record)."""
    most: dict[str, int] = {}
    for uid, arrays in extras.items():
        faces = arrays.get("face:faces")
        if faces is not None and len(faces) and int(faces[:, 0].max()) > 1:
            most[uid] = int(faces[:, 0].max())
    if not most:
        return None
    ref = model.inputs["face"].feature_ref() if "face" in model.inputs else None
    rule = (ref.options.get("choose") if ref is not None else None) or "largest"
    many = max(most.values())
    if len(most) == 1 and all(len(a.get("face:faces", ())) <= 1 for a in extras.values()):
        return f"{many} faces in view: the {rule} one was analysed"
    return (
        f"several faces in view in {len(most)} segment(s) (up to {many}): one face was "
        f"analysed in each, the {rule} one, followed from frame to frame"
    )


def _timed_segments(
    p: Path,
    kind: Literal["video", "audio"],
    stem: str,
    turns: list[Turn],
    duration: float | None,
    tfile: Path,
    language: str | None = None,
) -> tuple[list[Utterance], list[Skipped]]:
    """One utterance per timed turn, cut to the media's length; turns past the end skipped."""
    utts: list[Utterance] = []
    skipped: list[Skipped] = []
    end_of_media = math.inf if duration is None else duration
    for i, t in enumerate(turns):
        assert t.start is not None and t.end is not None
        uid = f"{stem}_turn{i:03d}"
        if t.start >= end_of_media - 0.05:
            skipped.append(
                Skipped(
                    id=uid,
                    start=t.start,
                    end=t.end,
                    what="segment",
                    why=f"turn starts at {t.start:.2f} s, after the media ends ({end_of_media:.2f} s)",
                )
            )
            continue
        utts.append(
            Utterance(
                id=uid,
                dataset=DATASET,
                dialogue_id=stem,
                turn=i,
                speaker=t.speaker,
                start=t.start,
                end=min(t.end, end_of_media),
                media={kind: os.fspath(p)},
                text=t.text,
                language=language,
            )
        )
    if not utts:
        raise InputError(
            tfile,
            f"no turn fits {p.name} ({end_of_media:.2f} s): every turn starts after the media ends; "
            "is it this file's transcript?",
        )
    return utts, skipped


def _media_beside(transcript: Path) -> Path | None:
    from emofuse.datasets.folder import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    for suffix in (*sorted(VIDEO_SUFFIXES), *sorted(AUDIO_SUFFIXES)):
        candidate = transcript.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _stem(p: Path) -> str:
    return _safe(p.stem)


def _safe(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` made ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "media"


__all__ = [
    "FACE_WINDOW_S",
    "MIN_SPEECH_COVERAGE",
    "WHOLE_CLIP_S",
    "Analyzer",
    "default_model_dir",
    "language_tag",
]

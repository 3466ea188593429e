"""The ``prosody`` cue detector: pitch, loudness, voice quality and tempo from eGeMAPS LLDs.

See :class:`ProsodyDetector` for the cues, their thresholds, sources and measured reliability.

Example:
    >>> from emofuse.cues import detect, get_detector
    >>> from emofuse.features.base import get_extractor
    >>> lld = [get_extractor("egemaps").extract(u)["lld"] for u in utts]  # doctest: +SKIP
    >>> detect(get_detector("prosody"), utts, [{"egemaps:lld": x} for x in lld])  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import Field

from emofuse.config import Config
from emofuse.cues.base import CUE_DETECTORS, Arrays, CueDetector, clamp01
from emofuse.errors import InputError
from emofuse.records import Utterance
from emofuse.schema import Cue, Measurement

FRAME_S = 0.01
"""Hop of openSMILE's eGeMAPS low-level descriptors, in seconds (the ``step`` the ``egemaps``
extractor declares for ``lld``; a test holds the two together)."""

LLD_KEY = "egemaps:lld"
"""The input this detector reads: ``(T, 25)`` eGeMAPSv02 LLDs, one row per 10 ms."""

EGEMAPS_LLD_COLUMNS: tuple[str, ...] = (
    "Loudness_sma3",
    "alphaRatio_sma3",
    "hammarbergIndex_sma3",
    "slope0-500_sma3",
    "slope500-1500_sma3",
    "spectralFlux_sma3",
    "mfcc1_sma3",
    "mfcc2_sma3",
    "mfcc3_sma3",
    "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz",
    "jitterLocal_sma3nz",
    "shimmerLocaldB_sma3nz",
    "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz",
    "logRelF0-H1-A3_sma3nz",
    "F1frequency_sma3nz",
    "F1bandwidth_sma3nz",
    "F1amplitudeLogRelF0_sma3nz",
    "F2frequency_sma3nz",
    "F2bandwidth_sma3nz",
    "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz",
    "F3bandwidth_sma3nz",
    "F3amplitudeLogRelF0_sma3nz",
)
"""Column order of the ``egemaps`` extractor's ``lld`` output (openSMILE 2.x eGeMAPSv02)."""

_COL = {name: i for i, name in enumerate(EGEMAPS_LLD_COLUMNS)}
_F0 = _COL["F0semitoneFrom27.5Hz_sma3nz"]
_LOUD = _COL["Loudness_sma3"]
_ALPHA = _COL["alphaRatio_sma3"]
_JITTER = _COL["jitterLocal_sma3nz"]
_SHIMMER = _COL["shimmerLocaldB_sma3nz"]
_HNR = _COL["HNRdBACF_sma3nz"]
_H1H2 = _COL["logRelF0-H1-H2_sma3nz"]
_TINY_SONE = 1e-4  # loudness floor before taking logarithms (far below any speech)


class ProsodyConfig(Config):
    """Options of the ``prosody`` cue detector.

    Every threshold is a distance from a reference: the speaker's baseline in a dialogue, or
    the typical value for speech quoted in :class:`ProsodyDetector`'s docstring. A cue fires
    when the distance reaches its threshold; its strength is ``distance / (full_strength_at ×
    threshold)``, clipped to ``[0, 1]``.
    """

    min_voiced_s: float = Field(
        0.25,
        gt=0.0,
        description="Voiced speech (s) a segment needs before any of its cues is judged; "
        "segments with less get no cue.",
    )
    min_baseline_segments: int = Field(
        3,
        ge=1,
        description="Other segments of the recording (of the same speaker, when speakers are "
        "tagged) with enough voiced speech needed to form a baseline; with fewer, level cues "
        "(pitch level, loudness) are not judged.",
    )
    full_strength_at: float = Field(
        3.0,
        gt=1.0,
        description="Multiple of a cue's threshold at which its strength reaches 1 (strength "
        "grows linearly with the distance from the reference: 1/3 at the threshold by default).",
    )
    # -- pitch ----------------------------------------------------------------------------
    pitch_level_st: float = Field(
        2.0,
        gt=0.0,
        description="raised_pitch / lowered_pitch: distance (semitones) of the segment's median "
        "voiced F0 from the baseline's.",
    )
    typical_pitch_range_st: float = Field(
        6.0,
        gt=0.0,
        description="Typical span (semitones) between the 10th and 90th percentile of voiced F0 "
        "in speech (RAVDESS neutral: median 6.4 st over 24 actors).",
    )
    pitch_range_factor: float = Field(
        2.0,
        gt=1.0,
        description="wide_pitch_range / narrow_pitch_range: the span is at least this many "
        "times wider (or narrower) than the typical span and, in a dialogue, than the baseline.",
    )
    contour_window_s: float = Field(
        0.5,
        gt=0.0,
        description="Final part of the speech (s, ending at the last voiced frame) whose F0 slope "
        "defines the contour.",
    )
    contour_min_voiced_s: float = Field(
        0.15, gt=0.0, description="Voiced frames (s) the final window needs for a slope."
    )
    contour_outlier_st: float = Field(
        4.0,
        gt=0.0,
        description="Voiced frames further than this (semitones) from a first straight-line fit "
        "of the final window (octave errors, creak) are dropped before the line is refitted.",
    )
    rising_st_per_s: float = Field(
        8.0, gt=0.0, description="rising_contour: final F0 slope (semitones/s) at least this."
    )
    falling_st_per_s: float = Field(
        20.0,
        gt=0.0,
        description="falling_contour: final F0 slope (semitones/s) at most minus this (statements "
        "normally end falling, so this is set past the usual declarative fall).",
    )
    # -- loudness -------------------------------------------------------------------------
    loudness_db: float = Field(
        4.0,
        gt=0.0,
        description="loud_voice / soft_voice: distance of the segment's median voiced loudness "
        "from the baseline's, as a level difference 10·log2(ratio of sones) (≈ phon, i.e. dB).",
    )
    burst_db: float = Field(
        12.0,
        gt=0.0,
        description="loudness_bursts (single clips only): level of the loudest syllable nucleus "
        "above the clip's median nucleus (≈ dB).",
    )
    # -- voice quality --------------------------------------------------------------------
    typical_jitter_pct: float = Field(
        0.75,
        gt=0.0,
        description="Typical median local jitter (%) of openSMILE's jitterLocal in running "
        "speech (RAVDESS neutral: median 0.75 %).",
    )
    jitter_factor: float = Field(
        2.0,
        gt=1.0,
        description="tense_or_rough_voice: median jitter at least this many times the typical "
        "value and, in a dialogue, the baseline.",
    )
    typical_shimmer_db: float = Field(
        0.8,
        gt=0.0,
        description="Typical median local shimmer (dB) of openSMILE's shimmerLocaldB in running "
        "speech (RAVDESS neutral: median 0.80 dB).",
    )
    shimmer_factor: float = Field(
        1.6,
        gt=1.0,
        description="tense_or_rough_voice: median shimmer at least this many times the typical "
        "value and, in a dialogue, the baseline.",
    )
    typical_alpha_ratio_db: float = Field(
        -13.0,
        description="Typical median alpha ratio (dB, energy 50-1000 Hz over 1-5 kHz) of voiced "
        "speech (RAVDESS neutral: median -13.0 dB).",
    )
    alpha_ratio_db: float = Field(
        7.0,
        gt=0.0,
        description="tense_or_rough_voice: alpha ratio at least this many dB above the typical "
        "value and, in a dialogue, the baseline (a flatter spectrum: pressed, effortful voice).",
    )
    typical_hnr_db: float = Field(
        7.0,
        description="Typical median harmonics-to-noise ratio (dB) of openSMILE's HNRdBACF in "
        "voiced speech (RAVDESS neutral: median 7.0 dB).",
    )
    hnr_drop_db: float = Field(
        5.0,
        gt=0.0,
        description="breathy_voice: HNR at least this many dB below the typical value and, in a "
        "dialogue, the baseline ...",
    )
    breathy_h1h2_db: float = Field(
        10.0,
        description="breathy_voice: ... while the median H1-H2 (dB) is at least this (a strong "
        "first harmonic: a breathy, not a rough, source of the noise).",
    )
    # -- tempo ----------------------------------------------------------------------------
    typical_rate_per_s: float = Field(
        5.0,
        gt=0.0,
        description="Typical articulation rate (syllable nuclei per second of speaking time; "
        "RAVDESS neutral: median 5.2/s).",
    )
    rate_factor: float = Field(
        1.4,
        gt=1.0,
        description="fast_speech / slow_speech: rate at least this many times faster (slower) "
        "than the typical rate and, in a dialogue, the baseline.",
    )
    min_rate_s: float = Field(
        1.0,
        gt=0.0,
        description="Speaking time (s, pauses excluded) a segment needs before its rate is judged.",
    )
    nucleus_dip_db: float = Field(
        2.0,
        gt=0.0,
        description="A syllable nucleus is a voiced loudness peak standing this many dB above "
        "the dip before it (de Jong & Wempe 2009).",
    )
    nucleus_min_gap_s: float = Field(
        0.08, ge=0.0, description="Closest two syllable nuclei may be (s)."
    )
    silence_db: float = Field(
        25.0,
        gt=0.0,
        description="Frames more than this many dB below the segment's 99th-percentile loudness, "
        "and unvoiced, are silent (de Jong & Wempe 2009: -25 dB).",
    )
    pause_min_s: float = Field(
        0.25,
        gt=0.0,
        description="Silence inside the speech (s) counted as a pause (Goldman-Eisler's 250 ms).",
    )
    long_pause_s: float = Field(
        0.5,
        gt=0.0,
        description="long_pauses: the longest pause inside the segment lasts at least this (s).",
    )


@dataclass(frozen=True)
class ProsodyStats:
    """What :meth:`ProsodyDetector.measure` finds in one segment's LLDs.

    Statistics over voiced frames are ``None`` when the segment has fewer voiced frames than
    ``min_voiced_s``; the contour and rate are ``None`` when their own minimum is not met.

    Attributes:
        n_frames: Rows ``T`` of the LLD array (10 ms each).
        n_voiced: Frames with F0 (openSMILE writes 0 for unvoiced frames).
        f0_median: Median voiced F0, semitones above 27.5 Hz.
        f0_range: 90th minus 10th percentile of voiced F0, semitones.
        loudness: Median loudness of voiced frames, openSMILE's sone-like units.
        jitter: Median local jitter of voiced frames, percent.
        shimmer: Median local shimmer of voiced frames, dB.
        hnr: Median harmonics-to-noise ratio of voiced frames, dB.
        alpha_ratio: Median alpha ratio of voiced frames, dB.
        h1h2: Median H1-H2 of voiced frames, dB.
        slope: Least-squares F0 slope over the final window, semitones per second.
        slope_frames: First and last frame (inclusive) of that window.
        nuclei: Frames of the syllable nuclei (voiced loudness peaks).
        speaking_s: First to last voiced frame, pauses excluded, seconds.
        rate: ``len(nuclei) / speaking_s``, per second.
        pauses: ``(first, last)`` frames (inclusive) of each pause inside the speech.
        burst_db: Level of the loudest nucleus above the median nucleus (≈ dB).
        burst_frame: Frame of that loudest nucleus.
    """

    n_frames: int
    n_voiced: int
    f0_median: float | None = None
    f0_range: float | None = None
    loudness: float | None = None
    jitter: float | None = None
    shimmer: float | None = None
    hnr: float | None = None
    alpha_ratio: float | None = None
    h1h2: float | None = None
    slope: float | None = None
    slope_frames: tuple[int, int] | None = None
    nuclei: tuple[int, ...] = ()
    speaking_s: float = 0.0
    rate: float | None = None
    pauses: tuple[tuple[int, int], ...] = ()
    burst_db: float | None = None
    burst_frame: int | None = None


_BASELINE_FIELDS = (
    "f0_median",
    "f0_range",
    "loudness",
    "jitter",
    "shimmer",
    "hnr",
    "alpha_ratio",
    "rate",
)


@CUE_DETECTORS.register("prosody")
class ProsodyDetector(CueDetector):
    """Prosodic cues of speech: pitch, loudness, voice quality, tempo (XEmoGPT auditory cues).

    Reads the ``egemaps`` extractor's ``lld`` output, ``(T, 25)`` openSMILE eGeMAPSv02 low-level
    descriptors, one row per 10 ms (Eyben et al. 2016, "The Geneva Minimalistic Acoustic
    Parameter Set (GeMAPS) for voice research and affective computing", IEEE Trans. Affective
    Computing 7(2)). A frame is voiced when its F0 (``F0semitoneFrom27.5Hz_sma3nz``) is
    non-zero.

    **References.** Level cues need a reference. In a dialogue (two or more segments), the
    baseline of a segment is the median, statistic by statistic, over the *other* segments of
    the recording that have at least ``min_voiced_s`` of voiced speech — restricted to the same
    speaker when segments carry speaker tags (without tags, the recording is taken to be one
    voice). Pitch level and loudness are judged only against that baseline: a clip analysed
    alone has no baseline, so it never gets ``raised_pitch``, ``lowered_pitch``, ``loud_voice``
    or ``soft_voice`` (absolute pitch and loudness say more about the speaker and the microphone
    than about emotion); it can get ``loudness_bursts`` instead. Pitch range, voice quality and
    rate are judged against a typical value for speech and, in a dialogue, also against the
    baseline: the segment must stand out from both (the reference is the larger of the two for
    "more" cues, the smaller for "less" cues).

    **Cues** (``values`` hold the measurements, with units, and the reference they were compared
    with; whole-segment cues span the segment):

    ``raised_pitch`` / ``lowered_pitch``
        Median voiced F0 ≥ ``pitch_level_st`` semitones above / below the baseline's
        (unit ``st``).
    ``wide_pitch_range`` / ``narrow_pitch_range``
        Span between the 10th and 90th percentile of voiced F0 (``st``), ``pitch_range_factor``
        times wider / narrower than the reference. Spans in semitones are comparable across men
        and women (Traunmüller & Eriksson 1995, "The frequency range of the voice fundamental in
        the speech of male and female adults"); the 10th–90th percentile span is the measure of
        Mennen, Schaeffler & Docherty (2012, JASA 131(3)). The typical span is calibrated on
        RAVDESS's neutral read sentences, where this measure gives a median of 6.4 st
        (10th–90th percentile over the 24 actors: 4.7–9.6 st). Defaults: typical 6 st, factor 2
        (wide ≥ 12 st, an octave; narrow ≤ 3 st).
    ``rising_contour`` / ``falling_contour``
        Least-squares slope of voiced F0 (``st/s``) over the last ``contour_window_s`` before the
        last voiced frame (at least ``contour_min_voiced_s`` voiced; frames more than
        ``contour_outlier_st`` off a first fit — octave errors, creak — are dropped and the line
        refitted). Rising ≥
        ``rising_st_per_s``; falling ≤ −``falling_st_per_s``. Statements normally end falling
        (RAVDESS neutral: median −4.7 st/s), so the falling threshold lies past that. The cue
        spans the window.
    ``loud_voice`` / ``soft_voice``
        Median loudness of voiced frames (openSMILE's ``Loudness_sma3``, unit ``sone``) against
        the baseline's; the distance is the level difference ``10·log2(L / L_ref)`` (a doubling
        of sones is +10 phon, Stevens' power law), fired at ``loudness_db``.
    ``loudness_bursts``
        Single clips only: the loudest syllable nucleus stands ≥ ``burst_db`` above the clip's
        median nucleus (loudness dynamics, independent of the recording level). Spans the
        nucleus ±50 ms.
    ``tense_or_rough_voice``
        Any of: median jitter (``jitterLocal``, ``%``) ≥ ``jitter_factor`` × reference; median
        shimmer (``shimmerLocaldB``, ``dB``) ≥ ``shimmer_factor`` × reference (rough,
        irregular phonation); median alpha ratio (``dB``) ≥ reference + ``alpha_ratio_db`` (a
        flat spectral tilt: pressed, effortful phonation; Sundberg & Nordenberg 2006, JASA
        120(1)). Clinical limits (Praat/MDVP on sustained vowels: jitter 1.04 %, shimmer
        0.35 dB; Teixeira, Oliveira & Lopes 2013, Procedia Technology 9) do not carry over to
        openSMILE's measures on running speech — RAVDESS neutral speech already has medians of
        0.75 % jitter and 0.8 dB shimmer — so the typical values are the medians of RAVDESS
        neutral speech and the thresholds lie above its 90th percentiles.
    ``breathy_voice``
        Median HNR (``HNRdBACF``, ``dB``) ≥ ``hnr_drop_db`` below the reference while the median
        H1−H2 (``dB``) is ≥ ``breathy_h1h2_db``: aspiration noise with a dominant first harmonic
        (Hillenbrand, Cleveland & Erickson 1994, JSHR 37). Lower-pitched voices have lower
        HNRdBACF, so this is deliberately rare; a segment with ``tense_or_rough_voice`` never
        gets it (its noise is then irregular phonation, not aspiration).
    ``fast_speech`` / ``slow_speech``
        Articulation rate (``1/s``): syllable nuclei per second of speaking time (first to last
        voiced frame, pauses excluded), ``rate_factor`` times above / below the reference. A
        nucleus is a voiced loudness peak standing ``nucleus_dip_db`` above the dip before it
        (the intensity-peak method of de Jong & Wempe 2009, Behavior Research Methods 41(2), on
        openSMILE loudness in place of intensity). On RAVDESS's 7-syllable sentence ("Kids are
        talking by the door") it counts a median 7 nuclei (10th–90th percentile 6–8 on neutral
        clips), and a median rate of 5.2/s on them: the typical rate defaults to 5/s.
    ``long_pauses``
        The longest pause inside the speech lasts ≥ ``long_pause_s``. A pause is a stretch of
        ≥ ``pause_min_s`` (Goldman-Eisler's 250 ms) of unvoiced frames ``silence_db`` below the
        segment's 99th-percentile loudness (de Jong & Wempe's −25 dB). Spans the longest pause.

    **Strength**: ``distance / (full_strength_at × threshold)`` clipped to ``[0, 1]``; the
    distance is in the threshold's own terms (semitones, dB or st/s of difference; for the
    factor thresholds, ``log(ratio) / log(factor)`` thresholds). With the default
    ``full_strength_at = 3`` a cue at its threshold has strength 1/3 and one three thresholds
    away has strength 1. Cues are sorted strongest first.

    **Reliability.** Clips (of RAVDESS's 24 actors, 12 male and 12 female; sentence 1 "Kids
    are talking by the door", 16 kHz) on which each cue fires with the default options.
    *dialogue*: each actor's neutral, calm, strong angry and strong happy clip analysed as one
    recording of one speaker, so a segment's baseline is the median of the other three (a
    segment whose others do not all have enough voiced speech has no baseline: with fewer than
    ``min_baseline_segments`` = 3, level cues are not judged, and the clip's own loudness
    bursts are);
    *alone*: each clip analysed by itself. ``-``: the cue cannot fire in that setting.

    ====================  ========  ========  ========  ========  ========  ========
    cue                   dialogue  dialogue  dialogue  alone     alone     alone
                          neutral   angry     happy     neutral   angry     happy
    ====================  ========  ========  ========  ========  ========  ========
    raised_pitch          0         21        21        -         -         -
    lowered_pitch         21        0         0         -         -         -
    loud_voice            0         22        22        -         -         -
    soft_voice            22        0         0         -         -         -
    loudness_bursts       1         0         0         1         0         1
    wide_pitch_range      0         2         1         1         3         4
    narrow_pitch_range    2         0         0         2         0         0
    rising_contour        0         2         5         0         2         5
    falling_contour       0         5         6         0         5         6
    tense_or_rough_voice  0         10        4         0         19        8
    breathy_voice         0         0         0         0         0         0
    fast_speech           1         0         1         1         0         1
    slow_speech           0         2         2         0         3         2
    long_pauses           0         0         0         0         0         0
    cues per clip (mean)  1.96      2.67      2.58      0.21      1.33      1.12
    ====================  ========  ========  ========  ========  ========  ========

    What to read from it: against a baseline, raised pitch and loud voice single out strong
    anger and joy on (nearly) every actor; the neutral clip of such a recording is, rightly,
    lower and softer than the median of its emotional neighbours (in a real conversation,
    where most turns are calm, the baseline is the speaker's resting voice). Alone, a neutral
    clip stays quiet (5 cues over 24 clips) and the one strong alone-cue of anger is the tense,
    effortful voice (19 of 24 angry clips, none of the neutral ones). Contour, range, rate and
    burst cues fire rarely on this corpus of one short read sentence; their thresholds are set
    so that they stay quiet on neutral speech rather than to catch every emotional clip.
    ``breathy_voice`` did not fire at all here. Measured with openSMILE 2.6.0 by
    ``python -m pytest tests/cues/test_prosody.py -k reliability -s`` (emofuse's test suite;
    it prints the table and checks this copy of it, ±2 clips).

    Args:
        config: A :class:`ProsodyConfig`, or keyword options for one.

    Raises:
        InputError: (from :meth:`detect_dialogue`) an ``egemaps:lld`` array that is not
            ``(T, 25)``.
    """

    Config = ProsodyConfig
    modality = "audio"
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"egemaps": ("lld",)}
    config: ProsodyConfig

    # -- measurement ----------------------------------------------------------------------

    def measure(self, lld: np.ndarray) -> ProsodyStats:
        """The prosodic statistics of one segment.

        Args:
            lld: ``(T, 25)`` eGeMAPSv02 LLDs (columns :data:`EGEMAPS_LLD_COLUMNS`), 10 ms hop.

        Returns:
            The segment's :class:`ProsodyStats`.

        Raises:
            ValueError: ``lld`` is not a ``(T, 25)`` array.
        """
        x = np.asarray(lld, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(EGEMAPS_LLD_COLUMNS):
            raise ValueError(f"expected eGeMAPS LLDs of shape (T, 25), got {x.shape}")
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        cfg = self.config
        f0 = x[:, _F0]
        voiced = f0 > 0
        n_voiced = int(voiced.sum())
        if n_voiced < max(2, round(cfg.min_voiced_s / FRAME_S)):
            return ProsodyStats(n_frames=len(x), n_voiced=n_voiced)

        fv = f0[voiced]
        p10, p50, p90 = np.percentile(fv, [10, 50, 90])
        vq = {
            name: float(np.median(x[voiced, col]))
            for name, col in (
                ("loudness", _LOUD),
                ("shimmer", _SHIMMER),
                ("hnr", _HNR),
                ("alpha_ratio", _ALPHA),
                ("h1h2", _H1H2),
            )
        }
        level = _level_db(x[:, _LOUD])
        quiet = level < np.percentile(level, 99) - cfg.silence_db
        silent = ~voiced & quiet
        first, last = int(np.flatnonzero(voiced)[0]), int(np.flatnonzero(voiced)[-1])
        pauses = tuple(
            (a, b)
            for a, b in _runs(silent[first : last + 1], offset=first)
            if (b - a + 1) * FRAME_S >= cfg.pause_min_s
        )
        speaking_s = (last - first + 1 - sum(b - a + 1 for a, b in pauses)) * FRAME_S
        nuclei = _nuclei(level, voiced & ~quiet, cfg.nucleus_dip_db, cfg.nucleus_min_gap_s)
        rate = (
            len(nuclei) / speaking_s if speaking_s >= cfg.min_rate_s and len(nuclei) >= 2 else None
        )
        burst_db = burst_frame = None
        if len(nuclei) >= 3:
            peaks = level[list(nuclei)]
            k = int(np.argmax(peaks))
            burst_db, burst_frame = float(peaks[k] - np.median(peaks)), nuclei[k]
        slope, window = self._final_slope(f0, voiced, last)
        return ProsodyStats(
            n_frames=len(x),
            n_voiced=n_voiced,
            f0_median=float(p50),
            f0_range=float(p90 - p10),
            jitter=float(np.median(x[voiced, _JITTER])) * 100.0,
            slope=slope,
            slope_frames=window,
            nuclei=nuclei,
            speaking_s=speaking_s,
            rate=rate,
            pauses=pauses,
            burst_db=burst_db,
            burst_frame=burst_frame,
            **vq,
        )

    def _final_slope(
        self, f0: np.ndarray, voiced: np.ndarray, last: int
    ) -> tuple[float | None, tuple[int, int] | None]:
        cfg = self.config
        start = max(0, last + 1 - round(cfg.contour_window_s / FRAME_S))
        idx = np.flatnonzero(voiced[start : last + 1]) + start
        need = max(3, round(cfg.contour_min_voiced_s / FRAME_S))
        if len(idx) < need:
            return None, None
        t, y = idx * FRAME_S, f0[idx]
        coef = np.polyfit(t, y, 1)
        keep = np.abs(y - np.polyval(coef, t)) <= cfg.contour_outlier_st
        if keep.sum() >= need and not keep.all():
            coef = np.polyfit(t[keep], y[keep], 1)
        return float(coef[0]), (int(idx[0]), int(idx[-1]))

    # -- detection ------------------------------------------------------------------------

    def detect_dialogue(
        self, utts: Sequence[Utterance], arrays: Sequence[Arrays]
    ) -> list[list[Cue]]:
        """Prosodic cues of each segment of one dialogue (or of one lone clip).

        Args:
            utts: The segments, in order.
            arrays: Per segment, ``{"egemaps:lld": (T, 25) array}``, or ``{}`` when its audio
                could not be read (that segment gets ``[]``).

        Returns:
            One list of cues per segment, strongest first. Times are seconds on the media's
            clock: ``utt.start`` (or 0) + frame index × 0.01 s.

        Raises:
            InputError: A segment's ``egemaps:lld`` is not a ``(T, 25)`` array.
        """
        if len(utts) != len(arrays):
            raise ValueError(f"{len(utts)} segments but {len(arrays)} arrays")
        stats: list[ProsodyStats | None] = []
        for utt, arr in zip(utts, arrays, strict=True):
            lld = arr.get(LLD_KEY) if arr else None
            if lld is None:
                stats.append(None)
                continue
            try:
                stats.append(self.measure(lld))
            except ValueError as err:
                raise InputError(utt.id, f"{LLD_KEY}: {err}") from None
        out: list[list[Cue]] = []
        for i, (utt, st) in enumerate(zip(utts, stats, strict=True)):
            if st is None:
                out.append([])
                continue
            baseline = self._baseline(utts, stats, i)
            cues = _SegmentJudge(self.config, utt, st, baseline).cues()
            out.append(sorted(cues, key=lambda c: -c.strength))
        return out

    def _baseline(
        self, utts: Sequence[Utterance], stats: Sequence[ProsodyStats | None], i: int
    ) -> dict[str, float] | None:
        """Median of each statistic over the other usable segments (same speaker if tagged)."""
        if len(utts) < 2:
            return None
        speaker = utts[i].speaker
        others = [
            st
            for j, st in enumerate(stats)
            if j != i
            and st is not None
            and st.f0_median is not None
            and utts[j].speaker == speaker  # untagged only with untagged (one voice)
        ]
        if len(others) < self.config.min_baseline_segments:
            return None
        base: dict[str, float] = {}
        for name in _BASELINE_FIELDS:
            vals = [getattr(st, name) for st in others if getattr(st, name) is not None]
            if len(vals) >= self.config.min_baseline_segments:
                base[name] = float(np.median(vals))
        return base


class _SegmentJudge:
    """Turns one segment's statistics into cues against its references."""

    def __init__(
        self,
        config: ProsodyConfig,
        utt: Utterance,
        stats: ProsodyStats,
        baseline: dict[str, float] | None,
    ) -> None:
        self.cfg = config
        self.st = stats
        self.base = baseline
        # whose level a baseline is: a named speaker's, or (no speakers known) the recording's
        self.whose = "the speaker's usual" if utt.speaker else "this recording's usual"
        self.t0 = float(utt.start or 0.0)
        end = self.t0 + stats.n_frames * FRAME_S
        self.t1 = min(end, float(utt.end)) if utt.end is not None else end
        self.found: list[Cue] = []

    def cues(self) -> list[Cue]:
        if self.st.f0_median is None:
            return []
        self._pitch_level()
        self._pitch_range()
        self._contour()
        self._loudness()
        self._voice_quality()
        self._tempo()
        return self.found

    # -- helpers --------------------------------------------------------------------------

    def _time(self, frame: int) -> float:
        return min(self.t1, self.t0 + frame * FRAME_S)

    def _strength(self, z: float) -> float:
        """Strength of a cue ``z`` thresholds away from its reference."""
        return clamp01(z / self.cfg.full_strength_at)

    def _add(
        self,
        name: str,
        phrase: str,
        values: list[Measurement],
        z: float,
        span: tuple[int, int] | None = None,
    ) -> None:
        if span is None:
            start, end = self.t0, self.t1
        else:
            start, end = self._time(span[0]), self._time(span[1] + 1)
        start = min(max(round(start, 3), self.t0), self.t1)
        end = min(max(round(end, 3), start), self.t1)
        self.found.append(
            Cue(
                modality="audio",
                start=start,
                end=end,
                name=name,
                phrase=phrase,
                values=values,
                strength=round(self._strength(z), 4),
            )
        )

    def _ref(self, key: str, typical: float, higher: bool) -> tuple[float, str]:
        """The reference of a "more" (``higher``) or "less" cue, and whose it is in words.

        The typical value for speech, or the baseline where it is further out in the cue's
        direction (a segment must stand out from both).
        """
        b = None if self.base is None else self.base.get(key)
        if b is None:
            return typical, "the typical"
        if higher:
            return (b, self.whose) if b >= typical else (typical, "the typical")
        return (b, self.whose) if b <= typical else (typical, "the typical")

    # -- cues -----------------------------------------------------------------------------

    def _pitch_level(self) -> None:
        if self.base is None or "f0_median" not in self.base:
            return
        f0, ref = self.st.f0_median, self.base["f0_median"]
        assert f0 is not None
        d = f0 - ref
        z = abs(d) / self.cfg.pitch_level_st
        if z < 1:
            return
        up = d > 0
        self._add(
            "raised_pitch" if up else "lowered_pitch",
            f"pitch {abs(d):.1f} semitones {'above' if up else 'below'} {self.whose} level",
            [Measurement(name="f0_median", value=round(f0, 2), unit="st", reference=round(ref, 2))],
            z,
        )

    def _pitch_range(self) -> None:
        r = self.st.f0_range
        assert r is not None
        typical, k = self.cfg.typical_pitch_range_st, self.cfg.pitch_range_factor
        for wide in (True, False):
            ref, who = self._ref("f0_range", typical, higher=wide)
            ratio = max(r, 0.1) / ref
            z = math.log(ratio if wide else 1 / ratio) / math.log(k)
            if z < 1:
                continue
            phrase = (
                f"lively, wide pitch range: {r:.1f} semitones ({ratio:.1f}× {who} span)"
                if wide
                else f"flat, monotone pitch: a range of {r:.1f} semitones "
                f"({1 / ratio:.1f}× narrower than {who} span)"
            )
            self._add(
                "wide_pitch_range" if wide else "narrow_pitch_range",
                phrase,
                [
                    Measurement(
                        name="f0_range_p10_p90",
                        value=round(r, 2),
                        unit="st",
                        reference=round(ref, 2),
                    )
                ],
                z,
            )

    def _contour(self) -> None:
        s, span = self.st.slope, self.st.slope_frames
        if s is None or span is None:
            return
        rising = s > 0
        thr = self.cfg.rising_st_per_s if rising else self.cfg.falling_st_per_s
        z = abs(s) / thr
        if z < 1:
            return
        self._add(
            "rising_contour" if rising else "falling_contour",
            f"pitch {'rises' if rising else 'falls'} {abs(s):.0f} semitones per second at the end",
            [
                Measurement(
                    name="f0_final_slope",
                    value=round(s, 2),
                    unit="st/s",
                    reference=round(thr if rising else -thr, 2),
                )
            ],
            z,
            span,
        )

    def _loudness(self) -> None:
        st = self.st
        if self.base is not None and "loudness" in self.base:
            loud, ref = st.loudness, self.base["loudness"]
            assert loud is not None
            d = 10.0 * math.log2(max(loud, _TINY_SONE) / max(ref, _TINY_SONE))
            z = abs(d) / self.cfg.loudness_db
            if z >= 1:
                up = d > 0
                self._add(
                    "loud_voice" if up else "soft_voice",
                    f"voice {abs(d):.0f} dB {'louder' if up else 'softer'} than {self.whose} "
                    "level",
                    [
                        Measurement(
                            name="loudness",
                            value=round(loud, 4),
                            unit="sone",
                            reference=round(ref, 4),
                        ),
                        Measurement(
                            name="loudness_level_difference",
                            value=round(d, 2),
                            unit="dB",
                            reference=0.0,
                        ),
                    ],
                    z,
                )
            return
        if self.base is None and st.burst_db is not None and st.burst_frame is not None:
            z = st.burst_db / self.cfg.burst_db
            if z >= 1:
                f = st.burst_frame
                self._add(
                    "loudness_bursts",
                    f"a loud burst {st.burst_db:.0f} dB above the clip's typical syllable",
                    [
                        Measurement(
                            name="loudness_peak_above_median",
                            value=round(st.burst_db, 2),
                            unit="dB",
                            reference=0.0,
                        )
                    ],
                    z,
                    (max(0, f - 5), min(st.n_frames - 1, f + 5)),
                )

    def _voice_quality(self) -> None:
        cfg, st = self.cfg, self.st
        evidence: list[tuple[float, Measurement, str]] = []
        assert st.jitter is not None and st.shimmer is not None and st.alpha_ratio is not None
        for key, value, typical, factor, unit, what in (
            ("jitter", st.jitter, cfg.typical_jitter_pct, cfg.jitter_factor, "%", "jitter"),
            ("shimmer", st.shimmer, cfg.typical_shimmer_db, cfg.shimmer_factor, "dB", "shimmer"),
        ):
            ref, who = self._ref(key, typical, higher=True)
            z = math.log(max(value, 1e-6) / ref) / math.log(factor)
            if z >= 1:
                evidence.append(
                    (
                        z,
                        Measurement(
                            name=key, value=round(value, 3), unit=unit, reference=round(ref, 3)
                        ),
                        f"{what} {value:.2f} {unit} ({value / ref:.1f}× {who} {ref:.2f})",
                    )
                )
        ref, who = self._ref("alpha_ratio", cfg.typical_alpha_ratio_db, higher=True)
        z = (st.alpha_ratio - ref) / cfg.alpha_ratio_db
        if z >= 1:
            evidence.append(
                (
                    z,
                    Measurement(
                        name="alpha_ratio",
                        value=round(st.alpha_ratio, 2),
                        unit="dB",
                        reference=round(ref, 2),
                    ),
                    f"flat spectral tilt (alpha ratio {st.alpha_ratio:.1f} dB, "
                    f"{st.alpha_ratio - ref:.0f} dB above {who} {ref:.1f})",
                )
            )
        if evidence:
            evidence.sort(key=lambda e: -e[0])
            self._add(
                "tense_or_rough_voice",
                "tense or rough voice: " + ", ".join(e[2] for e in evidence),
                [e[1] for e in evidence],
                evidence[0][0],
            )
        assert st.hnr is not None and st.h1h2 is not None
        ref, who = self._ref("hnr", cfg.typical_hnr_db, higher=False)
        z = (ref - st.hnr) / cfg.hnr_drop_db
        if z >= 1 and st.h1h2 >= cfg.breathy_h1h2_db and not evidence:
            self._add(
                "breathy_voice",
                f"breathy voice: harmonics-to-noise ratio {st.hnr:.1f} dB, "
                f"{ref - st.hnr:.0f} dB below {who} {ref:.1f}",
                [
                    Measurement(
                        name="hnr", value=round(st.hnr, 2), unit="dB", reference=round(ref, 2)
                    ),
                    Measurement(
                        name="h1_h2",
                        value=round(st.h1h2, 2),
                        unit="dB",
                        reference=cfg.breathy_h1h2_db,
                    ),
                ],
                z,
            )

    def _tempo(self) -> None:
        cfg, st = self.cfg, self.st
        if st.rate is not None:
            for fast in (True, False):
                ref, who = self._ref("rate", cfg.typical_rate_per_s, higher=fast)
                ratio = st.rate / ref
                z = math.log(ratio if fast else 1 / ratio) / math.log(cfg.rate_factor)
                if z < 1:
                    continue
                self._add(
                    "fast_speech" if fast else "slow_speech",
                    f"{'fast' if fast else 'slow'} speech: {st.rate:.1f} syllables per second "
                    f"({who} rate: {ref:.1f})",
                    [
                        Measurement(
                            name="articulation_rate",
                            value=round(st.rate, 2),
                            unit="1/s",
                            reference=round(ref, 2),
                        ),
                        Measurement(name="speaking_time", value=round(st.speaking_s, 2), unit="s"),
                    ],
                    z,
                )
        if st.pauses:
            a, b = max(st.pauses, key=lambda p: p[1] - p[0])
            longest = (b - a + 1) * FRAME_S
            z = longest / cfg.long_pause_s
            if z >= 1:
                total = sum(q - p + 1 for p, q in st.pauses) * FRAME_S
                self._add(
                    "long_pauses",
                    f"a {longest:.1f} s pause"
                    + (
                        f" ({len(st.pauses)} pauses, {total:.1f} s in all)"
                        if len(st.pauses) > 1
                        else ""
                    ),
                    [
                        Measurement(
                            name="longest_pause",
                            value=round(longest, 2),
                            unit="s",
                            reference=cfg.long_pause_s,
                        ),
                        Measurement(name="pause_time", value=round(total, 2), unit="s"),
                    ],
                    z,
                    (a, b),
                )


def _level_db(loudness: np.ndarray) -> np.ndarray:
    """Loudness (sone) as a level in dB-like units: ``10·log2(sone)`` (+10 per doubling)."""
    return 10.0 * np.log2(np.maximum(loudness, _TINY_SONE))


def _runs(mask: np.ndarray, offset: int = 0) -> list[tuple[int, int]]:
    """``(first, last)`` indices (inclusive, shifted by ``offset``) of each run of True."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    return [(int(a) + offset, int(b) + offset) for a, b in zip(starts, ends, strict=True)]


def _nuclei(
    level: np.ndarray, usable: np.ndarray, dip_db: float, min_gap_s: float
) -> tuple[int, ...]:
    """Syllable nuclei: voiced loudness peaks rising ``dip_db`` above the dip before them.

    Follows de Jong & Wempe (2009): local maxima of the level on usable (voiced, not silent)
    frames; a peak counts only if the level between it and the previous counted peak dips at
    least ``dip_db`` below both, otherwise the higher of the two is kept.
    """
    before = np.concatenate(([-np.inf], level[:-1]))
    after = np.concatenate((level[1:], [-np.inf]))
    cand = np.flatnonzero(usable & (level >= before) & (level > after))
    gap = max(1, round(min_gap_s / FRAME_S))
    kept: list[int] = []
    for i in cand.tolist():
        if not kept:
            kept.append(i)
            continue
        j = kept[-1]
        dip = float(level[j : i + 1].min())
        separate = i - j >= gap and min(level[i], level[j]) - dip >= dip_db
        if separate:
            kept.append(i)
        elif level[i] > level[j]:
            kept[-1] = i
    return tuple(kept)


__all__ = [
    "EGEMAPS_LLD_COLUMNS",
    "FRAME_S",
    "LLD_KEY",
    "ProsodyConfig",
    "ProsodyDetector",
    "ProsodyStats",
]

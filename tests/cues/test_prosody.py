from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from conftest import shared_subdir
from emofuse.cues.base import CUE_DETECTORS, detect, get_detector
from emofuse.cues.prosody import (
    EGEMAPS_LLD_COLUMNS,
    FRAME_S,
    LLD_KEY,
    ProsodyConfig,
    ProsodyDetector,
)
from emofuse.errors import ConfigError, InputError
from emofuse.records import Utterance
from emofuse.testing import write_wav

pytest.importorskip("opensmile")

SR = 16000
ACTORS = range(1, 25)
EMOTIONS = {"neutral": "01", "calm": "02", "happy": "03", "angry": "05"}
DIALOGUE = ("neutral", "calm", "angry", "happy")
# The columns of the reliability table in ProsodyDetector's docstring.
TABLE_COLUMNS = (
    ("dialogue", "neutral"),
    ("dialogue", "angry"),
    ("dialogue", "happy"),
    ("alone", "neutral"),
    ("alone", "angry"),
    ("alone", "happy"),
)
LEVEL_CUES = {"raised_pitch", "loud_voice"}


@pytest.fixture(scope="module")
def egemaps():
    from emofuse.features.base import get_extractor

    ex = get_extractor("egemaps")
    ex.ensure_ready()
    return ex


def _utt(uid: str, path=None, **kw) -> Utterance:
    return Utterance(id=uid, dataset="t", media={"audio": str(path)} if path else {}, **kw)


def _ravdess_path(emotion: str, actor: int):
    code = EMOTIONS[emotion]
    intensity = "01" if emotion == "neutral" else "02"
    return (
        shared_subdir("ravdess") / "speech16k" / f"03-01-{code}-{intensity}-01-01-{actor:02d}.wav"
    )


@pytest.fixture(scope="module")
def ravdess(egemaps) -> dict[tuple[str, int], np.ndarray]:
    """``(emotion, actor) → (T, 25)`` LLDs of statement 1 (neutral; strong calm/happy/angry)."""
    out = {}
    for actor in ACTORS:
        for emotion in EMOTIONS:
            path = _ravdess_path(emotion, actor)
            out[emotion, actor] = egemaps.extract(_utt(path.stem, path))["lld"]
    return out


def _dialogue(ravdess, actor: int, detector=None):
    det = detector or ProsodyDetector()
    utts = [
        _utt(f"{e}{actor}", dialogue_id=f"actor{actor}", speaker=f"actor{actor}") for e in DIALOGUE
    ]
    found = detect(det, utts, [{LLD_KEY: ravdess[e, actor]} for e in DIALOGUE])
    return dict(zip(DIALOGUE, found, strict=True))


def _alone(ravdess, emotion: str, actor: int):
    return ProsodyDetector().detect_dialogue(
        [_utt(f"{emotion}{actor}")], [{LLD_KEY: ravdess[emotion, actor]}]
    )[0]


# -- contract ---------------------------------------------------------------------------------


def test_registered_with_its_contract():
    assert "prosody" in CUE_DETECTORS.names()
    det = get_detector("prosody", pitch_level_st=3.0)
    assert isinstance(det, ProsodyDetector)
    assert det.modality == "audio" and det.needs == {"egemaps": ("lld",)}
    assert det.config.pitch_level_st == 3.0
    for name, f in ProsodyConfig.model_fields.items():
        assert f.description and not f.is_required(), name


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="pitch_levl_st"):
        ProsodyDetector(pitch_levl_st=2.0)
    with pytest.raises(ConfigError, match="pitch_level_st"):
        get_detector("prosody", pitch_level_st=-1.0)
    with pytest.raises(ConfigError, match="full_strength_at"):
        ProsodyDetector(full_strength_at=0.5)


def test_column_order_matches_the_extractor(egemaps):
    assert tuple(egemaps.feature_names("lld")) == EGEMAPS_LLD_COLUMNS


def test_unreadable_segment_gets_no_cues_and_bad_shapes_are_errors():
    det = ProsodyDetector()
    utts = [_utt("a", dialogue_id="d"), _utt("b", dialogue_id="d")]
    assert det.detect_dialogue(utts, [{}, {}]) == [[], []]
    with pytest.raises(InputError, match=r"b: egemaps:lld.*\(T, 25\)"):
        det.detect_dialogue(utts, [{}, {LLD_KEY: np.zeros((100, 24))}])
    # Unvoiced audio (no F0 anywhere) yields no cue rather than an error.
    assert det.detect_dialogue(utts[:1], [{LLD_KEY: np.zeros((300, 25))}]) == [[]]


# -- synthetic glides -------------------------------------------------------------------------


def _glide(f_start: float, f_end: float, seconds: float) -> np.ndarray:
    """A sine whose frequency moves exponentially (at a constant rate in semitones/s)."""
    t = np.arange(round(seconds * SR)) / SR
    freq = f_start * (f_end / f_start) ** (t / seconds)
    return 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / SR)


def _pad(wave: np.ndarray) -> np.ndarray:
    quiet = np.zeros(round(0.2 * SR))
    return np.concatenate([quiet, wave, quiet]).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(egemaps, tmp_path_factory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("prosody")
    waves = {
        # steady 150 Hz, then up an octave in 0.8 s: +15 st/s at the end
        "rise": np.concatenate([_glide(150, 150, 0.6), _glide(150, 300, 0.8)]),
        # steady 300 Hz, then down an octave in 0.5 s: -24 st/s at the end
        "fall": np.concatenate([_glide(300, 300, 0.6), _glide(300, 150, 0.5)]),
        # two tones around a 0.8 s silence
        "pause": np.concatenate(
            [_glide(150, 160, 0.7), np.zeros(round(0.8 * SR)), _glide(160, 150, 0.7)]
        ),
    }
    out = {}
    for name, wave in waves.items():
        path = write_wav(folder / f"{name}.wav", _pad(wave))
        out[name] = egemaps.extract(_utt(name, path))["lld"]
    return out


def test_rising_glide_gives_rising_contour(synthetic):
    det = ProsodyDetector()
    cues = det.detect_dialogue([_utt("rise")], [{LLD_KEY: synthetic["rise"]}])[0]
    rising = [c for c in cues if c.name == "rising_contour"]
    assert len(rising) == 1 and not any(c.name == "falling_contour" for c in cues)
    (slope,) = rising[0].values
    assert slope.unit == "st/s" and slope.value == pytest.approx(15.0, abs=2.0)
    assert slope.reference == det.config.rising_st_per_s
    # the window: the last 0.5 s of voicing, which ends with the tone at 1.6 s
    assert rising[0].start == pytest.approx(1.1, abs=0.1)
    assert rising[0].end == pytest.approx(1.6, abs=0.1)
    assert 0 < rising[0].strength <= 1


def test_falling_glide_and_pause(synthetic):
    det = ProsodyDetector()
    fall, pause = det.detect_dialogue(
        [_utt("fall"), _utt("pause")],
        [{LLD_KEY: synthetic["fall"]}, {LLD_KEY: synthetic["pause"]}],
    )
    falling = next(c for c in fall if c.name == "falling_contour")
    assert falling.values[0].value == pytest.approx(-24.0, abs=3.0)
    gap = next(c for c in pause if c.name == "long_pauses")
    assert gap.values[0].unit == "s" and gap.values[0].value == pytest.approx(0.8, abs=0.1)
    assert gap.start == pytest.approx(0.9, abs=0.1) and gap.end == pytest.approx(1.7, abs=0.1)


def test_times_follow_the_segment_start(synthetic):
    det = ProsodyDetector()
    lld = synthetic["rise"]
    moved = det.detect_dialogue([_utt("r", start=10.0, end=12.0)], [{LLD_KEY: lld}])[0]
    still = det.detect_dialogue([_utt("r")], [{LLD_KEY: lld}])[0]
    assert [c.name for c in moved] == [c.name for c in still]
    for a, b in zip(moved, still, strict=True):
        assert a.start == pytest.approx(b.start + 10.0) and a.end == pytest.approx(b.end + 10.0)
        assert 10.0 <= a.start <= a.end <= 10.0 + len(lld) * FRAME_S + 1e-9


# -- real speech: RAVDESS ---------------------------------------------------------------------


@pytest.mark.shared_data
def test_angry_and_happy_stand_out_against_the_actors_baseline(ravdess):
    standing_out = {"angry": 0, "happy": 0}
    for actor in ACTORS:
        found = _dialogue(ravdess, actor)
        names = {e: {c.name for c in cues} for e, cues in found.items()}
        for e in standing_out:  # two actors lack a 3-segment baseline (too little voicing)
            standing_out[e] += bool(names[e] & LEVEL_CUES)
        assert not names["neutral"] & LEVEL_CUES, (actor, names["neutral"])
        for e in ("angry", "happy"):
            cues = found[e]
            assert [c.strength for c in cues] == sorted((c.strength for c in cues), reverse=True)
            loud = next((c for c in cues if c.name == "loud_voice"), None)
            if loud is not None:
                assert loud.values[0].unit == "sone"
                assert loud.values[0].value > loud.values[0].reference > 0
    # pitch: angry speech is several semitones above the actor's usual level
    raised = [
        c.values[0].value - c.values[0].reference
        for actor in ACTORS
        for c in _dialogue(ravdess, actor)["angry"]
        if c.name == "raised_pitch"
    ]
    assert len(raised) >= 20 and np.median(raised) > 4.0
    assert standing_out["angry"] >= 22 and standing_out["happy"] >= 22, standing_out


@pytest.mark.shared_data
def test_neutral_clips_alone_stay_nearly_quiet(ravdess):
    counts = [len(_alone(ravdess, "neutral", a)) for a in ACTORS]
    # measured: 5 cues over the 24 clips, 19 clips without any
    assert sum(counts) <= 8 and counts.count(0) >= 17, counts
    # a lone clip has no baseline: no pitch-level or loudness-level cue, ever
    for emotion in ("neutral", "angry", "happy"):
        for a in ACTORS:
            names = {c.name for c in _alone(ravdess, emotion, a)}
            assert not names & {"raised_pitch", "lowered_pitch", "loud_voice", "soft_voice"}


@pytest.mark.shared_data
def test_angry_clips_alone_sound_tense(ravdess):
    tense = sum(
        any(c.name == "tense_or_rough_voice" for c in _alone(ravdess, "angry", a)) for a in ACTORS
    )
    assert tense >= 16  # measured 19 of 24 (neutral: 0)


@pytest.mark.shared_data
def test_cue_times_lie_within_their_segment(ravdess, egemaps):
    path = _ravdess_path("angry", 3)
    utts = [_utt("a", path, start=0.4, end=3.0), _utt("b", path, start=0.4, end=3.0)]
    lld = egemaps.extract(utts[0])["lld"]
    assert lld.shape[0] == pytest.approx(260, abs=6)
    neutral = ravdess["neutral", 3]
    found = ProsodyDetector().detect_dialogue(
        [utts[0], _utt("n")], [{LLD_KEY: lld}, {LLD_KEY: neutral}]
    )
    assert found[0]
    for c in found[0]:
        assert 0.4 <= c.start <= c.end <= 3.0, c
    for c in found[1]:
        assert 0.0 <= c.start <= c.end <= len(neutral) * FRAME_S + 1e-9, c
    for actor in (1, 2):
        for emotion, segment in _dialogue(ravdess, actor).items():
            duration = len(ravdess[emotion, actor]) * FRAME_S
            for c in segment:
                assert 0.0 <= c.start <= c.end <= duration + 1e-9, c


def _docstring_table() -> dict[str, list[int | None]]:
    """The reliability table of ProsodyDetector's docstring: cue → counts per column."""
    rows = {}
    for line in (ProsodyDetector.__doc__ or "").splitlines():
        m = re.fullmatch(r"\s*([a-z_]+)\s+((?:(?:\d+|-)\s+){5}(?:\d+|-))\s*", line)
        if m and m.group(1) in _CUE_NAMES:
            rows[m.group(1)] = [None if v == "-" else int(v) for v in m.group(2).split()]
    return rows


_CUE_NAMES = {
    "raised_pitch",
    "lowered_pitch",
    "wide_pitch_range",
    "narrow_pitch_range",
    "rising_contour",
    "falling_contour",
    "loud_voice",
    "soft_voice",
    "loudness_bursts",
    "tense_or_rough_voice",
    "breathy_voice",
    "fast_speech",
    "slow_speech",
    "long_pauses",
}


def _firing_table(ravdess) -> dict[str, list[int]]:
    """Clips (of 24 actors) on which each cue fires, per column of TABLE_COLUMNS."""
    counts = {col: Counter() for col in TABLE_COLUMNS}
    for actor in ACTORS:
        for emotion, cues in _dialogue(ravdess, actor).items():
            if ("dialogue", emotion) in counts:
                counts["dialogue", emotion].update({c.name for c in cues})
        for emotion in ("neutral", "angry", "happy"):
            counts["alone", emotion].update({c.name for c in _alone(ravdess, emotion, actor)})
    return {name: [counts[col][name] for col in TABLE_COLUMNS] for name in sorted(_CUE_NAMES)}


@pytest.mark.shared_data
def test_reliability_table_in_the_docstring_is_what_is_measured(ravdess):
    """Prints the table (``pytest -s``) and checks the docstring's copy of it (±2 clips)."""
    measured = _firing_table(ravdess)
    print("\ncue" + "".join(f"{a[:5]}/{b:<8}" for a, b in TABLE_COLUMNS))
    for name, row in measured.items():
        print(f"{name:22}" + "".join(f"{v:>14}" for v in row))
    documented = _docstring_table()
    assert set(documented) == _CUE_NAMES
    for name, row in measured.items():
        for col, got, want in zip(TABLE_COLUMNS, row, documented[name], strict=True):
            if want is None:  # the cue cannot fire in that setting
                assert got == 0, (name, col)
            else:
                assert abs(got - want) <= 2, (name, col, got, want)


def test_frame_times_follow_the_step_the_extractor_declares():
    """Cue times are exact because the LLD rows are evenly spaced by the declared step."""
    from emofuse.cues.prosody import FRAME_S
    from emofuse.features.base import get_extractor

    assert get_extractor("egemaps").outputs()["lld"].step == FRAME_S
    assert get_extractor("whisper-encoder").outputs()["frames"].step == 0.02
    assert get_extractor("face").outputs()["geometry"].step is None  # faceless frames dropped

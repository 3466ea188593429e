"""Face cues on real faces: FER2013 crops (happy, angry, neutral) and the bundled RAVDESS clip."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import emofuse
from conftest import shared_subdir
from emofuse.cues import CUE_DETECTORS, detect, get_detector
from emofuse.cues.face import (
    NEUTRAL_FACE,
    FaceCueConfig,
    FaceCueDetector,
    measure_neutral_reference,
)
from emofuse.errors import ConfigError, InputError
from emofuse.features import get_extractor
from emofuse.features.face import FaceConfig
from emofuse.records import Utterance

pytest.importorskip("cv2")
pytest.importorskip("mediapipe")
pytest.importorskip("ai_edge_litert")

CLIP = Path(emofuse.__file__).parent / "datasets" / "sample" / "01-01-01-01-01-01-01.mp4"
CLIP_SECONDS = 3.3  # RAVDESS actor 01, neutral statement, one face
PER_CLASS = 40  # the first images of each class by file name
HAPPY_CUES = {"smile", "expression_happiness"}
ANGRY_CUES = {"brow_furrow", "expression_anger"}


def _arrays(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"face:geometry": feats["geometry"], "face:expression": feats["expression"]}


@pytest.fixture(scope="module")
def detector() -> FaceCueDetector:
    return get_detector("face")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def fer() -> dict[str, list[tuple[Utterance, dict[str, np.ndarray]]]]:
    """``emotion → [(utterance, arrays)]`` for 40 happy, angry and neutral FER2013 crops."""
    root = shared_subdir("fer2013_filtered")
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    face = get_extractor("face", assume_cropped=True)
    out: dict[str, list[tuple[Utterance, dict[str, np.ndarray]]]] = {}
    for emotion in ("happy", "angry", "neutral"):
        files = sorted(r["file"] for r in rows if r["emotion"] == emotion)[:PER_CLASS]
        for k, name in enumerate(files):
            utt = Utterance(id=f"{emotion}{k}", dataset="t", media={"image": str(root / name)})
            out.setdefault(emotion, []).append((utt, _arrays(face.extract(utt))))
    return out


@pytest.fixture(scope="module")
def clip_face():
    return get_extractor("face")


def _names(detector, utt, arrays) -> set[str]:
    return {c.name for c in detector.detect_dialogue([utt], [arrays])[0]}


def _fired(detector, items, wanted: set[str]) -> int:
    return sum(bool(_names(detector, u, a) & wanted) for u, a in items)


def test_registered_with_its_inputs():
    assert CUE_DETECTORS.get("face") is FaceCueDetector
    assert FaceCueDetector.modality == "face"
    assert FaceCueDetector.needs == {"face": ("geometry", "expression")}
    assert FaceCueConfig().fps == FaceConfig().fps == 5.0


@pytest.mark.shared_data
def test_happy_faces_smile_and_neutral_faces_stay_quiet(detector, fer):
    # Measured on these 40 + 40 images: 31 happy and 1 neutral face fire smile (AU12) or
    # expression_happiness (over all of FER2013's: 76.2 % and 3.7 %).
    happy = _fired(detector, fer["happy"], HAPPY_CUES)
    neutral = _fired(detector, fer["neutral"], HAPPY_CUES)
    assert happy >= 26, happy
    assert neutral <= 4, neutral
    smiles = [
        c
        for u, a in fer["happy"]
        for c in detector.detect_dialogue([u], [a])[0]
        if c.name == "smile"
    ]
    assert len(smiles) >= 12  # measured 19
    for c in smiles:
        assert "AU12" in c.phrase and c.values[1].name == "AU12"
        lift = c.values[0]
        assert (lift.name, lift.unit) == ("mouth_corner_lift", "IOD")
        assert lift.reference == NEUTRAL_FACE.geometry["mouth_corner_lift"][0] < lift.value
        assert c.values[2].name == "happy" and c.values[2].value >= 0.5
        assert c.start is None and c.end is None  # an image has no times
        assert 0.3 <= c.strength <= 1.0


@pytest.mark.shared_data
def test_angry_faces_furrow_or_look_angry_more_than_neutral_ones(detector, fer):
    # Measured: 11 of 40 angry faces and 1 of 40 neutral ones (all of FER2013: 29.5 % / 1.3 %).
    angry = _fired(detector, fer["angry"], ANGRY_CUES)
    neutral = _fired(detector, fer["neutral"], ANGRY_CUES)
    assert angry >= 7, angry
    assert neutral <= 3, neutral
    assert angry - neutral >= 5
    anger = [
        c
        for u, a in fer["angry"]
        for c in detector.detect_dialogue([u], [a])[0]
        if c.name == "expression_anger"
    ]
    assert anger and all("AU4" in c.phrase and c.values[0].name == "p_angry" for c in anger)
    assert all(c.values[0].value >= 0.7 for c in anger)


@pytest.mark.shared_data
def test_cues_are_sorted_strongest_first(detector, fer):
    for u, a in fer["happy"] + fer["angry"]:
        strengths = [c.strength for c in detector.detect_dialogue([u], [a])[0]]
        assert strengths == sorted(strengths, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in strengths)


@pytest.mark.shared_data
def test_neutral_reference_constants_agree_with_neutral_faces(fer):
    """The 40 neutral images give medians within one neutral spread of the constants."""
    geometry = [a["face:geometry"] for _, a in fer["neutral"] if a["face:geometry"].any()]
    ref = measure_neutral_reference(geometry, [a["face:expression"] for _, a in fer["neutral"]])
    assert ref.faces >= 35 and ref.images == PER_CLASS
    for channel, (median, below, above) in NEUTRAL_FACE.geometry.items():
        assert abs(ref.geometry[channel][0] - median) <= max(below, above), channel
    assert ref.expression["neutral"] == pytest.approx(NEUTRAL_FACE.expression["neutral"], abs=0.15)


@pytest.mark.shared_data
def test_the_dialogue_is_its_own_baseline(fer):
    """The same smiling face in every segment is no smile against itself, but is against the
    neutral face; among neutral faces it smiles against the dialogue."""
    smiling = next(
        (u, a)
        for u, a in fer["happy"]
        if "smile" in _names(get_detector("face", baseline="neutral"), u, a)
    )
    utts = [
        Utterance(id=f"s{k}", dataset="t", dialogue_id="d", media=smiling[0].media)
        for k in range(4)  # each has three others: a baseline (min_baseline_segments=3)
    ]
    arrays = [smiling[1]] * 4
    assert detect(get_detector("face"), utts, arrays) == [[], [], [], []]
    # with fewer than three others, what is usual is not known: the neutral face decides
    few = detect(get_detector("face"), utts[:3], arrays[:3])
    assert all("smile" in {c.name for c in cues} for cues in few)
    against_neutral = detect(get_detector("face", baseline="neutral"), utts, arrays)
    assert all("smile" in {c.name for c in cues} for cues in against_neutral)

    calm = [(u, a) for u, a in fer["neutral"] if not _names(get_detector("face"), u, a)][:3]
    dialogue = [u.model_copy(update={"dialogue_id": "d"}) for u, _ in calm] + [utts[0]]
    found = detect(get_detector("face"), dialogue, [a for _, a in calm] + [smiling[1]])
    (smile,) = [c for c in found[-1] if c.name == "smile"]
    assert "the dialogue's other segments" in smile.phrase
    reference = smile.values[0].reference
    assert reference == pytest.approx(
        float(np.median([a["face:geometry"][0, 2] for _, a in calm])), abs=1e-4
    )

    # With speakers known, a segment is compared with the same speaker's other segments.
    spoken = [u.model_copy(update={"speaker": s}) for u, s in zip(dialogue, "abaa", strict=True)]
    two = get_detector("face", min_baseline_segments=2)  # speaker a has two other segments
    found = detect(two, spoken, [a for _, a in calm] + [smiling[1]])
    (smile,) = [c for c in found[-1] if c.name == "smile"]
    assert "the speaker's other segments" in smile.phrase
    assert smile.values[0].reference == pytest.approx(
        float(np.median([a["face:geometry"][0, 2] for _, a in calm[::2]])), abs=1e-4
    )


@pytest.mark.shared_data
def test_an_image_without_landmarks_gives_expression_cues_only(detector, fer):
    utt, arrays = next(
        (u, a) for u, a in fer["happy"] if "expression_happiness" in _names(detector, u, a)
    )
    blind = {**arrays, "face:geometry": np.zeros_like(arrays["face:geometry"])}
    assert _names(detector, utt, blind) == {"expression_happiness"}


def test_the_neutral_ravdess_clip_stays_quiet(detector, clip_face):
    utt = Utterance(id="c", dataset="t", media={"video": str(CLIP)}, start=0.0, end=CLIP_SECONDS)
    feats = clip_face.extract(utt)
    assert len(feats["geometry"]) == 17
    cues = detector.detect_dialogue([utt], [_arrays(feats)])[0]
    # Measured: no cue; the nearest lie at half their thresholds (brow furrow 1.5 of 3 neutral
    # spreads, head movement 3.9 of 6 degrees). Allow one weak cue at most.
    assert len(cues) <= 1 and all(c.strength < 0.6 for c in cues), cues

    # Cut into a dialogue of three segments, each is compared with the other two: still quiet.
    cuts = [(0.0, 1.2), (1.2, 2.4), (2.4, CLIP_SECONDS)]
    utts = [
        Utterance(
            id=f"c{k}", dataset="t", dialogue_id="c", media={"video": str(CLIP)}, start=a, end=b
        )
        for k, (a, b) in enumerate(cuts)
    ]
    found = detect(detector, utts, [_arrays(clip_face.extract(u)) for u in utts])
    assert sum(map(len, found)) <= 1, found


def test_cue_times_lie_within_the_segment(clip_face):
    utt = Utterance(id="c", dataset="t", media={"video": str(CLIP)}, start=0.6, end=2.8)
    arrays = _arrays(clip_face.extract(utt))
    eager = get_detector(
        "face",
        threshold=0.3,
        smile_threshold=0.3,
        smile_min_happy=0.0,
        head_pose_threshold=0.3,
        head_movement_deg=0.5,
        expression_min_probability=0.3,
        expression_margin=0.0,
    )
    cues = eager.detect_dialogue([utt], [arrays])[0]
    assert len(cues) >= 3
    for c in cues:
        assert c.modality == "face"
        assert 0.6 <= c.start <= c.end <= 2.8, (c.name, c.start, c.end)
        assert c.end - c.start >= 1 / 5.0 - 1e-9  # at least one frame
    assert [c.strength for c in cues] == sorted((c.strength for c in cues), reverse=True)
    # The detector's fps must be the extractor's: 11 frames cannot fit in 2.2 s at 2 fps.
    with pytest.raises(ConfigError, match="fps"):
        get_detector("face", fps=2.0).detect_dialogue([utt], [arrays])


def test_a_segment_without_a_face_gets_no_cues(detector):
    utt = Utterance(id="x", dataset="t", media={"video": str(CLIP)}, start=0.0, end=1.0)
    assert detector.detect_dialogue([utt], [{}]) == [[]]
    assert detector.detect_dialogue([utt, utt], [{}, {}]) == [[], []]
    with pytest.raises(InputError, match="face:expression"):
        detector.detect_dialogue([utt], [{"face:geometry": np.zeros((5, 12))}])
    with pytest.raises(InputError, match=r"\(T, 12\)"):
        detector.detect_dialogue(
            [utt], [{"face:geometry": np.zeros((5, 3)), "face:expression": np.zeros((5, 7))}]
        )


def test_config_is_validated():
    with pytest.raises(ConfigError, match="unknown key 'smile_treshold'"):
        get_detector("face", smile_treshold=2.0)
    with pytest.raises(ConfigError, match="threshold"):
        get_detector("face", threshold=-1.0)
    with pytest.raises(ConfigError, match="baseline"):
        get_detector("face", baseline="speaker")
    custom = FaceCueDetector(FaceCueConfig(window_s=0.4))
    assert custom.config.window_s == 0.4
    with pytest.raises(ConfigError, match="either"):
        FaceCueDetector(FaceCueConfig(), threshold=2.0)

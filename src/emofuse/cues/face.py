"""Face cues: facial action units, head pose and the dominant expression of each segment.

Reads the ``face`` extractor's per-frame ``geometry`` (landmark distances in inter-ocular units,
IOD, and head pose in degrees; :data:`emofuse.features.face.GEOMETRY_FEATURES`) and its FER2013
``expression`` probabilities (:data:`emofuse.features.face.FER_LABELS`), and names what the face
does in the terms of the Facial Action Coding System (FACS; Ekman & Friesen 1978): smiles
(AU12), mouth corners pulled down (AU15), lips apart / jaw dropped (AU25/26), brows raised
(AU1+2) or furrowed (AU4), eyes widened (AU5) or narrowed (AU7), the head turned, tilted, raised
or lowered (AU51–56) or moving, and the expression the FER2013 model is sure of. The landmark
distances *approximate* action units; they are not a FACS coder's intensities.

**References.** Geometry has no universal zero (faces differ), so each segment is compared with

* its dialogue's baseline when the dialogue has at least two segments with a face: the median,
  over the other segments (the same speaker's when ``Utterance.speaker`` is known and they have
  any), of each segment's median; or
* a neutral face, :data:`NEUTRAL_FACE`: the median geometry of FER2013 neutral test images,
  measured once (see the constant for the command, n and spread).

Distances from the reference are counted in *neutral spreads*: the one-sided robust standard
deviation of the neutral images on that side of the median (median − 15.87th percentile below,
84.13th percentile − median above; a normal distribution's σ on both sides). An action-unit cue
fires at ``threshold`` spreads (3 by default; 2 for the smile, which must also be backed by the
FER model's ``happy`` probability; 4 for the head's pose, whose spread is heavy-tailed) and its
strength is ``distance / full_strength`` (6 spreads = 1), so a cue just at the default threshold
has strength 0.5. The spreads are those of different people's faces at 48 × 48 px, wider than
one person's variation on video, which keeps the dialogue comparison conservative too.

**Time.** A cue must hold over a ``window_s`` window (1 s): the median of the frames in the
window (the mean, for probabilities) is compared, so a blink or one open-mouthed frame of speech
is not a cue. A cue spans the first to the last window in which it holds; its values are those of
the strongest window. Frame ``k`` of a segment is at ``start + k / fps`` on the media's clock,
with ``fps`` the face extractor's sampling rate (the detector's ``fps`` option, whose default is
the extractor's); a window of frames ``a``…``b`` covers ``start + a / fps`` to
``start + (b + 1) / fps``, cut at the segment's end. When the extractor dropped frames without a
face (video, not ``assume_cropped``), frames after the gap are placed early by its length. A
segment without an end (the whole video) ends one frame after its last sampled frame. Cues of an
image have no times.

Sources: MediaPipe Face Mesh landmarks and fer's mini-Xception FER2013 classifier (through the
``face`` extractor); prototypical expression AUs after EMFACS (Friesen & Ekman 1983).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from emofuse.config import Config
from emofuse.cues.base import CUE_DETECTORS, Arrays, CueDetector, clamp01
from emofuse.errors import ConfigError, InputError
from emofuse.features.face import FER_LABELS, GEOMETRY_FEATURES, FaceConfig
from emofuse.records import Utterance
from emofuse.schema import Cue, Measurement

CHANNELS: dict[str, tuple[str, ...]] = {
    "mouth_corner_lift": ("mouth_corner_lift",),
    "lip_opening": ("lip_opening",),
    "brow_raise": ("brow_raise_left", "brow_raise_right"),
    "inner_brow_raise": ("inner_brow_raise",),
    "inner_brow_gap": ("inner_brow_gap",),
    "eye_open": ("eye_open_left", "eye_open_right"),
    "head_yaw": ("head_yaw",),
    "head_pitch": ("head_pitch",),
    "head_roll": ("head_roll",),
}
"""The measures cues read: ``channel → geometry columns`` averaged (both brows, both eyes)."""

_POSE = ("head_yaw", "head_pitch", "head_roll")
_COLUMNS = [[GEOMETRY_FEATURES.index(c) for c in cols] for cols in CHANNELS.values()]
_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNELS)}


@dataclass(frozen=True)
class NeutralReference:
    """What a neutral face measures: the reference of a clip without a dialogue baseline.

    Attributes:
        faces: Number of neutral faces the geometry was measured on (those with landmarks).
        images: Number of neutral images the expression probabilities were measured on.
        geometry: ``channel → (median, spread below, spread above)`` (:data:`CHANNELS`; IOD
            units, degrees for head pose). The spreads are the one-sided robust standard
            deviations (median − 15.87th percentile, 84.13th percentile − median).
        expression: ``FER label → mean probability`` on the neutral images.
    """

    faces: int
    images: int
    geometry: dict[str, tuple[float, float, float]]
    expression: dict[str, float]


NEUTRAL_FACE = NeutralReference(
    faces=606,
    images=626,
    geometry={
        "mouth_corner_lift": (-0.0175, 0.0173, 0.0208),
        "lip_opening": (0.0077, 0.0074, 0.0478),
        "brow_raise": (0.2511, 0.0316, 0.0270),
        "inner_brow_raise": (0.2225, 0.0324, 0.0317),
        "inner_brow_gap": (0.2926, 0.0179, 0.0182),
        "eye_open": (0.0969, 0.0261, 0.0177),
        "head_yaw": (-0.936, 11.014, 10.204),
        "head_pitch": (-7.120, 10.326, 10.828),
        "head_roll": (-0.871, 7.393, 6.557),
    },
    expression={
        "angry": 0.0864,
        "disgust": 0.0037,
        "fear": 0.0903,
        "happy": 0.0945,
        "sad": 0.2385,
        "surprise": 0.0273,
        "neutral": 0.4592,
    },
)
"""The neutral-face reference, measured on FER2013 (2026-11-29).

Data: the 626 *neutral* images of the FER2013 PrivateTest split as filtered by the
``RecepTahirGunlu/Duygu-Tanima`` copy (48 × 48 grey face crops, histogram-equalised), read by
the ``face`` extractor with ``assume_cropped=True``; Face Mesh found landmarks on 606 of them
(geometry), the expression model read all 626. Spread: the one-sided robust standard deviation
(see :class:`NeutralReference`); e.g. ``mouth_corner_lift`` −0.0175 IOD, −0.0173 / +0.0208,
``head_yaw`` −0.9°, −11.0° / +10.2°. ``lip_opening`` is skewed (lips are often a little apart),
hence its wide upper spread. Produced by (``$DATA`` = the folder holding ``fer2013_filtered``)::

    python - <<'EOF'
    import csv, os
    from emofuse.cues.face import measure_neutral_reference
    from emofuse.features import get_extractor
    from emofuse.records import Utterance
    root = os.path.join(os.environ["DATA"], "fer2013_filtered")
    face = get_extractor("face", assume_cropped=True)
    rows = [r for r in csv.DictReader(open(os.path.join(root, "labels.csv")))
            if r["emotion"] == "neutral"]
    feats = [face.extract(Utterance(id="n", dataset="fer", media={"image": os.path.join(root,
             r["file"])})) for r in rows]
    print(measure_neutral_reference([f["geometry"] for f in feats if f["pooled"][-1] > 0],
                                    [f["expression"] for f in feats]))
    EOF
"""

EXPRESSION_CUES: dict[str, tuple[str, str]] = {
    "angry": ("expression_anger", "AU4+5+7+23"),
    "disgust": ("expression_disgust", "AU9+15+16"),
    "fear": ("expression_fear", "AU1+2+4+5+7+20+26"),
    "happy": ("expression_happiness", "AU6+12"),
    "sad": ("expression_sadness", "AU1+4+15"),
    "surprise": ("expression_surprise", "AU1+2+5+26"),
}
"""``FER label → (cue name, prototypical action units)`` (EMFACS); neutral gives no cue."""


@dataclass(frozen=True)
class _GeometryCue:
    """A cue read from one or more channels moving the same way from the reference."""

    name: str
    au: str
    channels: tuple[str, ...]
    direction: Literal[1, -1]  # +1: above the reference, -1: below it
    says: str
    moved: tuple[str, ...]  # per channel, how it moved, for the phrase ("higher")


_GEOMETRY_CUES: tuple[_GeometryCue, ...] = (
    _GeometryCue("smile", "AU12", ("mouth_corner_lift",), 1, "smiles", ("higher",)),
    _GeometryCue(
        "mouth_corners_down",
        "AU15",
        ("mouth_corner_lift",),
        -1,
        "pulls the mouth corners down",
        ("lower",),
    ),
    _GeometryCue(
        "mouth_open", "AU25/26", ("lip_opening",), 1, "lips apart, jaw dropped", ("further apart",)
    ),
    _GeometryCue("brow_raise", "AU1+2", ("brow_raise",), 1, "raises the brows", ("higher",)),
    _GeometryCue(
        "brow_furrow",
        "AU4",
        ("inner_brow_raise", "inner_brow_gap"),
        -1,
        "furrows the brows",
        ("lower", "closer together"),
    ),
    _GeometryCue("eyes_widen", "AU5", ("eye_open",), 1, "widens the eyes", ("wider open",)),
    _GeometryCue("eyes_narrow", "AU7", ("eye_open",), -1, "narrows the eyes", ("less open",)),
    _GeometryCue("head_turn_left", "AU51", ("head_yaw",), 1, "turns the head left", ("yaw",)),
    _GeometryCue("head_turn_right", "AU52", ("head_yaw",), -1, "turns the head right", ("yaw",)),
    _GeometryCue("head_up", "AU53", ("head_pitch",), 1, "raises the head", ("pitch",)),
    _GeometryCue("head_down", "AU54", ("head_pitch",), -1, "lowers the head", ("pitch",)),
    _GeometryCue("head_tilt_left", "AU55", ("head_roll",), 1, "tilts the head left", ("roll",)),
    _GeometryCue("head_tilt_right", "AU56", ("head_roll",), -1, "tilts the head right", ("roll",)),
)

_NOUN = {
    "mouth_corner_lift": "mouth corners",
    "lip_opening": "lips",
    "brow_raise": "brows",
    "inner_brow_raise": "inner brows",
    "inner_brow_gap": "inner brows",
    "eye_open": "eyes",
}
"""How a phrase names the part a channel measures."""

_HAPPY = FER_LABELS.index("happy")
_MIN_MOVEMENT_FRAMES = 3
"""Frames with a face a segment needs before its head movement is measured."""


class FaceCueConfig(Config):
    """Options of the ``face`` cue detector (see :mod:`emofuse.cues.face` for the method)."""

    fps: float = Field(
        FaceConfig.model_fields["fps"].default,
        gt=0,
        le=60,
        description="Frames per second the face extractor sampled (its `fps` option, default "
        "5.0); frame k of a segment is placed at start + k / fps. Must match the extractor's: a "
        "segment with more frames than its length allows at this rate is a ConfigError.",
    )
    window_s: float = Field(
        1.0,
        gt=0,
        description="Seconds a cue must hold: the median of the frames in a window this long is "
        "compared (a segment shorter than that is one window), so blinks and single frames of "
        "speech make no cue.",
    )
    baseline: Literal["dialogue", "neutral"] = Field(
        "dialogue",
        description="Reference of the face geometry and expression: 'dialogue' compares a "
        "segment with the median of its dialogue's other segments when there are any with a face "
        "(the same speaker's when known), else with the neutral face; 'neutral' always compares "
        "with the neutral face measured on FER2013 (NEUTRAL_FACE).",
    )
    min_baseline_segments: int = Field(
        3,
        ge=1,
        description="Other segments (the same speaker's, when known) with a face needed for a "
        "dialogue baseline; with fewer, the neutral face is the reference (one or two other "
        "segments would make a neutral face look deviant next to a smiling one).",
    )
    threshold: float = Field(
        3.0,
        gt=0,
        description="Distance from the reference, in neutral spreads, at which an action-unit "
        "cue fires (AU15, AU25/26, AU1+2, AU4, AU5, AU7). At 3, each fires on at most 2 % of "
        "FER2013 neutral faces.",
    )
    head_pose_threshold: float = Field(
        4.0,
        gt=0,
        description="Distance of the head pose from the reference, in neutral spreads, at which "
        "a head turn, raise/lowering or tilt (AU51-56) fires: about 40 deg of yaw or pitch, 27 "
        "deg of roll from a neutral face. Head pose in photos is heavy-tailed: at 4, the three "
        "pose cues together fire on 4.8 % of FER2013 neutral faces (10 % at 3).",
    )
    smile_threshold: float = Field(
        2.0,
        gt=0,
        description="Distance of the mouth-corner lift, in neutral spreads, at which the smile "
        "(AU12) fires when the expression model also reads `smile_min_happy`.",
    )
    smile_min_happy: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="FER2013 'happy' probability (mean over the window) a smile needs besides "
        "the lifted mouth corners.",
    )
    full_strength: float = Field(
        6.0,
        gt=0,
        description="Distance in neutral spreads at which a geometry cue's strength reaches 1 "
        "(strength = distance / full_strength).",
    )
    head_movement_deg: float = Field(
        6.0,
        gt=0,
        description="Head movement cue: RMS head rotation about the segment's median pose, in "
        "degrees, above the dialogue's usual movement (0 without a dialogue baseline); the "
        "strength is the excess over twice this. The neutral RAVDESS sample clip moves 3.8 deg.",
    )
    expression_min_probability: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="Mean FER2013 probability (over the window) an expression needs, as the most "
        "probable class, to be a cue.",
    )
    expression_margin: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="How far the expression's probability must exceed the 'neutral' "
        "probability and its reference (the dialogue's baseline, or its mean on neutral faces).",
    )


@CUE_DETECTORS.register("face")
class FaceCueDetector(CueDetector):
    """Action-unit, head-pose and expression cues of a face (see the module docstring).

    Inputs (:attr:`needs`): per segment, ``face:geometry`` ``(T, 12)`` and
    ``face:expression`` ``(T, 7)``, one row per sampled frame (an image is one frame). All-zero
    geometry rows (an image in which Face Mesh found no landmarks) give no geometry cues.

    Cue names (values: the measure with its unit and reference, then the action unit's
    distance in neutral spreads with unit ``"z"``):

    ========================  =======  ===============================================
    cue                       AU       fires when
    ========================  =======  ===============================================
    ``smile``                 AU12     mouth-corner lift ≥ ``smile_threshold`` and happy
    ``mouth_corners_down``    AU15     mouth-corner lift below the reference
    ``mouth_open``            AU25/26  lip opening
    ``brow_raise``            AU1+2    mean brow height
    ``brow_furrow``           AU4      inner brows lower or closer together (the larger)
    ``eyes_widen``            AU5      mean eye opening
    ``eyes_narrow``           AU7      mean eye opening below the reference
    ``head_turn_left/right``  AU51/52  yaw (degrees)
    ``head_up/down``          AU53/54  pitch (degrees)
    ``head_tilt_left/right``  AU55/56  roll (degrees)
    ``head_movement``         AU51–56  RMS head rotation over the segment (degrees)
    ``expression_<emotion>``  EMFACS   FER2013 class probability (anger, disgust, fear,
                                       happiness, sadness, surprise)
    ========================  =======  ===============================================

    Firing rates on FER2013 PrivateTest images (the filtered copy of :data:`NEUTRAL_FACE`;
    every image of the class, one frame each, so the neutral face is the reference; default
    options), measured 2026-11-29:

    ==========================================  =========  =========  =========
    cue                                         neutral    happy      angry
                                                n = 626    n = 879    n = 491
    ==========================================  =========  =========  =========
    ``smile`` (AU12)                            1.0 %      55.3 %     0.4 %
    ``expression_happiness``                    3.4 %      73.6 %     1.6 %
    ``smile`` or ``expression_happiness``       3.7 %      76.2 %     1.6 %
    ``brow_furrow`` (AU4)                       0.5 %      1.4 %      0.8 %
    ``expression_anger``                        0.8 %      1.4 %      28.7 %
    ``brow_furrow`` or ``expression_anger``     1.3 %      2.6 %      29.5 %
    any face cue                                16.9 %     86.0 %     55.2 %
    ==========================================  =========  =========  =========

    On neutral faces the most frequent cues are ``expression_sadness`` (4.6 %: the FER2013
    model's known neutral/sad confusion), ``expression_happiness`` (3.4 %) and head tilts
    (3.1 %); 0.19 cues per neutral face in all. At 48 × 48 px the landmarks barely register
    AU4, so anger is carried by the expression model. Produced by (``$DATA`` as for
    :data:`NEUTRAL_FACE`)::

        python - <<'EOF'
        import csv, os
        from emofuse.cues import get_detector
        from emofuse.features import get_extractor
        from emofuse.records import Utterance
        root = os.path.join(os.environ["DATA"], "fer2013_filtered")
        face, detector = get_extractor("face", assume_cropped=True), get_detector("face")
        rows = list(csv.DictReader(open(os.path.join(root, "labels.csv"))))
        for emotion in ("neutral", "happy", "angry"):
            found = []
            for r in (r for r in rows if r["emotion"] == emotion):
                u = Utterance(id="i", dataset="fer", media={"image": os.path.join(root, r["file"])})
                f = face.extract(u)
                arrays = {"face:geometry": f["geometry"], "face:expression": f["expression"]}
                found.append({c.name for c in detector.detect_dialogue([u], [arrays])[0]})
            for cues in (["smile"], ["expression_happiness"], ["smile", "expression_happiness"],
                         ["brow_furrow"], ["expression_anger"], ["brow_furrow", "expression_anger"]):
                print(emotion, len(found), cues, sum(bool(n & set(cues)) for n in found) / len(found))
            print(emotion, "any", sum(map(bool, found)) / len(found))
        EOF

    Args:
        config: A :class:`FaceCueConfig`, or its options as keywords.

    Raises:
        ConfigError: An unknown or invalid option (the error names the key).
    """

    Config = FaceCueConfig
    modality = "face"
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"face": ("geometry", "expression")}

    def detect_dialogue(
        self, utts: Sequence[Utterance], arrays: Sequence[Arrays]
    ) -> list[list[Cue]]:
        """Each segment's face cues, strongest first (see the class docstring).

        Args:
            utts: The segments of one dialogue, or one clip or image alone.
            arrays: Per segment ``{"face:geometry": (T, 12), "face:expression": (T, 7)}``, or
                ``{}`` when no face could be read (that segment gets ``[]``).

        Returns:
            One list of cues per segment. Times are seconds on the media's clock (``None`` for
            an image).

        Raises:
            InputError: A segment's arrays lack one of the inputs or have the wrong shape.
            ConfigError: A segment has more frames than its span allows at ``fps``.
        """
        if len(utts) != len(arrays):
            raise ValueError(f"{len(utts)} segments but {len(arrays)} sets of arrays")
        segments = [self._segment(u, a) for u, a in zip(utts, arrays, strict=True)]
        out: list[list[Cue]] = []
        for i, (utt, seg) in enumerate(zip(utts, segments, strict=True)):
            if seg is None:
                out.append([])
                continue
            peers = self._peers(i, utts, segments)
            cues = self._geometry_cues(utt, seg, peers)
            cues += self._movement_cue(utt, seg, peers)
            cues += self._expression_cues(utt, seg, peers)
            out.append(sorted(cues, key=lambda c: (-c.strength, c.name)))
        return out

    # -- inputs -----------------------------------------------------------------------------
    def _segment(self, utt: Utterance, arrays: Arrays) -> _Segment | None:
        """One segment's frames as channels (``None`` when it has no face input)."""
        if not arrays:
            return None
        keys = ("face:geometry", "face:expression")
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise InputError(utt.id, f"face cues need {', '.join(map(repr, missing))}")
        geo = np.asarray(arrays["face:geometry"], dtype=np.float64)
        expr = np.asarray(arrays["face:expression"], dtype=np.float64)
        g, e = len(GEOMETRY_FEATURES), len(FER_LABELS)
        if geo.ndim != 2 or geo.shape[1] != g or expr.ndim != 2 or expr.shape[1] != e:
            raise InputError(
                utt.id,
                f"face cues need geometry (T, {g}) and expression (T, {e}), "
                f"got {geo.shape} and {expr.shape}",
            )
        if len(geo) != len(expr):
            raise InputError(
                utt.id, f"face geometry has {len(geo)} frames but expression {len(expr)}"
            )
        if len(geo) == 0:
            return None
        image = not utt.media.get("video")
        if not image and utt.end is not None:
            length = utt.end - (utt.start or 0.0)
            most = math.ceil(round(length * self.config.fps, 6))
            if len(geo) > most:
                raise ConfigError(
                    f"cues 'face': segment {utt.id!r} has {len(geo)} face frames but lasts "
                    f"{length:.2f} s, at most {most} frames at fps={self.config.fps:g}; set the "
                    "detector's fps to the face extractor's"
                )
        valid = np.isfinite(geo).all(axis=1) & np.any(geo != 0.0, axis=1)
        channels = np.stack([geo[:, cols].mean(axis=1) for cols in _COLUMNS], axis=1)
        channels[~valid] = np.nan
        return _Segment(channels=channels, expression=expr, valid=valid, image=image)

    def _peers(
        self, i: int, utts: Sequence[Utterance], segments: Sequence[_Segment | None]
    ) -> list[_Segment]:
        """The segments segment ``i`` is compared with (empty: the neutral face)."""
        if self.config.baseline == "neutral":
            return []
        others = [j for j, s in enumerate(segments) if j != i and s is not None and s.valid.any()]
        speaker = utts[i].speaker
        # the same speaker's segments; untagged ones only with untagged ones (one face)
        same = [j for j in others if utts[j].speaker == speaker]
        if len(same) < self.config.min_baseline_segments:
            return []  # too few to say what is usual: the neutral face is the reference
        chosen = [segments[j] for j in same]
        return [replace(s, speaker=speaker is not None) for s in chosen if s is not None]

    # -- cues -------------------------------------------------------------------------------
    def _geometry_cues(self, utt: Utterance, seg: _Segment, peers: list[_Segment]) -> list[Cue]:
        """Action-unit and head-pose cues (one per kind and segment, at most)."""
        cfg: FaceCueConfig = self.config  # type: ignore[assignment]
        if not seg.valid.any():
            return []
        w = self._window(seg)
        windows = _window_medians(seg.channels, w)  # (n_windows, n_channels)
        happy = _window_means(seg.expression[:, _HAPPY], w)
        against = _against(peers, "a neutral face")
        if peers:
            baseline = np.median(np.stack([p.median() for p in peers]), axis=0)
            usual_happy = float(np.median([p.mean_expression()[_HAPPY] for p in peers]))
        else:
            baseline = np.array([NEUTRAL_FACE.geometry[c][0] for c in CHANNELS])
            usual_happy = NEUTRAL_FACE.expression["happy"]
        cues = []
        for spec in _GEOMETRY_CUES:
            parts = []
            for channel in spec.channels:
                k = _CHANNEL_INDEX[channel]
                _, below, above = NEUTRAL_FACE.geometry[channel]
                spread = above if spec.direction > 0 else below
                d = spec.direction * (windows[:, k] - baseline[k]) / spread
                parts.append(np.nan_to_num(d, nan=-np.inf))
            dist = np.max(parts, axis=0)
            threshold = cfg.threshold
            if spec.name == "smile":
                threshold = cfg.smile_threshold
            elif spec.channels[0] in _POSE:
                threshold = cfg.head_pose_threshold
            passing = dist >= threshold
            if spec.name == "smile":
                passing &= happy >= cfg.smile_min_happy
            if not passing.any():
                continue
            best = int(np.flatnonzero(passing)[np.argmax(dist[passing])])
            best_part = int(np.argmax([p[best] for p in parts]))
            channel = spec.channels[best_part]
            k = _CHANNEL_INDEX[channel]
            value, ref = float(windows[best, k]), float(baseline[k])
            degrees = channel.startswith("head_")
            unit = "deg" if degrees else "IOD"
            values = [
                Measurement(
                    name=channel,
                    value=round(value, 2 if degrees else 4),
                    unit=unit,
                    reference=round(ref, 2 if degrees else 4),
                ),
                Measurement(name=spec.au, value=round(float(dist[best]), 2), unit="z"),
            ]
            moved = spec.moved[best_part]
            if degrees:
                detail = f"{moved} {value:+.0f}° vs {ref:+.0f}° in {against}"
            else:
                shift = abs(value - ref)
                detail = f"{_NOUN[channel]} {shift:.3f} IOD {moved} than in {against}"
            if spec.name == "smile":
                values.append(
                    Measurement(
                        name="happy",
                        value=round(float(happy[best]), 3),
                        reference=round(usual_happy, 4),
                    )
                )
                detail += f"; happy {happy[best]:.2f}"
            start, end = self._span(utt, seg, np.flatnonzero(passing), w)
            cues.append(
                Cue(
                    modality="face",
                    start=start,
                    end=end,
                    name=spec.name,
                    phrase=f"{spec.says} ({spec.au}: {detail})",
                    values=values,
                    strength=clamp01(float(dist[best]) / cfg.full_strength),
                )
            )
        return cues

    def _movement_cue(self, utt: Utterance, seg: _Segment, peers: list[_Segment]) -> list[Cue]:
        """``head_movement``: the head's RMS rotation about its median pose over the segment."""
        cfg: FaceCueConfig = self.config  # type: ignore[assignment]
        moved = seg.movement()
        if moved is None:
            return []
        usual = [m for m in (p.movement() for p in peers) if m is not None]
        ref = float(np.median(usual)) if usual else 0.0
        excess = moved - ref
        if excess < cfg.head_movement_deg:
            return []
        frames = np.flatnonzero(seg.valid)
        start, end = self._span(utt, seg, np.array([frames[0], frames[-1]]), 1)
        against = _against(peers, "a still head") if usual else "a still head"
        return [
            Cue(
                modality="face",
                start=start,
                end=end,
                name="head_movement",
                phrase=f"moves the head (AU51–56: {moved:.1f}° RMS rotation vs {ref:.1f}° "
                f"for {against})",
                values=[
                    Measurement(
                        name="head_movement", value=round(moved, 2), unit="deg", reference=ref
                    )
                ],
                strength=clamp01(excess / (2.0 * cfg.head_movement_deg)),
            )
        ]

    def _expression_cues(self, utt: Utterance, seg: _Segment, peers: list[_Segment]) -> list[Cue]:
        """``expression_<emotion>``: a class the FER2013 model is sure of, well above neutral."""
        cfg: FaceCueConfig = self.config  # type: ignore[assignment]
        w = self._window(seg)
        probs = np.stack(
            [_window_means(seg.expression[:, j], w) for j in range(len(FER_LABELS))], axis=1
        )
        top = probs.argmax(axis=1)
        neutral = probs[:, FER_LABELS.index("neutral")]
        against = _against(peers, "neutral faces")
        if peers:
            usual = np.median(np.stack([p.mean_expression() for p in peers]), axis=0)
        else:
            usual = np.array([NEUTRAL_FACE.expression[label] for label in FER_LABELS])
        cues = []
        for label, (name, aus) in EXPRESSION_CUES.items():
            j = FER_LABELS.index(label)
            p = probs[:, j]
            passing = (
                (top == j)
                & (p >= cfg.expression_min_probability)
                & (p - neutral >= cfg.expression_margin)
                & (p - usual[j] >= cfg.expression_margin)
            )
            if not passing.any():
                continue
            best = int(np.flatnonzero(passing)[np.argmax(p[passing])])
            start, end = self._span(utt, seg, np.flatnonzero(passing), w)
            cues.append(
                Cue(
                    modality="face",
                    start=start,
                    end=end,
                    name=name,
                    phrase=f"looks {_ADJECTIVE[label]} (FER2013 model: {label} {p[best]:.2f} vs "
                    f"{usual[j]:.2f} in {against}, neutral {neutral[best]:.2f}; prototype {aus})",
                    values=[
                        Measurement(
                            name=f"p_{label}",
                            value=round(float(p[best]), 3),
                            reference=round(float(usual[j]), 4),
                        ),
                        Measurement(name="p_neutral", value=round(float(neutral[best]), 3)),
                    ],
                    strength=clamp01(float(p[best])),
                )
            )
        return cues

    # -- time -------------------------------------------------------------------------------
    def _window(self, seg: _Segment) -> int:
        """Frames per window (all of them for a segment shorter than the window)."""
        w = max(1, round(self.config.window_s * self.config.fps))
        return min(w, len(seg.expression))

    def _span(
        self, utt: Utterance, seg: _Segment, windows: np.ndarray, w: int
    ) -> tuple[float | None, float | None]:
        """Start and end in seconds of windows ``windows[0]`` … ``windows[-1]`` (``w`` frames)."""
        if seg.image:
            return None, None
        fps = self.config.fps
        t0 = utt.start or 0.0
        start = t0 + int(windows[0]) / fps
        end = t0 + (int(windows[-1]) + w) / fps
        if utt.end is not None:
            end = min(end, utt.end)
            start = min(start, end)
        return round(start, 3), round(end, 3)


_ADJECTIVE = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "afraid",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
}


@dataclass
class _Segment:
    """One segment's frames: channel values (NaN without landmarks) and probabilities."""

    channels: np.ndarray  # (T, len(CHANNELS))
    expression: np.ndarray  # (T, 7)
    valid: np.ndarray  # (T,) bool: the frame has landmarks
    image: bool
    speaker: bool = False  # as a peer: chosen because it is the same speaker's

    def mean_expression(self) -> np.ndarray:
        """Mean probability of each FER label over the frames, ``(7,)``."""
        return self.expression.mean(axis=0)

    def median(self) -> np.ndarray:
        """Median of each channel over the frames with landmarks."""
        return np.median(self.channels[self.valid], axis=0)

    def movement(self) -> float | None:
        """RMS head rotation about the median pose, degrees (``None``: too few frames)."""
        if int(self.valid.sum()) < _MIN_MOVEMENT_FRAMES:
            return None
        pose = self.channels[self.valid][:, [_CHANNEL_INDEX[c] for c in _POSE]]
        return float(np.sqrt(np.mean(np.sum((pose - np.median(pose, axis=0)) ** 2, axis=1))))


def _against(peers: Sequence[_Segment], neutral: str) -> str:
    """What a segment was compared with, for the phrase."""
    if not peers:
        return neutral
    return "the speaker's other segments" if peers[0].speaker else "the dialogue's other segments"


def _window_medians(values: np.ndarray, w: int) -> np.ndarray:
    """``(T, C)`` → ``(T - w + 1, C)`` medians of ``w`` consecutive rows, NaN rows ignored."""
    view = np.lib.stride_tricks.sliding_window_view(values, w, axis=0)
    out = np.full(view.shape[:-1], np.nan, dtype=np.result_type(values, np.float32))
    # all-NaN windows stay NaN (nanmedian would warn; catching warnings is not thread-safe)
    some = ~np.isnan(view).all(axis=-1)
    if some.any():
        out[some] = np.nanmedian(view[some], axis=-1)
    return out


def _window_means(values: np.ndarray, w: int) -> np.ndarray:
    """``(T,)`` → ``(T - w + 1,)`` means of ``w`` consecutive values."""
    return np.lib.stride_tricks.sliding_window_view(values, w).mean(axis=-1)


def measure_neutral_reference(
    geometry: Sequence[np.ndarray], expression: Sequence[np.ndarray]
) -> NeutralReference:
    """A :class:`NeutralReference` from neutral faces (how :data:`NEUTRAL_FACE` was made).

    Args:
        geometry: ``face:geometry`` arrays ``(T, 12)`` of neutral faces with landmarks; every
            row counts as one face.
        expression: ``face:expression`` arrays ``(T, 7)`` of neutral faces.

    Returns:
        Per channel the median and the one-sided robust spreads (rounded to 4 decimals, 3 for
        degrees), and the mean probability of each FER label.

    Raises:
        ValueError: No geometry or no expression rows.
    """
    geo = np.concatenate([np.asarray(g, np.float64) for g in geometry]) if geometry else None
    expr = np.concatenate([np.asarray(e, np.float64) for e in expression]) if expression else None
    if geo is None or expr is None or not len(geo) or not len(expr):
        raise ValueError("need neutral faces with geometry and expression")
    channels = np.stack([geo[:, cols].mean(axis=1) for cols in _COLUMNS], axis=1)
    lo, mid, hi = np.quantile(channels, [0.1587, 0.5, 0.8413], axis=0)
    table = {}
    for k, name in enumerate(CHANNELS):
        digits = 3 if name.startswith("head_") else 4
        table[name] = (
            round(float(mid[k]), digits),
            round(float(mid[k] - lo[k]), digits),
            round(float(hi[k] - mid[k]), digits),
        )
    means = expr.mean(axis=0)
    return NeutralReference(
        faces=len(geo),
        images=len(expr),
        geometry=table,
        expression={label: round(float(m), 4) for label, m in zip(FER_LABELS, means, strict=True)},
    )


__all__ = [
    "CHANNELS",
    "EXPRESSION_CUES",
    "NEUTRAL_FACE",
    "FaceCueConfig",
    "FaceCueDetector",
    "NeutralReference",
    "measure_neutral_reference",
]

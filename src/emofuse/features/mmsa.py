"""The features inside an MMSA pickle, served like any extractor's: ``mmsa:text|audio|vision``.

The MOSI/MOSEI/CH-SIMS results in MMSA's tables (``FIELD.md`` §B3–B5) are all computed on the
feature pickles MMSA distributes (``aligned_50.pkl``, ``unaligned_50.pkl``, ``unaligned_39.pkl``):
BERT (or GloVe) text features, COVAREP / librosa audio features and Facet / OpenFace vision
features. This extractor "extracts" an utterance's arrays by reading them from such a pickle, so
that EGMF, MiSTER-E and the baselines train on exactly those inputs, through the same feature
store, tables and batches as on features emofuse computes itself::

    emofuse train --dataset mmsa -o pickle=MOSI/Processed/unaligned_50.pkl
        -f text=mmsa:text -f audio=mmsa:audio -f vision=mmsa:vision --model egmf

(with ``--dataset mmsa`` the extractor's ``pickle`` option defaults to the dataset's; ``vision``
is emofuse's ``face`` modality). Outputs, per utterance, padding removed with the pickle's
``audio_lengths`` / ``vision_lengths`` (a pickle without them — aligned data — is read whole,
as MMSA's loader reads it):

* ``text`` ``(L, d_t)`` — the pickle's ``text`` array (BERT features, 768-d, or GloVe, 300-d);
* ``audio`` ``(T_a, d_a)``, ``vision`` ``(T_v, d_v)``.

The pickle's ``text_bert`` holds BERT word-piece ids, masks and segment ids ``(3, L)``, which
MMSA feeds to a BERT model inside each network; BERT's weights are not shipped here, so it is
not offered as a feature (fine-tune the bundled MiniLM on ``raw_text`` instead:
``text_encoder`` of the model config, with ``-f text=minilm:tokens``).

**Non-finite values.** MMSA's loader casts every array to float32 and then sets ``-inf`` in
audio and vision to 0 (``src/MMSA/data_loader.py``); NaN, ``+inf`` and float64 values beyond
float32's range (which become ``inf`` in the cast) pass on to its models. Here every non-finite
value — after the same float32 cast, in any modality — is counted per modality and kind, reported
in one :class:`~emofuse.errors.EmofuseWarning` naming the pickle, and set to 0
(``nonfinite: zero``, MMSA's treatment of ``-inf`` extended to the rest), or refused with an
:class:`~emofuse.errors.InputError` (``nonfinite: error``). No non-finite value reaches a model.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from emofuse.config import Config
from emofuse.errors import EmofuseWarning, InputError
from emofuse.features.base import EXTRACTORS, FeatureExtractor, Features, OutputSpec
from emofuse.records import Utterance

_OUTPUTS: dict[str, Literal["text", "audio", "face"]] = {
    "text": "text",
    "audio": "audio",
    "vision": "face",
}


class MMSAFeaturesConfig(Config):
    """Options of the ``mmsa`` extractor."""

    pickle: Path = Field(
        description="The MMSA .pkl whose features to read (only load pickles you trust). With "
        "`--dataset mmsa` it defaults to the dataset's pickle."
    )
    nonfinite: Literal["zero", "error"] = Field(
        "zero",
        description="NaN / inf / float32 overflow in the arrays: 'zero' sets them to 0 and "
        "reports the counts (MMSA's loader zeroes -inf in audio and vision), 'error' refuses.",
    )

    @model_validator(mode="after")
    def _absolute(self) -> MMSAFeaturesConfig:
        # the fingerprint and saved models must not depend on the working directory
        object.__setattr__(self, "pickle", self.pickle.expanduser().absolute())
        return self


_LOADED: dict[tuple[str, int, int, int, str], tuple[dict[str, Features], dict[str, OutputSpec], str]] = {}
"""Parsed pickles by (path, size, mtime, inode change time, non-finite policy): arrays per utterance, the outputs,
the non-finite report. A pickle is read once per process and file version."""


_REPORTED: set[str] = set()
"""Non-finite reports already issued in this process (one warning per pickle, not per split)."""


@EXTRACTORS.register("mmsa")
class MMSAFeatures(FeatureExtractor):
    """Features of an MMSA feature pickle (see the module docstring).

    Outputs:
        ``text`` (L, d_t), ``audio`` (T_a, d_a), ``vision`` (T_v, d_v, the ``face`` modality);
        dims as stored in the pickle.
    """

    Config = MMSAFeaturesConfig
    modality = "text"  # each output declares its own modality
    version = "1"
    dependencies = ("numpy",)
    batch_size = 256
    dataset_options: ClassVar[dict[str, dict[str, str]]] = {"mmsa": {"pickle": "pickle"}}
    output_notes: ClassVar[dict[str, str]] = {
        "text_bert": "the pickle's text_bert holds BERT word-piece ids, not features; use "
        "mmsa:text, or fine-tune MiniLM on the transcripts with a text_encoder",
        "face": "MMSA calls the face features 'vision': use mmsa:vision",
    }
    config: MMSAFeaturesConfig

    def _load(self) -> tuple[dict[str, Features], dict[str, OutputSpec], str]:
        from emofuse.datasets.mmsa import read_mmsa_pickle

        p = self.config.pickle
        try:
            st = p.stat()
        except OSError:
            raise InputError(p, "MMSA pickle does not exist") from None
        key = (os.fspath(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, self.config.nonfinite)
        if key not in _LOADED:
            _, raw = read_mmsa_pickle(p)
            arrays, report = _finite(p, raw, self.config.nonfinite)
            _LOADED.clear()  # one pickle in memory at a time: they are large
            _LOADED[key] = (arrays, _outputs(p, arrays), report)
        return _LOADED[key]

    def outputs(self) -> dict[str, OutputSpec]:
        """``text``, ``audio`` and ``vision``, their dims read from the pickle."""
        return self._load()[1]

    def setup(self) -> None:
        """Read the pickle and report (once per file version) any non-finite values it held."""
        _, _, report = self._load()
        if report and report not in _REPORTED:
            _REPORTED.add(report)
            warnings.warn(report, EmofuseWarning, stacklevel=2)

    def reads(self, utt: Utterance) -> bool:
        """Whether the pickle holds ``utt`` (by the ids the ``mmsa`` recipe gives)."""
        return utt.id in self._load()[0]

    def source_path(self, utt: Utterance) -> Path | None:
        """The pickle: a changed file is a changed input."""
        return self.config.pickle

    def extract(self, utt: Utterance) -> Features:
        """The utterance's arrays from the pickle.

        Raises:
            InputError: the pickle has no such utterance.
        """
        arrays = self._load()[0].get(utt.id)
        if arrays is None:
            raise InputError(utt.id, f"not in the MMSA pickle {self.config.pickle}")
        return {k: v.copy() for k, v in arrays.items()}


def _finite(
    path: Path, raw: dict[str, dict[str, np.ndarray]], policy: str
) -> tuple[dict[str, Features], str]:
    """float32 arrays with non-finite values handled by ``policy``; the report ("" if none)."""
    counts: dict[str, dict[str, int]] = {}
    out: dict[str, Features] = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for uid, feats in raw.items():
            item: Features = {}
            for name in _OUTPUTS:
                source = np.asarray(feats[name])
                arr = source.astype(np.float32)
                bad = ~np.isfinite(arr)
                if bad.any():
                    c = counts.setdefault(name, {})
                    was = source[bad].astype(np.float64)
                    c["NaN"] = c.get("NaN", 0) + int(np.isnan(was).sum())
                    c["-inf"] = c.get("-inf", 0) + int(np.isneginf(was).sum())
                    c["+inf"] = c.get("+inf", 0) + int(np.isposinf(was).sum())
                    c["float32 overflow"] = c.get("float32 overflow", 0) + int(
                        np.isfinite(was).sum()
                    )
                    arr[bad] = 0.0
                item[name] = np.ascontiguousarray(arr)
            out[uid] = item
    if not counts:
        return out, ""
    shown = "; ".join(
        f"{name}: " + ", ".join(f"{n} {kind}" for kind, n in c.items() if n)
        for name, c in counts.items()
    )
    if policy == "error":
        raise InputError(path, f"non-finite feature values ({shown}); fix the pickle")
    return out, f"{path}: non-finite feature values set to 0 ({shown})"


def _outputs(path: Path, arrays: dict[str, Features]) -> dict[str, OutputSpec]:
    if not arrays:
        raise InputError(path, "the MMSA pickle holds no utterance")
    first = next(iter(arrays.values()))
    specs = {}
    for name, modality in _OUTPUTS.items():
        arr = first[name]
        if arr.ndim != 2:
            raise InputError(
                path,
                f"{name} arrays are {arr.ndim}-D per utterance; expected (steps, dim)"
                + (" (this looks like BERT ids, not features)" if name == "text" else ""),
            )
        dims = {a[name].shape[-1] for a in arrays.values()}
        if len(dims) > 1:
            raise InputError(path, f"{name} features have several dims {sorted(dims)}")
        specs[name] = OutputSpec(
            dim=int(arr.shape[-1]),
            kind="sequence",
            description=f"MMSA pickle {name} features",
            modality=modality,
            standardize=modality != "text",
        )
    return specs


__all__ = ["MMSAFeatures", "MMSAFeaturesConfig"]

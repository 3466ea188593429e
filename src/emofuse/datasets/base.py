"""The dataset-recipe interface, the ``DATASETS`` registry and prepared-dataset folders.

A recipe is one module with one class registered in :data:`DATASETS`. Its docstring is the
dataset card: what the corpus is, its licence, how to obtain it, the folder tree it expects,
its splits and its label map. ``prepare`` writes one manifest per split next to ``spec.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from emofuse._version import __version__
from emofuse.config import Config, fingerprint, validate_config
from emofuse.errors import ConfigError, EmofuseError, InputError, listing
from emofuse.records import (
    Utterance,
    dump_json,
    make_folder,
    read_json,
    read_manifest,
    write_manifest,
)
from emofuse.registry import Registry
from emofuse.spec import TaskSpec

DATASETS: Registry[type[DatasetRecipe]] = Registry("dataset", "emofuse.datasets")
"""Every dataset recipe, by name. ``emofuse datasets list`` prints it."""

DATA_ENV = "EMOFUSE_DATA"
"""Environment variable naming a folder that holds dataset roots (``$EMOFUSE_DATA/meld``, …)."""


def read_csv_table(path: str | os.PathLike[str], **options: Any) -> Any:
    """``pandas.read_csv(path, encoding="utf-8", **options)``, failing with one clear line.

    Every way a user's file can fail is turned into one :class:`InputError` naming it.

    Raises:
        InputError: the file is missing, unreadable, empty, not UTF-8 or malformed.
    """
    import pandas as pd

    p = Path(path)
    try:
        return pd.read_csv(p, encoding="utf-8", **options)
    except pd.errors.EmptyDataError:
        raise InputError(p, "CSV file is empty") from None
    except UnicodeDecodeError:
        raise InputError(p, "CSV file is not UTF-8; re-save it as UTF-8") from None
    except FileNotFoundError:
        raise InputError(p, "file does not exist") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(p, f"cannot read CSV ({problem})") from None


FLOAT32_MAX = 3.4028234663852886e38
"""Largest float32: features and labels are stored as float32 downstream (MMSA export, tables)."""


class BadValue(ValueError):
    """One value of one item is unusable: the recipe reports the item and leaves it out."""


def number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    required: bool = True,
) -> Any:
    """A checked number read from a corpus file (a CSV cell, an archive entry).

    The one check every recipe applies to every number it reads: it is a number, finite, fits
    a float32, is a whole number when ``integer``, and lies in ``[low, high]`` (either bound
    may be ``None``). Strings are stripped first; ``bool`` is not a number.

    Args:
        value: What the file holds (``str``, ``int``, ``float``, a NumPy scalar, ``None``).
        name: What the value is, for the message (``"sentiment"``, ``"start"``).
        low: Lower end of the declared range, inclusive (``None``: no lower end).
        high: Upper end of the declared range, inclusive (``None``: no upper end).
        integer: Require a whole number; an ``int`` is returned.
        required: ``None``/empty is a problem; otherwise it is returned as ``None``.

    Raises:
        BadValue: saying what is wrong, e.g. ``"sentiment 'nan' is not a finite number"``.

    Example:
        >>> number("2.5", "sentiment", low=-3, high=3)
        2.5
        >>> number("7", "sentiment", low=-3, high=3)
        Traceback (most recent call last):
        ...
        emofuse.datasets.base.BadValue: sentiment 7 lies outside [-3, 3]
    """
    if isinstance(value, str):
        value = value.strip()
    if value is None or (isinstance(value, str) and not value):
        if required:
            raise BadValue(f"{name} is missing")
        return None
    shown = repr(value) if isinstance(value, str) else None
    if isinstance(value, bool):
        raise BadValue(f"{name} {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise BadValue(f"{name} {shown or repr(value)} is not a number") from None
    shown = shown or f"{x:g}"
    if not math.isfinite(x):
        raise BadValue(f"{name} {shown} is not a finite number")
    if abs(x) > FLOAT32_MAX:
        raise BadValue(f"{name} {shown} is too large (it overflows float32)")
    if integer and not x.is_integer():
        raise BadValue(f"{name} {shown} is not a whole number")
    if low is not None and high is not None and not low <= x <= high:
        raise BadValue(f"{name} {x:g} lies outside [{low:g}, {high:g}]")
    if low is not None and x < low:
        raise BadValue(
            f"{name} {x:g} is negative" if low == 0 else f"{name} {x:g} is below {low:g}"
        )
    if high is not None and x > high:
        raise BadValue(f"{name} {x:g} is above {high:g}")
    return int(x) if integer else x


def span(
    start: float | None,
    end: float | None,
    names: tuple[str, str] = ("start", "end"),
    *,
    empty: bool = False,
) -> None:
    """Check two times already read with :func:`number`: ``end`` after ``start``.

    Args:
        start: Start time in seconds (``None``: not given, nothing to check).
        end: End time in seconds (``None``: not given, nothing to check).
        names: What the two values are called, for the message.
        empty: Accept ``end == start`` (a zero-length span some corpora hold).

    Raises:
        BadValue: ``"end 1.5 is not after start 2"``.
    """
    if start is None or end is None:
        return
    if end < start or (end == start and not empty):
        raise BadValue(f"{names[1]} {end:g} is not after {names[0]} {start:g}")


class RecipeConfig(Config):
    """Options shared by every recipe."""

    root: Path | None = Field(
        None,
        description=f"Dataset root folder. Default: ${DATA_ENV}/<dataset folder> when {DATA_ENV} is set.",
    )


@dataclass
class Dataset:
    """Utterances of a dataset, grouped by split, with the task they pose.

    Attributes:
        name: Registry name of the recipe.
        spec: The task (labels, sentiment range, metrics).
        splits: ``split name → utterances`` in corpus order.
        skipped: ``item → problem`` for every input the recipe left out (a CSV row, a file
            that is not media), so nothing is dropped without a word.
    """

    name: str
    spec: TaskSpec
    splits: dict[str, list[Utterance]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[Utterance]:
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(
                f"{self.name} has no split {split!r}; splits: {list(self.splits)}"
            ) from None

    def all(self) -> list[Utterance]:
        """Every utterance of every split."""
        return [u for utts in self.splits.values() for u in utts]

    def counts(self, by: str = "emotion") -> dict[str, dict[str, int]]:
        """Label counts per split; ``by`` is a :class:`~emofuse.records.Labels` field name."""
        return {
            s: dict(Counter(str(getattr(u.labels, by)) for u in utts))
            for s, utts in self.splits.items()
        }


class DatasetRecipe(ABC):
    """Turns a corpus on disk into :class:`Utterance` records.

    Subclasses set ``folder`` (the conventional folder name under ``$EMOFUSE_DATA``), a
    ``Config`` subclass of :class:`RecipeConfig`, and implement :meth:`spec`,
    :meth:`required_files` and :meth:`load`. Errors in the corpus raise
    :class:`~emofuse.errors.InputError` naming the file.
    """

    name: ClassVar[str]
    folder: ClassVar[str | None] = None
    Config: ClassVar[type[RecipeConfig]] = RecipeConfig

    def __init__(self, config: RecipeConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either a config object or keyword options, not both")
        self.config = (
            config
            if config is not None
            else validate_config(self.Config, options, f"dataset {self.name!r}")
        )
        self.skipped: dict[str, str] = {}
        """``item → problem`` for inputs :meth:`load` left out (reported, never silent)."""

    def skip(self, item: str, where: str | os.PathLike[str], problem: str) -> None:
        """Leave ``item`` out and say why: ``skipped[item] = "<where>: <problem>"``.

        ``where`` names the file (and line or array) the value came from. Several problems of
        one item are joined with ``"; "``.
        """
        text = f"{os.fspath(where)}: {problem}" if os.fspath(where) else problem
        old = self.skipped.get(item)
        if old is None:
            self.skipped[item] = text
        elif text not in old.split("; "):
            self.skipped[item] = f"{old}; {text}"

    def where(self, path: str | os.PathLike[str], line: int | None = None) -> str:
        """``path`` relative to the root when it lies inside it, with ``line N`` when given."""
        p = Path(path)
        with contextlib.suppress(ValueError, EmofuseError):
            p = p.relative_to(self.root)
        return p.as_posix() + (f" line {line}" if line is not None else "")

    @property
    def root(self) -> Path:
        """The dataset root, checked to exist."""
        root = self.config.root
        if root is None and self.folder is not None and os.environ.get(DATA_ENV):
            root = Path(os.environ[DATA_ENV]) / self.folder
        if root is None:
            raise ConfigError(
                f"dataset {self.name!r} needs a root folder (option root=… or ${DATA_ENV})"
            )
        root = Path(root).expanduser().absolute()  # manifests then resolve from anywhere
        if root.is_file():
            raise InputError(root, f"is a file; the dataset root for {self.name!r} is a folder")
        if not root.is_dir():
            raise InputError(root, f"dataset root for {self.name!r} does not exist")
        return root

    @abstractmethod
    def spec(self) -> TaskSpec:
        """The task this dataset (under this config's protocol) poses."""

    def required_files(self) -> list[str]:
        """Paths relative to the root that must exist; :meth:`check` verifies them."""
        return []

    def check(self) -> None:
        """Verify the folder layout before reading anything.

        Raises:
            InputError: naming the root and every missing file.
        """
        root = self.root
        missing = [rel for rel in self.required_files() if not (root / rel).exists()]
        if missing:
            raise InputError(
                root,
                f"not a {self.name} root: missing {', '.join(missing)} "
                f"(see `emofuse datasets show {self.name}` for the expected tree)",
            )

    @abstractmethod
    def load(self) -> list[Utterance]:
        """Every utterance of the corpus, each with its ``split`` set."""

    def dataset(self) -> Dataset:
        """Check the root, load, and group by split (splits in train/val/test order)."""
        self.check()
        self.skipped.clear()
        utts = self.load()
        if not utts and self.skipped:
            raise InputError(None, f"{self.name}: no usable item ({listing(self.skipped)})")
        order = {"train": 0, "val": 1, "test": 2}
        splits: dict[str, list[Utterance]] = {}
        for u in utts:
            splits.setdefault(u.split or "unsplit", []).append(u)
        splits = dict(sorted(splits.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))
        return Dataset(self.name, self.spec(), splits, dict(self.skipped))

    def source_files(self) -> list[Path]:
        """The files the records are read from (manifests, label files).

        Their content is part of :meth:`fingerprint`, so an edited file is prepared again.
        """
        return [self.root / rel for rel in self.required_files()]

    def fingerprint(self) -> str:
        """Hash of recipe name, config, emofuse version and the content of :meth:`source_files`."""
        import hashlib

        contents = []
        for path in self.source_files():
            digest = hashlib.blake2b(digest_size=16)
            try:
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            except OSError:
                continue  # check() names a missing file
            contents.append((path.name, digest.hexdigest()))
        return fingerprint(self.name, self.config.model_dump(mode="json"), __version__, contents)

    def prepare(self, out_dir: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write ``<out_dir>/{split}.jsonl``, ``spec.json`` and ``dataset.json``.

        Idempotent: a ``.completed`` marker holding the recipe fingerprint makes a second call
        with the same config return at once; a different config or ``force`` rewrites.
        """
        out = Path(out_dir)
        marker = out / ".completed"
        fp = self.fingerprint()
        if not force and marker.is_file() and marker.read_text().strip() == fp:
            return out
        ds = self.dataset()
        make_folder(out)
        marker.unlink(missing_ok=True)
        for old in out.glob("*.jsonl"):
            if old.stem not in ds.splits:
                old.unlink()
        for split, utts in ds.splits.items():
            write_manifest(out / f"{split}.jsonl", utts)
        dump_json(out / "spec.json", ds.spec.model_dump(mode="json"))
        dump_json(out / "skipped.json", ds.skipped)
        dump_json(
            out / "dataset.json",
            {
                "dataset": self.name,
                "config": self.config.model_dump(mode="json"),
                "emofuse_version": __version__,
                "fingerprint": fp,
                "counts": {s: len(u) for s, u in ds.splits.items()},
            },
        )
        marker.write_text(fp + "\n")
        return out


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, **options: Any) -> Dataset:
    """Load a registered dataset by name.

    Example:
        >>> ds = load_dataset("sample")
        >>> sorted(ds.splits)
        ['test']
    """
    recipe_cls = DATASETS.get(name)
    if root is not None:
        options["root"] = root
    return recipe_cls(**options).dataset()


def open_prepared(path: str | os.PathLike[str]) -> Dataset:
    """Open a folder written by :meth:`DatasetRecipe.prepare` (or any folder of split manifests)."""
    p = Path(path)
    if p.is_file():
        utts = read_manifest(p)
        spec_file = p.parent / "spec.json"
        name = utts[0].dataset if utts else p.stem
        splits = {p.stem: utts}
    else:
        if not p.is_dir():
            raise InputError(p, "no such manifest file or prepared-dataset folder")
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise InputError(
                p, "folder holds no *.jsonl manifests (run `emofuse datasets prepare` first)"
            )
        splits = {f.stem: read_manifest(f) for f in files}
        spec_file = p / "spec.json"
        meta = p / "dataset.json"
        name = json.loads(meta.read_text())["dataset"] if meta.is_file() else p.name
    if spec_file.is_file():
        spec = TaskSpec.model_validate_json(spec_file.read_text())
    else:
        labels = sorted(
            {u.labels.emotion for us in splits.values() for u in us if u.labels.emotion}
        )
        spec = TaskSpec(
            name=name,
            emotion_labels=labels or None,
            sentiment_range=None if labels else (-1.0, 1.0),
        )
    skipped_file = (p if p.is_dir() else p.parent) / "skipped.json"
    skipped = read_json(skipped_file, missing_ok=True, expect=dict) or {}
    return Dataset(name, spec, splits, skipped)


_PATH_OPTIONS = ("root", "pickle")
"""Recipe options that name a file or folder relative to the working folder (a folder
recipe's ``csv`` is relative to its root, so it stays as given)."""


class DatasetChoice(Config):
    """Where the utterances come from: a registered recipe or a prepared folder."""

    name: str | None = Field(None, description="Dataset recipe name (`emofuse datasets list`).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Recipe options (root, protocol, fold, ...)."
    )
    prepared: Path | None = Field(
        None, description="A folder written by `emofuse datasets prepare` (instead of name)."
    )
    train_split: str = Field("train", description="Split the model is trained on.")
    val_split: str = Field("val", description="Split used for early stopping and model selection.")
    test_split: str = Field("test", description="Split reported by fit_seeds (never used by fit).")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetChoice:
        if (self.name is None) == (self.prepared is None):
            raise ValueError("give exactly one of 'name' or 'prepared'")
        if self.prepared is not None and self.options:
            raise ValueError("'options' apply to a recipe name, not to a prepared folder")
        if self.prepared is not None:  # recorded in run.json: must resolve from any folder
            object.__setattr__(self, "prepared", self.prepared.expanduser().absolute())
        options = dict(self.options)
        for key in _PATH_OPTIONS:  # recorded in run.json: must resolve from any folder
            value = options.get(key)
            if isinstance(value, str | Path) and str(value):
                options[key] = str(Path(value).expanduser().absolute())
        object.__setattr__(self, "options", options)
        return self

    def load(self) -> Dataset:
        """Load the dataset (recipe options validated; errors name the dataset)."""
        if self.prepared is not None:
            return open_prepared(self.prepared)
        cls = DATASETS.get(self.name)  # type: ignore[arg-type]
        return cls(validate_config(cls.Config, self.options, f"dataset {self.name!r}")).dataset()

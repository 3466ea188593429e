"""The dataset-recipe interface, the ``DATASETS`` registry and prepared-dataset folders.

A recipe is one module with one class registered in :data:`DATASETS`. Its docstring is the
dataset card: what the corpus is, its licence, how to obtain it, the folder tree it expects,
its splits and its label map. ``prepare`` writes one manifest per split next to ``spec.json``.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from emofuse._version import __version__
from emofuse.config import Config, fingerprint, validate_config
from emofuse.errors import ConfigError, InputError
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
        utts = self.load()
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

"""Face-image folders in the FER2013 / ImageFolder layout (one folder per emotion).

Dataset card
============

**What it is.** Still face images labelled with a discrete emotion, e.g. FER2013 (35,887
48×48 grey faces: Training 28,709 / PublicTest 3,589 / PrivateTest 3,589), AffectNet or RAF-DB
exported as image folders. emofuse's shared data holds a *contrast-filtered* copy of the
FER2013 PrivateTest set (3,589 images; not comparable with published FER2013 numbers).

**Licence.** FER2013 (Goodfellow et al., 2013, ICML workshop / Kaggle) has no explicit licence;
research use. Other corpora: their own terms.

**How to get it.** FER2013 from the Kaggle "Challenges in Representation Learning: Facial
Expression Recognition" page, exported to image folders (the common ``train/`` + ``test/``
layout of the Kaggle "fer2013" image dataset).

**Expected tree** (any one of)::

    fer/train/angry/*.jpg     fer/angry/*.jpg          fer/labels.csv   (file,emotion[,split|usage])
    fer/test/happy/*.jpg      fer/happy/*.jpg          fer/test/angry/x.jpg ...
    (split folders)           (flat: option split)     (a manifest; file relative to the root)

``labels.csv`` wins when present. Split folders are ``train``/``training``, ``val``/``valid``/
``validation``/``dev``/``PublicTest`` and ``test``/``PrivateTest`` (case-insensitive); a usage
column ``fer2013_usage``/``usage`` with Training/PublicTest/PrivateTest maps the same way.
Files with other suffixes than jpg/jpeg/png/bmp are ignored; images are not decoded here
(the face extractor reports unreadable files). A class folder that is not a known label (after
the ``aliases``) is an error naming the folder.

**Utterance.** id = the relative path without suffix (``test__angry__PrivateTest_10131363``),
``media = {"image": path}``, no text.

**Splits.** As above; FER2013's PublicTest is conventionally the validation set and
PrivateTest the test set.

**Label map** (default, FER2013 ids): 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral. Change with ``labels`` (and ``aliases`` for other folder spellings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from emofuse.datasets.base import DATASETS, DatasetRecipe, RecipeConfig
from emofuse.datasets.folder import IMAGE_SUFFIXES, SPLIT_ALIASES, read_csv_rows, safe_id
from emofuse.errors import ConfigError, InputError
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

FER2013_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
DEFAULT_ALIASES = {
    "anger": "angry", "disgusted": "disgust", "fearful": "fear", "happiness": "happy",
    "sadness": "sad", "surprised": "surprise", "neutrality": "neutral",
}  # fmt: skip
IMAGE_SPLITS = {
    **SPLIT_ALIASES,
    "publictest": "val", "privatetest": "test", "publictest_set": "val",
}  # fmt: skip


class ImagesConfig(RecipeConfig):
    """Options of the ``images`` recipe."""

    labels: list[str] = Field(
        FER2013_LABELS, description="Ordered emotion labels (default: the 7 FER2013 classes)."
    )
    aliases: dict[str, str] = Field(
        DEFAULT_ALIASES,
        description="Folder/CSV spellings mapped to label names (case-insensitive keys).",
    )
    split: str = Field(
        "test",
        description="Split of images in a flat <root>/<emotion>/ tree or a CSV without split.",
    )
    task_name: str = Field("fer2013-7", description="Name of the task (TaskSpec.name).")


@DATASETS.register("images")
class ImagesRecipe(DatasetRecipe):
    """Face images in emotion folders (see the module docstring for the dataset card)."""

    folder = "fer2013_filtered"
    Config = ImagesConfig
    config: ImagesConfig

    def __init__(self, config: ImagesConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        if self.config.split not in ("train", "val", "test"):
            raise ConfigError(
                f"dataset 'images': split {self.config.split!r} is not train/val/test"
            )
        if len(set(self.config.labels)) != len(self.config.labels):
            raise ConfigError("dataset 'images': labels must be unique")

    def spec(self) -> TaskSpec:
        """Discrete emotion over the configured labels; WA (accuracy) headline, UA, weighted F1."""
        return TaskSpec(
            name=self.config.task_name,
            emotion_labels=list(self.config.labels),
            metrics=["wa", "ua", "weighted_f1"],
        )

    def check(self) -> None:
        """The root must exist (its tree is validated while loading)."""
        _ = self.root

    def label_of(self, name: str) -> str | None:
        """The configured label a folder/CSV name denotes, or ``None``."""
        low = name.strip().lower()
        by_lower = {lab.lower(): lab for lab in self.config.labels}
        if low in by_lower:
            return by_lower[low]
        alias = {k.lower(): v for k, v in self.config.aliases.items()}.get(low)
        return by_lower.get(alias.lower()) if alias else None

    def load(self) -> list[Utterance]:
        """Every image, from ``labels.csv`` or the folder tree."""
        root = self.root
        csv = root / "labels.csv"
        items = self._from_csv(csv) if csv.is_file() else self._from_tree(root)
        if not items:
            raise InputError(
                root,
                "no images found: expected <root>/<split>/<emotion>/*.jpg, "
                "<root>/<emotion>/*.jpg or <root>/labels.csv",
            )
        return [
            Utterance(
                id=safe_id(path.relative_to(root)),
                dataset=self.name,
                split=split,
                media={"image": str(path)},
                labels=Labels(emotion=label),
            )
            for path, label, split in items
        ]

    def _from_csv(self, csv_file: Path) -> list[tuple[Path, str, str]]:
        header, rows = read_csv_rows(csv_file)
        cols = {h.lower(): h for h in header}
        if "file" not in cols or not ({"emotion", "label"} & set(cols)):
            raise InputError(csv_file, f"needs 'file' and 'emotion' columns; header is {header}")
        label_col = cols.get("emotion") or cols["label"]
        split_col = next((cols[c] for c in ("split", "fer2013_usage", "usage") if c in cols), None)
        root = csv_file.parent
        out = []
        for n, row in enumerate(rows, 1):
            where = f"row {n} (line {n + 1})"
            path = root / row[cols["file"]]
            label = self.label_of(row[label_col])
            if label is None:
                raise InputError(
                    csv_file,
                    f"{where}: emotion {row[label_col]!r} is not one of {self.config.labels}",
                )
            split = self.config.split
            if split_col and row[split_col]:
                split = IMAGE_SPLITS.get(row[split_col].lower())
                if split is None:
                    raise InputError(csv_file, f"{where}: unknown split {row[split_col]!r}")
            if not path.is_file():
                raise InputError(csv_file, f"{where}: file not found: {path}")
            out.append((path, label, split))
        return out

    def _from_tree(self, root: Path) -> list[tuple[Path, str, str]]:
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        split_dirs = [d for d in subdirs if d.name.lower() in IMAGE_SPLITS]
        if split_dirs:
            others = [d.name for d in subdirs if d not in split_dirs]
            if others:
                raise InputError(
                    root / others[0],
                    "folder is neither a split (train/val/test) nor allowed beside split folders",
                )
            groups = [(IMAGE_SPLITS[d.name.lower()], d) for d in split_dirs]
        else:
            groups = [(self.config.split, root)]
        out = []
        for split, base in groups:
            for class_dir in sorted(d for d in base.iterdir() if d.is_dir()):
                if class_dir.name.startswith("."):
                    continue
                label = self.label_of(class_dir.name)
                if label is None:
                    raise InputError(
                        class_dir,
                        f"unknown emotion folder {class_dir.name!r}; labels are "
                        f"{self.config.labels} (set labels=… or aliases=… to accept it)",
                    )
                for f in sorted(class_dir.rglob("*")):
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                        out.append((f, label, split))
        return out

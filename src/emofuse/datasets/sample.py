"""A tiny bundled dataset for demos and smoke tests: three RAVDESS clips, no download.

Dataset card
============

**What it is.** Three utterances of actor 01 of RAVDESS saying statement 1, "Kids are talking
by the door": one audio-visual clip (neutral, ``.mp4``) and two speech clips (happy and angry,
16 kHz mono ``.wav``). It ships inside the package, so ``load_dataset("sample")`` works
anywhere; the README demo uses it.

**Licence.** RAVDESS (Livingstone & Russo 2018, *PLoS ONE* 13(5): e0196391), **CC BY-NC-SA
4.0**, https://zenodo.org/record/1188976 — see ``sample/ATTRIBUTION.md`` next to the files.

**How to get it.** Installed with emofuse (package data ``emofuse/datasets/sample/``).

**Expected tree**::

    sample/
      sample.csv                  path,text,label
      01-01-01-01-01-01-01.mp4    neutral (audio + video)
      03-01-03-02-01-01-01.wav    happy
      03-01-05-02-01-01-01.wav    angry
      ATTRIBUTION.md

**Splits.** Everything is ``test``.

**Label map.** The eight RAVDESS emotions, in RAVDESS code order: 0 neutral, 1 calm, 2 happy,
3 sad, 4 angry, 5 fearful, 6 disgust, 7 surprised (the sample uses neutral, happy, angry).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import Field

from emofuse.datasets.base import DATASETS
from emofuse.datasets.folder import FolderConfig, FolderRecipe

RAVDESS_EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def sample_dir() -> Path:
    """The folder holding the bundled sample media and ``sample.csv``."""
    return Path(str(files("emofuse.datasets") / "sample"))


class SampleConfig(FolderConfig):
    """Options of the ``sample`` recipe (the defaults describe the bundled files)."""

    csv: Path | None = Field(Path("sample.csv"), description="Manifest inside the sample folder.")
    labels: list[str] | None = Field(
        RAVDESS_EMOTIONS, description="Emotion label set (RAVDESS order)."
    )
    language: str | None = Field("en", description="Language of the transcripts.")


@DATASETS.register("sample")
class SampleRecipe(FolderRecipe):
    """The bundled three-clip RAVDESS sample (see the module docstring for the dataset card)."""

    Config = SampleConfig
    config: SampleConfig

    @property
    def root(self) -> Path:
        """The bundled sample folder, unless ``root`` is given."""
        if self.config.root is None:
            return sample_dir()
        return super().root

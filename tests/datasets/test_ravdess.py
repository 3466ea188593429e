import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.datasets.ravdess import EMOTIONS, actor_split, parse_code
from emofuse.errors import ConfigError, InputError


def test_real_selection_counts() -> None:
    ds = load_dataset("ravdess", root=shared_subdir("ravdess"))
    # data README §8: 192 speech clips, 24 actors x 8 emotions, 24 per emotion
    assert len(ds.all()) == 192
    assert Counter(u.labels.emotion for u in ds.all()) == {e: 24 for e in EMOTIONS}
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 128, "val": 32, "test": 32}
    assert {u.labels.extra["actor"] for u in ds["test"]} == {1, 2, 3, 4}
    assert {u.labels.extra["actor"] for u in ds["val"]} == {5, 6, 7, 8}
    assert Counter(u.labels.emotion for u in ds["test"]) == {e: 4 for e in EMOTIONS}
    assert ds.spec.name == "ravdess-8" and ds.spec.metrics == ["ua", "wa"]
    (av,) = [u for u in ds.all() if "video" in u.media]  # the one AV clip joins its audio
    assert av.id == "01-01-01-01-01-01" and set(av.media) == {"audio", "video"}
    assert av.labels.emotion == "neutral" and av.text == "Kids are talking by the door"


def test_every_actor_tested_once_over_folds() -> None:
    root = shared_subdir("ravdess")
    seen: Counter[int] = Counter()
    for k in range(6):
        ds = load_dataset("ravdess", root=root, fold=k)
        assert len(ds["test"]) == 32 and len(ds["val"]) == 32
        seen.update({u.labels.extra["actor"] for u in ds["test"]})
    assert seen == {a: 1 for a in range(1, 25)}
    assert actor_split(21, 6, 5) == "test" and actor_split(1, 6, 5) == "val"
    assert list(load_dataset("ravdess", root=root, fold=None).splits) == ["test"]


def test_original_download_layout(tmp_path: Path) -> None:
    """Actor_XX folders of 48 kHz originals, labels from names only (no labels.csv)."""
    src = shared_subdir("ravdess")
    names = [
        "03-01-05-02-02-01-12.wav",  # angry, strong, statement 2, actor 12
        "01-01-05-02-02-01-12.mp4",  # its AV file
        "02-01-05-02-02-01-12.mp4",  # its video-only file (AV preferred)
        "03-02-03-01-01-02-07.wav",  # song: skipped by default
        "02-01-08-01-01-01-03.mp4",  # video-only performance without audio
    ]
    for name in names:
        actor = name[-6:-4]
        dest = tmp_path / f"Actor_{actor}" / name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(src / "speech16k" / "03-01-01-01-01-01-01.wav", dest)
    (tmp_path / "Actor_12" / "README.txt").write_text("ignored")
    ds = load_dataset("ravdess", root=tmp_path, fold=2)  # test = actors 9-12, val = 13-16
    utts = {u.id: u for u in ds.all()}
    assert set(utts) == {"01-05-02-02-01-12", "01-08-01-01-01-03"}
    angry = utts["01-05-02-02-01-12"]
    assert angry.split == "test" and angry.labels.emotion == "angry"
    assert angry.text == "Dogs are sitting by the door" and angry.speaker == "actor12"
    assert angry.media["video"].endswith("01-01-05-02-02-01-12.mp4")
    assert angry.labels.extra["sex"] == "female" and angry.labels.extra["intensity"] == "strong"
    assert utts["01-08-01-01-01-03"].labels.emotion == "surprised"
    assert set(utts["01-08-01-01-01-03"].media) == {"video"}
    song = load_dataset("ravdess", root=tmp_path, vocal_channel="song").all()
    assert [u.labels.emotion for u in song] == ["happy"]


def test_bad_roots_and_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a RAVDESS root") as err:
        load_dataset("ravdess", root=tmp_path)
    assert err.value.path == str(tmp_path)
    (tmp_path / "03-01-09-01-01-01-01.wav").write_bytes(b"")
    with pytest.raises(InputError, match="not a valid RAVDESS code"):
        load_dataset("ravdess", root=tmp_path)
    with pytest.raises(ConfigError, match="folds"):
        load_dataset("ravdess", root=tmp_path, folds=5)
    with pytest.raises(ConfigError, match="fold 6"):
        load_dataset("ravdess", root=tmp_path, fold=6)
    assert parse_code("notes.wav") is None


def test_prepare_roundtrip(tmp_path: Path) -> None:
    recipe = DATASETS.get("ravdess")(root=shared_subdir("ravdess"), fold=1)
    back = open_prepared(recipe.prepare(tmp_path / "rav"))
    assert back.spec.name == "ravdess-8"
    assert {k: len(v) for k, v in back.splits.items()} == {"test": 32, "train": 128, "val": 32}
    assert back["test"][0] == recipe.dataset()["test"][0]

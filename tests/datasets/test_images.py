from collections import Counter
from pathlib import Path

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.errors import InputError

# data README §9: FER2013 PrivateTest, 3,589 images
FER_TEST = {
    "angry": 491, "disgust": 55, "fear": 528, "happy": 879,
    "neutral": 626, "sad": 594, "surprise": 416,
}  # fmt: skip


def test_fer2013_filtered_counts() -> None:
    ds = load_dataset("images", root=shared_subdir("fer2013_filtered"))
    assert list(ds.splits) == ["test"] and len(ds["test"]) == 3589
    assert Counter(u.labels.emotion for u in ds["test"]) == FER_TEST
    u = ds["test"][0]
    assert u.id == "test__angry__PrivateTest_10131363" and Path(u.media["image"]).is_file()
    fer7 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert ds.spec.emotion_labels == fer7


def test_tree_layouts_without_csv(tmp_path: Path) -> None:
    tree = tmp_path / "splits"
    for split, folder in [("Training", "happy"), ("PublicTest", "Surprised"), ("test", "anger")]:
        (tree / split / folder).mkdir(parents=True)
        (tree / split / folder / "a.jpg").write_bytes(b"jpeg bytes are not read")
    (tree / "test" / "anger" / "Thumbs.db").write_bytes(b"x")
    ds = load_dataset("images", root=tree)
    assert {s: [u.labels.emotion for u in v] for s, v in ds.splits.items()} == {
        "train": ["happy"], "val": ["surprise"], "test": ["angry"],
    }  # fmt: skip
    flat = load_dataset("images", root=tree / "Training", split="train")
    assert [u.id for u in flat["train"]] == ["happy__a"]


def test_unknown_class_folder_and_bad_roots(tmp_path: Path) -> None:
    (tmp_path / "test" / "contempt").mkdir(parents=True)
    with pytest.raises(InputError, match="unknown emotion folder 'contempt'") as err:
        load_dataset("images", root=tmp_path)
    assert err.value.path == str(tmp_path / "test" / "contempt")
    (tmp_path / "test" / "contempt" / "x.png").write_bytes(b"")
    ok = load_dataset("images", root=tmp_path, labels=["contempt"])  # configurable label set
    assert ok.spec.emotion_labels == ["contempt"] and len(ok.all()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images found") as err:
        load_dataset("images", root=empty)
    assert err.value.path == str(empty)
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("images", root=tmp_path / "missing")


def test_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,emotion\nx.jpg,bored\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 1 \(line 2\): emotion 'bored'"):
        load_dataset("images", root=tmp_path)
    (tmp_path / "labels.csv").write_text("file,emotion\nx.jpg,happy\n", encoding="utf-8")
    with pytest.raises(InputError, match="file not found"):
        load_dataset("images", root=tmp_path)


def test_prepare_roundtrip(tmp_path: Path) -> None:
    recipe = DATASETS.get("images")(root=shared_subdir("fer2013_filtered"))
    back = open_prepared(recipe.prepare(tmp_path / "fer"))
    assert len(back["test"]) == 3589 and back.spec == recipe.spec()

from pathlib import Path

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.errors import InputError

# data README §5: clips and (< 0 / = 0 / > 0) per split
EXPECTED = {
    "sims": {
        "train": (1368, 742, 207, 419), "val": (456, 248, 69, 139), "test": (457, 248, 69, 140),
    },
    "simsv2": {
        "train": (2722, 1310, 318, 1094), "val": (647, 325, 92, 230), "test": (1034, 488, 123, 423),
    },
}  # fmt: skip


def _signs(utts) -> tuple[int, int, int, int]:
    s = [u.labels.sentiment for u in utts]
    return len(s), sum(x < 0 for x in s), sum(x == 0 for x in s), sum(x > 0 for x in s)


@pytest.mark.parametrize("name", ["sims", "simsv2"])
def test_real_counts(name: str) -> None:
    ds = load_dataset(name, root=shared_subdir(name))
    assert {k: _signs(v) for k, v in ds.splits.items()} == EXPECTED[name]
    assert all(-1.0 <= u.labels.sentiment <= 1.0 for u in ds.all())
    u = ds["train"][0]
    assert u.language == "zh" and u.text and u.labels.extra["text_en"]
    assert ds.spec.sentiment_scheme == "sims" and ds.spec.sentiment_range == (-1.0, 1.0)
    assert ds.spec.metrics == ["acc2", "acc3", "acc5", "f1", "mae", "corr"]


def test_english_text_and_merbench_layout(tmp_path: Path) -> None:
    root = shared_subdir("sims")
    en = load_dataset("sims", root=root, text_language="en")
    zh = load_dataset("sims", root=root)
    assert en.all()[0].text == zh.all()[0].labels.extra["text_en"] and en.spec.language == "en"
    # without derived/: label.npz + transcription-engchi-polish.csv give the same labels
    mer = tmp_path / "sims"
    mer.mkdir()
    for f in ("label.npz", "transcription-engchi-polish.csv"):
        (mer / f).symlink_to(root / f)
    ds = load_dataset("sims", root=mer)
    a = {u.id: (u.split, u.labels.sentiment, u.text) for u in ds.all()}
    b = {u.id: (u.split, u.labels.sentiment, u.text) for u in zh.all()}
    assert a == b


def test_unimodal_labels_and_raw_media(tmp_path: Path) -> None:
    root = shared_subdir("sims")
    label_csv = tmp_path / "label.csv"
    label_csv.write_text(
        "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
        "video_0018,4,闭嘴，不是来抓你的。,-1.0,-0.8,-1.0,-0.6,Negative,train\n",
        encoding="utf-8",
    )
    ds = load_dataset("sims", root=root, label_csv=label_csv)
    u = next(u for u in ds.all() if u.id == "video_0018_0004")
    assert u.labels.extra["sentiment_text"] == -0.8 and u.labels.extra["sentiment_video"] == -0.6
    # the official release alone (label.csv + Raw/) is a root too
    official = tmp_path / "official"
    (official / "Raw" / "video_0018").mkdir(parents=True)
    (official / "Raw" / "video_0018" / "0004.mp4").write_bytes(b"")
    label_csv.rename(official / "label.csv")
    (only,) = load_dataset("sims", root=official).all()
    assert only.id == "video_0018_0004" and only.labels.sentiment == -1.0
    assert only.media["video"].endswith("video_0018/0004.mp4")
    assert only.labels.extra["sentiment_audio"] == -1.0


def test_bad_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not a sims root: missing derived/sims\.csv") as err:
        load_dataset("sims", root=tmp_path)
    assert err.value.path == str(tmp_path)


def test_prepare_roundtrip(tmp_path: Path) -> None:
    recipe = DATASETS.get("simsv2")(root=shared_subdir("simsv2"))
    back = open_prepared(recipe.prepare(tmp_path / "v2"))
    assert back.spec == recipe.spec() and len(back["test"]) == 1034
    assert back["val"][5] == recipe.dataset()["val"][5]

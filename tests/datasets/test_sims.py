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


# -- every number read is checked: synthetic corpora with NaN, inf and out-of-range values --


def test_derived_and_unimodal_bad_numbers_are_reported_per_clip(tmp_path: Path) -> None:
    root = tmp_path / "sims"
    (root / "derived").mkdir(parents=True)
    (root / "derived" / "sims.csv").write_text(
        "key,video_id,clip_id,split,sentiment,text_zh,text_en\n"
        "video_0001_0001,video_0001,0001,train,-0.8,好,good\n"
        "video_0001_0002,video_0001,0002,train,nan,坏,nan\n"
        "video_0001_0003,video_0001,0003,valid,inf,坏,inf\n"
        "video_0001_0004,video_0001,0004,test,1.4,坏,too high\n"
        "video_0002_0001,video_0002,0001,test,0.2,好,fine\n"
        "video_0002_0002,video_0002,0002,test,0.6,好,its unimodal is bad\n",
        encoding="utf-8",
    )
    (root / "label.csv").write_text(
        "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
        "video_0001,1,好,-0.8,-0.6,-1.0,-0.4,Negative,train\n"
        "video_0002,1,好,0.2,0.2,nan,0.2,Positive,test\n"
        "video_0002,2,好,0.6,0.6,0.6,-1.2,Positive,test\n"
        "video_0002,x,好,0.6,0.6,0.6,0.6,Positive,test\n",
        encoding="utf-8",
    )
    ds = load_dataset("sims", root=root)
    assert ds.skipped == {
        "video_0001_0002": "derived/sims.csv line 3: sentiment 'nan' is not a finite number",
        "video_0001_0003": "derived/sims.csv line 4: sentiment 'inf' is not a finite number",
        "video_0001_0004": "derived/sims.csv line 5: sentiment 1.4 lies outside [-1, 1]",
        "video_0002_0001": "label.csv line 3: label_A 'nan' is not a finite number",
        "video_0002_0002": "label.csv line 4: label_V -1.2 lies outside [-1, 1]",
        "video_0002_x": "label.csv line 5: clip_id 'x' is not a number",
    }
    (u,) = ds.all()
    assert (u.id, u.split, u.labels.sentiment, u.turn) == ("video_0001_0001", "train", -0.8, 0)
    assert u.labels.extra["sentiment_text"] == -0.6 and u.labels.extra["sentiment_video"] == -0.4


def test_npz_and_official_bad_numbers_are_reported_per_clip(tmp_path: Path) -> None:
    import numpy as np

    root = tmp_path / "simsv2"
    root.mkdir()
    corpora = {
        "train_corpus": {"video_0001_0001": {"val": 0.4}, "video_0001_0002": {"val": np.nan},
                         "nounderscore": {"val": 0.0}},
        "val_corpus": {"video_0002_0001": {"val": -np.inf}},
        "test_corpus": {"video_0003_0001": {"val": -1.5}, "video_0003_0002": {"val": -0.1}},
    }  # fmt: skip
    np.savez(root / "label.npz", **{k: np.array(v, dtype=object) for k, v in corpora.items()})
    (root / "transcription-engchi-polish.csv").write_text(
        "name,chinese,english\nvideo_0001_0001,好,good\n", encoding="utf-8"
    )
    ds = load_dataset("simsv2", root=root)
    assert ds.skipped == {
        "video_0001_0002": "label.npz (train_corpus): sentiment nan is not a finite number",
        "nounderscore": "label.npz (train_corpus): key is not <video_id>_<clip_id>",
        "video_0002_0001": "label.npz (val_corpus): sentiment -inf is not a finite number",
        "video_0003_0001": "label.npz (test_corpus): sentiment -1.5 lies outside [-1, 1]",
    }
    assert [(u.id, u.labels.sentiment) for u in ds.all()] == [
        ("video_0001_0001", 0.4), ("video_0003_0002", -0.1),
    ]  # fmt: skip
    official = tmp_path / "official"
    official.mkdir()
    (official / "label.csv").write_text(
        "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
        "video_0001,1,好,1e39,0,0,0,Positive,train\n"
        "video_0001,2,好,-0.2,-0.2,-0.2,-0.2,Negative,train\n",
        encoding="utf-8",
    )
    ds = load_dataset("sims", root=official)
    assert ds.skipped == {
        "video_0001_0001": "label.csv line 2: label '1e39' is too large (it overflows float32)"
    }
    assert [u.id for u in ds.all()] == ["video_0001_0002"]


def test_unusable_label_files_are_one_line_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "sims"
    (root / "derived").mkdir(parents=True)
    (root / "derived" / "sims.csv").write_bytes(b"")
    with pytest.raises(InputError, match=r"sims\.csv: CSV is empty"):
        load_dataset("sims", root=root)
    (root / "derived" / "sims.csv").write_text("key,sentiment\nv_1,0.2\n")
    with pytest.raises(InputError, match=r"sims\.csv: missing column\(s\) video_id"):
        load_dataset("sims", root=root)
    (root / "derived" / "sims.csv").write_text(
        "key,video_id,clip_id,split,sentiment,text_zh,text_en\nv_1,v,1,train,nan,a,b\n"
    )
    with pytest.raises(InputError, match=r"sims: no usable item \(v_1: derived/sims\.csv line 2"):
        load_dataset("sims", root=root)

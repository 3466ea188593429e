"""CMU-MOSI / CMU-MOSEI recipes on the real files: counts from shared/data/README.md §3–4."""

from __future__ import annotations

import shutil

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.errors import InputError

MOSI = {
    "train": (1284, 52, (552, 53, 679)),
    "val": (229, 10, (92, 13, 124)),
    "test": (686, 31, (379, 30, 277)),
}
MOSEI = {
    "train": (16326, 2249, (4738, 3540, 8048)),
    "val": (1871, 300, (506, 433, 932)),
    "test": (4659, 676, (1350, 1025, 2284)),
}


def _summary(ds):
    return {
        s: (
            len(us),
            len({u.dialogue_id for u in us}),
            (
                sum(u.labels.sentiment < 0 for u in us),
                sum(u.labels.sentiment == 0 for u in us),
                sum(u.labels.sentiment > 0 for u in us),
            ),
        )
        for s, us in ds.splits.items()
    }


@pytest.fixture(scope="module")
def mosi():
    return load_dataset("mosi", root=shared_subdir("mosi"))


@pytest.fixture(scope="module")
def mosei():
    return load_dataset("mosei", root=shared_subdir("mosei"), emotions=True)


def test_mosi_counts(mosi):
    assert _summary(mosi) == MOSI
    assert all(-3 <= u.labels.sentiment <= 3 for u in mosi.all())
    assert mosi.spec.sentiment_scheme == "mosi" and mosi.spec.sentiment_range == (-3.0, 3.0)
    assert mosi.spec.metrics[:2] == ["non0_acc2", "has0_acc2"]


def test_mosi_media_and_records(mosi):
    with_media = {u.id: u for u in mosi.all() if u.media}
    assert set(with_media) == {"Oz06ZWiO20M_6", "03bSnISJMiM_1"}
    clip = with_media["Oz06ZWiO20M_6"]
    assert clip.media["video"].endswith(
        "media/Oz06ZWiO20M_6.mp4"
    ) and clip.labels.sentiment == pytest.approx(-0.8)
    wav = with_media["03bSnISJMiM_1"]
    assert (
        set(wav.media) == {"audio"}
        and wav.labels.sentiment == pytest.approx(2.4)
        and wav.split == "train"
    )
    first = mosi["train"][0]
    assert (first.id, first.dialogue_id, first.turn, first.text) == (
        "OQvJTdtJ2H4_1",
        "OQvJTdtJ2H4",
        0,
        "IT COULDVE BEEN BETTER",
    )


def test_mosi_raw_root(tmp_path):
    (tmp_path / "OQvJTdtJ2H4").mkdir()
    (tmp_path / "OQvJTdtJ2H4" / "1.mp4").write_bytes(b"")
    ds = load_dataset("mosi", root=shared_subdir("mosi"), raw_root=tmp_path)
    assert ds["train"][0].media["video"] == str(tmp_path / "OQvJTdtJ2H4" / "1.mp4")
    with pytest.raises(InputError, match="no clip found"):
        load_dataset("mosi", root=shared_subdir("mosi"), raw_root=tmp_path / "OQvJTdtJ2H4")


def test_mosei_counts(mosei):
    assert _summary(mosei) == MOSEI
    assert (
        sum(u.text is not None for u in mosei.all()) == 22749
    )  # README: text for 22,749 of 22,856


def test_mosei_emotion_join(mosei):
    with_emotion = [u for u in mosei.all() if u.labels.emotion is not None]
    assert len(with_emotion) == 22846  # measured: 3,221 of 3,225 videos join exactly
    assert {u.labels.emotion for u in with_emotion} == set(mosei.spec.emotion_labels)
    plain = load_dataset("mosei", root=shared_subdir("mosei"))
    assert plain.spec.emotion_labels is None and all(u.labels.emotion is None for u in plain.all())


def test_mosei_records(mosei):
    u = mosei["train"][0]
    assert u.id == f"{u.dialogue_id}_{u.labels.extra['clip_index']}" and u.turn == 0
    no_text = [x for x in mosei.all() if x.text is None]
    assert len(no_text) == 107 and all("start_s" not in x.labels.extra for x in no_text)


@pytest.mark.parametrize(
    ("name", "keep", "missing"),
    [
        ("mosi", ["label.npz"], "derived/mosi.csv"),
        ("mosei", ["label.npz"], "derived/mosei_text_by_merbench_key.csv"),
    ],
)
def test_bad_root(tmp_path, name, keep, missing):
    for f in keep:
        shutil.copy(shared_subdir(name) / f, tmp_path)
    with pytest.raises(InputError) as err:
        load_dataset(name, root=tmp_path)
    assert str(tmp_path) in str(err.value) and missing in str(err.value)


def test_mosei_emotions_need_s3prl_file(tmp_path):
    (tmp_path / "derived").mkdir()
    shutil.copy(shared_subdir("mosei") / "label.npz", tmp_path)
    shutil.copy(
        shared_subdir("mosei") / "derived/mosei_text_by_merbench_key.csv", tmp_path / "derived"
    )
    assert len(load_dataset("mosei", root=tmp_path).all()) == 22856
    with pytest.raises(InputError, match=r"CMU_MOSEI_Labels\.csv"):
        load_dataset("mosei", root=tmp_path, emotions=True)


@pytest.mark.parametrize("name", ["mosi", "mosei"])
def test_prepare_roundtrip_and_idempotent(tmp_path, name):
    recipe = DATASETS.get(name)(root=shared_subdir(name))
    out = recipe.prepare(tmp_path / name)
    back = open_prepared(out)
    assert back.splits == recipe.dataset().splits and back.spec == recipe.spec()
    stamp = (out / "test.jsonl").stat().st_mtime_ns
    recipe.prepare(out)
    assert (out / "test.jsonl").stat().st_mtime_ns == stamp


# -- every number read is checked: synthetic corpora with NaN, inf, out-of-range, bad times --


def _label_npz(path, corpora):
    """A MERTools label.npz: ``{split}_corpus`` → ``{key: {'emo': 0, 'val': score}}``."""
    import numpy as np

    arrays = {}
    for split in ("train", "val", "test"):
        entries = {k: {"emo": 0, "val": v} for k, v in corpora.get(split, {}).items()}
        arrays[f"{split}_corpus"] = np.array(entries, dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def test_mosi_bad_numbers_are_reported_per_clip_and_left_out(tmp_path):
    root = tmp_path / "mosi"
    _label_npz(
        root / "label.npz",
        {
            "train": {"v_1": 1.2, "v_2": float("nan"), "v_3": float("inf"), "v_5": -0.4},
            "val": {"v_4": 4.5, "w_1": 1e300},
            "test": {"v_6": 0.0},
        },
    )
    (root / "derived").mkdir()
    (root / "derived" / "mosi.csv").write_text(
        "key,video_id,clip_id,split,sentiment,text,text_zh\n"
        "v_1,v,1,train,1.2,GOOD ONE,\n"
        "v_2,v,2,train,nan,NAN,\n"
        "v_3,v,3,train,inf,INF,\n"
        "v_4,v,4,val,4.5,TOO HIGH,\n"
        "v_5,v,5,train,-0.4,GOOD TWO,\n"
        "v_6,v,1.5,test,0,BAD CLIP,\n"
        "w_1,w,1,val,1e300,HUGE,\n",
        encoding="utf-8",
    )
    ds = load_dataset("mosi", root=root)
    assert ds.skipped == {
        "v_2": "label.npz (train_corpus): sentiment nan is not a finite number",
        "v_3": "label.npz (train_corpus): sentiment inf is not a finite number",
        "v_4": "label.npz (val_corpus): sentiment 4.5 lies outside [-3, 3]",
        "w_1": "label.npz (val_corpus): sentiment 1e+300 is too large (it overflows float32)",
        "v_6": "derived/mosi.csv line 7: clip_id '1.5' is not a whole number",
    }
    kept = [(u.id, u.split, u.labels.sentiment, u.turn, u.text) for u in ds.all()]
    assert kept == [("v_1", "train", 1.2, 0, "GOOD ONE"), ("v_5", "train", -0.4, 1, "GOOD TWO")]
    prepared = open_prepared(DATASETS.get("mosi")(root=root).prepare(tmp_path / "prepared"))
    assert prepared.skipped == ds.skipped and len(prepared.all()) == 2


def _mosei_root(tmp_path):
    root = tmp_path / "mosei"
    nan = float("nan")
    _label_npz(
        root / "label.npz",
        {
            "train": {"A_0": 1.0, "A_1": -2.0, "A_2": nan, "B_0": 0.5, "B_1": 0.0, "B_2": 0.5},
            "val": {"C_0": 3.5, "C_1": -1.0},
        },
    )
    (root / "derived").mkdir()
    (root / "derived" / "mosei_text_by_merbench_key.csv").write_text(
        "key,video_id,clip_index,start_s,split,sentiment,text\n"
        "A_0,A,0,0.0,train,1.0,hello\n"
        "A_1,A,1,nan,train,-2.0,bad start\n"
        "B_0,B,0,1.5,train,inf,bad score\n"
        "B_1,B,1,-1,train,0.0,negative start\n"
        "B_2,B,2,3.0,train,0.5,fine\n",
        encoding="utf-8",
    )
    (root / "CMU_MOSEI_Labels.csv").write_text(
        ",file,index,start,end,label2a,label2b,label6,label7,split\n"
        "0,A,0,-0.4,1.0,1,1,0,1,0\n"  # a negative first start is real CMU-SDK data: kept
        "1,A,1,1.0,2.0,0,-1,1,-2,0\n"
        "2,A,2,2.0,3.0,1,0,2,0,0\n"
        "3,B,0,0.0,1.0,1,1,1,1,0\n"
        "4,B,1,1.0,0.5,1,0,0,0,0\n"  # ends before it starts
        "5,B,2,2.0,3.0,1,1,3,1,0\n"
        "6,C,0,0.0,1.0,1,1,2,3,1\n"
        "7,C,1,1.0,2.0,0,-1,9,-1,1\n"  # label6 9 is no class
        "8,C,2,5.0,6.0,0,-1,nan,-1,3\n",  # fold 3 is never read
        encoding="utf-8",
    )
    return root


def test_mosei_bad_numbers_are_reported_per_clip_and_left_out(tmp_path):
    root = _mosei_root(tmp_path)
    text_csv = "derived/mosei_text_by_merbench_key.csv"
    ds = load_dataset("mosei", root=root, emotions=True)
    assert ds.skipped == {
        "A_2": "label.npz (train_corpus): sentiment nan is not a finite number",
        "C_0": "label.npz (val_corpus): sentiment 3.5 lies outside [-3, 3]",
        "A_1": f"{text_csv} line 3: start_s 'nan' is not a finite number",
        "B_0": f"{text_csv} line 4: sentiment 'inf' is not a finite number",
        "B_1": f"{text_csv} line 5: start_s -1 is negative",
        "CMU_MOSEI_Labels.csv line 6": "end 0.5 is not after start 1; video 'B' gets no emotion",
        "CMU_MOSEI_Labels.csv line 9": "label6 9 lies outside [0, 5]; video 'C' gets no emotion",
    }
    kept = {u.id: (u.labels.sentiment, u.text, u.labels.extra.get("start_s"), u.labels.emotion)
            for u in ds.all()}  # fmt: skip
    assert kept == {
        "A_0": (1.0, "hello", 0.0, "happy"),
        "B_2": (0.5, "fine", 3.0, None),
        "C_1": (-1.0, None, None, None),
    }
    assert [u.turn for u in ds["train"]] == [0, 0]  # rank among the clips kept


def test_unusable_label_files_are_one_line_naming_the_file(tmp_path):
    root = _mosei_root(tmp_path)
    (root / "label.npz").write_bytes(b"")
    with pytest.raises(InputError, match=r"label\.npz: cannot read label archive"):
        load_dataset("mosei", root=root)
    _label_npz(root / "label.npz", {"train": {"A_0": 1.0}})
    (root / "derived" / "mosei_text_by_merbench_key.csv").write_text("key,text\nA_0,hi\n")
    with pytest.raises(InputError, match=r"mosei_text_by_merbench_key\.csv: missing column"):
        load_dataset("mosei", root=root)
    mosi = tmp_path / "mosi"
    (mosi / "derived").mkdir(parents=True)
    (mosi / "label.npz").write_bytes(b"")
    (mosi / "derived" / "mosi.csv").write_bytes(b"")
    with pytest.raises(InputError, match=r"label\.npz: cannot read label archive"):
        load_dataset("mosi", root=mosi)

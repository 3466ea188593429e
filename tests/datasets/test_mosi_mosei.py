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

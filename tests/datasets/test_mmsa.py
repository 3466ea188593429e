"""MMSA pickle import/export on a small pickle written in the exact MMSA layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.datasets.mmsa import read_mmsa_pickle, write_mmsa_pickle
from emofuse.errors import InputError

rng = np.random.default_rng(0)


def _split(ids, sentiments, t_len=6, a_dim=5, v_dim=4, sims=False):
    n = len(ids)
    a_len, v_len = rng.integers(1, t_len + 1, n), rng.integers(1, t_len + 1, n)
    audio = np.zeros((n, t_len, a_dim), np.float32)
    vision = np.zeros((n, t_len, v_dim), np.float32)
    for i in range(n):
        audio[i, : a_len[i]] = rng.normal(size=(a_len[i], a_dim))
        vision[i, : v_len[i]] = rng.normal(size=(v_len[i], v_dim))
    s = np.asarray(sentiments, np.float32)
    block = {
        "raw_text": [f"clip {i}" for i in ids],
        "audio": audio,
        "vision": vision,
        "id": list(ids),
        "text": rng.normal(size=(n, 3, 8)).astype(np.float32),
        "text_bert": rng.integers(0, 100, size=(n, 3, 8)),
        "audio_lengths": [int(x) for x in a_len],
        "vision_lengths": [int(x) for x in v_len],
        "annotations": ["Negative" if x < 0 else "Neutral" if x == 0 else "Positive" for x in s],
        "classification_labels": np.asarray(
            [0 if x < 0 else 1 if x == 0 else 2 for x in s], np.float32
        ),
        "regression_labels": s,
    }
    if sims:
        for m in "TAV":
            block[f"regression_labels_{m}"] = np.clip(s + 0.2, -1, 1)
    return block


@pytest.fixture
def mmsa_pickle(tmp_path):
    data = {
        "train": _split(["vidA$_$2", "vidA$_$1", "vidB$_$1"], [1.4, -0.6, 0.0]),
        "valid": _split(["vidC$_$1"], [2.2]),
        "test": _split(["vidD$_$1", "vidD$_$10", "vidD$_$3"], [-3.0, 0.2, -1.0]),
    }
    p = tmp_path / "unaligned_50.pkl"
    with p.open("wb") as fh:
        pickle.dump(data, fh)
    return p, data


def test_read(mmsa_pickle):
    path, data = mmsa_pickle
    splits, feats = read_mmsa_pickle(path)
    assert {s: len(u) for s, u in splits.items()} == {"train": 3, "val": 1, "test": 3}
    a2 = splits["train"][0]
    assert (a2.id, a2.dialogue_id, a2.turn, a2.text) == ("vidA_2", "vidA", 1, "clip vidA$_$2")
    assert a2.labels.sentiment == pytest.approx(1.4) and a2.labels.sentiment_class == "positive"
    assert a2.labels.extra["mmsa_id"] == "vidA$_$2"
    assert [u.turn for u in splits["test"]] == [0, 2, 1]  # clip 10 sorts after clip 3
    block = data["train"]
    f = feats["vidA_2"]
    assert f["audio"].shape == (block["audio_lengths"][0], 5)
    np.testing.assert_array_equal(f["audio"], block["audio"][0][: block["audio_lengths"][0]])
    np.testing.assert_array_equal(f["vision"], block["vision"][0][: block["vision_lengths"][0]])
    np.testing.assert_array_equal(f["text"], block["text"][0])
    np.testing.assert_array_equal(f["text_bert"], block["text_bert"][0])


def test_roundtrip(tmp_path, mmsa_pickle):
    path, data = mmsa_pickle
    splits, feats = read_mmsa_pickle(path)
    out = write_mmsa_pickle(tmp_path / "again.pkl", splits, feats, seq_len=6)
    with out.open("rb") as fh:
        raw = pickle.load(fh)
    assert set(raw) == {"train", "valid", "test"}
    for key in (
        "audio",
        "vision",
        "text",
        "text_bert",
        "regression_labels",
        "classification_labels",
    ):
        np.testing.assert_array_equal(raw["train"][key], data["train"][key])
    for key in ("id", "raw_text", "annotations", "audio_lengths", "vision_lengths"):
        assert list(raw["test"][key]) == list(data["test"][key])
    splits2, feats2 = read_mmsa_pickle(out)
    assert splits2 == splits
    assert feats2.keys() == feats.keys()
    for uid in feats:
        for k in feats[uid]:
            np.testing.assert_array_equal(feats2[uid][k], feats[uid][k])


def test_sims_unimodal_labels_roundtrip(tmp_path):
    p = tmp_path / "sims.pkl"
    with p.open("wb") as fh:
        pickle.dump({"train": _split(["v$_$1", "v$_$2"], [-0.8, 0.4], sims=True)}, fh)
    splits, feats = read_mmsa_pickle(p)
    assert splits["train"][0].labels.extra["sentiment_audio"] == pytest.approx(-0.6)
    write_mmsa_pickle(tmp_path / "b.pkl", splits, feats)
    assert read_mmsa_pickle(tmp_path / "b.pkl")[0] == splits


def test_recipe(tmp_path, mmsa_pickle):
    path, _ = mmsa_pickle
    ds = load_dataset("mmsa", pickle=path, dataset_name="mosi", scheme="mosi")
    assert ds.spec.name == "mosi" and ds.spec.sentiment_range == (-3.0, 3.0)
    assert ds.counts("sentiment_class")["test"] == {"negative": 2, "positive": 1}
    sims = DATASETS.get("mmsa")(pickle=path, dataset_name="sims", scheme="sims", language="zh")
    assert sims.spec().sentiment_range == (-1.0, 1.0) and sims.spec().language == "zh"
    out = sims.prepare(tmp_path / "prepared")
    assert open_prepared(out).splits == sims.dataset().splits
    stamp = (out / "train.jsonl").stat().st_mtime_ns
    sims.prepare(out)
    assert (out / "train.jsonl").stat().st_mtime_ns == stamp


def test_bad_pickles(tmp_path, mmsa_pickle):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("mmsa", pickle=tmp_path / "none.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"junk\.pkl: not a readable pickle"):
        read_mmsa_pickle(junk)
    _, data = mmsa_pickle
    del data["valid"]["vision_lengths"]
    data["train"]["raw_text"] = data["train"]["raw_text"][:2]
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps(data))
    with pytest.raises(InputError, match="'raw_text' has 2 entries"):
        read_mmsa_pickle(broken)


def test_write_errors(tmp_path, mmsa_pickle):
    splits, feats = read_mmsa_pickle(mmsa_pickle[0])
    del feats["vidA_2"]["audio"]
    with pytest.raises(InputError, match="vidA_2"):
        write_mmsa_pickle(tmp_path / "x.pkl", splits, feats)
    with pytest.raises(InputError, match="dev"):
        write_mmsa_pickle(tmp_path / "x.pkl", {"dev": []}, feats)


def test_labels_outside_the_scheme_are_reported_per_item_and_left_out(tmp_path):
    block = _split(["v$_$1", "v$_$2", "v$_$3", "v$_$4"], [0.4, 1.8, -0.2, 0.0], sims=True)
    block["regression_labels_A"][2] = np.nan
    block["regression_labels_V"][3] = np.inf
    p = tmp_path / "sims.pkl"
    p.write_bytes(pickle.dumps({"train": block}))
    ds = load_dataset("mmsa", pickle=p, scheme="sims")
    assert ds.skipped == {
        "v_2": "sims.pkl (train 'v$_$2'): regression label 1.8 lies outside [-1, 1]",
        "v_3": "sims.pkl (train 'v$_$3'): sentiment_audio nan is not a finite number",
        "v_4": "sims.pkl (train 'v$_$4'): sentiment_vision inf is not a finite number",
    }
    (kept,) = ds.all()
    assert kept.id == "v_1" and kept.labels.sentiment == pytest.approx(0.4)
    assert kept.labels.extra["sentiment_text"] == pytest.approx(0.6)
    # the same labels are inside MOSI's [-3, 3]: only the unimodal ones are bad there
    assert set(load_dataset("mmsa", pickle=p, scheme="mosi").skipped) == {"v_3", "v_4"}


def test_lengths_and_exports_that_do_not_fit_are_one_line(tmp_path, mmsa_pickle):
    path, data = mmsa_pickle
    data["test"]["audio_lengths"][1] = float("nan")
    bad = tmp_path / "lengths.pkl"
    bad.write_bytes(pickle.dumps(data))
    with pytest.raises(InputError, match=r"lengths\.pkl: split 'test': item 1, id 'vidD\$_\$10': "
                                         r"audio_lengths nan is not a finite number"):  # fmt: skip
        read_mmsa_pickle(bad)
    data["test"]["audio_lengths"][1] = 7  # longer than the padded sequence (6)
    bad.write_bytes(pickle.dumps(data))
    with pytest.raises(InputError, match=r"audio_lengths 7 lies outside \[0, 6\]"):
        read_mmsa_pickle(bad)
    splits, feats = read_mmsa_pickle(path)
    feats["vidA_1"]["audio"] = feats["vidA_1"]["audio"].astype(np.float64)
    feats["vidA_1"]["audio"][0, 0] = 1e300  # a float64 that overflows float32
    with pytest.raises(InputError, match=r"vidA_1: audio features hold 1 value\(s\) that are NaN, "
                                         r"infinite or overflow float32"):  # fmt: skip
        write_mmsa_pickle(tmp_path / "out.pkl", splits, feats)
    splits, feats = read_mmsa_pickle(path)
    huge = splits["train"][0].labels.model_copy(update={"sentiment": 1e300})
    splits["train"][0] = splits["train"][0].model_copy(update={"labels": huge})
    with pytest.raises(InputError, match=r"vidA_2: labels\.sentiment 1e\+300 is too large"):
        write_mmsa_pickle(tmp_path / "out.pkl", splits, feats)
    assert not (tmp_path / "out.pkl").exists()

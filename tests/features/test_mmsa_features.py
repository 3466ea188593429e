"""MMSA pickle features as model inputs: real MOSI shapes, aligned and unaligned, dirty values."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from emofuse.data import FeatureRef, FeatureTable, input_specs
from emofuse.datasets import load_dataset
from emofuse.datasets.mmsa import read_mmsa_pickle, write_mmsa_pickle
from emofuse.errors import ConfigError, EmofuseWarning, InputError
from emofuse.features import FeatureStore, get_extractor

# MOSI in MMSA: text 50 x 768 (BERT), audio 5-d COVAREP, vision 20-d Facet; unaligned audio 375
# and vision 500 steps, aligned 50 / 50.
TEXT, A_DIM, V_DIM = 768, 5, 20


def _split(ids, rng, *, aligned: bool, lengths: bool = True):
    n = len(ids)
    t_a, t_v = (50, 50) if aligned else (375, 500)
    a_len, v_len = rng.integers(10, t_a + 1, n), rng.integers(10, t_v + 1, n)
    audio = np.zeros((n, t_a, A_DIM), np.float64)  # MMSA stores float64 for some features
    vision = np.zeros((n, t_v, V_DIM), np.float32)
    for i in range(n):
        audio[i, : a_len[i]] = rng.normal(size=(a_len[i], A_DIM))
        vision[i, : v_len[i]] = rng.normal(size=(v_len[i], V_DIM))
    s = rng.uniform(-3, 3, n).round(1).astype(np.float32)
    block = {
        "id": list(ids),
        "raw_text": [f"clip {i}" for i in ids],
        "text": rng.normal(size=(n, 50, TEXT)).astype(np.float32),
        "text_bert": rng.integers(0, 30000, size=(n, 3, 50)),
        "audio": audio,
        "vision": vision,
        "annotations": ["Negative" if x < 0 else "Neutral" if x == 0 else "Positive" for x in s],
        "classification_labels": np.asarray([0 if x < 0 else 1 if x == 0 else 2 for x in s]),
        "regression_labels": s,
    }
    if lengths:
        block["audio_lengths"] = [int(x) for x in a_len]
        block["vision_lengths"] = [int(x) for x in v_len]
    return block


def _pickle(path: Path, *, aligned: bool, lengths: bool = True, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    data = {
        split: _split([f"{split}{k // 3}$_${k % 3}" for k in range(n)], rng, aligned=aligned,
                      lengths=lengths)
        for split in ("train", "valid", "test")
    }
    with path.open("wb") as fh:
        pickle.dump(data, fh)
    return path


def _refs(pkl: Path) -> dict[str, FeatureRef]:
    return {
        m: FeatureRef.parse({"extractor": "mmsa", "output": o, "options": {"pickle": str(pkl)}})
        for m, o in (("text", "text"), ("audio", "audio"), ("face", "vision"))
    }


@pytest.mark.parametrize(("aligned", "lengths"), [(False, True), (True, True), (True, False)])
def test_pickle_features_are_served_like_extracted_ones(tmp_path, aligned, lengths):
    pkl = _pickle(tmp_path / "mosi.pkl", aligned=aligned, lengths=lengths)
    ds = load_dataset("mmsa", pickle=pkl)
    specs = input_specs(_refs(pkl))
    assert {m: (s.dim, s.kind) for m, s in specs.items()} == {
        "text": (TEXT, "sequence"), "audio": (A_DIM, "sequence"), "face": (V_DIM, "sequence")
    }
    table = FeatureTable.load(ds["train"], _refs(pkl), FeatureStore(tmp_path / "cache"), ds.spec)
    assert len(table) == 12 and not table.skipped
    _, raw = read_mmsa_pickle(pkl)
    first = table.items[0]
    uid = first.utt.id
    # padding removed by the stored lengths (or read whole without them), then cut to the
    # model's length limit like any extracted sequence
    from emofuse.data.table import _fit_length

    want = _fit_length(raw[uid]["audio"].astype(np.float32), "sequence", 300, "even")
    np.testing.assert_array_equal(first.features["audio"], want)
    n_audio = len(raw[uid]["audio"])
    assert n_audio == (50 if aligned and not lengths else n_audio)
    assert first.features["text"].shape == (50, TEXT)
    if aligned and not lengths:
        assert first.features["face"].shape == (50, V_DIM)


def test_nonfinite_values_are_counted_reported_and_zeroed_or_refused(tmp_path):
    pkl = tmp_path / "dirty.pkl"
    _pickle(pkl, aligned=True)
    with pkl.open("rb") as fh:
        data = pickle.load(fh)
    data["train"]["audio"][0, 0, 0] = -np.inf  # MMSA's loader zeroes this one
    data["train"]["audio"][0, 1, 0] = np.nan
    data["train"]["audio"][1, 0, 1] = 1e300  # float64 that overflows float32
    data["test"]["vision"][2, 0, 3] = np.inf
    with pkl.open("wb") as fh:
        pickle.dump(data, fh)
    ext = get_extractor("mmsa", pickle=str(pkl))
    with pytest.warns(EmofuseWarning, match=r"dirty\.pkl: non-finite feature values set to 0 "
                      r"\(audio: 1 NaN, 1 -inf, 1 float32 overflow; vision: 1 \+inf\)"):
        ext.ensure_ready()
    ds = load_dataset("mmsa", pickle=pkl)
    out = ext.extract_batch(ds["train"][:2])
    assert all(np.isfinite(o["audio"]).all() for o in out)
    assert out[0]["audio"][0, 0] == 0.0 and out[1]["audio"][0, 1] == 0.0
    strict = get_extractor("mmsa", pickle=str(pkl), nonfinite="error")
    with pytest.raises(InputError, match=r"dirty\.pkl: non-finite feature values \(audio: 1 NaN"):
        strict.outputs()


def test_labels_ids_and_references_that_cannot_be_used_are_one_line(tmp_path):
    pkl = _pickle(tmp_path / "m.pkl", aligned=True, n=3)
    with pkl.open("rb") as fh:
        data = pickle.load(fh)
    data["train"]["id"][0] = "some/dir/video $_$ 1 "  # '/' and spaces in MMSA ids
    with (tmp_path / "ids.pkl").open("wb") as fh:
        pickle.dump(data, fh)
    ids = [u.id for u in load_dataset("mmsa", pickle=tmp_path / "ids.pkl").all()]
    assert "some__dir__video_1" in ids
    data["train"]["regression_labels"][1] = np.nan
    with (tmp_path / "nan.pkl").open("wb") as fh:
        pickle.dump(data, fh)
    with pytest.raises(InputError, match=r"nan\.pkl: split 'train': 1 regression label\(s\) are "
                                         r"not finite \(first: item 1"):
        load_dataset("mmsa", pickle=tmp_path / "nan.pkl")
    with pytest.raises(ConfigError, match="text_bert holds BERT word-piece ids"):
        input_specs({"text": FeatureRef.parse(
            {"extractor": "mmsa", "output": "text_bert", "options": {"pickle": str(pkl)}})})
    with pytest.raises(ConfigError, match="mmsa:vision describes face, not audio"):
        input_specs({"audio": FeatureRef.parse(
            {"extractor": "mmsa", "output": "vision", "options": {"pickle": str(pkl)}})})


def test_export_import_round_trip_is_exact(tmp_path):
    pkl = _pickle(tmp_path / "u.pkl", aligned=False)
    splits, feats = read_mmsa_pickle(pkl)
    again = write_mmsa_pickle(tmp_path / "again.pkl", splits, feats)
    splits2, feats2 = read_mmsa_pickle(again)
    assert {s: [u.model_dump() for u in us] for s, us in splits.items()} == {
        s: [u.model_dump() for u in us] for s, us in splits2.items()
    }
    for uid, f in feats.items():
        for name in ("text", "audio", "vision"):
            np.testing.assert_array_equal(f[name].astype(np.float32), feats2[uid][name])


def test_train_egmf_and_mister_on_three_mmsa_modalities_then_evaluate(tmp_path):
    from emofuse.evaluate import evaluate
    from emofuse.train import TrainConfig, fit

    pkl = _pickle(tmp_path / "mosi.pkl", aligned=False, n=9)
    for model in ("egmf", "mister"):
        cfg = TrainConfig.model_validate(
            {
                "dataset": {"name": "mmsa", "options": {"pickle": str(pkl)}},
                "features": {"text": "mmsa:text", "audio": "mmsa:audio", "vision": "mmsa:vision"},
                "cache": str(tmp_path / "cache"),
                "model": {"name": model, "options": {"hidden": 16}},
                "epochs": 1,
                "batch_size": 4,
                "out_dir": str(tmp_path / model),
                "num_threads": 1,
            }
        )
        assert cfg.features["face"].options["pickle"] == str(pkl)  # from the dataset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmofuseWarning)  # a one-epoch model may collapse
            res = fit(cfg)
        ev = evaluate(res.model_dir, split="test", cache=tmp_path / "cache")
        assert {"non0_acc2", "mae", "corr"} <= set(ev.metrics)
        assert ev.predictions[0].modalities == ["audio", "face", "text"]
        # the same numbers under MMSA's names
        from emofuse.metrics import field_names

        mmsa = field_names(ev.metrics, ev.task, "mmsa")
        assert mmsa["Non0_acc_2"] == ev.metrics["non0_acc2"] and mmsa["MAE"] == ev.metrics["mae"]

"""MELD recipe on the real CSVs: counts from shared/data/README.md §1."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.datasets.meld import EMOTIONS, normalize_text, parse_time
from emofuse.errors import InputError

EMOTION_COUNTS = {
    "train": {
        "neutral": 4710,
        "joy": 1743,
        "surprise": 1205,
        "anger": 1109,
        "sadness": 683,
        "disgust": 271,
        "fear": 268,
    },
    "val": {
        "neutral": 470,
        "joy": 163,
        "surprise": 150,
        "anger": 153,
        "sadness": 111,
        "disgust": 22,
        "fear": 40,
    },
    "test": {
        "neutral": 1256,
        "joy": 402,
        "surprise": 281,
        "anger": 345,
        "sadness": 208,
        "disgust": 68,
        "fear": 50,
    },
}
SENTIMENT_COUNTS = {
    "train": {"negative": 2945, "neutral": 4710, "positive": 2334},
    "val": {"negative": 406, "neutral": 470, "positive": 233},
    "test": {"negative": 833, "neutral": 1256, "positive": 521},
}
ROWS = {"train": 9989, "val": 1109, "test": 2610}
DIALOGUES = {"train": 1038, "val": 114, "test": 280}
DYADIC = {"train": (12840, 2160), "val": (1462, 270), "test": (3400, 577)}


@pytest.fixture(scope="module")
def meld():
    return load_dataset("meld", root=shared_subdir("meld"))


def test_registered():
    assert "meld" in DATASETS.names()


def test_counts_match_readme(meld):
    assert {s: len(u) for s, u in meld.splits.items()} == ROWS
    assert meld.counts("emotion") == EMOTION_COUNTS
    assert meld.counts("sentiment_class") == SENTIMENT_COUNTS
    assert {s: len({u.dialogue_id for u in us}) for s, us in meld.splits.items()} == DIALOGUES


def test_records(meld):
    first = meld["train"][0]
    assert first.id == "train_dia0_utt0" and first.dialogue_id == "train_dia0" and first.turn == 0
    assert first.speaker == "Chandler"
    assert first.text.startswith("also I was the point person on my company\u2019s transition")
    assert first.labels.extra["episode_start_s"] == pytest.approx(16 * 60 + 16.059)
    assert first.start is None and first.media == {}
    ids = [u.id for u in meld.all()]
    assert len(ids) == len(
        set(ids)
    )  # dialogue ids repeat across splits; split prefixes keep ids unique
    assert {u.dialogue_id.split("_")[0] for u in meld["val"]} == {"val"}


def test_spec_uses_official_index_order(meld):
    assert meld.spec.name == "meld-7"
    assert (
        meld.spec.emotion_labels
        == ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
        == EMOTIONS
    )
    assert meld.spec.conversational and meld.spec.metrics[0] == "weighted_f1"


def test_dyadic_counts():
    ds = load_dataset("meld", root=shared_subdir("meld"), dyadic=True)
    got = {s: (len(us), len({u.dialogue_id for u in us})) for s, us in ds.splits.items()}
    assert got == DYADIC
    u = ds["train"][0]
    assert "old_dialogue_id" in u.labels.extra and "sr_no" not in u.labels.extra


def test_raw_root_paths(tmp_path):
    raw = tmp_path / "MELD.Raw"
    for folder in ("train_splits", "dev_splits_complete", "output_repeated_splits_test"):
        (raw / folder).mkdir(parents=True)
    ds = load_dataset("meld", root=shared_subdir("meld"), raw_root=raw)
    assert ds["val"][0].media["video"] == str(raw / "dev_splits_complete" / "dia0_utt0.mp4")
    assert ds["test"][5].media["video"].startswith(str(raw / "output_repeated_splits_test"))
    custom = {"train": "train_splits", "val": "dev_splits_complete", "test": "nope"}
    with pytest.raises(InputError, match="nope"):
        load_dataset("meld", root=shared_subdir("meld"), raw_root=raw, raw_split_folders=custom)


def test_bad_root_names_root_and_file(tmp_path):
    shutil.copy(shared_subdir("meld") / "train_sent_emo.csv", tmp_path)
    with pytest.raises(InputError) as err:
        load_dataset("meld", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "dev_sent_emo.csv" in str(err.value)
    assert "train_sent_emo.csv" not in str(err.value)


def test_bad_label_names_file(tmp_path):
    src = shared_subdir("meld")
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        shutil.copy(src / name, tmp_path)
    p = tmp_path / "dev_sent_emo.csv"
    p.write_text(
        p.read_text(encoding="utf-8").replace(",sadness,", ",melancholy,", 1), encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"dev_sent_emo\.csv \(line \d+\).*melancholy"):
        load_dataset("meld", root=tmp_path)


def test_prepare_roundtrip_and_idempotent(tmp_path, meld):
    recipe = DATASETS.get("meld")(root=shared_subdir("meld"))
    out = recipe.prepare(tmp_path / "meld")
    back = open_prepared(out)
    assert back.splits == meld.splits and back.spec == meld.spec and back.name == "meld"
    mtime = (out / "train.jsonl").stat().st_mtime_ns
    assert recipe.prepare(out) == out
    assert (out / "train.jsonl").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("You must\x92ve  had it\x85 ", "You must\u2019ve had it\u2026"),
        ("It\u00e2\u20ac\u2122s fine", "It\u2019s fine"),
        ("caf\u00e9 \u2014 ok", "caf\u00e9 \u2014 ok"),
    ],
)
def test_normalize_text(raw, clean):
    assert normalize_text(raw) == clean


def test_normalize_ascii_and_time():
    assert (
        normalize_text("don\u2019t \u2014 \u201cno\u201d\u2026", ascii_punctuation=True)
        == 'don\'t - "no"...'
    )
    assert parse_time("00:16:16,059") == pytest.approx(976.059)
    with pytest.raises(InputError, match="bad time"):
        parse_time("16:16")


def test_no_typographic_loss(meld):
    c = Counter(ch for u in meld.all() for ch in u.text if ord(ch) > 127)
    assert c["\u2019"] > 4000 and not any(0x80 <= ord(ch) < 0xA0 for ch in c)


def test_empty_or_broken_csvs_are_one_line_naming_the_file(tmp_path):
    """Every CSV a recipe reads through pandas fails the same way: empty, not UTF-8, malformed."""
    from emofuse.datasets.base import read_csv_table
    from emofuse.errors import InputError

    empty = tmp_path / "train_sent_emo.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"train_sent_emo\.csv: CSV file is empty"):
        read_csv_table(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.csv: CSV file is not UTF-8"):
        read_csv_table(latin)
    with pytest.raises(InputError, match="does not exist"):
        read_csv_table(tmp_path / "missing.csv")
    (tmp_path / "dev_sent_emo.csv").write_text("x\n")
    (tmp_path / "test_sent_emo.csv").write_text("x\n")
    with pytest.raises(InputError, match=r"train_sent_emo\.csv: CSV file is empty"):
        load_dataset("meld", root=tmp_path)


# -- every number read is checked: a synthetic corpus with NaN, inf, out-of-range, bad times --

_HEAD = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
    "StartTime,EndTime\n"
)


def _row(sr, utt, season="3", episode="15", start="0:00:01,000", end="0:00:02,500", dia="0"):
    return f'{sr},Hi.,Ross,joy,positive,{dia},{utt},{season},{episode},"{start}","{end}"\n'


def test_bad_numbers_are_reported_per_utterance_and_left_out(tmp_path):
    (tmp_path / "train_sent_emo.csv").write_text(
        _HEAD
        + _row(1, 0)
        + _row(2, 1, season="nan")
        + _row(3, 2, episode="inf")
        + _row(4, 3, season="12")
        + _row(5, 4, start="0:00:09,000", end="0:00:08,000")
        + _row(6, 5, start="0:61:00,000")
        + _row(7, "inf")
        + _row(8, 7, start="0:00:04,000", end="0:00:04,000")  # zero length, as real dia155_utt3
        + _row("1e39", 8),
        encoding="utf-8",
    )
    for name in ("dev_sent_emo.csv", "test_sent_emo.csv"):
        (tmp_path / name).write_text(_HEAD + _row(1, 0), encoding="utf-8")
    ds = load_dataset("meld", root=tmp_path)
    assert ds.skipped == {
        "train_dia0_utt1": "train_sent_emo.csv line 3: Season 'nan' is not a finite number",
        "train_dia0_utt2": "train_sent_emo.csv line 4: Episode 'inf' is not a finite number",
        "train_dia0_utt3": "train_sent_emo.csv line 5: Season 12 lies outside [1, 10]",
        "train_dia0_utt4": "train_sent_emo.csv line 6: EndTime 8 is not after StartTime 9",
        "train_dia0_utt5": "train_sent_emo.csv line 7: StartTime '0:61:00,000' is a bad time, "
        "minutes and seconds must be below 60",
        "train_sent_emo.csv line 8": "Utterance_ID 'inf' is not a finite number",
        "train_dia0_utt8": "train_sent_emo.csv line 10: Sr No. '1e39' is too large "
        "(it overflows float32)",
    }
    kept = [(u.id, u.labels.extra["episode_start_s"], u.labels.extra["episode_end_s"])
            for u in ds["train"]]  # fmt: skip
    assert kept == [("train_dia0_utt0", 1.0, 2.5), ("train_dia0_utt7", 4.0, 4.0)]
    assert len(ds["val"]) == len(ds["test"]) == 1


def test_real_zero_length_row_is_kept():
    """The official test CSV holds one row whose StartTime equals its EndTime (dia155_utt3)."""
    ds = load_dataset("meld", root=shared_subdir("meld"))
    u = next(x for x in ds["test"] if x.id == "test_dia155_utt3")
    assert u.labels.extra["episode_start_s"] == u.labels.extra["episode_end_s"] == 752.632
    assert ds.skipped == {}


def test_wrong_columns_are_one_line_naming_the_file(tmp_path):
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        (tmp_path / name).write_text(_HEAD + _row(1, 0), encoding="utf-8")
    (tmp_path / "dev_sent_emo.csv").write_text("Utterance,Speaker\nHi.,Ross\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"dev_sent_emo\.csv: missing column\(s\) Emotion"):
        load_dataset("meld", root=tmp_path)

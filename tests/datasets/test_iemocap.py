"""IEMOCAP recipe on the real files: counts from shared/data/README.md §2."""

from __future__ import annotations

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.datasets.iemocap import parse_emo_evaluation, parse_transcription
from emofuse.errors import ConfigError, InputError

ERC6 = {
    "train": {
        "happy": 451,
        "sad": 771,
        "neutral": 1221,
        "angry": 831,
        "excited": 593,
        "frustrated": 1296,
    },
    "val": {
        "happy": 53,
        "sad": 68,
        "neutral": 103,
        "angry": 102,
        "excited": 149,
        "frustrated": 172,
    },
    "test": {
        "happy": 144,
        "sad": 245,
        "neutral": 384,
        "angry": 170,
        "excited": 299,
        "frustrated": 381,
    },
}
ERC6_DIALOGUES = {"train": 108, "val": 12, "test": 31}
# 4-way = happy(595 of 648)+excited(1,041), and all sad / neutral / angry of the table above.
SER4_TOTALS = {
    "happy": 595 + 1041,
    "sad": 771 + 68 + 245,
    "neutral": 1221 + 103 + 384,
    "angry": 831 + 102 + 170,
}


@pytest.fixture(scope="module")
def root():
    return shared_subdir("iemocap")


def test_erc6_counts(root):
    ds = load_dataset("iemocap", root=root)
    assert {s: len(u) for s, u in ds.splits.items()} == {"train": 5163, "val": 647, "test": 1623}
    assert ds.counts() == ERC6
    assert {s: len({u.dialogue_id for u in us}) for s, us in ds.splits.items()} == ERC6_DIALOGUES
    assert {u.labels.extra["session"] for u in ds["test"]} == {5}
    assert {u.labels.extra["session"] for u in ds["val"]} <= {1, 2, 3, 4}
    spec = ds.spec
    assert spec.name == "iemocap-erc6" and spec.conversational
    assert spec.emotion_labels == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    u = ds["train"][0]
    assert (u.id, u.dialogue_id, u.turn, u.speaker, u.text) == (
        "Ses01F_impro01_F000",
        "Ses01F_impro01",
        0,
        "F",
        "Excuse me.",
    )
    turns = [x.turn for x in ds["train"] if x.dialogue_id == "Ses01F_impro01"]
    assert turns == list(range(len(turns)))


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_ser4_folds(root, fold):
    ds = load_dataset("iemocap", root=root, protocol="ser4", fold=fold)
    sessions = {s: {u.labels.extra["session"] for u in us} for s, us in ds.splits.items()}
    assert sessions["test"] == {fold}
    assert sessions["val"] == {fold % 5 + 1}
    assert sessions["train"] == {1, 2, 3, 4, 5} - {fold, fold % 5 + 1}
    total: dict[str, int] = {}
    for counts in ds.counts().values():
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    assert total == SER4_TOTALS and sum(total.values()) == 5531
    assert ds.spec.name == "iemocap-ser4" and ds.spec.metrics == ["ua", "wa"]
    assert ds.spec.emotion_labels == ["happy", "sad", "neutral", "angry"]


def test_ser4_no_validation_and_excited_merged(root):
    ds = load_dataset("iemocap", root=root, protocol="ser4", fold=1, validation="none")
    assert set(ds.splits) == {"train", "test"}
    excited = [u for u in ds.all() if u.labels.extra["label6"] == "excited"]
    assert len(excited) == 1041 and {u.labels.emotion for u in excited} == {"happy"}
    assert not any(u.labels.extra["label6"] == "frustrated" for u in ds.all())


def test_fold_needs_ser4(root):
    with pytest.raises(ConfigError, match="fold"):
        load_dataset("iemocap", root=root, fold=2)
    with pytest.raises(ConfigError):
        load_dataset("iemocap", root=root, protocol="ser4", fold=6)


def test_bad_root(tmp_path):
    with pytest.raises(InputError) as err:
        load_dataset("iemocap", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "derived/iemocap_utterances.csv" in str(err.value)


def test_prepare_roundtrip_and_idempotent(tmp_path, root):
    recipe = DATASETS.get("iemocap")(root=root, protocol="ser4", fold=3)
    out = recipe.prepare(tmp_path / "iemocap")
    assert open_prepared(out).splits == recipe.dataset().splits
    stamp = (out / "test.jsonl").stat().st_mtime_ns
    recipe.prepare(out)
    assert (out / "test.jsonl").stat().st_mtime_ns == stamp
    # another protocol into the same folder rewrites it, and the stale split files go
    DATASETS.get("iemocap")(root=root, protocol="ser4", fold=3, validation="none").prepare(out)
    assert sorted(p.stem for p in out.glob("*.jsonl")) == ["test", "train"]


TRANSCRIPT = """\
Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
Ses01F_impro01_M000 [007.5712-010.4750]:   Do you have your forms?
M: [BREATHING]
Ses01F_impro01_MXX0 [011.0000-012.0000]: Yeah.
"""
EVALUATION = """\
% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[7.5712 - 10.4750]\tSes01F_impro01_M000\tfru\t[2.5000, 2.0000, 2.5000]
C-E2:\tFrustration;\t()
"""


def test_full_release_parsers(tmp_path):
    (tmp_path / "t.txt").write_text(TRANSCRIPT)
    (tmp_path / "e.txt").write_text(EVALUATION)
    assert parse_transcription(tmp_path / "t.txt") == {
        "Ses01F_impro01_F000": "Excuse me.",
        "Ses01F_impro01_M000": "Do you have your forms?",
        "Ses01F_impro01_MXX0": "Yeah.",
    }
    ev = parse_emo_evaluation(tmp_path / "e.txt")
    assert set(ev) == {"Ses01F_impro01_F000", "Ses01F_impro01_M000"}
    assert ev["Ses01F_impro01_M000"] == {
        "emo_evaluation": "fru",
        "valence": 2.5,
        "arousal": 2.0,
        "dominance": 2.5,
        "dialog_start_s": 7.5712,
        "dialog_end_s": 10.475,
    }
    with pytest.raises(InputError, match="cannot read"):
        parse_transcription(tmp_path / "missing.txt")


def test_full_release_root(tmp_path, root):
    full = tmp_path / "IEMOCAP_full_release"
    for n in range(1, 6):
        (full / f"Session{n}").mkdir(parents=True)
    dialog = full / "Session1" / "dialog"
    (dialog / "transcriptions").mkdir(parents=True)
    (dialog / "EmoEvaluation").mkdir()
    (dialog / "transcriptions" / "Ses01F_impro01.txt").write_text(
        TRANSCRIPT.replace("Excuse me.", "Excuse me!")
    )
    (dialog / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(EVALUATION)
    ds = load_dataset("iemocap", root=root, full_release_root=full)
    u = ds["train"][0]
    assert u.media["audio"] == str(
        full / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    )
    assert u.text == "Excuse me!" and u.labels.extra["emo_evaluation"] == "neu"
    assert u.labels.emotion == "neutral"  # the protocol label, not the release code
    other = ds["test"][0]
    assert (
        other.media["audio"].startswith(str(full / "Session5"))
        and "emo_evaluation" not in other.labels.extra
    )
    (full / "Session4").rmdir()
    with pytest.raises(InputError, match="Session4"):
        load_dataset("iemocap", root=root, full_release_root=full)


# -- every number read is checked: a synthetic corpus with NaN, inf, out-of-range, bad times --

_HEAD = (
    "dialogue_id,session,utt_index,utt_id,speaker,text,text_zh,label6,label6_name,label4,"
    "label4_name,split_cosmic\n"
)
_ROWS = [
    ("0", "Ses01F_impro01_F000", "1", "2", "neutral"),
    ("1", "Ses01F_impro01_M000", "7", "2", "neutral"),
    ("nan", "Ses01F_impro01_F001", "1", "2", "neutral"),
    ("3", "Ses01F_impro01_M001", "1", "inf", "neutral"),
    ("4", "Ses01F_impro01_F002", "1", "9", "neutral"),
    ("5", "Ses01F_impro01_M002", "1", "3", "angry"),
    ("6", "Ses01F_impro01_F003", "1", "2", "neutral"),
    ("7", "Ses01F_impro01_M003", "1", "2", "neutral"),
    ("8", "Ses01F_impro01_F004", "1", "2", "neutral"),
]
_EVALUATION = """\
% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
[10.0 - 11.0]\tSes01F_impro01_M002\tang\t[nan, 3.0, 3.0]
[12.0 - 13.0]\tSes01F_impro01_F003\tneu\t[2.0, 6.0, 2.0]
[15.0 - 14.0]\tSes01F_impro01_M003\tneu\t[2.0, 2.0, 2.0]
[16.0 - 17.5]\tSes01F_impro01_F004\tneu\t[1.0, 5.0, 3.5]
"""


def test_bad_numbers_are_reported_per_utterance_and_left_out(tmp_path):
    root = tmp_path / "iemocap"
    (root / "derived").mkdir(parents=True)
    lines = [
        f"Ses01F_impro01,{session},{index},{uid},{uid[-4]},hi,你好,{l6},{name},,,train"
        for index, uid, session, l6, name in _ROWS
    ]
    (root / "derived" / "iemocap_utterances.csv").write_text(
        _HEAD + "\n".join(lines) + "\n", encoding="utf-8"
    )
    table = "derived/iemocap_utterances.csv"
    derived = {
        "Ses01F_impro01_M000": f"{table} line 3: session 7 lies outside [1, 5]",
        "Ses01F_impro01_F001": f"{table} line 4: utt_index 'nan' is not a finite number",
        "Ses01F_impro01_M001": f"{table} line 5: label6 'inf' is not a finite number",
        "Ses01F_impro01_F002": f"{table} line 6: label6 9 lies outside [0, 5]",
    }
    ds = load_dataset("iemocap", root=root)
    assert ds.skipped == derived
    assert [(u.id, u.turn, u.labels.emotion) for u in ds.all()] == [
        ("Ses01F_impro01_F000", 0, "neutral"),
        ("Ses01F_impro01_M002", 5, "angry"),
        ("Ses01F_impro01_F003", 6, "neutral"),
        ("Ses01F_impro01_M003", 7, "neutral"),
        ("Ses01F_impro01_F004", 8, "neutral"),
    ]
    full = tmp_path / "IEMOCAP_full_release"
    for n in range(1, 6):
        (full / f"Session{n}").mkdir(parents=True)
    (full / "Session1/dialog/EmoEvaluation").mkdir(parents=True)
    (full / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt").write_text(_EVALUATION)
    ds = load_dataset("iemocap", root=root, full_release_root=full)
    evaluation = "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt line"
    assert ds.skipped == {
        **derived,
        "Ses01F_impro01_M002": f"{evaluation} 4: valence 'nan' is not a finite number",
        "Ses01F_impro01_F003": f"{evaluation} 5: arousal 6 lies outside [1, 5]",
        "Ses01F_impro01_M003": f"{evaluation} 6: end 14 is not after start 15",
    }
    last = ds.all()[-1]
    assert [u.id for u in ds.all()] == ["Ses01F_impro01_F000", "Ses01F_impro01_F004"]
    assert {k: last.labels.extra[k] for k in ("valence", "arousal", "dominance")} == {
        "valence": 1.0, "arousal": 5.0, "dominance": 3.5,
    }  # fmt: skip
    assert (last.labels.extra["dialog_start_s"], last.labels.extra["dialog_end_s"]) == (16, 17.5)
    with pytest.raises(InputError, match=r"Ses01F_impro01\.txt: line 4 \(Ses01F_impro01_M002\): "
                                         r"valence 'nan' is not a finite number"):  # fmt: skip
        parse_emo_evaluation(full / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt")


def test_unusable_table_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "derived").mkdir()
    table = tmp_path / "derived" / "iemocap_utterances.csv"
    table.write_bytes(b"")
    with pytest.raises(InputError, match=r"iemocap_utterances\.csv: CSV file is empty"):
        load_dataset("iemocap", root=tmp_path)
    table.write_text("utt_id,session\nSes01F_impro01_F000,1\n")
    with pytest.raises(InputError, match=r"iemocap_utterances\.csv: missing column\(s\)"):
        load_dataset("iemocap", root=tmp_path)

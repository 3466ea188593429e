from collections import Counter
from pathlib import Path

import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.errors import InputError


def test_real_counts() -> None:
    ds = load_dataset("emotiontalk", root=shared_subdir("emotiontalk"))
    # data README §7: 15,413 / 1,908 / 1,929 utterances
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 15413, "val": 1908, "test": 1929}
    assert Counter(u.labels.emotion for u in ds["test"]) == {
        "neutral": 801, "angry": 339, "happy": 246, "surprised": 161,
        "disgusted": 134, "fearful": 125, "sad": 123,
    }  # fmt: skip
    # 1,171 / 138 / 167 speaker tracks = README "dialogues"; sessions interleave two tracks
    assert {k: len({u.speaker for u in v}) for k, v in ds.splits.items()} == {
        "train": 1171, "val": 138, "test": 167,
    }  # fmt: skip
    assert {k: len({u.dialogue_id for u in v}) for k, v in ds.splits.items()} == {
        "train": 587, "val": 71, "test": 84,
    }  # fmt: skip
    agree = sum(u.labels.per_modality["audio"] == u.labels.emotion for u in ds.all()) / 19250
    assert round(100 * agree, 1) == 67.8
    u = ds["test"][0]
    assert (u.id, u.dialogue_id, u.turn, u.labels.extra["utt_index"]) == (
        "G00003_11_13_001", "G00003_11", 0, 1,
    )  # fmt: skip
    assert ds["test"][1].speaker == "G00003_11_02" and ds["test"][1].turn == 1
    assert ds.spec.per_modality_labels == ["audio", "video", "text"] and ds.spec.conversational
    assert all(-2.0 <= x.labels.sentiment <= 2.0 for x in ds.all())


def test_label_source_and_tracks() -> None:
    root = shared_subdir("emotiontalk")
    text = load_dataset("emotiontalk", root=root, label_source="text", context="track")
    assert all(u.labels.emotion == u.labels.per_modality["text"] for u in text.all())
    assert len({u.dialogue_id for u in text.all()}) == 1476
    assert text.spec.name == "emotiontalk-7-text"


def test_media_roots_and_bad_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing derived/emotiontalk_utterances\.csv") as err:
        load_dataset("emotiontalk", root=tmp_path)
    assert err.value.path == str(tmp_path)
    root = tmp_path / "et"
    (root / "derived").mkdir(parents=True)
    (root / "derived" / "emotiontalk_utterances.csv").write_text(
        "key,group,session,dialogue_id,utt_index,split,label_multimodal,sentiment,label_audio,"
        "label_video,label_text,text_zh\n"
        "G1_01_02_001,G1,G1_01,G1_01_02,1,train,happy,0.4,happy,neutral,happy,好啊\n",
        encoding="utf-8",
    )
    audio = tmp_path / "audio" / "G1" / "G1_01" / "G1_01_02"
    audio.mkdir(parents=True)
    with pytest.raises(InputError, match="media file missing"):
        load_dataset("emotiontalk", root=root, audio_root=tmp_path / "audio")
    (audio / "G1_01_02_001.wav").write_bytes(b"")
    (u,) = load_dataset("emotiontalk", root=root, audio_root=tmp_path / "audio").all()
    assert u.media == {"audio": str(audio / "G1_01_02_001.wav")} and u.labels.sentiment == 0.4
    csv = root / "derived" / "emotiontalk_utterances.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace(",happy,0.4", ",joyful,0.4"), "utf-8")
    with pytest.raises(InputError, match=r"row 1 \(line 2\): label_multimodal 'joyful'"):
        load_dataset("emotiontalk", root=root)


def test_prepare_roundtrip(tmp_path: Path) -> None:
    recipe = DATASETS.get("emotiontalk")(root=shared_subdir("emotiontalk"))
    back = open_prepared(recipe.prepare(tmp_path / "et"))
    assert back.spec == recipe.spec() and back["test"] == recipe.dataset()["test"]


def test_bad_numbers_are_reported_per_utterance_and_left_out(tmp_path: Path) -> None:
    """NaN, inf, out-of-range sentiments and bad utterance indices: reported, left out."""
    root = tmp_path / "et"
    (root / "derived").mkdir(parents=True)
    head = (
        "key,group,session,dialogue_id,utt_index,split,label_multimodal,sentiment,label_audio,"
        "label_video,label_text,text_zh\n"
    )
    rows = [
        "G1_01_02_001,G1,G1_01,G1_01_02,1,train,happy,0.4,happy,neutral,happy,好啊",
        "G1_01_13_002,G1,G1_01,G1_01_13,2,train,sad,nan,sad,sad,sad,唉",
        "G1_01_02_003,G1,G1_01,G1_01_02,3,train,angry,-inf,angry,angry,angry,滚",
        "G1_01_13_004,G1,G1_01,G1_01_13,4,train,happy,2.4,happy,happy,happy,太好了",
        "G1_01_02_005,G1,G1_01,G1_01_02,-5,train,neutral,0,neutral,neutral,neutral,嗯",
        "G1_01_13_006,G1,G1_01,G1_01_13,6.5,train,neutral,0,neutral,neutral,neutral,嗯",
        "G1_01_02_007,G1,G1_01,G1_01_02,7,train,neutral,,neutral,neutral,neutral,好",
        "G1_01_13_008,G1,G1_01,G1_01_13,8,train,sad,-2.0,sad,sad,sad,哭",
    ]
    (root / "derived" / "emotiontalk_utterances.csv").write_text(
        head + "\n".join(rows) + "\n", encoding="utf-8"
    )
    ds = load_dataset("emotiontalk", root=root)
    where = "derived/emotiontalk_utterances.csv line"
    assert ds.skipped == {
        "G1_01_13_002": f"{where} 3: sentiment 'nan' is not a finite number",
        "G1_01_02_003": f"{where} 4: sentiment '-inf' is not a finite number",
        "G1_01_13_004": f"{where} 5: sentiment 2.4 lies outside [-2, 2]",
        "G1_01_02_005": f"{where} 6: utt_index -5 is negative",
        "G1_01_13_006": f"{where} 7: utt_index '6.5' is not a whole number",
    }
    kept = [(u.id, u.turn, u.labels.sentiment, u.labels.emotion) for u in ds.all()]
    assert kept == [
        ("G1_01_02_001", 0, 0.4, "happy"),
        ("G1_01_02_007", 1, None, "neutral"),  # an empty sentiment is "not annotated"
        ("G1_01_13_008", 2, -2.0, "sad"),
    ]

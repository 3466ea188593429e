from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.errors import ConfigError, InputError


def _wav(path: Path, seconds: float = 0.2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), 16000)
    return path


@pytest.fixture
def csv_dataset(tmp_path: Path) -> Path:
    _wav(tmp_path / "clips" / "a.wav")
    _wav(tmp_path / "clips" / "bé 雪.wav")
    (tmp_path / "clips" / "face.png").write_bytes(b"not decoded here")
    (tmp_path / "data.csv").write_text(
        "path,text,label,sentiment,split,dialogue,speaker,start,end\n"
        "clips/a.wav,hello there,happy,0.5,train,d1,A,0.0,0.1\n"
        "clips/bé 雪.wav,你好,sad,-0.5,dev,d1,B,,\n"
        f"{tmp_path / 'clips' / 'face.png'},,happy,,test,,,,\n",
        encoding="utf-8",
    )
    return tmp_path / "data.csv"


def test_csv_manifest(csv_dataset: Path) -> None:
    ds = load_dataset("folder", root=csv_dataset.parent, csv="data.csv")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 1, "val": 1, "test": 1}
    a, b = ds["train"][0], ds["val"][0]
    assert a.id == "clips__a" and a.media["audio"].endswith("a.wav")
    assert (a.start, a.end) == (0.0, 0.1)
    assert b.id == "clips__bé 雪" and b.text == "你好" and b.labels.sentiment == -0.5
    assert (a.dialogue_id, a.turn, b.turn) == ("d1", 0, 1)
    assert ds["test"][0].media == {"image": str(csv_dataset.parent / "clips" / "face.png")}
    assert ds.spec.emotion_labels == ["happy", "sad"]
    assert ds.spec.sentiment_range == (-1.0, 1.0) and ds.spec.conversational
    # root may name the CSV itself
    same = load_dataset("folder", root=csv_dataset)
    assert [u.id for u in same.all()] == [u.id for u in ds.all()]


def test_csv_configured_labels_and_prepare_roundtrip(csv_dataset: Path, tmp_path: Path) -> None:
    labels = ["neutral", "happy", "sad"]
    recipe = DATASETS.get("folder")(root=csv_dataset, labels=labels)
    out = recipe.prepare(tmp_path / "prepared")
    back = open_prepared(out)
    assert back.spec.emotion_labels == labels
    assert {k: [u.model_dump() for u in v] for k, v in back.splits.items()} == {
        k: [u.model_dump() for u in v] for k, v in recipe.dataset().splits.items()
    }
    with pytest.raises(InputError, match=r"'happy', 'sad'.*not in the labels option"):
        load_dataset("folder", root=csv_dataset, labels=["neutral"])


def test_plain_folder_with_sidecars_and_non_ascii(tmp_path: Path) -> None:
    _wav(tmp_path / "spk1" / "Ünïcödé 情绪.wav")
    (tmp_path / "spk1" / "Ünïcödé 情绪.txt").write_text("I am so happy\n", encoding="utf-8")
    _wav(tmp_path / "spk1" / "two.wav")
    (tmp_path / "spk1" / "two.mp4").write_bytes(b"\x00")
    (tmp_path / "notes.md").write_text("ignored")
    ds = load_dataset("folder", root=tmp_path)
    utts = {u.id: u for u in ds["test"]}
    assert set(utts) == {"spk1__Ünïcödé 情绪", "spk1__two"}
    assert utts["spk1__Ünïcödé 情绪"].text == "I am so happy"
    assert set(utts["spk1__two"].media) == {"audio", "video"}
    assert all(u.labels.emotion is None for u in utts.values())
    ds2 = load_dataset("folder", root=tmp_path, label_from_parent=True, split="train")
    assert {u.labels.emotion for u in ds2["train"]} == {"spk1"}


def test_plain_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split 'holdout'"):
        load_dataset("folder", root=tmp_path, split="holdout")
    with pytest.raises(InputError, match="no media files found"):
        load_dataset("folder", root=tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("folder", root=tmp_path / "nope")
    _wav(tmp_path / "x.wav")
    _wav(tmp_path / "x.flac")
    with pytest.raises(InputError, match="share the stem"):
        load_dataset("folder", root=tmp_path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("text,label\nhi,happy\n", "needs a 'path' column"),
        ("path,label,mood\na.wav,happy,x\n", "unknown column.*'mood'"),
        ("path,sentiment\na.wav,high\n", r"no usable row: row 1 .*sentiment 'high' is not a"),
        ("path,split\na.wav,holdout\n", "split 'holdout'"),
        ("path,label\nnotes.txt,happy\n", "not audio, video or an image"),
        ("path,start,end\na.wav,2,1\n", "end 1 is not after start 2"),
        ("path\n", "no rows"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, pattern: str) -> None:
    _wav(tmp_path / "a.wav")
    (tmp_path / "notes.txt").write_text("x")
    csv = tmp_path / "bad.csv"
    csv.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=pattern) as err:
        load_dataset("folder", root=csv)
    assert err.value.path == str(csv)


def test_non_utf8_csv_and_keep_extra_columns(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    csv = tmp_path / "latin.csv"
    csv.write_bytes("path,text\na.wav,café\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not UTF-8.*re-save it as UTF-8") as err:
        load_dataset("folder", root=csv)
    assert err.value.path == str(csv)
    csv.write_text("\ufeffpath,text,mood\na.wav,café,calm\n", encoding="utf-8")
    (u,) = load_dataset("folder", root=csv, extra_columns="keep").all()
    assert u.text == "café" and u.labels.extra == {"mood": "calm"}


def test_text_only_rows(tmp_path: Path) -> None:
    csv = tmp_path / "sentences.csv"
    csv.write_text("path,text,sentiment\n,great movie,2.5\n,awful,-3\n", encoding="utf-8")
    ds = load_dataset("folder", root=csv, language="en")
    assert [u.id for u in ds["test"]] == ["row1", "row2"]
    assert ds.spec.sentiment_range == (-3.0, 3.0) and ds.spec.emotion_labels is None


def test_labels_csv_in_the_root_is_the_manifest(tmp_path: Path) -> None:
    """The dataset card's tree has `my_data/labels.csv`: a root holding one is read from it."""
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "b.wav")
    (tmp_path / "labels.csv").write_text("path,label,split\na.wav,happy,train\nb.wav,sad,val\n")
    ds = load_dataset("folder", root=tmp_path)
    assert {u.id: u.labels.emotion for u in ds.all()} == {"a": "happy", "b": "sad"}
    assert ds.spec.emotion_labels == ["happy", "sad"] and set(ds.splits) >= {"train", "val"}


def test_paths_resolve_from_any_working_folder(tmp_path: Path, monkeypatch) -> None:
    """Prepared manifests and run configs hold paths that do not depend on where they were made."""
    from emofuse.datasets import DatasetChoice

    _wav(tmp_path / "data" / "a.wav")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("folder", root="data")
    media = Path(ds.all()[0].media["audio"])
    assert media.is_absolute() and media == tmp_path / "data" / "a.wav"
    choice = DatasetChoice(prepared="prep")
    assert choice.prepared == tmp_path / "prep"
    assert DatasetChoice(name="folder", options={"root": "data"}).options["root"] == str(
        tmp_path / "data"
    )
    with pytest.raises(InputError, match="is a file; the dataset root"):
        load_dataset("meld", root=tmp_path / "data" / "a.wav")


def test_bad_rows_are_reported_and_skipped_and_the_rest_is_kept(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    csv = tmp_path / "mixed.csv"
    csv.write_text(
        "path,text,label\na.wav,hi,happy\nmissing.wav,,sad\n,,sad\na.wav,again,sad\n,fine,sad\n",
        encoding="utf-8",
    )
    ds = load_dataset("folder", root=csv)
    assert [u.id for u in ds.all()] == ["a", "row5"]
    assert set(ds.skipped) == {
        "mixed.csv row 2 (line 3)",
        "mixed.csv row 3 (line 4)",
        "mixed.csv row 4 (line 5)",
    }
    assert ds.skipped["mixed.csv row 2 (line 3)"].startswith("file not found")
    assert ds.skipped["mixed.csv row 3 (line 4)"] == "needs a path or a text"
    assert "duplicate id 'a'" in ds.skipped["mixed.csv row 4 (line 5)"]
    # prepare keeps the report beside the manifests
    prepared = DATASETS.get("folder")(root=csv).prepare(tmp_path / "prep")
    assert open_prepared(prepared).skipped == ds.skipped


def test_media_kind_comes_from_the_content_when_the_suffix_is_unknown(tmp_path: Path) -> None:
    import shutil
    from importlib import resources

    sample = Path(str(resources.files("emofuse.datasets") / "sample"))
    shutil.copy(next(sample.glob("*.wav")), tmp_path / "voice.audio")
    shutil.copy(next(sample.glob("*.mp4")), tmp_path / "talk.clip")
    import cv2

    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "face.png").rename(tmp_path / "face.picture")
    (tmp_path / "junk.dat").write_bytes(b"\x00\x01 not media at all")
    (tmp_path / "voice.txt").write_text("a transcript is not media")
    ds = load_dataset("folder", root=tmp_path)
    kinds = {u.id: sorted(u.media) for u in ds.all()}
    assert kinds == {"voice": ["audio"], "talk": ["video"], "face": ["image"]}
    assert ds.skipped == {"junk.dat": "not audio, video or an image"}


def test_numbers_from_a_csv_are_checked_before_any_setting_is_derived(tmp_path: Path) -> None:
    """NaN, inf and out-of-range values are refused per row, never used to pick the scale."""
    csv = tmp_path / "scores.csv"
    csv.write_text(
        "path,text,sentiment,start\n,good,0.5,\n,bad,nan,\n,worse,inf,\n,odd,1e999,\n"
        ",late,0.1,-2\n,fine,-0.5,\n",
        encoding="utf-8",
    )
    ds = load_dataset("folder", root=csv)
    assert [u.text for u in ds.all()] == ["good", "fine"]
    assert ds.spec.sentiment_range == (-1.0, 1.0)  # derived from the checked scores only
    reasons = sorted(ds.skipped.values())
    assert sum("not a finite number" in r for r in reasons) == 3
    assert any("start -2 is negative" in r for r in reasons)
    narrow = load_dataset("folder", root=csv, sentiment_range=(0.0, 1.0))
    assert [u.text for u in narrow.all()] == ["good"]
    assert any("lies outside sentiment_range (0.0, 1.0)" in r for r in narrow.skipped.values())


def test_a_val_split_is_carved_out_of_train_by_dialogue_or_speaker(tmp_path: Path) -> None:
    rows = ["path,text,label,split,dialogue,speaker"]
    for d in range(10):
        for t in range(3):
            rows.append(f",line {d} {t},{'happy' if d % 2 else 'sad'},train,d{d},s{d % 4}")
    rows.append(",held out,happy,test,dx,s9")
    csv = tmp_path / "conv.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert "val" not in load_dataset("folder", root=csv).splits
    ds = load_dataset("folder", root=csv, val_fraction=0.2, split_seed=3)
    val, train = ds["val"], ds["train"]
    assert 0.15 <= len(val) / (len(val) + len(train)) <= 0.35
    assert not {u.dialogue_id for u in val} & {u.dialogue_id for u in train}  # whole dialogues
    assert [u.id for u in ds["test"]] == ["row31"]  # other splits untouched
    again = load_dataset("folder", root=csv, val_fraction=0.2, split_seed=3)
    assert [u.id for u in again["val"]] == [u.id for u in val]  # a function of the seed


def test_csv_columns_and_label_codes_are_mapped_by_option(tmp_path: Path) -> None:
    """EmoDB-style data: its own column names and one-letter emotion codes."""
    _wav(tmp_path / "03a01Wa.wav")
    _wav(tmp_path / "03a01Nc.wav")
    csv = tmp_path / "emodb.csv"
    csv.write_text("wav_file,code\n03a01Wa.wav,W\n03a01Nc.wav,N\n", encoding="utf-8")
    ds = load_dataset(
        "folder",
        root=csv,
        columns={"path": "wav_file", "label": "code"},
        label_map={"W": "anger", "N": "neutral"},
    )
    assert {u.id: u.labels.emotion for u in ds.all()} == {"03a01Wa": "anger", "03a01Nc": "neutral"}
    with pytest.raises(InputError, match="columns: no column 'file'"):
        load_dataset("folder", root=csv, columns={"path": "file"})
    with pytest.raises(InputError, match="columns: colour not ours"):
        load_dataset("folder", root=csv, columns={"colour": "code"})


def test_prepare_again_after_the_csv_changed_reads_the_new_rows(tmp_path: Path) -> None:
    """The report: an edited CSV prepared again without --force kept the old data."""
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "b.wav")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.wav,happy\n", encoding="utf-8")
    recipe = DATASETS.get("folder")
    out = recipe(root=tmp_path).prepare(tmp_path / "prep")
    assert [u.id for u in open_prepared(out).all()] == ["a"]
    csv.write_text("path,label\na.wav,sad\nb.wav,happy\n", encoding="utf-8")
    out = recipe(root=tmp_path).prepare(tmp_path / "prep")
    assert {u.id: u.labels.emotion for u in open_prepared(out).all()} == {"a": "sad", "b": "happy"}
    # unchanged input: the marker still saves the work
    marker = (tmp_path / "prep" / ".completed").stat().st_mtime_ns
    recipe(root=tmp_path).prepare(tmp_path / "prep")
    assert (tmp_path / "prep" / ".completed").stat().st_mtime_ns == marker


def test_row_line_numbers_count_blank_lines_and_the_id_hint_fits_the_csv(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    csv = tmp_path / "gaps.csv"
    csv.write_text(
        "id,path,label\nx,a.wav,happy\n\ny,missing.wav,sad\nx,a.wav,sad\n", encoding="utf-8"
    )
    ds = load_dataset("folder", root=csv)
    assert set(ds.skipped) == {"gaps.csv row 2 (line 4)", "gaps.csv row 3 (line 5)"}
    assert "make the 'id' column unique" in ds.skipped["gaps.csv row 3 (line 5)"]


def test_turns_and_times_are_checked_per_row(tmp_path: Path) -> None:
    csv = tmp_path / "times.csv"
    csv.write_text(
        "path,text,dialogue,turn,start,end\n"
        ",ok,d,0,0.5,1.5\n,neg turn,d,-1,,\n,half turn,d,1.5,,\n,huge,d,2,1e39,\n"
        ",backwards,d,3,2,1\n,nan end,d,4,0,nan\n,fine,d,5,,\n",
        encoding="utf-8",
    )
    ds = load_dataset("folder", root=csv)
    assert ds.skipped == {
        "times.csv row 2 (line 3)": "turn -1 is negative",
        "times.csv row 3 (line 4)": "turn '1.5' is not a whole number",
        "times.csv row 4 (line 5)": "start '1e39' is too large (it overflows float32)",
        "times.csv row 5 (line 6)": "end 1 is not after start 2",
        "times.csv row 6 (line 7)": "end 'nan' is not a finite number",
    }
    assert [(u.text, u.turn, u.start, u.end) for u in ds.all()] == [
        ("ok", 0, 0.5, 1.5), ("fine", 5, None, None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "options", "message"),
    [
        ("nan", {}, "x 'nan' is not a finite number"),
        (float("-inf"), {}, "x -inf is not a finite number"),
        ("1e39", {}, "x '1e39' is too large (it overflows float32)"),
        ("abc", {}, "x 'abc' is not a number"),
        (True, {}, "x True is not a number"),
        ("", {}, "x is missing"),
        ("3.5", {"low": -3, "high": 3}, "x 3.5 lies outside [-3, 3]"),
        ("-1", {"low": 0}, "x -1 is negative"),
        ("0.5", {"low": 1}, "x 0.5 is below 1"),
        ("2.5", {"integer": True}, "x '2.5' is not a whole number"),
    ],
)
def test_the_shared_number_check(value, options, message) -> None:
    from emofuse.datasets.base import BadValue, number

    with pytest.raises(BadValue) as err:
        number(value, "x", **options)
    assert str(err.value) == message


def test_the_shared_number_check_accepts_good_values() -> None:
    import numpy as np

    from emofuse.datasets.base import number, span

    assert number(" 2.5 ", "x", low=-3, high=3) == 2.5
    assert number(np.float32(-3.0), "x", low=-3, high=3) == -3.0
    assert number("4.0", "x", integer=True) == 4 and isinstance(number("4", "x", integer=True), int)
    assert number("", "x", required=False) is None
    span(1.0, 1.0, empty=True)
    span(None, 3.0)

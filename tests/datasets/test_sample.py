from pathlib import Path

from emofuse.datasets import DATASETS, load_dataset, open_prepared
from emofuse.datasets.sample import sample_dir


def test_sample_needs_no_root() -> None:
    ds = load_dataset("sample")
    assert list(ds.splits) == ["test"]
    utts = ds["test"]
    assert [u.labels.emotion for u in utts] == ["neutral", "happy", "angry"]
    assert {u.text for u in utts} == {"Kids are talking by the door"}
    assert [sorted(u.media) for u in utts] == [["video"], ["audio"], ["audio"]]
    for u in utts:
        assert all(Path(p).is_file() for p in u.media.values())
    assert ds.spec.emotion_labels[:3] == ["neutral", "calm", "happy"]
    assert (sample_dir() / "ATTRIBUTION.md").read_text().count("CC BY-NC-SA 4.0") >= 1


def test_sample_media_is_real_audio() -> None:
    import soundfile as sf

    info = sf.info(sample_dir() / "03-01-03-02-01-01-01.wav")
    assert info.samplerate == 16000 and info.channels == 1 and 3.0 < info.duration < 5.0


def test_sample_prepare_roundtrip(tmp_path: Path) -> None:
    recipe = DATASETS.get("sample")()
    out = recipe.prepare(tmp_path / "s")
    back = open_prepared(out)
    assert back.name == "sample" and [u.id for u in back["test"]] == [u.id for u in recipe.load()]
    assert recipe.prepare(tmp_path / "s") == out  # idempotent

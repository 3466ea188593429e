import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from emofuse.errors import InputError
from emofuse.records import (
    Labels,
    Utterance,
    current_umask,
    group_dialogues,
    ordinary_mode,
    read_manifest,
    write_manifest,
)
from emofuse.spec import TaskSpec


def _u(i, **kw):
    return Utterance(id=f"u{i}", dataset="t", **kw)


def test_utterance_is_frozen_and_copies():
    u = _u(0, text="hi")
    with pytest.raises(ValidationError):
        u.text = "no"  # type: ignore[misc]
    v = u.with_text("héllo", language="fr").with_media(audio="a.wav")
    assert (u.text, v.text, v.language, v.media) == ("hi", "héllo", "fr", {"audio": "a.wav"})
    assert v.modalities() == {"text", "audio"}
    assert _u(1, text="  ").modalities() == set()


@pytest.mark.parametrize("bad", ["", " x", "a/b", "a\nb"])
def test_utterance_rejects_unusable_ids(bad):
    with pytest.raises(ValueError):
        Utterance(id=bad, dataset="t")


def test_utterance_rejects_bad_spans():
    with pytest.raises(ValueError):
        _u(0, start=2.0, end=1.0)
    with pytest.raises(ValueError):
        _u(0, start=-1.0)


def test_manifest_round_trip_non_ascii(tmp_path):
    utts = [
        _u(0, text="我今天非常开心", language="zh", labels=Labels(sentiment=0.8)),
        _u(
            1,
            text="don’t",
            dialogue_id="d",
            turn=1,
            labels=Labels(emotion="joy", per_modality={"audio": "sad"}),
        ),
        _u(2, media={"video": "ví deo/ñ.mp4"}, start=0.5, end=1.5),
    ]
    path = write_manifest(tmp_path / "m.jsonl", utts)
    assert read_manifest(path) == utts
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_manifest_errors_name_file_and_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a", "dataset": "t"}\n\n{"id": "b", "dataset": "t", "colour": 1}\n')
    with pytest.raises(InputError) as err:
        read_manifest(p)
    assert "m.jsonl" in str(err.value) and "line 3" in str(err.value) and "colour" in str(err.value)
    p.write_bytes(b'{"id": "\xff", "dataset": "t"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        read_manifest(p)
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "none.jsonl")
    with pytest.raises(InputError, match="duplicate"):
        write_manifest(tmp_path / "d.jsonl", [_u(0), _u(0)])


def test_group_dialogues_orders_turns():
    utts = [_u(2, dialogue_id="d", turn=1), _u(1, dialogue_id="d", turn=0), _u(3)]
    groups = group_dialogues(utts)
    assert [u.id for u in groups["d"]] == ["u1", "u2"] and list(groups) == ["d", "u3"]


def test_taskspec_validation():
    spec = TaskSpec(name="x", emotion_labels=["a", "b"])
    assert spec.num_emotions == 2 and spec.emotion_index("b") == 1
    with pytest.raises(KeyError, match="not one of"):
        spec.emotion_index("c")
    with pytest.raises(ValueError):
        TaskSpec(name="none")
    with pytest.raises(ValueError):
        TaskSpec(name="dup", emotion_labels=["a", "a"])
    with pytest.raises(ValueError):
        TaskSpec(name="r", sentiment_range=(1.0, -1.0))


def test_writes_go_through_links_and_never_replace_what_is_not_a_file(tmp_path):
    """The report: --output /dev/full turned the device into a regular file; a symlink was
    replaced by a file and a FIFO's reader got nothing."""
    import json
    import threading

    from emofuse.records import dump_json, write_text_atomic

    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)

    dump_json(tmp_path / "nan.json", {"std": float("nan"), "x": [1.0, float("inf")]})
    assert json.loads((tmp_path / "nan.json").read_text()) == {"std": None, "x": [1.0, None]}


def test_files_written_through_temp_files_follow_the_umask(tmp_path):
    """mkstemp/mkdtemp give 0600/0700; saved files get what open() gives: 0666/0777 less umask."""
    import tempfile

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        manifest = write_manifest(tmp_path / "m.jsonl", [_u(0, text="hi")])
        assert stat.S_IMODE(manifest.stat().st_mode) == 0o640
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        fd, name = tempfile.mkstemp(dir=folder)
        os.close(fd)
        (folder / "sub").mkdir(mode=0o700)
        os.symlink("/etc/hostname", folder / "link")  # left alone, never followed
        ordinary_mode(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750
        assert stat.S_IMODE((folder / "sub").stat().st_mode) == 0o750
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o640
    finally:
        os.umask(old)

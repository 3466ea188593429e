"""Batch analysis: one CSV per run, failures isolated, files recognised by content; Ray = local."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import emofuse
from emofuse.analyze.batch import analyze_files
from emofuse.cli import app

SAMPLE = Path(emofuse.__file__).parent / "datasets" / "sample"
CLIP, HAPPY, ANGRY = (
    SAMPLE / "01-01-01-01-01-01-01.mp4",
    SAMPLE / "03-01-03-02-01-01-01.wav",
    SAMPLE / "03-01-05-02-01-01-01.wav",
)

pytestmark = pytest.mark.slow


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "media"
    d.mkdir()
    shutil.copy(HAPPY, d / "happy.wav")
    shutil.copy(ANGRY, d / "nested_angry.wav")
    (d / "broken.mp4").write_bytes(b"\x00" * 100)
    (d / "chat.txt").write_text("I love this!\n", encoding="utf-8")
    (d / "notes.md").write_text("ignored", encoding="utf-8")
    return d


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_local_batch_isolates_failures_and_reuses_by_content(folder, tmp_path):
    out = tmp_path / "out"
    first = analyze_files([folder], out)
    assert sorted(p.rsplit("/", 1)[1] for p in first.analyses) == [
        "chat.txt",
        "happy.wav",
        "nested_angry.wav",
    ]
    assert list(first.failed) == [str(folder / "broken.mp4")]
    assert "broken.mp4" in first.failed[str(folder / "broken.mp4")]
    table = rows(out / "analysis.csv")
    assert [r["file"].rsplit("/", 1)[1] for r in table] == [
        "chat.txt",
        "happy.wav",
        "nested_angry.wav",
    ]
    assert {f.name for f in out.iterdir()} >= {
        "happy.json",
        "happy.html",
        "chat.json",
        "analysis.csv",
        "index.json",
    }

    # a renamed copy is the same content: reused, not analysed again
    (folder / "happy.wav").rename(folder / "renamed.wav")
    again = analyze_files([folder], out)
    assert again.reused == 3 and list(again.failed) == [str(folder / "broken.mp4")]
    # a transcript put beside it changes what is analysed: not reused
    (folder / "renamed.srt").write_text(
        "1\n00:00:00,500 --> 00:00:03,000\nOh wow!\n", encoding="utf-8"
    )
    third = analyze_files([folder], out)
    assert (
        third.reused == 2
        and third.analyses[str(folder / "renamed.wav")].segmentation == "transcript"
    )
    moved, before = (
        again.analyses[str(folder / "renamed.wav")],
        first.analyses[str(folder / "happy.wav")],
    )
    assert [p.model_dump(exclude={"source"}) for p in moved.predictions] == [
        p.model_dump(exclude={"source"}) for p in before.predictions
    ]
    assert {p.source for p in moved.predictions} == {str(folder / "renamed.wav")}


def test_ray_engine_equals_local(folder, tmp_path):
    pytest.importorskip("ray", reason="ray not installed (extra 'ray')")
    local = analyze_files([folder], tmp_path / "local")
    remote = analyze_files([folder], tmp_path / "ray", engine="ray", workers=2)
    assert remote.failed.keys() == local.failed.keys()
    for source, a in local.analyses.items():
        b = remote.analyses[source]
        for p, q in zip(a.predictions, b.predictions, strict=True):
            assert p.emotion == q.emotion and p.id == q.id
            for label, value in p.probabilities.items():
                assert q.probabilities[label] == pytest.approx(
                    value, abs=1e-4
                )  # float32, other threads
    # a transcript given reaches the Ray workers too
    srt = tmp_path / "words.srt"
    srt.write_text("1\n00:00:00,900 --> 00:00:03,000\nI am furious with you\n", encoding="utf-8")
    wav = folder / "nested_angry.wav"
    by_ray = analyze_files([wav], tmp_path / "ray-t", engine="ray", workers=1, transcript=srt)
    by_local = analyze_files([wav], tmp_path / "local-t", transcript=srt)
    assert (
        by_ray.analyses[str(wav)].segmentation
        == by_local.analyses[str(wav)].segmentation
        == "transcript"
    )
    assert by_ray.analyses[str(wav)].predictions[0].text == "I am furious with you"
    assert (
        rows(tmp_path / "ray" / "analysis.csv")[0].keys()
        == rows(tmp_path / "local" / "analysis.csv")[0].keys()
    )


def test_cli_prints_segments_and_report(tmp_path):
    result = CliRunner().invoke(app, ["analyze", str(CLIP), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "neutral" in result.output and "Kids are talking" in result.output
    assert f"report: {tmp_path / 'o' / '01-01-01-01-01-01-01.html'}" in result.output.replace(
        "\n", ""
    )
    data = json.loads((tmp_path / "o" / "01-01-01-01-01-01-01.json").read_text())
    assert data["predictions"][0]["emotion"] == "neutral"


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF")
    result = CliRunner().invoke(app, ["analyze", str(junk), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "junk.wav" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["analyze", str(tmp_path / "nothing.mp4")])
    assert missing.exit_code == 2 and "nothing.mp4: no such file or folder" in missing.output


def test_what_changes_a_result_is_in_its_key(tmp_path):
    """The same audio with three transcripts, then in another language: four results, none of
    them handed out for another (a name clash once overwrote one result with another)."""
    wav = tmp_path / "a.wav"
    shutil.copy(ANGRY, wav)
    words = {}
    for i, said in enumerate(["I am furious with you", "What a lovely day", "The bus is late"]):
        srt = tmp_path / f"t{i}.srt"
        srt.write_text(f"1\n00:00:00,900 --> 00:00:03,000\n{said}\n", encoding="utf-8")
        words[srt] = said
        analyze_files([wav], tmp_path / "out", transcript=srt, report=False)
    for srt, said in words.items():  # all reused now, each with its own words
        again = analyze_files([wav], tmp_path / "out", transcript=srt, report=False)
        assert again.reused == 1 and again.analyses[str(wav)].predictions[0].text == said
    french = analyze_files([wav], tmp_path / "out", language="fr", report=False)
    assert french.reused == 0
    assert [p.text for p in french.analyses[str(wav)].predictions] == [None]


def test_an_unexpected_error_costs_only_its_file(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(HAPPY, d / "ok.wav")
    (d / "deep.json").write_text("[" * 100000 + "]" * 100000, encoding="utf-8")
    res = analyze_files([d], tmp_path / "out", report=False)
    assert list(res.analyses) == [str(d / "ok.wav")]
    assert "nested too deeply" in res.failed[str(d / "deep.json")]
    assert len(rows(tmp_path / "out" / "analysis.csv")) == 1
    # a later run where every file fails leaves that table alone
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    assert analyze_files([bad], tmp_path / "out").failed
    assert len(rows(tmp_path / "out" / "analysis.csv")) == 1


def test_cli_single_bad_file_is_exactly_its_own_line(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["analyze", str(empty), "--out", str(tmp_path / "new")])
    assert result.exit_code == 2
    errors = [ln for ln in result.output.splitlines() if "error" in ln or "failed" in ln]
    assert errors == [f"error: {empty}: file is empty (0 bytes)"]  # nothing about index.json
    nope = CliRunner().invoke(
        app, ["analyze", str(HAPPY), "--transcript", str(tmp_path / "nope.srt")]
    )
    assert nope.exit_code == 2 and "nope.srt: no such transcript file" in nope.output


def test_an_unreachable_ray_address_is_one_line(tmp_path):
    from emofuse.errors import InputError

    with pytest.raises(InputError, match="no Ray cluster answers there"):
        analyze_files([HAPPY], tmp_path / "o", engine="ray", address="127.0.0.1:1")
    with pytest.raises(InputError, match="must be at least 1"):
        analyze_files([HAPPY], tmp_path / "o", engine="ray", workers=-3)


def test_one_run_at_a_time_per_folder_and_a_broken_index_is_rebuilt(tmp_path):
    from filelock import FileLock

    from emofuse.errors import EmofuseWarning, InputError

    out = tmp_path / "out"
    out.mkdir()
    with (
        FileLock(out / ".emofuse-analyze.lock"),
        pytest.raises(InputError, match="another emofuse analyze"),
    ):
        analyze_files([HAPPY], out)
    (out / "index.json").write_text('{"broken', encoding="utf-8")
    with pytest.warns(EmofuseWarning, match="starting a new index"):
        res = analyze_files([HAPPY], out, report=False)
    assert list(res.analyses) == [str(HAPPY)] and json.loads((out / "index.json").read_text())

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
    # every file of the folder is accounted for: analysed, failed, or ignored saying why
    assert first.ignored == {str(folder / "notes.md"): "not a media or transcript file type (.md)"}
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
    mine = {"source", "id", "dialogue_id"}  # the renamed file's own, the rest reused
    assert [p.model_dump(exclude=mine) for p in moved.predictions] == [
        p.model_dump(exclude=mine) for p in before.predictions
    ]
    assert {p.source for p in moved.predictions} == {str(folder / "renamed.wav")}
    assert [(p.id, p.dialogue_id) for p in moved.predictions] == [("renamed_seg000", "renamed")]
    assert again.names[str(folder / "renamed.wav")] == "renamed"
    assert json.loads((out / "renamed.json").read_text())["source"] == str(folder / "renamed.wav")


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
    """The same audio with three transcripts, then in another language: each run gives that
    run's words (a name clash once handed one transcript's result out for another), under the
    file's one name, which the newest result takes over (no stale 'a.json' beside 'a-…')."""
    wav = tmp_path / "a.wav"
    shutil.copy(ANGRY, wav)
    out = tmp_path / "out"
    words = {}
    for i, said in enumerate(["I am furious with you", "What a lovely day", "The bus is late"]):
        srt = tmp_path / f"t{i}.srt"
        srt.write_text(f"1\n00:00:00,900 --> 00:00:03,000\n{said}\n", encoding="utf-8")
        words[srt] = said
        run = analyze_files([wav], out, transcript=srt, report=False)
        assert run.reused == 0 and run.names[str(wav)] == "a"
        assert json.loads((out / "a.json").read_text())["predictions"][0]["text"] == said
    assert sorted(f.name for f in out.glob("*.json")) == ["a.json", "index.json"]
    last = analyze_files([wav], out, transcript=srt, report=False)  # the newest: reused
    assert last.reused == 1 and last.analyses[str(wav)].predictions[0].text == said
    first = next(iter(words))
    back = analyze_files([wav], out, transcript=first, report=False)  # replaced: analysed again
    assert back.reused == 0 and back.analyses[str(wav)].predictions[0].text == words[first]
    french = analyze_files([wav], out, language="fr", report=False)
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
    assert not (tmp_path / "new").exists()  # a run that wrote nothing leaves no folder
    kept = tmp_path / "kept"
    kept.mkdir()
    again = CliRunner().invoke(app, ["analyze", str(empty), "--out", str(kept)])
    assert again.exit_code == 2 and kept.is_dir()  # a folder the user made stays
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


def test_a_live_port_that_is_not_ray_is_refused_not_waited_on(tmp_path):
    """A web server where the Ray cluster was expected: the TCP check passes, the gRPC
    handshake does not, and the answer comes in seconds instead of ray.init hanging."""
    import http.server
    import threading

    from emofuse.errors import InputError
    from emofuse.features.pipeline import check_ray_address

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(InputError, match=r"something answers there, but not Ray"):
            check_ray_address(address, timeout=1.0)
        with pytest.raises(InputError, match=r"but not Ray"):
            check_ray_address(f"ray://{address}", timeout=1.0)
    finally:
        server.shutdown()


def test_ray_options_without_the_ray_engine_are_refused(tmp_path):
    """--address and --workers would be ignored by the local engine: refused in one line,
    before the output folder is made (analyze and features extract alike)."""
    from emofuse.errors import InputError
    from emofuse.features.base import get_extractor
    from emofuse.features.pipeline import extract_features
    from emofuse.records import Utterance

    with pytest.raises(InputError, match=r"--address: is for the Ray engine; add --engine ray"):
        analyze_files([HAPPY], tmp_path / "o", address="127.0.0.1:6379")
    with pytest.raises(InputError, match=r"--workers: is for the Ray engine"):
        analyze_files([HAPPY], tmp_path / "o", workers=2)
    assert not (tmp_path / "o").exists()
    utt = Utterance(id="u", dataset="t", text="hello")
    with pytest.raises(InputError, match=r"--address: is for the Ray engine"):
        extract_features([utt], get_extractor("minilm"), tmp_path / "s", address="h:1")
    result = CliRunner().invoke(app, ["analyze", str(HAPPY), "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers: is for the Ray engine; add --engine ray" in result.output


def test_language_is_checked_as_a_language_tag(tmp_path):
    from emofuse.analyze.analyzer import language_tag
    from emofuse.errors import ConfigError

    assert [language_tag(v) for v in ("en", "EN", "eng", "pt-BR", "zh-Hans")] == [
        "en",
        "en",
        "en",
        "pt-BR",
        "zh-Hans",
    ]
    for bad in ("english", "", "e", "en_US", "fr--CA"):
        with pytest.raises(ConfigError, match="is not a language tag"):
            language_tag(bad)
    result = CliRunner().invoke(
        app, ["analyze", str(HAPPY), "--language", "english", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "language 'english' is not a language tag" in result.output
    assert not (tmp_path / "o").exists()


def test_files_with_one_stem_get_names_and_ids_of_their_own(tmp_path):
    """a/x.wav and b/x.wav: two results, two names, segment ids that never repeat in the
    folder's analysis.csv; each keeps its name on the next run."""
    for sub, clip in (("a", HAPPY), ("b", ANGRY)):
        (tmp_path / sub).mkdir()
        shutil.copy(clip, tmp_path / sub / "x.wav")
    a, b = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav"
    out = tmp_path / "out"
    res = analyze_files([a, b], out, report=False)
    assert res.names[str(a)] == "x" and res.names[str(b)].startswith("x-")
    ids = [r["id"] for r in rows(out / "analysis.csv")]
    assert len(ids) == len(set(ids)) == 2
    assert ids == ["x_seg000", f"{res.names[str(b)]}_seg000"]
    again = analyze_files([b, a], out, report=False)
    assert again.reused == 2 and again.names == res.names


def test_an_index_of_the_first_format_is_read(tmp_path):
    """index.json as version 1 wrote it (key → name, source) still finds the results."""
    out = tmp_path / "out"
    wav = tmp_path / "h.wav"
    shutil.copy(HAPPY, wav)
    analyze_files([wav], out, report=False)
    index = json.loads((out / "index.json").read_text())
    assert index["version"] == 2
    entry = index["files"][str(wav)]
    old = {entry["key"]: {"name": entry["name"], "source": str(wav)}}
    (out / "index.json").write_text(json.dumps(old), encoding="utf-8")
    assert analyze_files([wav], out, report=False).reused == 1


def test_a_file_reached_by_a_relative_path_is_the_same_file(tmp_path, monkeypatch):
    """The index is keyed by the absolute path: a relative path from another folder, or the
    absolute one, finds the same entry (a second result and a stale first one were left)."""
    (tmp_path / "in").mkdir()
    words = tmp_path / "in" / "talk.txt"
    words.write_text("I love this!\n", encoding="utf-8")
    out = tmp_path / "out"
    first = analyze_files([words], out)
    monkeypatch.chdir(tmp_path / "in")
    again = analyze_files(["talk.txt"], out)
    assert again.reused == 1 and list(again.analyses) == list(first.analyses) == [str(words)]
    words.write_text("I hate this!\n", encoding="utf-8")  # changed: replaces its own result
    third = analyze_files(["talk.txt"], out)
    assert third.reused == 0 and list(third.analyses) == [str(words)]
    assert sorted(f.name for f in out.glob("*.json")) == ["index.json", "talk.json"]
    assert json.loads((out / "talk.json").read_text())["source"] == str(words)


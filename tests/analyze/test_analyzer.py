"""emofuse analyze: segmentation, the default model, bad inputs (real RAVDESS media bundled)."""

import json
from pathlib import Path

import numpy as np
import pytest

import emofuse
from emofuse.analyze import Analysis, Analyzer, default_model_dir
from emofuse.errors import InputError
from emofuse.features.media import load_audio
from emofuse.schema import Prediction
from emofuse.testing import write_video, write_wav

SAMPLE = Path(emofuse.__file__).parent / "datasets" / "sample"
CLIP = SAMPLE / "01-01-01-01-01-01-01.mp4"  # RAVDESS actor 1, neutral, audio-visual
HAPPY = SAMPLE / "03-01-03-02-01-01-01.wav"  # RAVDESS speech, happy (strong)
ANGRY = SAMPLE / "03-01-05-02-01-01-01.wav"  # RAVDESS speech, angry (strong)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer()


def check_prediction(p: Prediction, labels):
    assert set(p.probabilities) == set(labels)
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert p.emotion == max(p.probabilities, key=p.probabilities.get)
    gates = [v.gate for v in p.experts.values() if v.gate is not None]
    assert sum(gates) == pytest.approx(1.0, abs=1e-5)
    for m, v in p.experts.items():
        assert (v.gate > 0) == (m in p.modalities)


def test_bundled_clip_speech_segments_every_modality(analyzer):
    a = analyzer.analyze(CLIP)
    assert (a.kind, a.segmentation) == ("video", "speech")
    assert a.model == "calibrated-late (emofuse-default)"
    assert len(a.predictions) == 1
    p = a.predictions[0]
    check_prediction(p, a.labels)
    assert p.modalities == ["audio", "face", "text"]
    assert p.text == "Kids are talking by the door."
    assert 0.5 < p.start < p.end <= a.duration
    assert p.sentiment is not None and -3 <= p.sentiment <= 3
    assert p.dialogue_id == "01-01-01-01-01-01-01"
    # JSON is the schema: it reads back into the same objects
    assert Analysis.model_validate_json(a.to_json()) == a.model_copy(update={})
    rows = a.to_csv().splitlines()
    assert (
        rows[0].startswith("id,dialogue_id,source,start,end,text,emotion,p_anger")
        and len(rows) == 2
    )


def test_real_ravdess_speech_voice_decides(analyzer):
    """Two strong RAVDESS clips of the default model's test actors: the voice gets them right."""
    got = {}
    for path in (HAPPY, ANGRY):
        a = analyzer.analyze(path)
        assert a.kind == "audio" and len(a.predictions) == 1
        p = a.predictions[0]
        check_prediction(p, a.labels)
        assert p.modalities == ["audio", "text"]
        got[path.name] = (p.emotion, p.experts["audio"].probabilities)
    assert got[HAPPY.name][0] == "joy"
    assert got[ANGRY.name][0] == "anger"


@pytest.mark.shared_data
def test_analyze_on_the_default_models_ravdess_test_actors_matches_its_card(analyzer):
    """All 32 speech clips of RAVDESS actors 1-4 (the default model's test fold) through
    analyze: one segment each, and the accuracy the model card reports for voice + words."""
    from conftest import shared_subdir
    from emofuse.datasets import load_dataset

    ds = load_dataset("ravdess", root=shared_subdir("ravdess"), fold=0)
    names = {"calm": "neutral", "happy": "joy", "sad": "sadness", "angry": "anger"}
    names |= {"fearful": "fear", "surprised": "surprise"}
    correct = 0
    for u in ds.splits["test"]:
        a = analyzer.analyze(u.media["audio"])
        assert len(a.predictions) == 1 and a.segmentation == "speech"
        correct += a.predictions[0].emotion == names.get(u.labels.emotion, u.labels.emotion)
    card = json.loads((default_model_dir() / "card.json").read_text())
    expected = card["combined"]["ravdess:audio+face+text"]["wa"]
    assert correct / 32 == pytest.approx(expected, abs=2 / 32)  # ASR words vs the statement
    assert correct / 32 >= 0.7


def test_timed_transcript_beside_media_past_end_skipped(tmp_path, analyzer):
    wav = write_wav(tmp_path / "call.wav", load_audio(ANGRY))  # 3.8 s
    (tmp_path / "call.srt").write_text(
        "1\n00:00:00,500 --> 00:00:03,000\nI can't believe you did that!\n\n"
        "2\n00:00:09,000 --> 00:00:10,000\nThis turn is past the end.\n",
        encoding="utf-8",
    )
    a = analyzer.analyze(wav)
    assert a.segmentation == "transcript" and a.transcript.endswith("call.srt")
    assert [(p.start, p.end, p.text) for p in a.predictions] == [
        (0.5, 3.0, "I can't believe you did that!")
    ]
    assert len(a.skipped) == 1 and a.skipped[0].what == "segment"
    assert "after the media ends" in a.skipped[0].why


def test_transcript_for_another_file_is_one_line(tmp_path, analyzer):
    wav = write_wav(tmp_path / "a.wav", load_audio(HAPPY))
    srt = tmp_path / "other.srt"
    srt.write_text("1\n00:10:00,000 --> 00:10:02,000\nhello\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        analyzer.analyze(wav, transcript=srt)
    assert "other.srt" in str(err.value) and "this file's transcript" in str(err.value)


def test_transcript_whose_turns_hold_no_speech_is_refused(tmp_path, analyzer):
    wave = np.concatenate([load_audio(HAPPY), np.zeros(16000 * 6, np.float32)])
    wav = write_wav(tmp_path / "b.wav", wave)  # speech 0-3.7 s, then 6 s of silence
    srt = tmp_path / "b.srt"
    srt.write_text("1\n00:00:05,000 --> 00:00:09,000\nwords said elsewhere\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        analyzer.analyze(wav)
    assert "b.srt" in str(err.value) and "0% of its turns' time holds speech" in str(err.value)


def test_no_speech_audio_says_so(tmp_path, analyzer):
    wav = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 3, np.float32))
    a = analyzer.analyze(wav)
    assert a.predictions == [] and any("no speech found" in n for n in a.notes)


def test_video_without_speech_analyses_the_face_in_windows(tmp_path, analyzer):
    video = write_video(tmp_path / "silent.mp4", duration=6.0, fps=5, size=(96, 72))
    a = analyzer.analyze(video)
    assert a.segmentation == "windows"
    assert any("no audio track" in n or "no speech found" in n for n in a.notes)
    # synthetic frames hold no face: every window is skipped with its reason, nothing raised
    assert a.predictions == [] and [s.id for s in a.skipped] == ["silent_win000", "silent_win001"]
    assert all("face" in s.why for s in a.skipped)


def test_transcript_alone_is_a_dialogue_of_words(tmp_path, analyzer):
    t = tmp_path / "chat.txt"
    t.write_text("Ann: I am so happy for you!\nBob: This is terrible news.\n", encoding="utf-8")
    a = analyzer.analyze(t)
    assert (a.kind, a.segmentation) == ("transcript", "turns")
    assert [p.modalities for p in a.predictions] == [["text"], ["text"]]
    assert [p.dialogue_id for p in a.predictions] == ["chat", "chat"]
    assert a.predictions[0].sentiment > a.predictions[1].sentiment


def test_text_the_encoder_cannot_read_is_left_out_not_scored(tmp_path, analyzer):
    t = tmp_path / "zh.txt"
    t.write_text("我今天非常开心\nI am glad.\n", encoding="utf-8")
    a = analyzer.analyze(t)
    assert [p.text for p in a.predictions] == ["I am glad."]
    assert a.skipped[0].id == "zh_turn000" and a.skipped[0].what == "segment"


def test_other_language_no_asr(tmp_path):
    a = Analyzer(language="fr").analyze(HAPPY)
    assert a.segmentation == "speech" and len(a.predictions) == 1
    assert a.predictions[0].text is None and a.predictions[0].modalities == ["audio"]
    assert any("English only" in n for n in a.notes)


def test_image_is_one_segment(tmp_path, analyzer):
    import matplotlib

    face = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    a = analyzer.analyze(face)
    assert (a.kind, a.segmentation) == ("image", "whole")
    assert a.predictions[0].modalities == ["face"]


def test_several_faces_say_which_was_analysed(tmp_path, analyzer):
    import matplotlib

    from emofuse.features.media import read_image
    from emofuse.testing import write_image

    face = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    canvas = np.full((600, 1000, 3), 255, np.uint8)
    canvas[: face.shape[0], : face.shape[1]] = face
    small = face[::2, ::2]
    canvas[50 : 50 + small.shape[0], 650 : 650 + small.shape[1]] = small
    a = analyzer.analyze(write_image(tmp_path / "two.png", canvas))
    assert a.notes == ["2 faces in view: the largest one was analysed"]
    assert a.predictions[0].modalities == ["face"]


def test_bad_files_are_one_line(tmp_path, analyzer):
    with pytest.raises(InputError, match="no such file"):
        analyzer.analyze(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(InputError) as err:
        analyzer.analyze(junk)
    assert "junk.mp4" in str(err.value) and "\n" not in str(err.value)


def test_long_audio_windows_give_the_same_segments(tmp_path):
    """Decoding a window at a time finds the same speech as one pass over the whole file."""
    from emofuse.features.asr import Transcriber

    parts = []
    for path in (HAPPY, ANGRY, HAPPY):
        parts += [np.zeros(16000 * 2, np.float32), load_audio(path)]
    wav = write_wav(tmp_path / "long.wav", np.concatenate(parts))
    asr = Transcriber()
    whole = asr.segment_media(wav, transcribe=False, window=300.0)
    windowed = asr.segment_media(wav, transcribe=False, window=9.0)  # cuts speech twice
    assert len(whole) == 3
    flat = [t for u in windowed for t in (u.start, u.end)]
    assert flat == pytest.approx([t for u in whole for t in (u.start, u.end)], abs=0.1)


def test_default_model_is_in_the_package():
    d = default_model_dir()
    assert (d / "MODEL_CARD.md").is_file()
    card = json.loads((d / "card.json").read_text())
    model = emofuse.load_model(d)
    assert model.spec.emotion_labels == card["labels"]
    assert sorted(model.inputs) == ["audio", "face", "text"]


def test_a_file_beside_that_is_not_a_transcript_is_ignored_with_a_note(tmp_path, analyzer):
    wav = write_wav(tmp_path / "clip.wav", load_audio(HAPPY))
    (tmp_path / "clip.json").write_text('{"camera": "phone", "fps": 30}', encoding="utf-8")
    a = analyzer.analyze(wav)
    assert a.segmentation == "speech" and len(a.predictions) == 1
    assert any("clip.json beside it is not a usable transcript" in n for n in a.notes)


def test_words_in_another_language_are_left_out_not_read_as_english(tmp_path):
    wav = write_wav(tmp_path / "fr.wav", load_audio(ANGRY))
    srt = tmp_path / "fr.srt"
    srt.write_text(
        "1\n00:00:00,900 --> 00:00:03,000\nJe suis vraiment en colère\n", encoding="utf-8"
    )
    a = Analyzer(language="fr").analyze(wav, transcript=srt)
    p = a.predictions[0]
    assert p.modalities == ["audio"] and p.sentiment is None  # sentiment comes from words only
    assert a.skipped[0].what == "minilm" and "not English" in a.skipped[0].why


def test_a_file_that_is_no_image_is_an_error(tmp_path, analyzer):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(InputError) as err:
        analyzer.analyze(fake)
    assert "fake.png" in str(err.value)
    with pytest.raises(InputError, match="takes one file path, got a list"):
        analyzer.analyze([HAPPY])


def test_a_subtitle_file_beside_that_cannot_be_read_is_an_error_not_ignored(tmp_path, analyzer):
    wav = write_wav(tmp_path / "clip.wav", load_audio(HAPPY))
    (tmp_path / "clip.srt").write_bytes(
        b"1\n00:00:00,500 --> 00:00:02,000\nOl\xe9 caf\xe9\n"
    )  # Latin-1
    with pytest.raises(InputError, match=r"clip\.srt: not UTF-8"):
        analyzer.analyze(wav)


def test_voice_features_shared_with_asr_give_what_the_extractor_gives(tmp_path, analyzer):
    """Speech segments reuse the ASR's encoder pass for the voice features; a feature store
    (which runs the extractor on each segment) must give the same analysis."""
    wave = np.concatenate([load_audio(HAPPY), load_audio(ANGRY)])
    path = write_wav(tmp_path / "pair.wav", wave, 16000)
    shared = analyzer.analyze(path)
    stored = Analyzer(cache=tmp_path / "store").analyze(path)
    assert [p.id for p in shared.predictions] == [p.id for p in stored.predictions]
    assert len(shared.predictions) == 2
    for a, b in zip(shared.predictions, stored.predictions, strict=True):
        assert a.text == b.text and a.emotion == b.emotion
        for label, prob in a.probabilities.items():
            assert prob == pytest.approx(b.probabilities[label], abs=1e-5)
        # the voice cues' LLDs, computed from the samples in memory, are the extractor's
        assert [(c.name, c.phrase) for c in a.cues] == [(c.name, c.phrase) for c in b.cues]
        assert any(c.modality == "audio" for c in a.cues)


def test_a_library_callers_process_is_left_as_it_was():
    """Analysing (model, extractors, cues; loads in a background thread) changes nothing the
    caller owns: environment, warning filters, torch threads and random stream, the collector.
    Each was changed before: HF_HUB_OFFLINE and glog levels set for good, the analysis's
    "always" filter for EmofuseWarning left behind by a thread (racy), the random stream
    advanced by building the model, one torch thread after silero_vad's import."""
    import subprocess
    import sys

    script = f"""
import gc, os, warnings
import torch
torch.set_num_threads(2)
torch.manual_seed(5)
env, filters, rng = dict(os.environ), list(warnings.filters), torch.get_rng_state()
from emofuse import Analyzer
Analyzer().analyze({str(SAMPLE / "01-01-01-01-01-01-01.mp4")!r})
ours = ("HF_", "TRANSFORMERS_", "GLOG_", "TF_CPP_", "PL_", "CUBLAS_", "EMOFUSE_")
changed = sorted(k for k in set(env) | set(os.environ)
                 if k.startswith(ours) and env.get(k) != os.environ.get(k))
print("env", changed)
# imports of torch, scipy, sympy add their own filters; none may be about emofuse's warnings
added = [f for f in warnings.filters if f not in filters and (
    f[2].__module__.startswith("emofuse") or "emofuse" in str(f[1] or "") + str(f[3] or ""))]
print("filters", added)
print("rng", torch.equal(rng, torch.get_rng_state()))
print("threads", torch.get_num_threads())
print("gc", gc.isenabled(), gc.get_freeze_count())
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines == {
        "env": "[]",
        "filters": "[]",
        "rng": "True",
        "threads": "2",
        "gc": "True 0",
    }, proc.stdout


def test_a_video_without_speech_is_not_read_by_its_voice(tmp_path, analyzer):
    """A 440 Hz tone under faceless frames: no speech, so no voice either. It was analysed as
    'sadness, carried by the voice', with a 'flat, monotone pitch' cue."""
    from emofuse.testing import write_bad_media

    video = write_bad_media(tmp_path)["video"]
    a = analyzer.analyze(video)
    assert a.segmentation == "windows"
    assert a.predictions == []
    assert [(s.id, s.what) for s in a.skipped] == [("video_win000", "segment")]
    assert a.skipped[0].why.startswith("face:") and "no face found" in a.skipped[0].why


def test_without_voice_keeps_the_face_and_skips_what_has_nothing_left():
    from emofuse.analyze.analyzer import _without_voice
    from emofuse.data.table import FeatureTable, Item
    from emofuse.records import Utterance
    from emofuse.spec import TaskSpec

    def item(uid, *modalities):
        feats = {m: np.zeros((2, 4), np.float32) for m in modalities}
        return Item(utt=Utterance(id=uid, dataset="t"), features=feats, emotion=0)

    spec = TaskSpec(name="t", emotion_labels=["a", "b"], metrics=["weighted_f1"])
    table = FeatureTable(
        spec=spec, inputs={}, items=[item("f", "audio", "face"), item("v", "audio")]
    )
    table.missing = {"v": ["face: no face found"]}
    _without_voice(table)
    assert [(it.utt.id, sorted(it.features)) for it in table.items] == [("f", ["face"])]
    assert table.skipped == {"v": "face: no face found"} and table.missing == {}

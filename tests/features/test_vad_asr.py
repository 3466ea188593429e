from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import shared_subdir
from emofuse.errors import ConfigError, InputError
from emofuse.features.media import load_audio, probe
from emofuse.records import Utterance
from emofuse.testing import write_bad_media, write_wav

pytest.importorskip("silero_vad")
pytest.importorskip("faster_whisper")

from emofuse.features.asr import Transcriber
from emofuse.features.vad import VadConfig, detect_speech, speech_ratio


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_bad_media(tmp_path_factory.mktemp("asr_media"))


@pytest.fixture(scope="module")
def asr():
    return Transcriber(threads=2)


def _clip(actor: int = 1, emotion: str = "03"):
    root = shared_subdir("ravdess") / "speech16k"
    return root / f"03-01-{emotion}-02-01-01-{actor:02d}.wav"


def test_vad_config_validates():
    with pytest.raises(ConfigError, match="unknown key 'treshold'"):
        detect_speech(np.zeros(16000, np.float32), treshold=0.3)
    assert VadConfig().threshold == 0.5


def test_vad_silence_and_bad_file(media):
    assert detect_speech(media["silent"]) == []
    assert detect_speech(np.zeros(8000, np.float32)) == []
    with pytest.raises(InputError, match="cannot decode audio") as info:
        detect_speech(media["corrupt"])
    assert info.value.path == str(media["corrupt"])
    assert speech_ratio([(0.0, 1.0), (2.0, 2.5)], 5.0) == pytest.approx(0.3)


def test_asr_refuses_other_languages():
    with pytest.raises(ConfigError, match="English only"):
        Transcriber(language="zh")
    assert Transcriber(language="en-US").config.language == "en"


@pytest.mark.shared_data
def test_vad_on_real_speech():
    path = _clip()
    duration = probe(path).duration
    segs = detect_speech(path)
    assert segs, "no speech found in a RAVDESS clip"
    assert all(0 <= a < b <= duration + 1e-3 for a, b in segs)
    assert 0.2 < speech_ratio(segs, duration) < 0.9  # RAVDESS clips have lead-in/out silence
    # Same result from an array at another rate, and file-clock times for a span.
    wave44 = load_audio(path, sr=44100)
    assert detect_speech(wave44, 44100)[0][0] == pytest.approx(segs[0][0], abs=0.05)
    spanned = detect_speech(path, start=0.5)
    assert spanned[0][0] == pytest.approx(segs[0][0], abs=0.05)


@pytest.mark.shared_data
def test_asr_on_real_speech(asr):
    tr = asr.transcribe(_clip())
    text = tr.text.lower()
    assert "door" in text and "talking" in text
    words = tr.words
    assert words and all(0 <= w.start <= w.end <= tr.duration + 0.05 for w in words)
    assert all(0 <= w.probability <= 1 for w in words)
    # A span keeps times on the file clock.
    spanned = asr.transcribe(_clip(), start=0.5)
    assert "door" in spanned.text.lower()
    assert spanned.words[0].start >= 0.5


@pytest.mark.shared_data
def test_asr_on_real_video_and_silence(asr, media):
    tr = asr.transcribe(shared_subdir("ravdess") / "av" / "01-01-01-01-01-01-01.mp4")
    assert "door" in tr.text.lower()
    assert asr.transcribe(media["silent"]).segments == []
    with pytest.raises(InputError, match="has no audio track"):
        asr.transcribe(media["noaudio"])


@pytest.mark.shared_data
def test_segment_media_splits_a_recording(asr, tmp_path):
    clips = [load_audio(_clip(a, e)) for a, e in ((1, "03"), (2, "05"))]
    gap = np.zeros(16000, np.float32)
    path = write_wav(tmp_path / "call.wav", np.concatenate([clips[0], gap, clips[1]]), 16000)
    boundary = (clips[0].size + gap.size) / 16000
    utts = asr.segment_media(path, dataset="calls")
    assert [u.id for u in utts] == ["call_seg000", "call_seg001"]
    assert utts[0].end <= boundary <= utts[1].start
    assert all("door" in (u.text or "").lower() for u in utts)
    assert all(u.media == {"audio": str(path)} and u.dataset == "calls" for u in utts)


def test_segment_media_without_speech(asr, media):
    with pytest.raises(InputError, match="no speech found") as info:
        asr.segment_media(media["silent"])
    assert info.value.path == str(media["silent"])


@pytest.mark.shared_data
def test_transcribe_utterances_fills_only_missing_text(asr, media):
    clip = str(_clip())
    utts = [
        Utterance(id="a", dataset="t", media={"audio": clip}),
        Utterance(id="b", dataset="t", media={"audio": clip}, text="given"),
        Utterance(id="c", dataset="t", media={"audio": clip}, language="zh"),
        Utterance(id="d", dataset="t", media={"audio": str(media["corrupt"])}),
    ]
    with pytest.raises(InputError, match="cannot decode audio"):
        asr.transcribe_utterances(utts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = asr.transcribe_utterances(utts, on_error="keep")
    assert "door" in out[0].text.lower()  # real English speech is trusted...
    assert out[0].language is None  # ...but an unknown language is never tagged English
    assert out[1] is utts[1] and out[2] is utts[2] and out[3] is utts[3]
    assert utts[0].text is None  # inputs are not modified
    messages = " ".join(str(w.message) for w in caught)
    assert "English only" in messages and "'d' not transcribed" in messages


def test_transcripts_whisper_doubts_are_not_used_and_are_named(monkeypatch):
    """Speech in another language through tiny.en: fluent English at log-probabilities of -1 to
    -2.6 (against -0.3 to -0.5 on English); repetition loops; silence. None of it is used."""
    from emofuse.errors import EmofuseWarning
    from emofuse.features.asr import Segment, Transcriber, TranscriberConfig, Transcript

    cfg = TranscriberConfig()

    def said(*segments):
        return Transcript(path="x.wav", language="en", duration=3.0, segments=list(segments))

    english = said(
        Segment(
            start=0,
            end=2,
            text="Kids are talking",
            avg_logprob=-0.35,
            compression_ratio=1.1,
            no_speech_prob=0.01,
        )
    )
    chinese = said(
        Segment(
            start=0,
            end=2,
            text="I don't know what you mean",
            avg_logprob=-1.6,
            compression_ratio=1.2,
            no_speech_prob=0.2,
        )
    )
    loop = said(
        Segment(
            start=0,
            end=2,
            text="yes yes yes yes yes yes yes",
            avg_logprob=-0.4,
            compression_ratio=3.1,
            no_speech_prob=0.1,
        )
    )
    silent = said(
        Segment(
            start=0,
            end=2,
            text="Thank you.",
            avg_logprob=-0.5,
            compression_ratio=0.9,
            no_speech_prob=0.95,
        )
    )
    assert english.doubt(cfg) is None
    assert "average log-probability -1.60 < -1.0" in chinese.doubt(cfg)
    assert "compression ratio 3.10 > 2.4" in loop.doubt(cfg)
    assert "no speech" in silent.doubt(cfg)

    asr = Transcriber()
    answers = {"a": english, "b": chinese, "c": loop}
    monkeypatch.setattr(asr, "transcribe", lambda src, start=None, end=None: answers[src])
    utts = [Utterance(id=k, dataset="t", media={"audio": k}) for k in answers]
    with pytest.warns(
        EmofuseWarning,
        match=r"2 transcript\(s\) not used, Whisper doubts them "
        r"\(b: low confidence .*; c: repetitive text",
    ):
        out = asr.transcribe_utterances(utts)
    assert [u.text for u in out] == ["Kids are talking", None, None]
    assert all(u.language is None for u in out)


def test_asr_is_deterministic_and_drops_a_hallucinated_tail():
    """RAVDESS 03-01-03-02-01-01-01, its speech only: faster-whisper's default sampling fallback
    once appended "For now, let's go ahead and check out our" (log-probability -1.5, every word
    at 2.788 s). Fresh models at 1 and 2 threads must give the same, single sentence."""
    import emofuse

    path = f"{emofuse.__path__[0]}/datasets/sample/03-01-03-02-01-01-01.wav"
    chunk = load_audio(path)[round(0.988 * 16000) : round(2.82 * 16000)]
    runs = [Transcriber(threads=t).transcribe_array(chunk, offset=0.988) for t in (1, 2, 1)]
    assert [[s.text for s in r.segments] for r in runs] == [["Kids are talking by the door."]] * 3
    assert all(w.end <= 2.82 for r in runs for w in r.words)


def test_asr_decodes_the_voice_features_encoder_states():
    """One encoder pass serves both: decoding the whisper-encoder extractor's states (the
    clip zero-padded to 30 s, as Whisper pads) reads the same words as transcribing the
    audio, with and without word times."""
    import emofuse
    from emofuse.features.base import get_extractor

    path = f"{emofuse.__path__[0]}/datasets/sample/03-01-05-02-01-01-01.wav"
    chunk = load_audio(path)[round(0.9 * 16000) : round(2.9 * 16000)]
    asr = Transcriber(threads=2)
    states = get_extractor("whisper-encoder").encode_windows(chunk)
    assert states.shape == (1, 1500, 384)
    plain = asr.transcribe_array(chunk, offset=0.9)
    shared = asr.transcribe_array(chunk, offset=0.9, encoder_states=states)
    bare = asr.transcribe_array(chunk, offset=0.9, encoder_states=states, word_timestamps=False)
    assert plain.text == shared.text == bare.text == "Kids are talking by the door"
    assert [w.word for w in shared.words] == [w.word for w in plain.words]
    assert bare.words == [] and 0.9 <= bare.segments[0].start < bare.segments[0].end <= 2.9
    with pytest.raises(InputError, match="one window of at most 30 s"):
        asr.transcribe_array(np.zeros(31 * 16000, np.float32), encoder_states=states)


def test_segment_media_gives_the_voice_features_of_the_samples_it_transcribed(tmp_path):
    """With the extractor passed in, each stretch is encoded once: its features are exactly
    what the extractor computes for the utterance (PCM audio), and the words are the same as
    transcribing without it."""
    import emofuse
    from emofuse.features.base import get_extractor

    sample = f"{emofuse.__path__[0]}/datasets/sample"
    waves = [load_audio(f"{sample}/03-01-0{e}-02-01-01-01.wav") for e in (3, 5)]
    path = write_wav(tmp_path / "two.wav", np.concatenate([waves[0], waves[1]]), 16000)
    encoder = get_extractor("whisper-encoder")
    asr = Transcriber(threads=2)
    features: dict = {}
    found: list = []
    utts = asr.segment_media(path, encoder=encoder, features=features, on_speech=found.append)
    assert [u.text for u in utts] == [u.text for u in asr.segment_media(path)]
    assert len(utts) == 2 and set(features) == {u.id for u in utts}
    assert found and found[0][0][0] == utts[0].start
    for u in utts:
        alone = encoder.extract(u)
        assert features[u.id]["frames"].shape == alone["frames"].shape
        np.testing.assert_allclose(features[u.id]["frames"], alone["frames"], atol=1e-5)
        np.testing.assert_allclose(features[u.id]["pooled"], alone["pooled"], atol=1e-6)


def test_quiet_speech_is_found_where_it_is():
    """A RAVDESS sentence at -60 dBFS (its loud end): Silero alone starts the speech 1.2 s
    late and finds none at -70; raised first, both give the stretch found at a normal level.
    Recordings as loud as RAVDESS's quietest are not touched."""
    import emofuse

    wave = load_audio(f"{emofuse.__path__[0]}/datasets/sample/03-01-03-02-01-01-01.wav")
    top = float(np.quantile(np.abs(wave), 0.999))
    normal = detect_speech(wave, min_silence_ms=500, speech_pad_ms=100)
    assert len(normal) == 1
    for db in (-60.0, -70.0):
        quiet = (wave / top * 10 ** (db / 20)).astype(np.float32)
        found = detect_speech(quiet, min_silence_ms=500, speech_pad_ms=100)
        assert found == normal, db
        plain = detect_speech(quiet, min_silence_ms=500, speech_pad_ms=100, quiet_peak=0.0)
        assert not plain or plain[0][0] > normal[0][0] + 0.5, db
    ravdess_quietest = (wave / top * 0.0054).astype(np.float32)
    assert detect_speech(ravdess_quietest, quiet_peak=0.005) == detect_speech(
        ravdess_quietest, quiet_peak=0.0
    )


def test_asr_and_the_whisper_encoder_share_one_model():
    """Loading tiny.en takes about a second: the transcriber and the voice extractor of the
    same device, compute type and threads use one copy, so their numbers are the same."""
    from emofuse.features import get_extractor

    encoder = get_extractor("whisper-encoder")
    encoder.ensure_ready()
    assert Transcriber()._ensure_model().model is encoder._model
    assert Transcriber(threads=1)._ensure_model().model is not encoder._model


def test_voice_activity_detection_leaves_the_process_torch_threads_alone(tmp_path):
    """silero_vad's import sets torch to one thread for the whole process; a fresh process that
    detects speech keeps the threads it set (the analysis ran all its torch work on one)."""
    import subprocess
    import sys

    wav = write_wav(tmp_path / "s.wav", np.zeros(16000, dtype=np.float32))
    script = (
        "import torch\n"
        "torch.set_num_threads(3)\n"
        "from emofuse.features.vad import detect_speech\n"
        f"detect_speech({str(wav)!r})\n"
        "print(torch.get_num_threads())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "3"

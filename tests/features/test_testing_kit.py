from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emofuse.features.media import load_audio, probe, read_frames
from emofuse.testing import make_utterances, synth_speech_like, write_bad_media, write_wav


def test_synth_speech_is_deterministic_and_bounded():
    a = synth_speech_like(1.0, 16000, seed=3)
    b = synth_speech_like(1.0, 16000, seed=3)
    c = synth_speech_like(1.0, 16000, seed=4)
    assert a.shape == (16000,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.4 < np.abs(a).max() <= 0.5


def test_synth_speech_pitch_follows_f0():
    # Dominant low-frequency peak of the spectrum sits near the requested mean F0.
    for f0 in (110.0, 220.0):
        x = synth_speech_like(2.0, 16000, seed=0, f0=f0)
        spec = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(x.size, 1 / 16000)
        band = (freqs > 60) & (freqs < 400)
        peak = freqs[band][np.argmax(spec[band])]
        assert 0.75 * f0 < peak < 1.25 * f0


def test_write_wav_subtypes(tmp_path):
    x = synth_speech_like(0.5, 8000, seed=1)
    for subtype in ("PCM_16", "PCM_24", "PCM_U8", "FLOAT"):
        p = write_wav(tmp_path / "sub" / f"{subtype}.wav", x, 8000, subtype=subtype)
        info = sf.info(str(p))
        assert info.subtype == subtype and info.samplerate == 8000 and info.frames == x.size


def test_bad_media_set_is_complete_and_deterministic(tmp_path):
    a = write_bad_media(tmp_path / "a", seed=0)
    b = write_bad_media(tmp_path / "b", seed=0)
    expected = {
        "speech", "corrupt", "empty", "truncated", "truncated_header", "silent", "short",
        "stereo_44k", "u8", "pcm24", "noaudio", "video", "image", "corrupt_image",
        "transcript_latin1", "transcript_empty",
    }  # fmt: skip
    assert set(a) == expected
    for key, path in a.items():
        assert path.is_file(), key
        assert path.stat().st_size < 300_000, key  # kept tiny
        if path.suffix in {".wav", ".txt", ".jpg", ".png"}:
            assert path.read_bytes() == b[key].read_bytes(), key
    assert a["empty"].stat().st_size == 0 and a["transcript_empty"].stat().st_size == 0
    with pytest.raises(UnicodeDecodeError):
        a["transcript_latin1"].read_text(encoding="utf-8")
    assert "Café" in a["transcript_latin1"].read_text(encoding="latin-1")
    assert sf.info(str(a["u8"])).subtype == "PCM_U8"
    assert sf.info(str(a["stereo_44k"])).channels == 2


def test_written_videos_are_what_they_claim(tmp_path):
    m = write_bad_media(tmp_path)
    no_audio, video = probe(m["noaudio"]), probe(m["video"])
    assert no_audio.has_video and not no_audio.has_audio
    assert video.has_video and video.has_audio and (video.width, video.height) == (64, 48)
    frames, _ = read_frames(m["video"], fps=100)
    assert len(frames) == 10  # 1 s at 10 fps, all distinct
    assert len({f.tobytes() for f in frames}) == 10
    tone = load_audio(m["video"])
    spec = np.abs(np.fft.rfft(tone))
    assert abs(np.fft.rfftfreq(tone.size, 1 / 16000)[np.argmax(spec)] - 440) < 5


def test_make_utterances_text_only():
    utts = make_utterances(10, seed=1)
    assert [u.id for u in utts] == [f"synthetic_{i:04d}" for i in range(10)]
    assert {u.split for u in utts} == {"train", "val", "test"}
    assert all(u.text and u.labels.emotion and u.media == {} for u in utts)
    assert all(-3 <= u.labels.sentiment <= 3 for u in utts)
    assert make_utterances(10, seed=1) == utts
    assert make_utterances(10, seed=2) != utts


def test_make_utterances_with_media_and_dialogues(tmp_path):
    utts = make_utterances(4, ("text", "audio", "image"), root=tmp_path, dialogue_size=2)
    assert [(u.dialogue_id, u.turn) for u in utts] == [
        ("synthetic_dia000", 0),
        ("synthetic_dia000", 1),
        ("synthetic_dia001", 0),
        ("synthetic_dia001", 1),
    ]
    for u in utts:
        assert set(u.media) == {"audio", "image"}
        assert probe(u.media["audio"]).duration == pytest.approx(1.0)
    with pytest.raises(ValueError, match="root is required"):
        make_utterances(2, ("audio",))
    with pytest.raises(ValueError, match="unknown modalities"):
        make_utterances(2, ("smell",))

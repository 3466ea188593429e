from __future__ import annotations

import math
import time

import numpy as np
import pytest

from conftest import shared_subdir
from emofuse.errors import InputError
from emofuse.features.base import EXTRACTORS, get_extractor
from emofuse.features.media import load_audio, probe
from emofuse.records import Utterance
from emofuse.testing import write_bad_media

pytest.importorskip("opensmile")
pytest.importorskip("faster_whisper")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_bad_media(tmp_path_factory.mktemp("audio_media"))


@pytest.fixture(scope="module")
def egemaps():
    ex = get_extractor("egemaps")
    ex.ensure_ready()
    return ex


@pytest.fixture(scope="module")
def whisper():
    ex = get_extractor("whisper-encoder", threads=2)
    ex.ensure_ready()
    return ex


def _utt(uid, **media):
    return Utterance(id=uid, dataset="t", media=media)


def test_registered_with_contract():
    for name in ("egemaps", "whisper-encoder"):
        cls = EXTRACTORS.get(name)
        assert cls.modality == "audio" and cls.dependencies
        ex = cls()
        assert ex.fingerprint() == cls().fingerprint()
    assert (
        get_extractor("whisper-encoder").fingerprint()
        != get_extractor("whisper-encoder", compute_type="float32").fingerprint()
    )
    assert get_extractor("egemaps").outputs()["functionals"].dim == 88


def test_source_is_audio_else_video(egemaps):
    assert str(egemaps.source_path(_utt("a", audio="x.wav", video="y.mp4"))) == "x.wav"
    assert str(egemaps.source_path(_utt("b", video="y.mp4"))) == "y.mp4"
    assert egemaps.source_path(_utt("c")) is None


def test_egemaps_on_synthetic_speech(egemaps, media):
    feats = egemaps.validate(egemaps.extract(_utt("s", audio=str(media["speech"]))))
    assert feats["functionals"].shape == (88,)
    assert feats["lld"].shape[1] == 25 and abs(feats["lld"].shape[0] - 150) <= 6  # 10 ms hop
    names = egemaps.feature_names()
    f0 = feats["functionals"][names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    # synth F0 is ~140 Hz = 12 * log2(140 / 27.5) ≈ 28 semitones
    assert 24 < f0 < 32


def test_bad_inputs_become_errors_in_batches(egemaps, whisper, media):
    utts = [
        _utt("ok", audio=str(media["speech"])),
        _utt("silent", audio=str(media["silent"])),
        _utt("corrupt", audio=str(media["corrupt"])),
        _utt("noaudio", video=str(media["noaudio"])),
        _utt("nothing"),
    ]
    for ex in (egemaps, whisper):
        out = ex.extract_batch(utts)
        assert isinstance(out[0], dict)
        errs = out[1:]
        assert all(isinstance(e, InputError) for e in errs)
        assert errs[0].path == str(media["silent"]) and "audio is silent" in errs[0].problem
        assert errs[1].path == str(media["corrupt"]) and "cannot decode audio" in errs[1].problem
        assert errs[2].path == str(media["noaudio"]) and "has no audio track" in errs[2].problem
        assert errs[3].path == "nothing" and "no audio or video" in errs[3].problem


def test_whisper_frames_follow_duration(whisper, media):
    feats = whisper.validate(whisper.extract(_utt("s", audio=str(media["speech"]))))
    assert feats["frames"].shape == (75, 384)  # 1.5 s / 20 ms
    np.testing.assert_allclose(feats["pooled"], feats["frames"].mean(axis=0), rtol=1e-5, atol=1e-6)
    span = Utterance(id="p", dataset="t", media={"audio": str(media["speech"])}, start=0.2, end=0.9)
    assert whisper.extract(span)["frames"].shape == (35, 384)


# -- real data ------------------------------------------------------------------------------


def _ravdess(emotion_code: str, actors=range(1, 7)):
    root = shared_subdir("ravdess") / "speech16k"
    intensity = "01" if emotion_code == "01" else "02"
    return [root / f"03-01-{emotion_code}-{intensity}-01-01-{a:02d}.wav" for a in actors]


@pytest.mark.shared_data
def test_egemaps_real_ravdess_happy_vs_sad(egemaps):
    names = egemaps.feature_names()
    f0 = names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    loud = names.index("loudness_sma3_amean")
    happy, sad, seconds, elapsed = [], [], 0.0, 0.0
    for files, bucket in ((_ravdess("03"), happy), (_ravdess("04"), sad)):
        for f in files:
            t = time.perf_counter()
            feats = egemaps.validate(egemaps.extract(_utt(f.stem, audio=str(f))))
            elapsed += time.perf_counter() - t
            seconds += probe(f).duration
            assert feats["lld"].shape[0] == pytest.approx(probe(f).duration * 100, abs=6)
            bucket.append(feats["functionals"])
    happy, sad = np.array(happy), np.array(sad)
    # Strong happy speech is higher-pitched and louder than strong sad speech, actor by actor
    # (paired over 6 actors, allowing one exception).
    assert (happy[:, f0] > sad[:, f0]).sum() >= 5
    assert (happy[:, loud] > sad[:, loud]).sum() >= 5
    assert elapsed / seconds < 0.2  # measured ~0.03 on 2 cores


@pytest.mark.shared_data
def test_whisper_real_ravdess(whisper):
    happy, sad = _ravdess("03", range(1, 3)), _ravdess("04", range(1, 3))
    pooled = {}
    for f in happy + sad:
        d = probe(f).duration
        feats = whisper.validate(whisper.extract(_utt(f.stem, audio=str(f))))
        assert feats["frames"].shape == (math.ceil(round(d * 16000) / 320), 384)
        pooled[f.stem] = feats["pooled"] / np.linalg.norm(feats["pooled"])
    v = list(pooled.values())
    # Same sentence, different speakers and emotions: related but not identical states.
    sims = [float(v[i] @ v[j]) for i in range(4) for j in range(i + 1, 4)]
    assert all(0.5 < s < 0.9999 for s in sims)


@pytest.mark.shared_data
def test_whisper_long_audio_spans_windows(whisper):
    wave = load_audio(_ravdess("03", [1])[0])
    long = np.tile(wave, math.ceil(35 * 16000 / wave.size))[: 35 * 16000]
    frames = whisper.encode(long)
    assert frames.shape == (1750, 384) and np.isfinite(frames).all()
    # The second window starts on fresh audio, so its first frame differs from the first window's
    assert not np.allclose(frames[0], frames[1500])


@pytest.mark.shared_data
def test_audio_features_from_real_video(egemaps, whisper):
    path = shared_subdir("ravdess") / "av" / "01-01-01-01-01-01-01.mp4"
    utt = Utterance(id="av", dataset="t", media={"video": str(path)}, start=0.5, end=2.5)
    assert egemaps.validate(egemaps.extract(utt))["lld"].shape[0] == pytest.approx(200, abs=6)
    assert whisper.validate(whisper.extract(utt))["frames"].shape == (100, 384)


@pytest.mark.shared_data
def test_audio_features_from_real_mosi_stereo(egemaps):
    path = shared_subdir("mosi") / "media" / "03bSnISJMiM_1.wav"
    feats = egemaps.validate(egemaps.extract(_utt("mosi", audio=str(path))))
    assert feats["functionals"].shape == (88,)


def test_whisper_encoder_unpadded_keeps_the_frame_count():
    """pad=False encodes each window at its own length: same T = ceil(samples / 320) as the
    padded states (the values differ: attention no longer sees 30 s of padding)."""
    import emofuse
    from emofuse.data.inputs import FeatureRef

    padded = FeatureRef.parse("whisper-encoder:frames").build()
    unpadded = FeatureRef.parse(
        {"extractor": "whisper-encoder", "output": "frames", "options": {"pad": False}}
    ).build()
    for n in (1, 320, 321, 16000 * 31):
        assert unpadded.encode(np.zeros(n, np.float32)).shape == ((n + 319) // 320, 384)
    wave = load_audio(f"{emofuse.__path__[0]}/datasets/sample/03-01-05-02-01-01-01.wav")
    a, b = padded.encode(wave), unpadded.encode(wave)
    assert a.shape == b.shape and np.isfinite(b).all()
    assert not np.allclose(a, b, atol=1e-3)
    assert padded.fingerprint() != unpadded.fingerprint()  # cached apart

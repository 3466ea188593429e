from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import shared_subdir
from emofuse.errors import InputError
from emofuse.features.media import (
    check_not_silent,
    load_audio,
    probe,
    read_frames,
    read_image,
)
from emofuse.testing import write_bad_media, write_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_bad_media(tmp_path_factory.mktemp("media"))


def _raises(fn, path, problem):
    with pytest.raises(InputError) as info:
        fn(path)
    err = info.value
    assert err.path == str(path)
    assert problem in err.problem
    assert str(path) in str(err) and problem in str(err)
    return err


# -- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("empty", "file is empty"),
        ("corrupt", "cannot decode audio"),
        ("truncated", "file is truncated"),
        ("truncated_header", "file is truncated"),
        ("noaudio", "has no audio track"),
        ("short", "audio too short"),
        ("transcript_latin1", "cannot decode audio"),
        ("image", "has no audio track"),
    ],
)
def test_load_audio_refuses_bad_inputs(media, key, problem):
    _raises(load_audio, media[key], problem)


def test_missing_file(tmp_path):
    for fn in (load_audio, probe, read_frames, read_image):
        _raises(fn, tmp_path / "nope.wav", "does not exist")


def test_span_outside_media(media):
    with pytest.raises(InputError, match="outside the media") as info:
        load_audio(media["speech"], start=5.0, end=6.0)
    assert info.value.path == str(media["speech"])
    with pytest.raises(InputError, match="invalid time span"):
        load_audio(media["speech"], start=1.0, end=0.5)
    with pytest.raises(InputError, match="audio too short"):
        load_audio(media["speech"], start=1.45)  # 0.05 s left


def test_silence_is_decoded_but_flagged(media):
    wave = load_audio(media["silent"])
    assert wave.shape == (16000,) and not wave.any()
    with pytest.raises(InputError, match="audio is silent") as info:
        check_not_silent(wave, media["silent"])
    assert info.value.path == str(media["silent"])
    check_not_silent(load_audio(media["speech"]), media["speech"])  # no raise


def test_probe_and_frames_refuse_bad_inputs(media):
    _raises(probe, media["corrupt"], "cannot decode media")
    _raises(probe, media["empty"], "file is empty")
    _raises(lambda p: read_frames(p), media["speech"], "has no video stream")
    _raises(lambda p: read_frames(p), media["corrupt"], "cannot decode video")
    _raises(read_image, media["corrupt_image"], "cannot decode image")
    _raises(read_image, media["speech"], "cannot decode image")


# -- decoding -------------------------------------------------------------------------------


def test_formats_decode_to_the_same_signal(media):
    ref = load_audio(media["speech"])
    assert ref.dtype == np.float32 and ref.shape == (24000,)
    np.testing.assert_allclose(load_audio(media["pcm24"]), ref, atol=1e-4)
    np.testing.assert_allclose(load_audio(media["u8"]), ref, atol=1.0 / 64)  # 8-bit steps


def test_stereo_44k_is_mixed_and_resampled(media):
    wave = load_audio(media["stereo_44k"], sr=16000)
    assert wave.shape == (24000,)
    raw, sr = sf.read(media["stereo_44k"], dtype="float32")
    assert sr == 44100 and raw.shape[1] == 2
    import soxr

    expect = soxr.resample(raw.mean(axis=1), 44100, 16000, quality="HQ")
    np.testing.assert_allclose(wave, expect, atol=1e-5)


def test_span_matches_slice_of_whole(media):
    whole = load_audio(media["stereo_44k"])
    part = load_audio(media["stereo_44k"], start=0.4, end=1.1)
    assert part.size == round(0.7 * 16000)
    np.testing.assert_allclose(part, whole[6400 : 6400 + part.size], atol=1e-5)
    tail = load_audio(media["speech"], start=1.0, end=9.0)  # end past the media is cut
    assert tail.size == 8000


def test_unicode_path(tmp_path, media):
    p = write_wav(tmp_path / "émotion 声音.wav", load_audio(media["speech"]), 16000)
    assert load_audio(p).shape == (24000,)
    img = tmp_path / "visage ✓.png"
    img.write_bytes(media["image"].read_bytes())
    assert read_image(img).shape == (24, 32, 3)


def test_probe_fields(media):
    a = probe(media["stereo_44k"])
    assert (a.has_audio, a.has_video, a.sample_rate, a.channels) == (True, False, 44100, 2)
    assert a.duration == pytest.approx(1.5)
    v = probe(media["video"])
    assert (v.width, v.height, v.fps, v.frames) == (64, 48, 10.0, 10)


def test_read_frames_uniform_and_deterministic(media):
    frames, times = read_frames(media["video"], fps=5.0)
    assert [f.shape for f in frames] == [(48, 64, 3)] * 5 and frames[0].dtype == np.uint8
    np.testing.assert_allclose(times, [0.0, 0.2, 0.4, 0.6, 0.8])
    again, times2 = read_frames(media["video"], fps=5.0)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    np.testing.assert_array_equal(times, times2)
    _, t_sub = read_frames(media["video"], fps=5.0, start=0.3, end=0.75, max_frames=2)
    np.testing.assert_allclose(t_sub, [0.3, 0.5])
    with pytest.raises(InputError, match="no video frame"):
        read_frames(media["video"], start=5.0)


def test_read_image_rgb(media):
    img = read_image(media["image"])
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    rng = np.random.default_rng(0)
    rng.integers(0, 256, 4096, dtype=np.uint8)  # write_bad_media draws corrupt.wav first
    np.testing.assert_array_equal(img, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


# -- real data ------------------------------------------------------------------------------

RAVDESS_AV = "av/01-01-01-01-01-01-01.mp4"


@pytest.mark.shared_data
def test_audio_out_of_real_ravdess_video():
    path = shared_subdir("ravdess") / RAVDESS_AV
    info = probe(path)
    assert info.has_audio and info.has_video and (info.width, info.height) == (1280, 720)
    t = time.perf_counter()
    wave = load_audio(path)
    elapsed = time.perf_counter() - t
    assert abs(wave.size / 16000 - info.duration) < 0.05
    check_not_silent(wave, path)
    assert elapsed < 2.0
    part = load_audio(path, start=1.0, end=2.0)
    np.testing.assert_allclose(part, wave[16000:32000], atol=1e-5)


@pytest.mark.shared_data
def test_frames_of_real_ravdess_video():
    path = shared_subdir("ravdess") / RAVDESS_AV
    t = time.perf_counter()
    frames, times = read_frames(path, fps=5.0)
    elapsed = time.perf_counter() - t
    assert len(frames) == 17 and frames[0].shape == (720, 1280, 3)
    assert np.all(np.abs(np.diff(times) - 0.2) < 1 / 29.97)
    assert elapsed < 5.0


@pytest.mark.shared_data
def test_real_mosi_stereo_wav():
    path = shared_subdir("mosi") / "media" / "03bSnISJMiM_1.wav"
    raw, sr = sf.read(path, dtype="float32")
    assert raw.ndim == 2 and sr == 16000
    wave = load_audio(path)
    np.testing.assert_allclose(wave, raw.mean(axis=1), atol=1e-6)
    check_not_silent(wave, path)


# -- container metadata that changes what a frame shows --------------------------------------
FIXTURES = Path(__file__).resolve().parents[1] / "data" / "media"


@pytest.mark.parametrize("name", ["phone-rot90.mp4", "phone-rot270.mp4", "anamorphic-sar2.mp4"])
def test_frames_are_read_as_a_player_shows_them(name):
    """A sideways-stored phone video (display matrix) and non-square pixels read upright and
    undistorted: the same image as the plain file, up to compression noise."""
    upright, _ = read_frames(FIXTURES / "upright.mp4", fps=5)
    shown, _ = read_frames(FIXTURES / name, fps=5)
    assert shown[0].shape == upright[0].shape == (180, 320, 3)
    assert np.abs(shown[0].astype(float) - upright[0]).mean() < 4.0  # 60+ when misread


def test_head_pose_of_a_sideways_phone_video_is_upright():
    """The bug report: head roll came out -88 degrees instead of about 2 for a rotated video."""
    pytest.importorskip("mediapipe")
    from emofuse.features import get_extractor
    from emofuse.features.face import GEOMETRY_FEATURES
    from emofuse.records import Utterance

    roll = GEOMETRY_FEATURES.index("head_roll")
    ext = get_extractor("face")
    for name in ("upright.mp4", "phone-rot90.mp4", "phone-rot270.mp4", "anamorphic-sar2.mp4"):
        res = ext.extract(Utterance(id="v", dataset="t", media={"video": str(FIXTURES / name)}))
        assert abs(float(res["geometry"][:, roll].mean())) < 10, name


@pytest.mark.slow
def test_span_reads_after_whisper_never_hang(tmp_path):
    """Frame-threaded decoding hung in avcodec_free_context when a span read closed the stream
    early, after Whisper had run in the process (the bundled clip, within 200 reads). The reads
    run in a child process so that a hang fails this test instead of stopping the suite."""
    import subprocess
    import sys

    import emofuse

    clip = f"{emofuse.__path__[0]}/datasets/sample/01-01-01-01-01-01-01.mp4"
    script = (
        "from emofuse.features.asr import Transcriber\n"
        "from emofuse.features.media import read_frames\n"
        f"Transcriber().segment_media({clip!r})\n"
        "for i in range(200):\n"
        f"    read_frames({clip!r}, fps=5, start=0.5 + (i % 5) * 0.3, end=2.0)\n"
        "print('done')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-500:]


def test_an_undecodable_image_is_one_error_and_no_opencv_log_line(tmp_path, capfd):
    from emofuse.features.media import read_image

    png = tmp_path / "trunc.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(InputError, match=r"trunc\.png: cannot decode image"):
        read_image(png)
    assert capfd.readouterr().err == ""  # OpenCV printed "[ERROR:0@…] … readHeader …" here


def _remux_with_offset(src, dst, seconds):
    """A copy of ``src`` whose timestamps start at ``seconds`` (a cut from a longer recording)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        out = {
            s.index: o.add_stream_from_template(s)
            for s in i.streams
            if s.type in ("audio", "video")
        }
        for packet in i.demux():
            if packet.dts is None or packet.stream.index not in out:
                continue
            shift = round(seconds / packet.time_base)
            packet.pts += shift
            packet.dts += shift
            packet.stream = out[packet.stream.index]
            o.mux(packet)
    return dst


def test_a_start_time_offset_is_the_media_s_zero(tmp_path):
    """Kind 1 (container metadata): a file whose timestamps start at 2 s is read as a player
    shows it — whole audio, spans and frame times as in the same file without the offset (the
    whole audio had read as empty, spans as 2 s late)."""
    import av

    import emofuse

    clip = Path(emofuse.__file__).parent / "datasets" / "sample" / "01-01-01-01-01-01-01.mp4"
    late = _remux_with_offset(clip, tmp_path / "late.mp4", 2.0)
    with av.open(str(late)) as c:
        assert c.start_time == 2_000_000  # the fixture really starts at 2 s
    assert np.array_equal(load_audio(late), load_audio(clip))
    assert np.array_equal(
        load_audio(late, start=1.0, end=2.0), load_audio(clip, start=1.0, end=2.0)
    )
    frames, times = read_frames(late, fps=5, start=1.0, end=1.5)
    ref_frames, ref_times = read_frames(clip, fps=5, start=1.0, end=1.5)
    assert np.allclose(times, ref_times) and all(
        np.array_equal(a, b) for a, b in zip(frames, ref_frames, strict=True)
    )


def _every_frame_decoded(path, start, end, fps=5.0, max_frames=None):
    """What read_frames gives when no frame is skipped (decoding every frame after the seek)."""
    import math

    from emofuse.features import media

    t1 = math.inf if end is None else end
    limit = math.inf if max_frames is None else max_frames
    got = media._read_span(Path(path), start, t1, fps, limit, skip_before=-math.inf)
    assert got is not None
    return got[0], np.asarray(got[1])


def _same_samples(a, b):
    return np.array_equal(a[1], b[1]) and all(
        np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True)
    )


@pytest.mark.parametrize("margin", [None, 0.0])
def test_read_frames_skips_only_frames_no_sample_needs(monkeypatch, margin):
    """Non-reference frames well before the span are not decoded (about half of the bundled
    clip's frames are non-reference); the samples are those of decoding every frame. With no
    margin the frame before the span is often one of the skipped: the span is read again."""
    import av

    import emofuse
    from emofuse.features import media

    clip = Path(emofuse.__file__).parent / "datasets" / "sample" / "01-01-01-01-01-01-01.mp4"
    with av.open(str(clip)) as c:
        c.streams.video[0].codec_context.skip_frame = "NONREF"
        kept = sum(1 for _ in c.decode(video=0))
    assert kept < 0.75 * probe(clip).frames  # there is something to skip
    if margin is not None:
        monkeypatch.setattr(media, "SKIP_MARGIN_S", margin)
    reads = []
    real = media._read_span
    monkeypatch.setattr(media, "_read_span", lambda *a, **k: reads.append(k) or real(*a, **k))
    spans = [(0.583, 1.2), (1.05, 2.5), (2.13, 2.9), (2.9, None), (3.25, None)]
    for start, end in spans:
        got = read_frames(clip, fps=5, start=start, end=end)
        assert _same_samples(got, _every_frame_decoded(clip, start, end))
    if margin == 0.0:
        assert len(reads) > len(spans)  # some span was read again


def test_read_frames_gap_longer_than_the_margin(tmp_path, monkeypatch):
    """A variable-frame-rate video with a 0.9 s gap: the frame before a span starting in the
    gap lies further back than the margin, so it may be skipped; the result stays exact."""
    import fractions

    import av

    path = tmp_path / "vfr.mp4"
    base = fractions.Fraction(1, 1000)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.codec_context.time_base = v.time_base = base
        v.options = {"x264-params": "keyint=60:bframes=3"}
        pts = 0
        for i in range(90):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = pts, base
            pts += 900 if i == 40 else 33
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    from emofuse.features import media

    reads = []
    real = media._read_span
    monkeypatch.setattr(media, "_read_span", lambda *a, **k: reads.append(k) or real(*a, **k))
    spans = [(1.5, 2.5), (1.9, 2.6), (2.3, 3.0), (0.4, 1.0)]
    for start, end in spans:
        got = read_frames(path, fps=5, start=start, end=end)
        assert _same_samples(got, _every_frame_decoded(path, start, end))
    assert len(reads) > len(spans)  # a span in the gap was read again

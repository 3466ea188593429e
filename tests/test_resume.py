"""Feature extraction survives SIGKILL, re-extracts only changed sources, and skips bad items.

Real RAVDESS speech (192 clips) through the ``egemaps`` extractor; the killed-and-resumed cache
must hold exactly the arrays of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_subdir
from emofuse.datasets import DATASETS
from emofuse.errors import InputError
from emofuse.features import FeatureCache, FeatureStore, extract_features, get_extractor
from emofuse.records import Utterance, read_manifest

pytestmark = pytest.mark.shared_data


def ravdess_speech(tmp_path: Path) -> Path:
    """Prepare the real RAVDESS recipe and return a manifest of its 192 speech wavs."""
    out = DATASETS.get("ravdess")(root=shared_subdir("ravdess")).prepare(tmp_path / "ravdess")
    utts = [u for f in sorted(out.glob("*.jsonl")) for u in read_manifest(f)]
    # the one audio-visual clip is paired with its speech wav; keep the wavs only
    speech = [
        u.model_copy(update={"media": {"audio": u.media["audio"]}})
        for u in utts
        if "audio" in u.media
    ]
    assert len(speech) == 192
    from emofuse.records import write_manifest

    return write_manifest(tmp_path / "speech.jsonl", speech)


def index_rows(cache_root: Path) -> int:
    files = list(cache_root.glob("egemaps/*/index.jsonl"))
    if not files:
        return 0
    return files[0].read_bytes().count(b"\n")


def all_arrays(cache_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    c = FeatureCache(cache_dir)
    return {i: c.get(i) for i in c.ids()}


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_arrays(tmp_path):
    manifest = ravdess_speech(tmp_path)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [
        sys.executable,
        "-c",
        "from emofuse.cli import main; main()",
        "features",
        "extract",
        str(manifest),
        "-e",
        "egemaps",
        "--batch-size",
        "8",
        "--cache",
        str(killed),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while index_rows(killed) < 16 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "extraction finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (cache_dir,) = [p.parent for p in killed.glob("egemaps/*/index.jsonl")]
    done_at_kill = len(FeatureCache(cache_dir).ids())
    assert 8 <= done_at_kill < 192, done_at_kill

    report_file = tmp_path / "resume.json"
    resumed = subprocess.run(
        [*cmd, "--json", str(report_file)], capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (rep,) = json.loads(report_file.read_text())
    assert rep["cached"] == done_at_kill
    assert rep["extracted"] == 192 - done_at_kill and rep["failed"] == {}

    utts = read_manifest(manifest)
    report = extract_features(utts, get_extractor("egemaps"), FeatureStore(clean), batch_size=8)
    assert report.extracted == 192

    got, want = all_arrays(cache_dir), all_arrays(report.cache_dir)
    assert Path(rep["cache_dir"]).name == report.cache_dir.name  # same fingerprint
    assert sorted(got) == sorted(want) == sorted(u.id for u in utts)
    for uid, feats in want.items():
        assert feats.keys() == got[uid].keys()
        for key, arr in feats.items():
            np.testing.assert_array_equal(got[uid][key], arr, err_msg=f"{uid}/{key}")


def test_changed_source_is_re_extracted_alone(tmp_path):
    wavs = sorted((shared_subdir("ravdess") / "speech16k").glob("*.wav"))[:4]
    local = []
    for w in wavs[:3]:
        shutil.copy(w, tmp_path / w.name)
        local.append(tmp_path / w.name)
    utts = [Utterance(id=p.stem, dataset="mine", media={"audio": str(p)}) for p in local]
    ext = get_extractor("egemaps")
    store = FeatureStore(tmp_path / "cache")
    first = extract_features(utts, ext, store)
    assert first.extracted == 3
    cache = store.cache(ext)
    before = {u.id: cache.get(u.id) for u in utts}

    changed = local[0]
    shutil.copyfile(wavs[3], changed)  # new content: another real clip
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = extract_features(utts, ext, store)
    assert (second.cached, second.extracted, second.failed) == (2, 1, {})

    cache = store.cache(ext)
    reference = extract_features(
        [Utterance(id="ref", dataset="mine", media={"audio": str(wavs[3])})], ext, tmp_path / "ref"
    )
    want = FeatureCache(reference.cache_dir).get("ref")
    now = cache.get(changed.stem)
    assert now.keys() == want.keys()
    for key, arr in want.items():
        np.testing.assert_array_equal(now[key], arr)
    assert any(not np.array_equal(now[k], before[changed.stem][k]) for k in now)
    for u in utts[1:]:
        for key, arr in before[u.id].items():
            np.testing.assert_array_equal(cache.get(u.id)[key], arr)


def test_corrupt_file_in_a_folder_is_reported_and_the_rest_stored(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for w in sorted((shared_subdir("ravdess") / "speech16k").glob("*.wav"))[:4]:
        shutil.copy(w, folder / w.name)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(40))
    utts = DATASETS.get("folder")(root=folder).dataset().all()
    assert len(utts) == 5
    bad = next(u for u in utts if "corrupt" in u.id)

    store = FeatureStore(tmp_path / "cache")
    ext = get_extractor("egemaps")
    report = extract_features(utts, ext, store, batch_size=2)
    assert list(report.failed) == [bad.id]
    assert report.extracted == 4
    cache = store.cache(ext)
    assert sorted(cache.ids()) == sorted(u.id for u in utts if u is not bad)
    with pytest.raises(InputError):
        cache.get(bad.id)
    again = extract_features(utts, ext, store)
    assert again.cached == 5 and again.extracted == 0 and list(again.failed) == [bad.id]

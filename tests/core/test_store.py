import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from emofuse.config import Config
from emofuse.errors import ConfigError, EmofuseError, InputError
from emofuse.features.base import FeatureExtractor, OutputSpec
from emofuse.features.pipeline import extract_features
from emofuse.features.store import FeatureStore
from emofuse.records import Utterance


class CountConfig(Config):
    scale: float = 1.0


class FileStats(FeatureExtractor):
    """Deterministic test extractor: byte statistics of utt.media['audio']."""

    name = "file-stats"
    modality = "audio"
    Config = CountConfig
    calls = 0

    def outputs(self):
        return {"vec": OutputSpec(dim=3, kind="vector"), "seq": OutputSpec(dim=2, kind="sequence")}

    def source_path(self, utt):
        return utt.media.get("audio")

    def extract(self, utt):
        FileStats.calls += 1
        with open(utt.media["audio"], "rb") as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8).astype(np.float32)
        if data.size == 0:
            raise InputError(utt.media["audio"], "file is empty")
        s = self.config.scale
        seq = np.stack([data[: min(5, data.size)], data[: min(5, data.size)] * 2], axis=1) * s
        return {
            "vec": np.array([data.mean(), data.std(), data.size], dtype=np.float32) * s,
            "seq": seq,
        }


def _utts(tmp_path, n=10, empty=()):
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(b"" if i in empty else bytes(range(i, i + 20)))
        out.append(Utterance(id=f"u{i}", dataset="t", media={"audio": str(p)}))
    return out


def _arrays(cache, ids):
    return {i: cache.get(i) for i in ids}


def test_extract_store_and_skip_cached(tmp_path):
    utts = _utts(tmp_path)
    ext = FileStats()
    store = FeatureStore(tmp_path / "cache")
    rep = extract_features(utts, ext, store, batch_size=3)
    assert (rep.total, rep.cached, rep.extracted, rep.failed) == (10, 0, 10, {})
    cache = store.cache(ext)
    assert sorted(cache.ids()) == sorted(u.id for u in utts)
    got = cache.get("u3")
    assert got["vec"].shape == (3,) and got["seq"].shape == (5, 2)
    assert (cache.dir / "config.json").is_file()
    assert len(list((cache.dir / "shards").glob("*.safetensors"))) == 4
    again = extract_features(utts, FileStats(), store)
    assert (again.cached, again.extracted) == (10, 0)


def test_shards_follow_the_umask_not_0600(tmp_path):
    """safetensors writes 0600; a cache folder shared by a group must stay readable."""
    import stat

    old = os.umask(0o002)
    try:
        store = FeatureStore(tmp_path / "cache")
        extract_features(_utts(tmp_path, 3), FileStats(), store, batch_size=2)
    finally:
        os.umask(old)
    shards = list((store.cache(FileStats()).dir / "shards").glob("*.safetensors"))
    assert shards and {stat.S_IMODE(p.stat().st_mode) for p in shards} == {0o664}


def test_fingerprint_separates_configs(tmp_path):
    utts = _utts(tmp_path, 2)
    store = FeatureStore(tmp_path / "cache")
    extract_features(utts, FileStats(), store)
    rep = extract_features(utts, FileStats(scale=2.0), store)
    assert rep.extracted == 2
    a, b = store.cache(FileStats()), store.cache(FileStats(scale=2.0))
    assert a.dir != b.dir
    np.testing.assert_allclose(b.get("u1")["vec"], 2 * a.get("u1")["vec"])


def test_changed_source_is_reextracted(tmp_path):
    utts = _utts(tmp_path, 3)
    store = FeatureStore(tmp_path / "cache")
    extract_features(utts, FileStats(), store)
    p = tmp_path / "f1.bin"
    p.write_bytes(bytes(range(100, 140)))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    rep = extract_features(utts, FileStats(), store)
    assert (rep.cached, rep.extracted) == (2, 1)
    assert store.cache(FileStats()).get("u1")["vec"][2] == 40


def test_bad_items_reported_rest_kept_and_retry(tmp_path):
    utts = _utts(tmp_path, 5, empty={2})
    store = FeatureStore(tmp_path / "cache")
    rep = extract_features(utts, FileStats(), store, batch_size=2)
    assert list(rep.failed) == ["u2"] and "file is empty" in rep.failed["u2"]
    assert rep.extracted == 4
    cache = store.cache(FileStats())
    with pytest.raises(InputError, match="file is empty"):
        cache.get("u2")
    FileStats.calls = 0
    rep2 = extract_features(utts, FileStats(), store)
    assert FileStats.calls == 0 and list(rep2.failed) == ["u2"]  # unchanged bad input not retried
    (tmp_path / "f2.bin").write_bytes(b"fixed!")
    rep3 = extract_features(utts, FileStats(), store, retry_failed=True)
    assert rep3.failed == {} and cache.get("u2")["vec"][2] == 6


def test_torn_index_line_and_orphan_shard_are_ignored(tmp_path):
    utts = _utts(tmp_path, 4)
    store = FeatureStore(tmp_path / "cache")
    extract_features(utts[:2], FileStats(), store)
    cache = store.cache(FileStats())
    with cache.index_path.open("ab") as fh:  # a writer killed mid-line
        fh.write(b'{"id": "u2", "sig": "abc", "sha')
    (cache.shards_dir / "orphan.safetensors").write_bytes(b"half a shard")
    fresh = FeatureStore(tmp_path / "cache").cache(FileStats())
    assert sorted(fresh.ids()) == ["u0", "u1"]
    rep = extract_features(utts, FileStats(), store)
    assert rep.extracted == 2
    # the torn line was completed by the next append; the index stays readable
    assert sorted(FeatureStore(tmp_path / "cache").cache(FileStats()).ids()) == [
        "u0",
        "u1",
        "u2",
        "u3",
    ]


def _worker(args):
    root, paths = args
    utts = [Utterance(id=os.path.basename(p), dataset="t", media={"audio": p}) for p in paths]
    extract_features(utts, FileStats(), FeatureStore(root), batch_size=1)


def test_concurrent_writers_share_one_cache(tmp_path):
    utts = _utts(tmp_path, 24)
    paths = [u.media["audio"] for u in utts]
    root = str(tmp_path / "cache")
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_worker, [(root, paths[i::4]) for i in range(4)])
    cache = FeatureStore(root).cache(FileStats())
    assert len(cache.ids()) == 24
    import json

    rows = [json.loads(line) for line in cache.index_path.read_text().splitlines()]
    assert sum("id" in r for r in rows) == 24  # every append landed whole...
    batches = {r["batch"] for r in rows if "id" in r}
    assert batches == {r["commit"] for r in rows if "commit" in r}  # ...and was committed


def test_a_batch_torn_by_a_kill_is_extracted_again_whole(tmp_path):
    """Rows of a batch count only with its commit line: a kill in the middle of the index write
    leaves no half-recorded batch, so the resumed batch has the same members (and the same
    arrays for extractors whose output depends on the batch)."""
    utts = _utts(tmp_path, 6)
    store = FeatureStore(tmp_path / "cache")
    ext = FileStats()
    extract_features(utts[:3], ext, store, batch_size=3)
    cache = store.cache(ext)
    text = cache.index_path.read_text()
    lines = text.splitlines(keepends=True)
    assert '"commit"' in lines[-1]
    cache.index_path.write_text("".join(lines[:-2]))  # killed after two rows of three
    fresh = FeatureStore(tmp_path / "cache").cache(ext)
    assert fresh.ids() == []  # the whole batch is pending again
    assert [u.id for u in fresh.pending(utts[:3], ext)] == [u.id for u in utts[:3]]
    report = extract_features(utts[:3], ext, store, batch_size=3)
    assert report.extracted == 3


def test_tidy_removes_what_killed_jobs_left_and_keeps_everything_else(tmp_path):
    utts = _utts(tmp_path, 3)
    store = FeatureStore(tmp_path / "cache")
    ext = FileStats()
    extract_features(utts, ext, store, batch_size=3)
    cache = store.cache(ext)
    (live,) = cache.shards_dir.glob("*.safetensors")
    orphan = cache.shards_dir / "deadbeef.safetensors"
    orphan.write_bytes(live.read_bytes())
    tmp = cache.shards_dir / ".cafe.safetensors.tmp"
    tmp.write_bytes(b"half")
    young = cache.shards_dir / "young.safetensors"
    young.write_bytes(b"being written")
    old = 10_000
    for p in (orphan, tmp, live):
        os.utime(p, (p.stat().st_atime - old, p.stat().st_mtime - old))
    removed = cache.tidy()
    assert sorted(p.name for p in removed) == sorted([orphan.name, tmp.name])
    assert live.exists() and young.exists()  # named, or too young to judge
    assert sorted(store.cache(ext).ids()) == sorted(u.id for u in utts)


def test_contract_violations_are_errors(tmp_path):
    class Liar(FileStats):
        def extract(self, utt):
            return {"vec": np.zeros(4), "seq": np.zeros((2, 2))}

    with pytest.raises(EmofuseError, match="declared vector of dim 3"):
        extract_features(_utts(tmp_path, 1), Liar(), tmp_path / "c")
    with pytest.raises(ConfigError):
        extract_features(_utts(tmp_path, 1), FileStats(), tmp_path / "c", batch_size=0)
    dup = _utts(tmp_path, 1) * 2
    with pytest.raises(InputError, match="twice"):
        extract_features(dup, FileStats(), tmp_path / "c")


def test_a_full_disk_is_one_line_and_leaves_the_store_consistent(tmp_path, monkeypatch):
    import safetensors.numpy

    from emofuse.errors import InputError
    from emofuse.features import FeatureStore, extract_features, get_extractor
    from emofuse.records import Utterance

    ext = get_extractor("minilm")
    utts = [Utterance(id=f"u{i}", dataset="x", text=f"sentence {i}") for i in range(3)]

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    monkeypatch.setattr(
        ext,
        "extract_batch",
        lambda us: [
            {"pooled": np.zeros(384, np.float32), "tokens": np.zeros((2, 384), np.float32)}
            for _ in us
        ],
    )
    store = FeatureStore(tmp_path)
    with pytest.raises(
        InputError,
        match=r"cannot write features \(No space left on device\); "
        r"what was stored before is intact",
    ):
        extract_features(utts, ext, store)
    cache = store.cache(ext)
    assert cache.ids() == [] and not list(cache.shards_dir.glob(".*tmp"))
    monkeypatch.undo()
    monkeypatch.setattr(
        ext,
        "extract_batch",
        lambda us: [
            {"pooled": np.ones(384, np.float32), "tokens": np.ones((2, 384), np.float32)}
            for _ in us
        ],
    )
    report = extract_features(utts, ext, store)  # space again: the same command resumes
    assert report.extracted == 3 and sorted(cache.ids()) == ["u0", "u1", "u2"]
    shard = next(cache.shards_dir.glob("*.safetensors"))
    shard.write_bytes(b"damaged")
    with pytest.raises(InputError, match="unreadable feature shard"):
        store.cache(ext).get("u0")


def test_a_file_replaced_keeping_size_and_mtime_is_extracted_again(tmp_path):
    """The bug report: a WAV replaced by another of the same length with its modification time
    kept (cp -p, rsync -a, tar x) was served the old features."""
    from emofuse.features import get_extractor

    pytest.importorskip("opensmile")
    from emofuse.testing import synth_speech_like, write_wav

    a = write_wav(tmp_path / "a.wav", synth_speech_like(1.0, f0=140.0, seed=1))
    b = write_wav(tmp_path / "b.wav", synth_speech_like(1.0, f0=260.0, seed=2))
    assert a.stat().st_size == b.stat().st_size
    utt = Utterance(id="clip", dataset="t", media={"audio": str(a)})
    ext = get_extractor("egemaps")
    store = FeatureStore(tmp_path / "cache")
    extract_features([utt], ext, store)
    before = store.cache(ext).get("clip")["functionals"].copy()
    stamp = a.stat()
    a.write_bytes(b.read_bytes())  # same size...
    os.utime(a, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # ...and the old mtime, as cp -p
    assert a.stat().st_mtime_ns == stamp.st_mtime_ns and a.stat().st_size == stamp.st_size
    report = extract_features([utt], ext, store)
    assert report.extracted == 1
    after = store.cache(ext).get("clip")["functionals"]
    assert float(np.abs(after - before).max()) > 1.0


class BatchMean(FeatureExtractor):
    """Test extractor whose arrays depend on the other members of the batch (as padding does)."""

    name = "batch-mean"
    modality = "audio"
    Config = CountConfig
    batch_size = 4

    def outputs(self):
        return {"vec": OutputSpec(dim=1, kind="vector")}

    def source_path(self, utt):
        return utt.media.get("audio")

    def extract(self, utt):  # pragma: no cover - extract_batch is what runs
        return self.extract_batch([utt])[0]

    def extract_batch(self, utts):
        values = [
            float(np.frombuffer(Path(u.media["audio"]).read_bytes(), np.uint8).sum()) for u in utts
        ]
        mean = sum(values) / len(values)
        return [{"vec": np.array([v + mean / 1000], np.float32)} for v in values]


def test_a_changed_source_is_extracted_in_its_original_batch(tmp_path):
    """Batches are cut from the whole input list: re-extracting one changed source redoes its
    batch whole, so every array equals a fresh extraction of the changed data (extracting the
    changed item alone would give another value to a batch-dependent extractor)."""
    utts = _utts(tmp_path, 10)
    store = FeatureStore(tmp_path / "cache")
    ext = BatchMean()
    extract_features(utts, ext, store)
    (tmp_path / "f5.bin").write_bytes(bytes(range(100, 130)))
    report = extract_features(utts, ext, store)
    assert report.extracted == 1 and report.cached == 9
    fresh = FeatureStore(tmp_path / "fresh")
    extract_features(utts, ext, fresh)
    got = _arrays(store.cache(ext), [u.id for u in utts])
    want = _arrays(fresh.cache(ext), [u.id for u in utts])
    for uid in want:
        assert got[uid]["vec"].tobytes() == want[uid]["vec"].tobytes(), uid


class SlowStats(FileStats):
    """FileStats that records every batch it extracts and takes its time doing so."""

    name = "slow-stats"

    def extract_batch(self, utts):
        import time

        log = os.environ["EMOFUSE_TEST_CALLS"]
        with open(log, "a") as fh:
            fh.write(",".join(u.id for u in utts) + f" {os.getpid()}\n")
        time.sleep(0.2)
        return [self.extract(u) for u in utts]


def _same_list_worker(args):
    root, paths, log = args
    os.environ["EMOFUSE_TEST_CALLS"] = log
    utts = [Utterance(id=os.path.basename(p), dataset="t", media={"audio": p}) for p in paths]
    return extract_features(utts, SlowStats(), FeatureStore(root), batch_size=2).extracted


def test_processes_given_the_same_inputs_share_the_batches(tmp_path):
    utts = _utts(tmp_path, 16)
    paths = [u.media["audio"] for u in utts]
    root, log = str(tmp_path / "cache"), str(tmp_path / "calls.txt")
    with mp.get_context("fork").Pool(3) as pool:
        pool.map(_same_list_worker, [(root, paths, log)] * 3)
    lines = Path(log).read_text().splitlines()
    calls = [line.split()[0] for line in lines]
    assert sorted(calls) == sorted({*calls})  # no batch was extracted twice
    assert len(calls) == 8  # 16 utterances in batches of 2
    assert len({line.split()[1] for line in lines}) > 1  # the work was shared
    cache = FeatureStore(root).cache(SlowStats())
    assert sorted(cache.ids()) == sorted(os.path.basename(p) for p in paths)
    assert len(list((cache.dir / "shards").glob("*.safetensors"))) == 8  # none dead
    assert not list((cache.dir / "claims").iterdir())  # every claim released


def test_a_claim_is_respected_while_its_process_lives_and_taken_over_after(tmp_path):
    import json
    import time

    cache = FeatureStore(tmp_path / "cache").cache(FileStats())
    claims = cache.dir / "claims"
    claims.mkdir(parents=True)
    import socket

    live = {"host": socket.gethostname(), "pid": os.getppid(), "time": time.time()}
    (claims / "k1.claim").write_text(json.dumps(live))
    with cache.claim("k1") as mine:
        assert not mine  # its process lives
    old = time.time() - 10_000
    os.utime(claims / "k1.claim", (old, old))
    with cache.claim("k1") as mine:
        assert mine  # past the lease
    dead = subprocess_pid_that_exited()
    (claims / "k2.claim").write_text(json.dumps(live | {"pid": dead}))
    with cache.claim("k2") as mine:
        assert mine  # its process is gone
    assert not list(claims.iterdir())


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_a_killed_extractor_leaves_a_claim_the_next_run_takes_over(tmp_path):
    import json
    import socket

    utts = _utts(tmp_path, 4)
    store = FeatureStore(tmp_path / "cache")
    ext = FileStats()
    cache = store.cache(ext)
    from emofuse.features.pipeline import _batch_key

    key = _batch_key(utts[:2], ext)
    (cache.dir / "claims").mkdir(parents=True, exist_ok=True)
    (cache.dir / "claims" / f"{key}.claim").write_text(
        json.dumps({"host": socket.gethostname(), "pid": subprocess_pid_that_exited(), "time": 0})
    )
    report = extract_features(utts, ext, store, batch_size=2)
    assert report.extracted == 4 and sorted(cache.ids()) == [u.id for u in utts]

"""The Ray engine (a local two-worker cluster) stores exactly the arrays of the local engine."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_subdir
from emofuse.features import FeatureCache, FeatureStore, extract_features, get_extractor
from emofuse.records import Utterance

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def utterances(tmp_path):
    wavs = sorted((shared_subdir("ravdess") / "speech16k").glob("*.wav"))[::16][:12]
    assert len(wavs) == 12
    utts = [Utterance(id=w.stem, dataset="ravdess", media={"audio": str(w)}) for w in wavs]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"definitely not audio")
    return [*utts, Utterance(id="bad", dataset="mine", media={"audio": str(bad)})]


def test_ray_engine_equals_local(ray_session, utterances, tmp_path):
    ext = get_extractor("egemaps")
    via_ray = extract_features(
        utterances, ext, FeatureStore(tmp_path / "ray"), engine="ray", workers=2, batch_size=3
    )
    local = extract_features(utterances, ext, FeatureStore(tmp_path / "local"), batch_size=3)
    assert via_ray.extracted == local.extracted == 12
    assert list(via_ray.failed) == list(local.failed) == ["bad"]
    a, b = FeatureCache(via_ray.cache_dir), FeatureCache(local.cache_dir)
    assert sorted(a.ids()) == sorted(b.ids())
    for uid in b.ids():
        for key, arr in b.get(uid).items():
            np.testing.assert_array_equal(a.get(uid)[key], arr, err_msg=f"{uid}/{key}")
    # shards from both workers: more than one shard file, all named in the index
    shards = {r.shard for r in a.index().values() if r.shard}
    assert len(shards) >= 4
    again = extract_features(
        utterances, ext, FeatureStore(tmp_path / "ray"), engine="ray", workers=2
    )
    assert again.cached == 13 and again.extracted == 0

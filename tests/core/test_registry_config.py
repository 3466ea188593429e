import pickle

import pytest
from pydantic import Field

from emofuse.config import (
    Config,
    fingerprint,
    load_config,
    parse_overrides,
    validate_config,
)
from emofuse.errors import (
    ConfigError,
    EmofuseError,
    InputError,
    MissingDependencyError,
    UnknownComponentError,
)
from emofuse.registry import Registry


class WidgetConfig(Config):
    size: int = Field(3, description="How big.")
    name: str = "w"


def test_registry_register_get_and_suggest():
    reg = Registry("widget", package=None)

    @reg.register("round-widget")
    class Round:
        pass

    assert reg.get("round-widget") is Round
    assert Round.name == "round-widget"
    assert reg.names() == ["round-widget"]
    with pytest.raises(UnknownComponentError) as err:
        reg.get("rund-widget")
    msg = str(err.value)
    assert "Did you mean 'round-widget'" in msg and "Valid widget names: round-widget" in msg
    assert isinstance(err.value, LookupError)


def test_registry_rejects_bad_names_and_duplicates():
    reg = Registry("widget", package=None)
    with pytest.raises(ConfigError):
        reg.register("Bad Name")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ConfigError, match="registered twice"):

        @reg.register("a")
        class B:
            pass


def test_builtin_registries_discover_their_packages():
    from emofuse.datasets import DATASETS
    from emofuse.features import EXTRACTORS

    assert "sample" in DATASETS.names()
    assert {"minilm", "egemaps"} <= set(EXTRACTORS.names())


def test_config_forbids_unknown_keys_naming_source():
    with pytest.raises(ConfigError) as err:
        validate_config(WidgetConfig, {"sise": 4}, source="my.yaml")
    assert "my.yaml" in str(err.value) and "'sise'" in str(err.value)
    with pytest.raises(ConfigError, match="size"):
        validate_config(WidgetConfig, {"size": "big"})


def test_load_config_file_errors_name_file(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("size: 7\n")
    assert load_config(WidgetConfig, good).size == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: [1\n")
    with pytest.raises(InputError, match=r"bad\.yaml"):
        load_config(WidgetConfig, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("nmae: x\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'nmae'"):
        load_config(WidgetConfig, typo)
    with pytest.raises(InputError, match="does not exist"):
        load_config(WidgetConfig, tmp_path / "missing.yaml")


def test_parse_overrides_nested_and_typed():
    assert parse_overrides(["a=1", "b.c=x", "d=[1, 2]", "e=true"]) == {
        "a": 1,
        "b": {"c": "x"},
        "d": [1, 2],
        "e": True,
    }
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


def test_fingerprint_is_stable_and_sensitive():
    a = fingerprint("x", WidgetConfig())
    assert a == fingerprint("x", WidgetConfig())
    assert a != fingerprint("x", WidgetConfig(size=4))
    assert len(a) == 16


def test_errors_subclass_builtins_and_pickle():
    e = InputError("a.wav", "audio is silent")
    assert isinstance(e, ValueError) and isinstance(e, EmofuseError)
    assert str(e) == "a.wav: audio is silent"
    for err in (
        e,
        UnknownComponentError("dataset", "meldd", ["meld"], "meld"),
        MissingDependencyError("extractor 'egemaps'", "opensmile", "audio"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
    assert "emofuse setup" in str(MissingDependencyError("face", "mediapipe"))


def test_an_extractor_is_set_up_once_when_threads_ask_together():
    """ready_extractor: two threads asking for one configuration set it up once and share it."""
    import threading
    import time

    from emofuse.features.base import FeatureExtractor, ready_extractor

    setups: list[str] = []

    class Slow(FeatureExtractor):
        name = "slow-test"
        modality = "text"

        def outputs(self):
            return {}

        def setup(self):
            setups.append(self.name)
            time.sleep(0.2)

        def extract(self, utt):
            return {}

    pool: dict = {}
    got: list = []
    threads = [
        threading.Thread(target=lambda: got.append(ready_extractor(pool, Slow()))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert setups == ["slow-test"] and got[0] is got[1] and list(pool.values()) == [got[0]]

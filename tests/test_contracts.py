"""Contract tests generated from the registries: every component gets them for free."""

from __future__ import annotations

import importlib
import json
import math
import os

import pytest

from conftest import SHARED
from emofuse.config import Config
from emofuse.datasets import DATASETS, RecipeConfig, load_dataset
from emofuse.errors import ConfigError
from emofuse.features import EXTRACTORS
from emofuse.spec import TaskSpec

# Datasets that need a root and the folder under ../shared/data holding one.
NEEDS_ROOT = {name: cls.folder for name, cls in DATASETS.items() if cls.folder is not None}


@pytest.mark.parametrize("name", DATASETS.names())
def test_recipe_has_a_dataset_card_and_strict_config(name):
    cls = DATASETS.get(name)
    card = (cls.__doc__ or "") + (importlib.import_module(cls.__module__).__doc__ or "")
    assert len(card) > 300, f"{name}: the dataset card (docstring) is missing or too short"
    assert "licen" in card.lower(), f"{name}: the dataset card must state the licence"
    assert issubclass(cls.Config, RecipeConfig)
    with pytest.raises(ConfigError, match="unknown key 'no_such_option'"):
        cls(no_such_option=1)


@pytest.mark.parametrize("name", sorted(NEEDS_ROOT))
def test_recipe_records_agree_with_its_spec(name, monkeypatch):
    folder = NEEDS_ROOT[name]
    if name in {"folder", "mmsa"}:
        pytest.skip(f"{name} has no default data")
    if SHARED is None or not (SHARED / folder).is_dir():
        pytest.skip(f"real data folder {folder!r} not found under ../shared/data")
    monkeypatch.setenv("EMOFUSE_DATA", os.fspath(SHARED))
    ds = load_dataset(name)
    spec = ds.spec
    assert isinstance(spec, TaskSpec)
    assert set(ds.splits) <= {"train", "val", "test"}, ds.splits.keys()
    ids = [u.id for u in ds.all()]
    assert len(ids) == len(set(ids)), f"{name}: utterance ids are not unique"
    labels = set(spec.emotion_labels or [])
    for u in ds.all():
        assert u.dataset == name
        if u.labels.emotion is not None:
            assert u.labels.emotion in labels, f"{u.id}: {u.labels.emotion!r} not in {labels}"
        if u.labels.sentiment is not None and spec.sentiment_range is not None:
            lo, hi = spec.sentiment_range
            assert lo <= u.labels.sentiment <= hi and not math.isnan(u.labels.sentiment)


def _tuned_minilm_model(tmp_path) -> dict:
    """A saved (untrained) model with a fine-tuned text encoder, for ``minilm-tuned``."""
    pytest.importorskip("peft")
    from emofuse.models import InputSpec, build_model

    spec = TaskSpec(name="contract", emotion_labels=["neutral", "happy"])
    text = {"text": InputSpec(feature="minilm:tokens", dim=384, kind="sequence")}
    model = build_model("mlp", spec, text, {"hidden": 8, "text_encoder": {"max_length": 32}})
    return {"model": str(model.save_pretrained(tmp_path / "tuned"))}


def _mmsa_pickle(tmp_path) -> dict:
    """An MMSA-layout pickle holding the bundled sample's utterances, for ``mmsa``."""
    import pickle

    import numpy as np

    ids = [u.id for u in load_dataset("sample").all()]
    n, rng = len(ids), np.random.default_rng(0)
    block = {
        "id": ids,
        "raw_text": ["x"] * n,
        "text": rng.normal(size=(n, 6, 8)).astype(np.float32),
        "audio": rng.normal(size=(n, 9, 5)),
        "vision": rng.normal(size=(n, 7, 4)).astype(np.float32),
        "audio_lengths": [9] * n,
        "vision_lengths": [5] * n,
        "annotations": ["Neutral"] * n,
        "classification_labels": np.ones(n),
        "regression_labels": np.zeros(n, np.float32),
    }
    path = tmp_path / "contract.pkl"
    with path.open("wb") as fh:
        pickle.dump({"test": block}, fh)
    return {"pickle": str(path)}


# Extractors with required options, and how a test makes them; any other extractor must build
# with defaults alone.
REQUIRED_OPTIONS = {"minilm-tuned": _tuned_minilm_model, "mmsa": _mmsa_pickle}


def _build(name, tmp_path):
    cls = EXTRACTORS.get(name)
    required = [n for n, f in cls.Config.model_fields.items() if f.is_required()]
    if not required:
        return cls, {}
    assert name in REQUIRED_OPTIONS, f"{name} requires {required}: add it to REQUIRED_OPTIONS"
    return cls, REQUIRED_OPTIONS[name](tmp_path)


@pytest.mark.parametrize("name", EXTRACTORS.names())
def test_extractor_config_outputs_and_fingerprint(name, tmp_path):
    cls, options = _build(name, tmp_path)
    assert issubclass(cls.Config, Config)
    ext = cls(**options)
    outs = ext.outputs()
    assert outs, f"{name} declares no outputs"
    assert cls.modality in {"text", "audio", "face"}
    assert ext.fingerprint() == cls(**options).fingerprint()
    json.dumps(ext.describe())
    with pytest.raises(ConfigError, match="unknown key 'no_such_option'"):
        cls(no_such_option=1, **options)


def _input_for(modality: str):
    sample = load_dataset("sample").all()
    if modality == "text":
        return [u for u in sample if u.text]
    if modality == "audio":
        return sample
    return [u for u in sample if "video" in u.media or "image" in u.media]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXTRACTORS.names())
def test_extractor_outputs_match_declared_shapes(name, tmp_path):
    """The test lhotse's opensmile feature_dim bug would have failed: declared dim == real shape."""
    cls, options = _build(name, tmp_path)
    ext = cls(**options)
    utts = _input_for(cls.modality)
    if name == "e5":
        utts = [u.with_text("我今天非常开心", language="zh") for u in utts]
    assert utts, f"no bundled sample input for modality {cls.modality}"
    results = ext.extract_batch(utts[:2])
    assert len(results) == len(utts[:2])
    for res in results:
        assert not isinstance(res, Exception), f"{name} failed on the bundled sample: {res}"
        ext.validate(res)


# -- models: every registered model gets these -----------------------------------------------
def _model_setup():
    from emofuse.models import InputSpec

    spec = TaskSpec(
        name="contract",
        emotion_labels=["neutral", "happy", "sad", "angry"],
        sentiment_range=(-3.0, 3.0),
        sentiment_scheme="mosi",
        metrics=["weighted_f1", "mae"],
    )
    inputs = {
        "text": InputSpec(feature="minilm:tokens", dim=24, kind="sequence"),
        "audio": InputSpec(feature="egemaps:functionals", dim=12, kind="vector"),
    }
    return spec, inputs


def _model_names():
    from emofuse.models import MODELS

    return MODELS.names()


@pytest.mark.parametrize("name", _model_names())
def test_model_contract(name, tmp_path):
    import torch

    from emofuse.models import build_model, load_model
    from emofuse.testing import make_batch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec, inputs = _model_setup()
        model = build_model(name, spec, inputs, {"hidden": 32})
        train = make_batch(spec, inputs, n=32, seed=0, dialogues=model.conversational)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        model.train()
        for _ in range(25):
            opt.zero_grad()
            loss = model.loss(model(train), train)["loss"]
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), f"{name}: loss did not go down {losses}"

        model.eval()
        test = make_batch(spec, inputs, n=12, seed=1, dialogues=model.conversational)
        with torch.no_grad():
            out = model(test)
        assert out.emotion_logits.shape == (12, 4) and out.sentiment.shape == (12,)
        if out.gates is not None:
            assert out.gates.shape[1] == len(out.gate_names)
            torch.testing.assert_close(out.gates.sum(dim=1), torch.ones(12))
            assert (out.gates >= 0).all()

        loaded = load_model(model.save_pretrained(tmp_path / name))
        with torch.no_grad():
            again = loaded(test)
        torch.testing.assert_close(again.emotion_logits, out.emotion_logits, rtol=0, atol=1e-6)

        for gone in ("text", "audio"):  # one modality missing at inference
            partial = {k: v for k, v in test.items() if not k.startswith(gone)}
            with torch.no_grad():
                res = model(partial)
            assert torch.isfinite(res.emotion_logits).all() and torch.isfinite(res.sentiment).all()
    finally:
        torch.set_num_threads(threads)


def test_standardized_inputs_travel_with_the_model(tmp_path):
    import torch

    from emofuse.models import build_model, load_model
    from emofuse.testing import make_batch

    spec, inputs = _model_setup()
    model = build_model("mlp", spec, inputs, {"hidden": 16, "standardize_inputs": True})
    batch = make_batch(spec, inputs, n=8)
    stats = {m: (torch.full((s.dim,), 3.0), torch.full((s.dim,), 2.0)) for m, s in inputs.items()}
    model.set_input_statistics(stats)
    model.eval()
    seen = model.encode_inputs(batch)
    mask = batch["text_mask"].unsqueeze(-1)
    torch.testing.assert_close(seen["text"], (batch["text"] - 3.0) / 2.0 * mask)
    loaded = load_model(model.save_pretrained(tmp_path / "m"))
    torch.testing.assert_close(loaded.input_std_audio, torch.full((12,), 2.0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).emotion_logits, model(batch).emotion_logits)

"""Baseline fusion models (mlp, late-fusion, tfn, mult) and the make_batch test kit."""

from __future__ import annotations

import pytest
import torch

from emofuse.errors import ConfigError
from emofuse.models import MODELS, InputSpec, build_model, load_model
from emofuse.models.base import drop_modalities
from emofuse.spec import TaskSpec
from emofuse.testing import make_batch

BASELINES = ["mlp", "late-fusion", "tfn", "mult"]
SPEC = TaskSpec(
    name="toy", emotion_labels=["neutral", "happy", "sad", "angry"], sentiment_range=(-3.0, 3.0)
)
INPUTS = {
    "text": InputSpec(feature="minilm:tokens", dim=24, kind="sequence"),
    "audio": InputSpec(feature="egemaps:functionals", dim=16, kind="vector"),
    "face": InputSpec(feature="face:expression", dim=7, kind="sequence"),
}
# small but real configs, so each model trains in well under a second
SMALL = {
    "mlp": {"hidden": 32},
    "late-fusion": {"hidden": 32},
    "tfn": {"hidden": 32, "subnet_dim": 16},
    "mult": {"hidden": 32, "dim": 16, "heads": 2, "layers": 1, "self_layers": 1},
}


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one intra-op thread is faster than two, and steadier on a busy machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name: str, inputs=INPUTS, spec=SPEC, **extra):
    torch.manual_seed(0)
    return build_model(name, spec, inputs, {**SMALL[name], "dropout": 0.0, **extra})


def _train(model, batch, steps=40, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(batch)
        loss = model.loss(out, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_baselines_are_registered():
    names = set(MODELS.names())
    assert set(BASELINES) <= names
    for name in BASELINES:
        cls = MODELS.get(name)
        assert cls.conversational is False
        assert cls.Config.__doc__


@pytest.mark.parametrize("name", BASELINES)
def test_trains_and_generalises(name):
    model = _build(name)
    batch = make_batch(SPEC, INPUTS, n=64, seed=0)
    losses = _train(model, batch)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    # a fresh sample of the same task: well above chance (0.25) on held-out rows
    model.eval()
    test = make_batch(SPEC, INPUTS, n=128, seed=1)
    with torch.no_grad():
        out = model(test)
    acc = (out.emotion_logits.argmax(1) == test["emotion"]).float().mean().item()
    assert acc > 0.6, acc


@pytest.mark.parametrize("name", BASELINES)
def test_save_load_gives_identical_outputs(name, tmp_path):
    model = _build(name, modality_dropout=0.3)
    _train(model, make_batch(SPEC, INPUTS, n=32, seed=0), steps=3)
    model.eval()
    batch = make_batch(SPEC, INPUTS, n=8, seed=3)
    with torch.no_grad():
        ref = model(batch)
    model.save_pretrained(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    with torch.no_grad():
        out = loaded(batch)
    torch.testing.assert_close(out.emotion_logits, ref.emotion_logits, rtol=0, atol=0)
    torch.testing.assert_close(out.sentiment, ref.sentiment, rtol=0, atol=0)
    torch.testing.assert_close(out.fused, ref.fused, rtol=0, atol=0)


@pytest.mark.parametrize("name", BASELINES)
def test_missing_modalities_stay_finite(name):
    model = _build(name)
    _train(model, make_batch(SPEC, INPUTS, n=32, seed=0), steps=3)
    model.eval()
    cases = [
        make_batch(SPEC, INPUTS, n=6, seed=4, missing=("audio",)),
        make_batch(SPEC, INPUTS, n=6, seed=4, missing=("text", "face")),
        make_batch(SPEC, INPUTS, n=6, seed=4, missing=("text", "audio", "face")),
    ]
    # rows whose masks are all False, mixed with complete rows; garbage behind the mask
    rows = make_batch(SPEC, INPUTS, n=6, seed=4)
    rows["text_mask"][:3] = False
    rows["text"][:3] = float("nan")
    rows["face_mask"][1:4] = False
    rows["audio_mask"] = torch.tensor([True, False, True, False, True, True])[:, None]
    rows["audio"][1] = float("inf")
    cases.append(rows)
    with torch.no_grad():
        for batch in cases:
            out = model(batch)
            assert out.emotion_logits.shape == (6, 4) and out.sentiment.shape == (6,)
            assert torch.isfinite(out.emotion_logits).all()
            assert torch.isfinite(out.sentiment).all()
            assert torch.isfinite(out.fused).all()
            if out.gates is not None:
                assert torch.isfinite(out.gates).all()
    # masked-out rows give the same prediction as the modality being absent
    full = make_batch(SPEC, INPUTS, n=6, seed=5)
    absent = {k: v for k, v in full.items() if not k.startswith("audio")}
    hidden = dict(full, audio_mask=torch.zeros_like(full["audio_mask"]))
    with torch.no_grad():
        a, h = model(absent), model(hidden)
    torch.testing.assert_close(a.emotion_logits, h.emotion_logits)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("modality", ["text", "audio"])
def test_single_modality_model(name, modality):
    inputs = {modality: INPUTS[modality]}
    model = _build(name, inputs=inputs)
    batch = make_batch(SPEC, inputs, n=32, seed=0)
    losses = _train(model, batch, steps=15)
    assert losses[-1] < losses[0]
    out = model.eval()(make_batch(SPEC, INPUTS, n=4, seed=1))  # extra modalities are ignored
    assert out.emotion_logits.shape == (4, 4)


@pytest.mark.parametrize("name", BASELINES)
def test_sentiment_only_and_emotion_only_tasks(name):
    sent = TaskSpec(name="s", sentiment_range=(-1.0, 1.0))
    emo = TaskSpec(name="e", emotion_labels=["a", "b", "c"])
    for spec in (sent, emo):
        model = _build(name, spec=spec)
        batch = make_batch(spec, INPUTS, n=16, seed=0)
        out = model(batch)
        assert (out.emotion_logits is None) == (spec.num_emotions == 0)
        assert (out.sentiment is None) == (spec.sentiment_range is None)
        model.loss(out, batch)["loss"].backward()


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_config_key_is_an_error(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        build_model(name, SPEC, INPUTS, {"no_such_option": 1})


@pytest.mark.parametrize("name", BASELINES)
def test_deterministic_under_manual_seed(name):
    batch = make_batch(SPEC, INPUTS, n=8, seed=0)
    outs = []
    for _ in range(2):
        model = _build(name, dropout=0.2, modality_dropout=0.3)
        _train(model, batch, steps=2)
        outs.append(model(batch).emotion_logits)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_wrong_feature_dim_is_an_input_error():
    from emofuse.errors import InputError

    model = _build("mlp")
    batch = make_batch(SPEC, INPUTS, n=4)
    batch["audio"] = torch.zeros(4, 1, 5)
    with pytest.raises(InputError, match="feature dim 5"):
        model(batch)


def test_drop_modalities_never_hides_everything():
    torch.manual_seed(0)
    masks = {
        "text": torch.ones(500, 3, dtype=torch.bool),
        "audio": torch.ones(500, 1, dtype=torch.bool),
        "face": torch.zeros(500, 2, dtype=torch.bool),  # missing already
    }
    masks["audio"][:100] = False
    out = drop_modalities(masks, 0.9)
    pres = torch.stack([out[m].any(1) for m in masks], 1)
    assert pres.any(1).all()  # never all hidden
    assert not out["face"].any()  # nothing appears
    assert not out["audio"][:100].any()
    assert 0.05 < pres[:, 0].float().mean() < 0.8  # it does drop
    assert drop_modalities(masks, 0.0) is masks


def test_make_batch_contract():
    batch = make_batch(SPEC, INPUTS, n=12, seed=0, dialogues=True, missing=("face",))
    assert "face" not in batch and "face_mask" not in batch
    assert batch["text"].shape == (12, 8, 24) and batch["text_mask"].dtype == torch.bool
    assert batch["audio"].shape == (12, 1, 16)
    assert (batch["text"][~batch["text_mask"]] == 0).all()
    assert batch["emotion"].dtype == torch.long and batch["emotion"].min() >= 0
    lo, hi = SPEC.sentiment_range
    assert ((batch["sentiment"] > lo) & (batch["sentiment"] < hi)).all()
    assert batch["dialogue"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch["turn"].tolist() == [0, 1, 2, 3] * 3
    again = make_batch(SPEC, INPUTS, n=12, seed=0, dialogues=True, missing=("face",))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    other = make_batch(SPEC, INPUTS, n=12, seed=1)
    assert not torch.equal(batch["text"], other["text"])
    # balanced classes without dialogues
    assert torch.bincount(make_batch(SPEC, INPUTS, n=16)["emotion"]).tolist() == [4, 4, 4, 4]


def test_late_fusion_gates_average_present_modalities():
    model = _build("late-fusion").eval()
    batch = make_batch(SPEC, INPUTS, n=6, seed=2)
    batch["audio_mask"] = torch.tensor([True, False, True, False, False, True])[:, None]
    batch["text_mask"][3:5] = False
    batch["face_mask"][4] = False  # row 4: nothing at all
    with torch.no_grad():
        out = model(batch)
    assert out.gate_names == ["audio", "face", "text"]  # model order (sorted)
    torch.testing.assert_close(out.gates.sum(1), torch.ones(6))
    expected = torch.tensor(
        [
            [1 / 3, 1 / 3, 1 / 3],
            [0, 1 / 2, 1 / 2],
            [1 / 3, 1 / 3, 1 / 3],
            [0, 1, 0],
            [1 / 3, 1 / 3, 1 / 3],  # nothing present: uniform
            [1 / 3, 1 / 3, 1 / 3],
        ]
    )
    torch.testing.assert_close(out.gates, expected)
    # the prediction is the gate-weighted average of the per-modality predictions
    per = torch.stack([out.expert_logits[m] for m in out.gate_names], dim=1)
    torch.testing.assert_close(out.emotion_logits, (out.gates[..., None] * per).sum(1))
    # each modality is also trained on its own
    model.train()
    terms = model.loss(model(batch), batch)
    assert {"emotion", "sentiment", "unimodal", "loss"} <= set(terms)
    off = _build("late-fusion", unimodal_weight=0.0)
    assert "unimodal" not in off.loss(off(batch), batch)


def test_tfn_tensor_size_and_mult_config_checks():
    model = _build("tfn")
    assert model.tensor_size == 17**3
    assert _build("tfn", inputs={"text": INPUTS["text"]}).tensor_size == 17
    with pytest.raises(ConfigError, match="divisible"):
        build_model("mult", SPEC, INPUTS, {"dim": 30, "heads": 4})
    with pytest.raises(ConfigError, match="odd"):
        build_model("mult", SPEC, INPUTS, {"conv_kernel": 2})


def test_mult_window_pools_long_sequences_by_masked_means():
    from emofuse.models.ops import masked_downsample

    x = torch.arange(10.0).reshape(1, 10, 1).repeat(2, 1, 1)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    y, m = masked_downsample(x, mask, 4)  # windows of 3: [0,1,2] [3,4,5] [6,7,8] [9,pad,pad]
    assert y.shape == (2, 4, 1)
    assert y[0, :, 0].tolist() == [1.0, 4.0, 7.0, 9.0]
    assert y[1, :, 0].tolist() == [1.0, 4.0, 6.0, 0.0]
    assert m.tolist() == [[True] * 4, [True, True, True, False]]
    same = masked_downsample(x, mask, 10)
    assert same[0] is x and same[1] is mask
    # the model reads a long sequence and still predicts
    long = {"audio": InputSpec(feature="egemaps:lld", dim=5, kind="sequence")}
    model = _build("mult", inputs=long, max_steps=8).eval()
    batch = {"audio": torch.randn(3, 50, 5), "audio_mask": torch.ones(3, 50, dtype=torch.bool)}
    batch["audio_mask"][1, 3:] = False
    assert torch.isfinite(model(batch).emotion_logits).all()


def test_mult_uses_the_shared_helpers_with_its_own_arithmetic():
    """MulT's positions are computed in its dtype over `dim`; empty rows open their first key."""
    import math

    from emofuse.models.ops import safe_key_padding_mask, sinusoidal_positions

    # a hand computation of MulT's encoding for an odd width (frequencies 10000^(-2i/dim))
    dim, length = 5, 4
    pe = sinusoidal_positions(length, dim, "cpu", torch.float64, compute_dtype=None, period_dim=dim)
    for t in range(length):
        for i in range(3):
            w = 10000.0 ** (-2 * i / dim)
            assert pe[t, 2 * i].item() == pytest.approx(math.sin(t * w), abs=1e-12)
            if 2 * i + 1 < dim:
                assert pe[t, 2 * i + 1].item() == pytest.approx(math.cos(t * w), abs=1e-12)
    # rows with no valid key: only the first key is opened (the row's result is zeroed later)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    assert safe_key_padding_mask(valid).tolist() == [[False, True, False], [False, True, True]]
    # a model whose modality is missing for some rows stays finite
    model = _build("mult").eval()
    batch = make_batch(SPEC, INPUTS, n=6, seed=3)
    batch["face_mask"] = batch["face_mask"].clone()
    batch["face_mask"][:3] = False
    out = model(batch)
    assert torch.isfinite(out.emotion_logits).all()
    assert (out.experts["face"][:3] == 0).all()

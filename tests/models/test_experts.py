"""The expert interface (models/experts/base.py), plugin experts, and the shared tensor helpers."""

from __future__ import annotations

import contextlib
import inspect
import math
import threading

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

from emofuse.config import Config
from emofuse.errors import ConfigError
from emofuse.models.base import InputSpec, build_model, load_model, masked_mean
from emofuse.models.experts import EXPERTS, Expert, ExpertOutput
from emofuse.models.ops import (
    masked_downsample,
    masked_max,
    safe_key_padding_mask,
    sinusoidal_positions,
)
from emofuse.spec import TaskSpec
from emofuse.testing import make_batch

SPEC = TaskSpec(
    name="toy", emotion_labels=["neutral", "happy", "sad", "angry"], sentiment_range=(-3.0, 3.0)
)
INPUTS = {
    "text": InputSpec(feature="minilm:tokens", dim=12, kind="sequence"),
    "audio": InputSpec(feature="egemaps:lld", dim=8, kind="sequence"),
    "face": InputSpec(feature="face:pooled", dim=6, kind="vector"),
}
SMALL = {
    "hidden": 16,
    "dropout": 0.0,
    "expert_options": {
        "cross-modal": {"heads": 2},
        "global-context": {"heads": 2, "layers": 1},
    },
    "gate": {"hidden": 8},
}
BUILT_IN = ["local", "cross-modal", "global-context"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _feats(n: int = 6, hidden: int = 16, modalities=("text", "audio", "face")) -> dict:
    """Projected expert input with ragged masks: row 0 has only text, row 1 nothing at all."""
    g = torch.Generator().manual_seed(0)
    feats: dict[str, Tensor] = {}
    for i, m in enumerate(modalities):
        t = 1 if m == "face" else 7
        feats[m] = torch.randn(n, t, hidden, generator=g)
        mask = torch.arange(t)[None] < torch.randint(1, t + 1, (n,), generator=g)[:, None]
        if i > 0:
            mask[0] = False
        mask[1] = False
        feats[f"{m}_mask"] = mask
    return feats


def _module_state(model: nn.Module) -> dict[tuple[str, str], int]:
    """Identity of every attribute (and parameter / buffer / sub-module) of every module."""
    state = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            state[(prefix, key)] = id(value)
            if key in ("_parameters", "_buffers", "_modules"):
                for sub, obj in value.items():
                    state[(prefix, f"{key}.{sub}")] = id(obj)
    return state


# -- the interface ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_experts_implement_the_interface(name):
    cls = EXPERTS.get(name)
    assert issubclass(cls, Expert) and cls.name == name
    assert issubclass(cls.Config, Config) and cls.Config.model_config["extra"] == "forbid"
    params = list(inspect.signature(cls.__init__).parameters)
    assert params == ["self", "config", "hidden", "modalities", "dropout"]
    expert = cls(None, 16, ["text", "audio", "face"], 0.0).eval()
    assert isinstance(expert.config, cls.Config)
    feats = _feats()
    before = _module_state(expert)
    out = expert(feats)
    assert _module_state(expert) == before  # forward writes no module state
    assert not hasattr(expert, "unit_weights")
    assert isinstance(out, ExpertOutput)
    assert out.vector.shape == (6, 16)
    assert out.unit_weights.shape == (6, len(expert.units))
    usable = expert.usable(feats)
    assert usable.shape == (6,) and usable.dtype == torch.bool
    assert (out.vector[~usable] == 0).all()


def test_unit_weights_sum_to_one_over_present_units():
    feats = _feats()
    present = {m: feats[f"{m}_mask"].any(dim=1) for m in ("text", "audio", "face")}
    for name in BUILT_IN:
        expert = EXPERTS.get(name)(None, 16, ["text", "audio", "face"], 0.0).eval()
        w = expert(feats).unit_weights
        if name == "cross-modal":
            units = [u.split("<-") for u in expert.units]
            pres = torch.stack([present[a] & present[b] for a, b in units], dim=1)
        else:
            pres = torch.stack([present[m] for m in expert.units], dim=1)
        assert (w[~pres] == 0).all(), name
        any_unit = pres.any(dim=1)
        torch.testing.assert_close(w[any_unit].sum(1), torch.ones(int(any_unit.sum())))
        assert (w[~any_unit] == 0).all()
    # a single-modality model has no pair: no cross-modal units, (N, 0) weights, never usable
    single = {k: v for k, v in feats.items() if k.startswith("text")}
    cross = EXPERTS.get("cross-modal")(None, 16, ["text"], 0.0)
    out = cross(single)
    assert cross.units == [] and out.unit_weights.shape == (6, 0)
    assert not cross.usable(single).any() and (out.vector == 0).all()


def test_egmf_forward_writes_no_module_state_and_returns_weights():
    torch.manual_seed(0)
    model = build_model("egmf", SPEC, INPUTS, {**SMALL, "dropout": 0.1, "modality_dropout": 0.3})
    batch = make_batch(SPEC, INPUTS, n=8, seed=0, dialogues=True)
    for train in (True, False):
        model.train(train)
        before = _module_state(model)
        out = model(batch)
        assert _module_state(model) == before
        assert out.unit_names == {n: model.experts[n].units for n in BUILT_IN}
        for name, w in out.unit_weights.items():
            assert w.shape == (8, len(out.unit_names[name]))
        assert out.gate_mask.shape == out.gates.shape
        assert (out.gates[~out.gate_mask] == 0).all()


def test_concurrent_forwards_match_sequential_ones():
    torch.manual_seed(0)
    model = build_model("egmf", SPEC, INPUTS, SMALL).eval()
    batches = [
        make_batch(SPEC, INPUTS, n=4 + i, seed=i, missing=[["audio"], []][i % 2]) for i in range(6)
    ]
    with torch.no_grad():
        expected = [model(b) for b in batches]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        with torch.no_grad():
            for _ in range(3):
                results[i] = model(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        got = results[i]
        assert torch.equal(got.emotion_logits, want.emotion_logits)
        for name in want.unit_weights:
            assert torch.equal(got.unit_weights[name], want.unit_weights[name])


def test_an_expert_must_implement_forward_and_usable():
    class Half(Expert):
        def usable(self, feats):
            return torch.ones(1, dtype=torch.bool)

    with pytest.raises(TypeError, match="forward"):
        Half(None, 4, ["text"])


# -- a plugin expert ----------------------------------------------------------------------------


class MeanExpertConfig(Config):
    """Options of the test plugin."""

    scale: float = Field(1.0, gt=0.0, description="Output scale.")


class MeanExpert(Expert):
    """A tiny plugin: presence-weighted mean of the modalities' masked means."""

    Config = MeanExpertConfig
    config: MeanExpertConfig

    def __init__(self, config, hidden, modalities, dropout=0.1):
        super().__init__(config, hidden, modalities, dropout)
        self.units = list(modalities)
        self.proj = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def usable(self, feats):
        return torch.stack([feats[f"{m}_mask"].any(dim=1) for m in self.units], 1).any(1)

    def forward(self, feats):
        pres = torch.stack([feats[f"{m}_mask"].any(dim=1) for m in self.units], 1)
        w = pres.float() / pres.float().sum(1, keepdim=True).clamp_min(1.0)
        pooled = torch.stack([masked_mean(feats[m], feats[f"{m}_mask"]) for m in self.units], 1)
        v = self.norm(self.proj((w.unsqueeze(-1) * pooled).sum(1))) * self.config.scale
        return ExpertOutput(vector=v * self.usable(feats).unsqueeze(-1).float(), unit_weights=w)


@contextlib.contextmanager
def registered(name: str, cls: type):
    """Register ``cls`` as expert ``name`` for the duration of a ``with`` block."""
    EXPERTS.names()  # discover the built-ins first
    EXPERTS.register(name)(cls)
    try:
        yield name
    finally:
        EXPERTS._items.pop(name, None)


def test_plugin_expert_trains_in_egmf_and_round_trips(tmp_path):
    batch = make_batch(SPEC, INPUTS, n=16, seed=0, dialogues=True)
    with registered("test-mean", MeanExpert):
        cfg = {**SMALL, "experts": ["local", "test-mean"]}
        cfg["expert_options"] = {**SMALL["expert_options"], "test-mean": {"scale": 2.0}}
        torch.manual_seed(0)
        model = build_model("egmf", SPEC, INPUTS, cfg)
        assert isinstance(model.experts["test-mean"], MeanExpert)
        assert model.experts["test-mean"].config.scale == 2.0
        assert model.config.expert_options["test-mean"] == {"scale": 2.0}
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(25):
            out = model(batch)
            loss = model.loss(out, batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.6 * losses[0], losses
        assert model.experts["test-mean"].proj.weight.grad is not None
        model.eval()
        out = model(batch)
        assert out.gate_names == ["local", "test-mean"]
        assert out.unit_names["test-mean"] == ["audio", "face", "text"]
        torch.testing.assert_close(out.unit_weights["test-mean"].sum(1), torch.ones(16))
        loaded = load_model(model.save_pretrained(tmp_path / "plugin"))
        assert torch.equal(loaded(batch).emotion_logits, out.emotion_logits)
        with pytest.raises(ConfigError, match="unknown key 'shift'"):
            build_model(
                "egmf", SPEC, INPUTS, {**cfg, "expert_options": {"test-mean": {"shift": 1}}}
            )
    assert "test-mean" not in EXPERTS
    with pytest.raises(ConfigError, match="unknown expert 'test-mean'"):
        build_model("egmf", SPEC, INPUTS, cfg)


def test_a_registered_class_that_is_not_an_expert_is_refused():
    class NotAnExpert(nn.Module):
        Config = MeanExpertConfig

    with (
        registered("test-not-expert", NotAnExpert),
        pytest.raises(ConfigError, match="does not subclass"),
    ):
        build_model("egmf", SPEC, INPUTS, {**SMALL, "experts": ["test-not-expert"]})


# -- shared tensor helpers (models/ops.py) ------------------------------------------------------


def _egmf_positions(length, dim, device, dtype):
    """EGMF's encoding before the helpers were merged (float32, frequencies over even dim)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    half = (dim + 1) // 2
    freq = torch.exp(
        torch.arange(half, device=device, dtype=torch.float32) * (-math.log(10000.0) / half)
    )
    angles = pos * freq
    out = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, 2 * half)
    return out[:, :dim].to(dtype)


def _mult_positions(length, dim, like):
    """MulT's encoding before the helpers were merged (its dtype, frequencies over dim)."""
    pos = torch.arange(length, device=like.device, dtype=like.dtype).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=like.device, dtype=like.dtype) * (-math.log(10000.0) / dim)
    )
    pe = like.new_zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


def test_sinusoidal_positions_by_hand():
    pe = sinusoidal_positions(3, 4, "cpu", torch.float64, compute_dtype=torch.float64)
    for t in range(3):
        expected = [math.sin(t), math.cos(t), math.sin(t / 100), math.cos(t / 100)]
        assert pe[t].tolist() == pytest.approx(expected, abs=1e-12)
    # odd width: frequencies over dim + 1 by default, over dim when asked (MulT)
    odd = sinusoidal_positions(2, 3, "cpu", torch.float64, compute_dtype=torch.float64)
    assert odd[1].tolist() == pytest.approx([math.sin(1), math.cos(1), math.sin(0.01)], abs=1e-12)
    odd = sinusoidal_positions(2, 3, "cpu", torch.float64, compute_dtype=None, period_dim=3)
    w = 10000.0 ** (-2 / 3)
    assert odd[1].tolist() == pytest.approx([math.sin(1), math.cos(1), math.sin(w)], abs=1e-12)
    # computed in float32 then cast by default: a float64 request equals the float32 codes
    assert torch.equal(
        sinusoidal_positions(9, 6, "cpu", torch.float64),
        sinusoidal_positions(9, 6, "cpu", torch.float32).double(),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_sinusoidal_positions_reproduce_both_former_copies_bit_for_bit(dtype):
    like = torch.zeros(1, dtype=dtype)
    for dim in [*range(1, 40), 64, 127, 128, 384]:
        for length in (0, 1, 13, 150):
            assert torch.equal(
                sinusoidal_positions(length, dim, "cpu", dtype),
                _egmf_positions(length, dim, "cpu", dtype),
            ), (dim, length)
            new = sinusoidal_positions(
                length, dim, "cpu", dtype, compute_dtype=None, period_dim=dim
            )
            old = _mult_positions(length, dim, like)
            assert new.dtype == old.dtype and torch.equal(new, old), (dim, length)


def test_masked_downsample_by_hand_and_as_the_former_window_pool():
    x = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, False, True, False, False]])
    y, m = masked_downsample(x, mask, 2)  # windows of 3: [1, 2, 4] [8, 16, pad]
    assert y[0, :, 0].tolist() == [2.5, 0.0] and m.tolist() == [[True, False]]

    def window_pool(x, mask, max_steps):  # the MulT copy before the merge
        n, t, d = x.shape
        k = math.ceil(t / max_steps)
        extra = (-t) % k
        if extra:
            x = torch.nn.functional.pad(x, (0, 0, 0, extra))
            mask = torch.nn.functional.pad(mask, (0, extra), value=False)
        x = x.reshape(n, -1, k, d)
        m = mask.reshape(n, -1, k)
        w = m.to(x.dtype).unsqueeze(-1)
        return (x * w).sum(dim=2) / w.sum(dim=2).clamp_min(1.0), m.any(dim=2)

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for t, steps in ((150, 16), (65, 64), (100, 7), (30, 29)):
            x = torch.randn(5, t, 3, generator=g, dtype=dtype)
            mask = torch.rand(5, t, generator=g) < 0.6
            mask[0] = False
            new, old = masked_downsample(x, mask, steps), window_pool(x, mask, steps)
            assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])


def test_masked_max_by_hand():
    x = torch.tensor([[[1.0, -5.0], [3.0, -7.0], [9.0, 9.0]], [[1.0, 1.0], [2.0, 2.0], [0, 0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_max(x, mask).tolist() == [[3.0, -5.0], [0.0, 0.0]]


def test_safe_key_padding_mask_never_masks_a_whole_row():
    valid = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    assert safe_key_padding_mask(valid, "first").tolist() == [
        [False, True, False],
        [False, True, True],
        [True, False, True],
    ]
    assert safe_key_padding_mask(valid, "all").tolist() == [
        [False, True, False],
        [False, False, False],
        [True, False, True],
    ]
    assert valid.tolist()[1] == [False, False, False]  # the input is not modified
    attn = nn.MultiheadAttention(4, 2, batch_first=True)
    q = torch.randn(3, 2, 4)
    kv = torch.randn(3, 3, 4)
    for mode in ("first", "all"):
        out, _ = attn(q, kv, kv, key_padding_mask=safe_key_padding_mask(valid, mode))
        assert torch.isfinite(out).all()

"""EGMF: shapes, gating invariants, learning, persistence, missing modalities, dialogue."""

from __future__ import annotations

import pytest
import torch

from emofuse.errors import ConfigError, InputError
from emofuse.models.base import InputSpec, build_model, drop_modalities, load_model
from emofuse.models.experts import EXPERTS
from emofuse.models.gating import HierarchicalGate, balance_kl
from emofuse.spec import TaskSpec

SPEC = TaskSpec(
    name="synthetic",
    emotion_labels=["neutral", "happy", "sad", "angry"],
    sentiment_range=(-3.0, 3.0),
    sentiment_scheme="mosi",
)
INPUTS = {
    "text": InputSpec(feature="minilm:tokens", dim=16, kind="sequence"),
    "audio": InputSpec(feature="egemaps:lld", dim=8, kind="sequence"),
    "face": InputSpec(feature="face:pooled", dim=6, kind="vector"),
}
SMALL = {
    "hidden": 32,
    "dropout": 0.0,
    "expert_options": {
        "cross-modal": {"heads": 4},
        "global-context": {"heads": 4, "layers": 1},
    },
    "gate": {"hidden": 16},
}
N, T = 24, 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core runner they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(n: int = N, seed: int = 0, dialogue: bool = False) -> dict[str, torch.Tensor]:
    """Labels depend on the inputs: emotion on text, sentiment on audio."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    steps = torch.arange(T)[None, :]
    batch = {
        "text": torch.randn(n, T, 16, generator=g),
        "text_mask": steps < lengths[:, None],
        "audio": torch.randn(n, T, 8, generator=g),
        "audio_mask": steps < (lengths[:, None] + 1).clamp(max=T),
        "face": torch.randn(n, 1, 6, generator=g),
        "face_mask": torch.ones(n, 1, dtype=torch.bool),
    }
    emotion = torch.arange(n) % 4
    # plant the class as a shift of four text features at the valid steps
    batch["text"][torch.arange(n), :, emotion] += 2.0 * batch["text_mask"].float()
    batch["emotion"] = emotion
    batch["sentiment"] = (batch["audio"][..., 0] * batch["audio_mask"]).sum(1) / batch[
        "audio_mask"
    ].sum(1)
    if dialogue:
        batch["dialogue"] = torch.arange(n) // 6
        batch["turn"] = torch.arange(n) % 6
    return batch


def make_model(inputs=None, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model("egmf", SPEC, inputs or INPUTS, {**SMALL, **overrides})


def options(**per_expert):
    """SMALL's expert options with some experts' options replaced (keys: local, cross, glob)."""
    names = {"local": "local", "cross": "cross-modal", "glob": "global-context"}
    return {**SMALL["expert_options"], **{names[k]: v for k, v in per_expert.items()}}


def test_experts_registered():
    assert {"local", "cross-modal", "global-context"} <= set(EXPERTS.names())


def test_forward_shapes_and_gates():
    model = make_model().eval()
    out = model(make_batch())
    assert out.emotion_logits.shape == (N, 4)
    assert out.sentiment.shape == (N,)
    assert out.fused.shape == (N, 32)
    assert out.gate_names == ["local", "cross-modal", "global-context"]
    assert set(out.experts) == set(out.gate_names)
    assert all(v.shape == (N, 32) for v in out.experts.values())
    assert out.gates.shape == (N, 3)
    assert (out.gates >= 0).all()
    torch.testing.assert_close(out.gates.sum(1), torch.ones(N))
    assert "load_balance" in out.aux and out.aux["load_balance"].dim() == 0
    assert set(out.unit_weights) == set(out.unit_names) == set(out.gate_names)
    for name, expert in model.experts.items():
        assert out.unit_names[name] == expert.units
        w = out.unit_weights[name]
        assert w.shape == (N, len(expert.units))
        torch.testing.assert_close(w.sum(1), torch.ones(N))
        assert not hasattr(expert, "unit_weights")
    assert out.gate_mask.shape == (N, 3) and out.gate_mask.dtype == torch.bool


def test_training_lowers_the_loss():
    model = make_model()
    batch = make_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(30):
        terms = model.loss(model(batch), batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert set(terms) >= {"emotion", "sentiment", "load_balance", "loss"}
    assert losses[-1] < 0.4 * losses[0], losses


def test_save_load_gives_identical_outputs(tmp_path):
    model = make_model().eval()
    batch = make_batch(dialogue=True)
    before = model(batch)
    loaded = load_model(model.save_pretrained(tmp_path / "egmf"))
    after = loaded(batch)
    assert type(loaded).__name__ == "EGMF" and not loaded.training
    torch.testing.assert_close(after.emotion_logits, before.emotion_logits, rtol=0, atol=0)
    torch.testing.assert_close(after.sentiment, before.sentiment, rtol=0, atol=0)
    torch.testing.assert_close(after.gates, before.gates, rtol=0, atol=0)


def test_missing_modality_at_inference():
    model = make_model().eval()
    full = make_batch()
    out_full = model(full)
    # audio removed for everyone; face hidden (mask all False) for the first half
    part = {k: v for k, v in full.items() if not k.startswith("audio")}
    part["face_mask"] = part["face_mask"].clone()
    part["face_mask"][: N // 2] = False
    out = model(part)
    for t in (out.emotion_logits, out.sentiment, out.fused, out.gates):
        assert torch.isfinite(t).all()
    assert not torch.allclose(out.emotion_logits, out_full.emotion_logits)
    # text only in the first half: no modality pair, so the cross-modal expert gets no weight
    cross = out.gate_names.index("cross-modal")
    assert (out.gates[: N // 2, cross] == 0).all()
    assert (out.gates[N // 2 :, cross] > 0).all()
    torch.testing.assert_close(out.gates.sum(1), torch.ones(N))
    # gate_mask says which experts were usable; the gate gives the others nothing
    assert not out.gate_mask[: N // 2, cross].any() and out.gate_mask[N // 2 :, cross].all()
    assert (out.gates[~out.gate_mask] == 0).all()
    # level-1 weights: a missing modality gets none, the rest renormalise
    local, names = out.unit_weights["local"], out.unit_names["local"]
    assert (local[:, names.index("audio")] == 0).all()
    assert (local[: N // 2, names.index("face")] == 0).all()
    torch.testing.assert_close(local.sum(1), torch.ones(N))
    # a row whose mask is all False means the same as a modality that is not in the batch
    no_face = {k: v for k, v in part.items() if not k.startswith("face")}
    out_no_face = model(no_face)
    torch.testing.assert_close(
        out.emotion_logits[: N // 2], out_no_face.emotion_logits[: N // 2], rtol=1e-4, atol=1e-5
    )
    # nothing at all still predicts (the global expert's [CLS] and the heads' priors)
    empty = {"text": full["text"], "text_mask": torch.zeros(N, T, dtype=torch.bool)}
    out_empty = model(empty)
    assert torch.isfinite(out_empty.emotion_logits).all()
    assert torch.allclose(out_empty.emotion_logits, out_empty.emotion_logits[:1].expand(N, -1))


def test_nan_padding_does_not_leak():
    model = make_model().eval()
    batch = make_batch()
    ref = model(batch)
    dirty = dict(batch)
    dirty["text"] = batch["text"].masked_fill(~batch["text_mask"][..., None], float("nan"))
    torch.testing.assert_close(model(dirty).emotion_logits, ref.emotion_logits)


def test_text_only_model_trains():
    model = make_model(inputs={"text": INPUTS["text"]})
    batch = {k: v for k, v in make_batch().items() if not k.startswith(("audio", "face"))}
    out = model(batch)
    assert out.gates.shape == (N, 3)
    assert (out.gates[:, out.gate_names.index("cross-modal")] == 0).all()
    torch.testing.assert_close(out.gates.sum(1), torch.ones(N))
    assert torch.count_nonzero(out.experts["cross-modal"]) == 0
    loss = model.loss(out, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)


def test_dialogue_context():
    model = make_model().eval()
    flat = make_batch()
    conv = make_batch(dialogue=True)
    out_flat, out_conv = model(flat), model(conv)
    assert out_conv.emotion_logits.shape == out_flat.emotion_logits.shape
    assert torch.isfinite(out_conv.emotion_logits).all()
    # the dialogue changes the prediction (context is used) ...
    assert not torch.allclose(out_conv.emotion_logits, out_flat.emotion_logits)
    # ... and the order of the rows in the batch does not
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    shuffled = {k: v[perm] for k, v in conv.items()}
    torch.testing.assert_close(
        model(shuffled).emotion_logits, out_conv.emotion_logits[perm], rtol=1e-4, atol=1e-5
    )
    # without dialogue_context the dialogue keys change nothing
    plain = make_model(
        expert_options=options(glob={"heads": 4, "layers": 1, "dialogue_context": False})
    ).eval()
    torch.testing.assert_close(plain(conv).emotion_logits, plain(flat).emotion_logits)


def test_causal_dialogue_ignores_the_future():
    model = make_model(
        expert_options=options(glob={"heads": 4, "layers": 1, "dialogue_causal": True})
    ).eval()
    batch = make_batch(dialogue=True)
    changed = {k: v.clone() for k, v in batch.items()}
    last = batch["turn"] == 5
    changed["text"][last] = torch.randn_like(changed["text"][last])
    a, b = model(batch).emotion_logits, model(changed).emotion_logits
    torch.testing.assert_close(a[~last], b[~last])
    assert not torch.allclose(a[last], b[last])


def test_deterministic_under_seed():
    batch = make_batch()
    outs = []
    for _ in range(2):
        model = make_model(seed=3, dropout=0.2, modality_dropout=0.3).train()
        torch.manual_seed(7)
        outs.append(model(batch).emotion_logits)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_modality_dropout_never_hides_everything():
    torch.manual_seed(0)
    masks = {
        "text": torch.ones(500, 4, dtype=torch.bool),
        "audio": torch.ones(500, 4, dtype=torch.bool),
        "face": torch.zeros(500, 4, dtype=torch.bool),
    }
    masks["face"][:250] = True
    out = drop_modalities(masks, 0.9)
    present = torch.stack([m.any(1) for m in out.values()], 1)
    assert present.any(1).all()
    assert not out["face"][250:].any()  # a missing modality is never revived
    assert present.sum(1).float().mean() < 1.3  # most rows lose something
    assert drop_modalities(masks, 0.0)["text"].equal(masks["text"])


def test_gate_balance_loss():
    usable = torch.ones(4, 3, dtype=torch.bool)
    assert balance_kl(torch.full((4, 3), 1 / 3), usable).abs() < 1e-7
    assert balance_kl(torch.tensor([[1.0, 0, 0]] * 4), usable) > 1.0
    # an expert that can never run is not demanded
    usable[:, 1] = False
    assert balance_kl(torch.tensor([[0.5, 0, 0.5]] * 4), usable).abs() < 1e-7
    gate = HierarchicalGate(["a", "b"], 8)
    out = gate(
        {"a": torch.randn(5, 8), "b": torch.randn(5, 8)}, torch.zeros(5, 2, dtype=torch.bool)
    )
    torch.testing.assert_close(out.gates, torch.full((5, 2), 0.5))


def test_expert_subset_and_config_errors():
    model = make_model(experts=["local"]).eval()
    out = model(make_batch())
    assert out.gate_names == ["local"]
    torch.testing.assert_close(out.gates, torch.ones(N, 1))
    assert list(model.experts) == ["local"] and set(out.unit_weights) == {"local"}
    with pytest.raises(ConfigError, match="unknown key 'no_such_option'"):
        make_model(no_such_option=1)
    with pytest.raises(ConfigError):
        make_model(experts=["local", "local"])
    with pytest.raises(ConfigError, match="divide"):
        make_model(expert_options=options(cross={"heads": 5}))
    with pytest.raises(ConfigError, match="kernel_sizes"):
        make_model(expert_options=options(local={"kernel_sizes": [4]}))
    with pytest.raises(ConfigError, match="unknown key 'no_such_option'"):
        make_model(expert_options=options(cross={"no_such_option": 1}))
    # an expert name that is not registered: the registry's error with the closest match
    with pytest.raises(ConfigError, match="Did you mean 'local'"):
        make_model(experts=["locl"])
    with pytest.raises(ConfigError, match="unknown expert 'no-such-expert'"):
        make_model(expert_options={"no-such-expert": {}})
    # an unused expert's heads no longer have to divide hidden
    make_model(experts=["local"], expert_options=options(cross={"heads": 5}))


def test_wrong_feature_dim_is_an_input_error():
    model = make_model().eval()
    batch = make_batch()
    batch["audio"] = torch.randn(N, T, 9)
    with pytest.raises(InputError, match="audio"):
        model(batch)


# the "config" of a model saved before expert_options (one field per built-in expert)
LEGACY_SAVED_CONFIG = {
    "class_weights": None,
    "cross_modal": {"ff_mult": 1, "heads": 2, "max_steps": 8},
    "dropout": 0.0,
    "emotion_weight": 1.0,
    "experts": ["global-context", "local", "cross-modal"],
    "fusion_ff_mult": 2,
    "gate": {"hidden": 16, "load_balance": 0.01, "temperature": 1.0},
    "global_context": {
        "dialogue_causal": True,
        "dialogue_context": True,
        "dialogue_layers": 1,
        "ff_mult": 2,
        "heads": 4,
        "layers": 1,
        "max_steps": 8,
    },
    "hidden": 32,
    "label_smoothing": 0.0,
    "local": {"kernel_sizes": [3], "layers": 2},
    "modality_dropout": 0.0,
    "sentiment_weight": 1.0,
    "standardize_inputs": False,
    "text_encoder": None,
}


def _new_form(legacy: dict) -> dict:
    new = {k: v for k, v in legacy.items() if k not in ("local", "cross_modal", "global_context")}
    new["expert_options"] = {
        "local": legacy["local"],
        "cross-modal": legacy["cross_modal"],
        "global-context": legacy["global_context"],
    }
    return new


def test_legacy_config_builds_the_same_model():
    torch.manual_seed(0)
    old = build_model("egmf", SPEC, INPUTS, LEGACY_SAVED_CONFIG).eval()
    torch.manual_seed(0)
    new = build_model("egmf", SPEC, INPUTS, _new_form(LEGACY_SAVED_CONFIG)).eval()
    assert old.config == new.config
    assert old.config.expert_options["cross-modal"] == {"ff_mult": 1, "heads": 2, "max_steps": 8}
    assert list(old.experts) == ["global-context", "local", "cross-modal"]
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(old_state) == list(new_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert any(k.startswith("experts.cross-modal.blocks.audio<-face.") for k in old_state)
    batch = make_batch(dialogue=True)
    assert torch.equal(old(batch).emotion_logits, new(batch).emotion_logits)
    # the options really reach the experts (a different option gives another model)
    torch.manual_seed(0)
    other = build_model("egmf", SPEC, INPUTS, {**LEGACY_SAVED_CONFIG, "local": {"layers": 1}})
    assert len(other.state_dict()) != len(old_state)
    # partial legacy fields fill in defaults, as before
    partial = build_model("egmf", SPEC, INPUTS, {"hidden": 32, "cross_modal": {"heads": 8}})
    assert partial.experts["cross-modal"].config.heads == 8
    assert partial.config.expert_options["local"] == {"kernel_sizes": [3, 5], "layers": 1}
    with pytest.raises(ConfigError, match="given twice"):
        build_model(
            "egmf",
            SPEC,
            INPUTS,
            {"cross_modal": {"heads": 2}, "expert_options": {"cross-modal": {"heads": 4}}},
        )


def test_model_saved_with_legacy_config_loads(tmp_path):
    import json

    torch.manual_seed(0)
    model = build_model("egmf", SPEC, INPUTS, _new_form(LEGACY_SAVED_CONFIG)).eval()
    folder = model.save_pretrained(tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    assert "expert_options" in meta["config"] and "cross_modal" not in meta["config"]
    meta["config"] = LEGACY_SAVED_CONFIG  # what an older version wrote
    (folder / "config.json").write_text(json.dumps(meta))
    loaded = load_model(folder)
    assert loaded.config == model.config
    batch = make_batch(dialogue=True)
    out, ref = loaded(batch), model(batch)
    assert torch.equal(out.emotion_logits, ref.emotion_logits)
    assert torch.equal(out.sentiment, ref.sentiment)

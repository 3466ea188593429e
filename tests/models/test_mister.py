"""MiSTER-E (models/mister.py): shapes, gates, training, save/load, missing modality, order."""

from __future__ import annotations

import pytest
import torch

from emofuse.errors import ConfigError
from emofuse.models import InputSpec, build_model, load_model
from emofuse.models.base import IGNORE_INDEX
from emofuse.spec import TaskSpec

SPEC = TaskSpec(name="toy-erc", emotion_labels=["neutral", "joy", "anger", "sadness"])
JOINT = TaskSpec(name="toy-joint", emotion_labels=["neg", "neu", "pos"], sentiment_range=(-3, 3))
INPUTS = {
    "text": InputSpec(feature="minilm:tokens", dim=12, kind="sequence"),
    "audio": InputSpec(feature="egemaps:functionals", dim=6, kind="vector"),
}
SMALL = {"hidden": 16, "heads": 2, "context_layers": 1, "cross_blocks": 1, "dropout": 0.0}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: intra-op threads only add contention on a busy 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(g: int = 4, u: int = 5, seed: int = 0, classes: int = 4) -> dict[str, torch.Tensor]:
    """Dialogues of ``u`` turns; labels are a fixed function of the text and audio."""
    gen = torch.Generator().manual_seed(seed)
    n = g * u
    text = torch.randn(n, 3, 12, generator=gen)
    text_mask = torch.ones(n, 3, dtype=torch.bool)
    text_mask[::3, 2] = False
    audio = torch.randn(n, 1, 6, generator=gen)
    w = torch.randn(12 + 6, classes, generator=torch.Generator().manual_seed(99))
    pooled = torch.cat(
        [(text * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True), audio[:, 0]], 1
    )
    emotion = (pooled @ w).argmax(1)
    emotion[1] = IGNORE_INDEX
    return {
        "text": text,
        "text_mask": text_mask,
        "audio": audio,
        "audio_mask": torch.ones(n, 1, dtype=torch.bool),
        "dialogue": torch.arange(g).repeat_interleave(u),
        "turn": torch.arange(u).repeat(g),
        "emotion": emotion,
        "sentiment": (pooled[:, 0] * 2).clamp(-3, 3),
    }


def model(spec: TaskSpec = SPEC, **cfg):
    torch.manual_seed(0)
    return build_model("mister", spec, INPUTS, {**SMALL, **cfg})


def test_shapes_and_gates():
    m = model().eval()
    b = make_batch()
    out = m(b)
    n = b["emotion"].shape[0]
    assert out.emotion_logits.shape == (n, 4)
    assert out.sentiment is None
    assert out.fused.shape == (n, 16)
    assert out.gate_names == ["speech", "text", "cross-modal"]
    assert out.gates.shape == (n, 3)
    torch.testing.assert_close(out.gates.sum(1), torch.ones(n))
    assert set(out.experts) == set(out.expert_logits) == set(out.gate_names)
    mixed = sum(out.gates[:, i, None] * out.expert_logits[k] for i, k in enumerate(out.gate_names))
    torch.testing.assert_close(out.emotion_logits, mixed)
    assert type(m).conversational is True


def test_joint_sentiment_head_mixed_with_same_gates():
    m = model(JOINT).eval()
    out = m(make_batch(classes=3))
    assert out.sentiment.shape == (20,)
    mixed = sum(out.gates[:, i] * out.expert_sentiment[k] for i, k in enumerate(out.gate_names))
    torch.testing.assert_close(out.sentiment, mixed)
    terms = m.loss(out, make_batch(classes=3))
    assert {"sentiment", "expert_speech_sentiment", "expert_cross-modal_sentiment"} <= set(terms)


@pytest.mark.parametrize("extra", [{}, {"focal_gamma": 2.0, "gate_input": "representations"}])
def test_training_steps_reduce_loss(extra):
    m = model(**extra).train()
    b = make_batch(g=6, u=6)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        terms = m.loss(m(b), b)
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert {
        "emotion",
        "expert_speech",
        "expert_text",
        "expert_cross-modal",
        "contrastive",
        "kl",
    } <= set(terms)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_save_load_identical(tmp_path):
    m = model(JOINT)
    b = make_batch(classes=3)
    m.train()
    m.loss(m(b), b)["loss"].backward()  # update BatchNorm running stats
    m.eval()
    before = m(b)
    loaded = load_model(m.save_pretrained(tmp_path / "mister"))
    after = loaded(b)
    torch.testing.assert_close(after.emotion_logits, before.emotion_logits, rtol=0, atol=0)
    torch.testing.assert_close(after.sentiment, before.sentiment, rtol=0, atol=0)
    torch.testing.assert_close(after.gates, before.gates, rtol=0, atol=0)


def test_missing_audio_rows_are_gated_out():
    m = model().eval()
    b = make_batch()
    gone = torch.zeros(20, dtype=torch.bool)
    gone[[0, 3, 7, 12]] = True
    b["audio_mask"] = ~gone[:, None]
    b["audio"][gone] = float("nan")  # never read for missing rows
    out = m(b)
    assert torch.isfinite(out.emotion_logits).all() and torch.isfinite(out.fused).all()
    speech, text, cross = out.gates.unbind(1)
    assert (speech[gone] == 0).all() and (cross[gone] == 0).all()
    torch.testing.assert_close(text[gone], torch.ones(4))
    assert (speech[~gone] > 0).all()
    # gate_mask: which experts the gate could use (the same as `available`)
    assert out.gate_mask is out.available
    assert out.gate_mask[:, 0].equal(~gone) and out.gate_mask[:, 1].all()
    assert (out.gates[~out.gate_mask] == 0).all()
    assert out.unit_weights == {} and out.unit_names == {}
    m.train()
    terms = m.loss(m(b), b)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_audio_absent_from_batch_and_nothing_present():
    m = model().eval()
    b = make_batch()
    del b["audio"], b["audio_mask"]
    out = m(b)
    torch.testing.assert_close(out.gates[:, 1], torch.ones(20))
    b["text_mask"][:] = False  # no modality at all: equal weights, still finite
    out = m(b)
    assert torch.isfinite(out.emotion_logits).all()
    torch.testing.assert_close(out.gates, torch.full((20, 3), 1 / 3))
    assert not out.gate_mask.any()  # nothing usable: equal gates over all experts
    assert torch.isfinite(m.loss(out, b)["loss"])


def test_forward_writes_no_module_attributes():
    m = model(modality_dropout=0.3)
    b = make_batch()
    for train in (True, False):
        m.train(train)
        before = {
            (name, key): id(value)
            for name, mod in m.named_modules()
            for key, value in vars(mod).items()
        }
        m(b)
        after = {
            (name, key): id(value)
            for name, mod in m.named_modules()
            for key, value in vars(mod).items()
        }
        assert after == before


def test_no_dialogue_batch():
    m = model().eval()
    b = make_batch()
    del b["dialogue"], b["turn"]
    out = m(b)
    assert out.emotion_logits.shape == (20, 4)
    # each utterance is its own dialogue: a row's output does not depend on the others
    single = {k: v[5:6] for k, v in b.items()}
    torch.testing.assert_close(m(single).emotion_logits, out.emotion_logits[5:6])


def test_dialogue_context_is_used():
    m = model().eval()
    b = make_batch()
    changed = {k: v.clone() for k, v in b.items()}
    changed["text"][2] += 3.0  # turn 2 of dialogue 0
    out, out2 = m(b).emotion_logits, m(changed).emotion_logits
    assert not torch.allclose(out[1], out2[1])  # a neighbour in the same dialogue moves
    torch.testing.assert_close(out[5:], out2[5:])  # other dialogues do not


def test_row_order_invariance_and_padding_independence():
    m = model().eval()
    b = make_batch(g=4, u=5)
    # ragged dialogues: drop the last two turns of dialogue 3
    keep = torch.ones(20, dtype=torch.bool)
    keep[[18, 19]] = False
    b = {k: v[keep] for k, v in b.items()}
    out = m(b)
    perm = torch.randperm(18, generator=torch.Generator().manual_seed(3))
    out_p = m({k: v[perm] for k, v in b.items()})
    torch.testing.assert_close(out_p.emotion_logits, out.emotion_logits[perm], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_p.gates, out.gates[perm], rtol=1e-5, atol=1e-6)
    # dialogue 3 alone gives the same outputs as inside the batch (no padding effects)
    rows = b["dialogue"] == 3
    alone = {k: v[rows] for k, v in b.items()}
    alone["dialogue"] = torch.zeros_like(alone["dialogue"])
    torch.testing.assert_close(
        m(alone).emotion_logits, out.emotion_logits[rows], rtol=1e-5, atol=1e-6
    )


def test_no_speaker_anywhere():
    m = model(JOINT)
    assert not any("speaker" in name for name, _ in m.named_parameters())
    assert not any("speaker" in name for name, _ in m.named_buffers())
    assert "speaker" not in m.Config.model_fields
    m.eval()
    b = make_batch(classes=3)
    with_spk = dict(b, speaker=torch.arange(20) % 2)
    torch.testing.assert_close(m(with_spk).emotion_logits, m(b).emotion_logits, rtol=0, atol=0)


def test_config_errors_and_text_only_model():
    with pytest.raises(ConfigError):
        build_model(
            "mister", SPEC, {"face": InputSpec(feature="face:expression", dim=7, kind="sequence")}
        )
    with pytest.raises(ConfigError):
        build_model("mister", SPEC, INPUTS, {"hidden": 15})
    with pytest.raises(ConfigError):
        build_model("mister", SPEC, INPUTS, {"focal_gamma": 2.0, "label_smoothing": 0.1})
    torch.manual_seed(0)
    m = build_model("mister", SPEC, {"text": INPUTS["text"]}, SMALL).eval()
    out = m(make_batch())
    assert out.gate_names == ["text"]
    torch.testing.assert_close(out.gates, torch.ones(20, 1))


def test_deterministic_under_seed():
    b = make_batch()
    a = model().eval()(b).emotion_logits
    c = model().eval()(b).emotion_logits
    torch.testing.assert_close(a, c, rtol=0, atol=0)

"""calibrated-late: the log-linear pool over present modalities (hand-checked), save/load, training."""

import math

import numpy as np
import pytest
import torch

from emofuse.data.inputs import InputSpec
from emofuse.models import build_model, load_model
from emofuse.spec import TaskSpec

SPEC = TaskSpec(name="t", emotion_labels=["a", "b", "c"], sentiment_range=(-3.0, 3.0), metrics=[])
INPUTS = {
    "text": InputSpec(feature="x:pooled", dim=2, kind="vector"),
    "audio": InputSpec(feature="y:pooled", dim=2, kind="vector"),
}


def model(**config):
    m = build_model(
        "calibrated-late",
        SPEC,
        INPUTS,
        {
            "sentiment_from": ["text"],
            "temperatures": {"audio": 2.0},
            "weights": {"text": 1.0, "audio": 3.0},
            **config,
        },
    )
    with torch.no_grad():
        m.emotion_heads["text"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        m.emotion_heads["text"].bias.zero_()
        m.emotion_heads["audio"].weight.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]))
        m.emotion_heads["audio"].bias.zero_()
        m.sentiment_heads["text"].weight.copy_(torch.tensor([[1.0, -1.0]]))
        m.sentiment_heads["text"].bias.fill_(0.5)
    return m.eval()


def batch(text_present=(True, True), audio_present=(True, False)):
    x_t = torch.tensor([[[1.0, 2.0]], [[0.0, 1.0]]])
    x_a = torch.tensor([[[2.0, -1.0]], [[1.0, 1.0]]])
    return {
        "text": x_t,
        "text_mask": torch.tensor(text_present)[:, None],
        "audio": x_a,
        "audio_mask": torch.tensor(audio_present)[:, None],
    }


def log_softmax(z):
    z = np.asarray(z, float)
    return z - np.log(np.exp(z).sum())


def test_pool_matches_the_formula_by_hand():
    out = model()(batch())
    # row 0: both present; g = (1, 3) / 4 over (audio, text) in input order (audio, text)
    assert out.gate_names == ["audio", "text"]
    np.testing.assert_allclose(out.gates.detach().numpy(), [[0.75, 0.25], [0.0, 1.0]], atol=1e-6)
    lp_text = log_softmax([1.0, 2.0, 0.0])
    lp_audio = log_softmax(np.array([0.0, 4.0, -2.0]) / 2.0)  # temperature 2
    expected = np.exp(log_softmax(0.75 * lp_audio + 0.25 * lp_text))
    got = torch.softmax(out.emotion_logits, -1).detach().numpy()
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    # row 1: audio missing → exactly the text head's distribution
    np.testing.assert_allclose(got[1], np.exp(log_softmax([0.0, 1.0, 0.0])), atol=1e-6)
    np.testing.assert_allclose(
        out.sentiment.detach().numpy(), [1.0 - 2.0 + 0.5, -1.0 + 0.5], atol=1e-6
    )
    assert out.gate_mask.tolist() == [[True, True], [False, True]]


def test_sentiment_undefined_without_its_modality_and_loss_ignores_it():
    m = model()
    out = m(batch(text_present=(False, True), audio_present=(True, True)))
    s = out.sentiment.detach()
    assert math.isnan(s[0]) and not math.isnan(s[1])
    b = batch(text_present=(False, True), audio_present=(True, True))
    b["emotion"] = torch.tensor([1, 2])
    b["sentiment"] = torch.tensor([2.0, -1.0])
    m.train()
    loss = m.loss(m(b), b)
    assert torch.isfinite(loss["loss"]) and loss["sentiment"].item() == pytest.approx(0.5, abs=1e-5)
    loss["loss"].backward()
    assert m.emotion_heads["audio"].weight.grad is not None


def test_save_load_same_outputs(tmp_path):
    m = model()
    m.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    a, b = m(batch()), again(batch())
    torch.testing.assert_close(a.emotion_logits, b.emotion_logits)
    torch.testing.assert_close(a.sentiment, b.sentiment)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"weights": {"face": 1.0}}, "not inputs"),
        ({"temperatures": {"text": 0.0}}, "positive and finite"),
        ({"emotion_from": ["smell"]}, "unknown modalities"),
    ],
)
def test_bad_config_is_one_line(config, problem):
    from emofuse.errors import ConfigError

    with pytest.raises(ConfigError, match=problem):
        model(**config)

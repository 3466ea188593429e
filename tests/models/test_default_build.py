"""The default-model builder end to end on a small text corpus, and its pieces on known data."""

import csv
import json

import numpy as np
import pytest

from emofuse.models import load_model
from emofuse.train.default import DefaultModelConfig, build_default_model, fit_temperature

POSITIVE = [
    "I love this so much",
    "What a wonderful day",
    "This is great news",
    "I am so happy for you",
    "Best thing ever",
]
NEGATIVE = [
    "I hate this",
    "This is awful",
    "I am furious with you",
    "What a terrible mess",
    "Get out of here now",
]
NEUTRAL = [
    "The meeting is at three",
    "It is on the table",
    "We will see tomorrow",
    "The bus comes at noon",
    "Pass the salt",
]


def corpus(folder, column):
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "text", column, "split"])
        for k, split in enumerate(("train", "val", "test")):
            suffix = ["", " indeed", " really"][k]
            for label, score, sentences in (
                ("joy", 2.0, POSITIVE),
                ("mad", -2.0, NEGATIVE),
                ("neutral", 0.0, NEUTRAL),
            ):
                for s in sentences:
                    w.writerow(["", s + suffix, label if column == "label" else score, split])


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    p = np.exp(logits / 2.5)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.1)


@pytest.mark.slow
def test_build_text_heads_save_load_predict(tmp_path):
    corpus(tmp_path / "data" / "emo", "label")
    corpus(tmp_path / "data" / "sent", "sentiment")
    config = DefaultModelConfig.model_validate(
        {
            "name": "tiny",
            "labels": ["anger", "joy", "neutral"],
            "heads": {
                "text": {
                    "feature": "minilm:pooled",
                    "emotion": {"dataset": "folder", "root": "emo", "label_map": {"mad": "anger"}},
                    "sentiment": {"dataset": "folder", "root": "sent"},
                }
            },
            "c_grid": [0.1, 10.0],
            "alpha_grid": [1.0, 10.0],
        }
    )
    card = build_default_model(
        config,
        tmp_path / "model",
        cache=tmp_path / "cache",
        data_root=tmp_path / "data",
        log=lambda _: None,
    )
    assert card["heads"]["text/emotion"]["n"] == {"train": 15, "val": 15, "test": 15}
    assert card["scores"]["text/emotion"]["wa"] >= 0.8  # the test sentences differ by one word only
    assert card["temperatures"]["text"] > 0 and 0.05 <= card["weights"]["text"] <= 1.0
    model = load_model(tmp_path / "model")
    assert model.name == "calibrated-late" and model.spec.emotion_labels == [
        "anger",
        "joy",
        "neutral",
    ]
    happy, angry = model.predict(["I love this so much", "I am furious with you"])
    assert (happy.emotion, angry.emotion) == ("joy", "anger")
    assert happy.sentiment > angry.sentiment
    assert json.loads((tmp_path / "model" / "card.json").read_text())["name"] == "tiny"
    assert "## Test scores" in (tmp_path / "model" / "MODEL_CARD.md").read_text()


def test_a_label_outside_the_shared_set_is_named(tmp_path):
    from emofuse.errors import ConfigError

    corpus(tmp_path / "data" / "emo", "label")
    config = DefaultModelConfig.model_validate(
        {
            "labels": ["anger", "joy", "neutral"],
            "heads": {
                "text": {
                    "feature": "minilm:pooled",
                    "emotion": {"dataset": "folder", "root": "emo"},
                }
            },
        }
    )
    with pytest.raises(ConfigError, match=r"labels \['mad'\] are not in the shared set"):
        build_default_model(
            config,
            tmp_path / "m",
            cache=tmp_path / "c",
            data_root=tmp_path / "data",
            log=lambda _: None,
        )


def test_trim_to_speech_cuts_a_clip_to_what_analyze_segments():
    import emofuse
    from emofuse.features.asr import Transcriber
    from emofuse.records import Utterance
    from emofuse.train.default import _trimmed

    wav = f"{emofuse.__path__[0]}/datasets/sample/03-01-05-02-01-01-01.wav"
    cut = _trimmed(Utterance(id="a", dataset="x", media={"audio": wav}))
    (segment,) = Transcriber().segment_media(wav, transcribe=False)
    assert (cut.start, cut.end) == (segment.start, segment.end)
    assert 0.5 < cut.start < cut.end < 3.8
    text_only = Utterance(id="b", dataset="x", text="hello")
    assert _trimmed(text_only) is text_only

"""Word cues, integrated-gradients ranking and the explanation text (the default model)."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import emofuse
from emofuse.cli import app
from emofuse.cues import get_detector
from emofuse.cues.explain import CueExplainer, explain_text, explanation_text
from emofuse.cues.rank import Attribution, attribute, rank_cues
from emofuse.errors import ConfigError, InputError
from emofuse.records import Utterance
from emofuse.schema import Cue, Prediction

SAMPLE = Path(emofuse.__file__).parent / "datasets" / "sample"
ANGRY = SAMPLE / "03-01-05-02-01-01-01.wav"  # RAVDESS speech, angry (strong)


@pytest.fixture(scope="module")
def words():
    return get_detector("words")


@pytest.fixture(scope="module")
def model():
    from emofuse.analyze import default_model_dir
    from emofuse.models import load_model

    return load_model(default_model_dir())


def names(cues):
    return [(c.name, c.phrase) for c in cues]


def test_word_cues_of_an_angry_sentence(words):
    cues = words.detect_text("I am SO furious with you!!", 1.0, 2.5)
    got = dict(names(cues))
    assert got["emotion_word"] == "says 'furious' (anger, disgust)"
    assert got["intensifier"] == "intensifies 'furious' with 'SO'"
    assert "capitals" not in got  # 'SO': too short to tell from an acronym
    assert got["exclamation"] == "exclaims (2 '!')"
    assert got["overall_valence"].startswith("the words are negative overall (VADER -0.")
    assert all((c.start, c.end, c.modality) == (1.0, 2.5, "text") for c in cues)
    assert [c.strength for c in cues] == sorted((c.strength for c in cues), reverse=True)


def test_negation_flips_the_valence_and_neutral_words_are_quiet(words):
    (cue,) = words.detect_text("I am not happy.")
    assert cue.phrase == "says 'not happy' (joy, negated)"
    assert cue.values[0].value == pytest.approx(2.7 * -0.74)  # VADER's N_SCALAR
    assert words.detect_text("The meeting is at 3 pm in room four.") == []
    assert ("emoji", "uses 😀 (grinning face)") in names(words.detect_text("ok 😀"))


def test_words_in_another_language_give_no_cues(words):
    fr = Utterance(id="f", dataset="t", text="Je suis furieux", language="fr")
    en = Utterance(id="e", dataset="t", text="I am furious", language="en")
    assert words.detect_dialogue([fr, en], [{}, {}])[0] == []
    assert words.detect_dialogue([fr, en], [{}, {}])[1]
    with pytest.raises(ConfigError, match="min_valenc"):
        get_detector("words", min_valenc=1.0)


def test_integrated_gradients_are_complete(model):
    """Completeness (Sundararajan et al. 2017, Prop. 1): the attributions of the predicted
    logit sum to its change from the baseline (the training mean of every input)."""
    utts = [
        Utterance(
            id="a",
            dataset="t",
            text="I am so furious with you!",
            start=0.9,
            end=2.9,
            media={"audio": str(ANGRY)},
        ),
        Utterance(id="b", dataset="t", text="What a lovely day"),
    ]
    table = model.table(utts)
    atts = attribute(model, table, n_steps=64)
    batch = model.collator(table)(list(range(len(table))))
    with torch.no_grad():
        logits = model(batch).emotion_logits
        base = dict(batch)
        for m in model.inputs:
            if m in batch:
                base[m] = getattr(model, f"input_mean_{m}").expand_as(batch[m])
        base_logits = model(base).emotion_logits
    for i, a in enumerate(atts):
        assert a.label == int(logits[i].argmax())
        total = sum(float(s.sum()) for s in a.steps.values())
        change = float(logits[i, a.label] - base_logits[i, a.label])
        assert total == pytest.approx(change, rel=0.02, abs=1e-3)
        assert sum(abs(v) for v in a.shares.values()) == pytest.approx(1.0)
    assert atts[0].carried_by == "audio" and set(atts[1].shares) == {"text"}


def test_rank_cues_shares_a_modality_by_strength_or_by_frames():
    cues = [
        Cue(modality="text", name="a", phrase="a", strength=0.6),
        Cue(modality="text", name="b", phrase="b", strength=0.2),
        Cue(modality="audio", name="early", phrase="early", strength=0.5, start=0.0, end=1.0),
        Cue(modality="audio", name="late", phrase="late", strength=0.5, start=1.0, end=2.0),
        Cue(modality="face", name="f", phrase="f", strength=0.9),
    ]
    import numpy as np

    att = Attribution(
        label=0,
        steps={"text": np.array([0.4]), "audio": np.array([0.5, 0.1, 0.0, 0.0])},
        shares={"text": 0.4, "audio": -0.6},
    )
    ranked = rank_cues(cues, att, 0.0, 2.0)
    got = {c.name: c.contribution for c in ranked}
    assert got["a"] == pytest.approx(0.3) and got["b"] == pytest.approx(0.1)
    assert got["early"] == pytest.approx(-0.6) and got["late"] == pytest.approx(0.0)
    assert got["f"] is None  # the model reads no face: no contribution, listed last
    assert [c.name for c in ranked] == ["a", "b", "late", "early", "f"]


def test_explanation_names_the_label_the_modality_and_the_cues():
    p = Prediction(id="x", emotion="anger", probabilities={"anger": 0.8, "joy": 0.2})
    cues = [
        Cue(modality="audio", name="loud", phrase="loud voice", strength=0.8, contribution=0.5),
        Cue(modality="text", name="w", phrase="says 'furious'", strength=0.7, contribution=0.3),
        Cue(modality="face", name="s", phrase="smiles (AU12)", strength=0.5, contribution=-0.2),
    ]
    att = Attribution(label=0, shares={"audio": 0.5, "text": 0.3, "face": -0.2})
    assert explanation_text(p, cues, att) == (
        "anger (80%), carried by the voice (50% of the evidence), then the words (30%). "
        "Voice: loud voice. Words: says 'furious'. Against it: smiles (AU12)."
    )
    assert explanation_text(p, [], None) == "anger (80%). No distinct cue was found."


def test_analyzer_explains_real_speech(model):
    from emofuse.analyze import Analyzer

    (p,) = Analyzer(model).analyze(ANGRY).predictions
    assert p.emotion == "anger"
    assert p.explanation.startswith("anger (") and "carried by the voice" in p.explanation
    assert p.cues and all(c.contribution is not None for c in p.cues if c.modality == "text")
    contributions = [c.contribution for c in p.cues if c.contribution is not None]
    assert contributions == sorted(contributions, reverse=True)
    assert all(p.start <= c.start and c.end <= p.end for c in p.cues if c.start is not None)
    assert Analyzer(model, cues=False).analyze(ANGRY).predictions[0].cues == []


def test_explain_text_and_the_cli():
    assert "says 'furious'" in explain_text("I am furious with you")
    ok = CliRunner().invoke(app, ["explain", "--text", "I am SO furious with you!!"])
    assert ok.exit_code == 0, ok.output
    assert "says 'furious' (anger, disgust)" in ok.output and "contribution" in ok.output
    both = CliRunner().invoke(app, ["explain", str(ANGRY), "--text", "hi"])
    assert both.exit_code == 2 and "give exactly one of" in both.output
    lone = CliRunner().invoke(app, ["explain", "--id", "x"])
    assert lone.exit_code == 2


def test_explainer_asks_the_model_table_for_the_face_frames(model):
    explainer = CueExplainer(model, ["words"])
    assert explainer.also() == {}


def test_a_cue_that_points_elsewhere_counts_against_the_label(words):
    """Within the words' share, 'love' (NRC joy) under a predicted sadness is evidence
    against it, 'hate' for it; cues that name no emotion keep the modality's sign."""
    import numpy as np

    from emofuse.cues.rank import agrees

    cues = words.detect_text("I hate how much I love you")
    by_word = {c.phrase: c for c in cues if c.name == "emotion_word"}
    love, hate = (
        by_word["says 'love' (joy)"],
        by_word["says 'hate' (anger, disgust, fear, sadness)"],
    )
    assert agrees(love, "sadness") is False and agrees(hate, "sad") is True  # dataset names too
    assert agrees(love, "happy") is True and agrees(love, "neutral") is False
    loud = Cue(modality="audio", name="loud_voice", phrase="loud", strength=0.5)
    assert agrees(loud, "anger") is None
    att = Attribution(label=0, steps={"text": np.array([1.0])}, shares={"text": 1.0})
    ranked = {c.phrase: c.contribution for c in rank_cues(cues, att, None, None, "sadness")}
    assert ranked[love.phrase] < 0 < ranked[hate.phrase]


def test_explained_predictions_carry_the_evidence_shares(model):
    from emofuse.analyze import Analyzer

    (p,) = Analyzer(model).analyze(ANGRY).predictions
    assert set(p.evidence) == {"audio", "text"}
    assert sum(abs(v) for v in p.evidence.values()) == pytest.approx(1.0, abs=1e-3)
    carried = max(p.evidence, key=p.evidence.get)
    assert f"carried by the {'voice' if carried == 'audio' else 'words'}" in p.explanation
    assert all(isinstance(c.contribution, float) for c in p.cues if c.contribution is not None)


def test_explain_says_what_it_left_out():
    res = CliRunner().invoke(app, ["explain", "-t", "I am happy", "-t", "我今天非常开心", "-t", ""])
    assert res.exit_code == 0, res.output
    assert "left out: text1: minilm:pooled" in res.output and "left out: text2:" in res.output
    de = CliRunner().invoke(app, ["explain", "-t", "Die Mutter lacht", "--language", "de"])
    assert de.exit_code == 2 and "language 'de' is not English" in de.output
    bad = CliRunner().invoke(app, ["explain", "-t", "hi", "--language", "german"])
    assert bad.exit_code == 2 and "is not a language tag" in bad.output


def test_word_cues_are_merged_clause_bound_and_not_fooled_by_acronyms(words):
    assert names(words.detect_text("love love love you"))[1] == (
        "emotion_word",
        "says 'love' (joy) ×3",
    )
    phrases = [p for _, p in names(words.detect_text("Don't worry, be happy"))]
    assert "says 'happy' (joy)" in phrases  # the negation stays in its clause
    acronyms = names(words.detect_text("I watched TV with my friend from the USA, OK?"))
    assert not [n for n, _ in acronyms if n == "capitals"]
    assert ("capitals", "writes in capitals ('ANGRY')") in names(words.detect_text("I AM SO ANGRY"))
    family = names(words.detect_text("family 👨‍👩‍👧 👍🏽"))
    assert [p for n, p in family if n == "emoji"] == ["uses 👍 (thumbs up)"]
    with pytest.raises(InputError, match="word cues read a string, got NoneType"):
        words.detect_text(None)


def test_analyze_prints_the_evidence_its_explanations_cite(tmp_path):
    """The terminal table shows each modality's share of the evidence (not the gate weights,
    which disagreed with the explanation), and the explanation itself."""
    res = CliRunner().invoke(app, ["analyze", str(ANGRY), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "evidence" in res.output and "weights" not in res.output
    assert "carried by the voice" in res.output

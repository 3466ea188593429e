"""Accuracy of EGMF, MiSTER-E and the baselines on the field's benchmarks, on 2 CPU cores.

For every target, every model is trained with several seeds (selection and early stopping on
the validation split only), each seed's best model is scored once on the test split, and the
numbers are written as mean ± std next to the published ones (FIELD.md §B) and the floor
measured with a frozen encoder and a linear probe.

    python benchmarks/accuracy.py                          # every target, 3 seeds
    python benchmarks/accuracy.py run meld --seeds 0 1 2   # one target → results/accuracy/meld.json
    python benchmarks/accuracy.py report                   # merge → results/accuracy.json + .md

Finished seeds are skipped (``fit_seeds`` resumes), so a stopped sweep continues where it was.
The best baseline of a target is chosen by its mean *validation* headline metric; its test
numbers are reported, never used to choose.

Targets with a ``finetune`` stage (``*-ft``) are two-stage, as in the ERC literature (COSMIC,
EmoBERTa): per seed, MiniLM is first fine-tuned end-to-end with a small head (selection on val),
reading the neighbouring turns of the dialogue when configured; its features are then cached by
the ``minilm-tuned`` extractor and every model of the comparison trains on them with the same
seed. The fine-tuned model itself is reported as ``finetuned``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _env import git_state, load_average, machine, require_clean  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

BASELINES = ["mlp", "late-fusion", "tfn", "mult", "linear-probe"]
FINETUNED = "finetuned"  # the stage-1 model of a two-stage target (encoder + MLP head)
MODELS = ["egmf", "mister", *BASELINES[:-1]]
PROVENANCE: dict[str, Any] | None = None
"""The tree's state when this invocation started (set by main)."""


def _finetune(epochs: int, context: tuple[int, int] | None = None) -> dict[str, Any]:
    """Stage 1 of a two-stage target: MiniLM fine-tuned in full under a small MLP head."""
    encoder: dict[str, Any] = {"method": "full", "max_length": 96}
    if context is not None:
        encoder |= {"context_past": context[0], "context_future": context[1]}
    return {
        "model": "mlp",
        "model_options": {"hidden": 128, "dropout": 0.1, "text_encoder": encoder},
        "train": {
            "epochs": epochs,
            "patience": None,
            "batch_size": 16,
            "optimizer": {
                "lr": 1e-3,
                "encoder_lr": 5e-5,
                "weight_decay": 0.01,
                "schedule": "linear",
                "warmup": 0.1,
            },
        },
    }


# Stage 2 of a two-stage target: the fine-tuned encoder's pooled features (the runner fills in
# the saved model per seed).
TUNED_TEXT = {"text": {"extractor": "minilm-tuned", "output": "pooled"}}

# headline metric, floor (frozen encoder + linear probe, no context, measured by the project),
# the issue's target, and published numbers on the same protocol (FIELD.md §B), as fractions.
TARGETS: dict[str, dict[str, Any]] = {
    "meld": {
        "dataset": {"name": "meld"},
        "features": {"text": "minilm:pooled"},
        "headline": "weighted_f1",
        "floor": 0.564,
        "target": 0.62,
        "published": {
            "MiSTER-E (A+T, Qwen-7B encoders)": 0.695,
            "EGMF (A+V+T)": 0.6557,
            "RoBERTa utterance (T)": 0.6202,
        },
    },
    "iemocap6": {
        "dataset": {"name": "iemocap", "options": {"protocol": "erc6"}},
        "features": {"text": "minilm:pooled"},
        "headline": "weighted_f1",
        "floor": 0.470,
        "target": 0.62,
        "published": {
            "MiSTER-E (A+T)": 0.709,
            "COSMIC (T)": 0.6528,
            "RoBERTa utterance (T)": 0.5455,
        },
    },
    "mosi": {
        "dataset": {"name": "mosi"},
        "features": {"text": "minilm:pooled"},
        "headline": "non0_acc2",
        "floor": 0.787,
        "target": 0.83,
        "published": {"Self-MM (MMSA re-run)": 0.8546, "MulT (MMSA re-run)": 0.8098},
    },
    "mosei": {
        "dataset": {"name": "mosei"},
        "features": {"text": "minilm:pooled"},
        "headline": "non0_acc2",
        "floor": 0.816,
        "target": 0.84,
        "published": {"CENET (MMSA re-run)": 0.8638, "MulT (MMSA re-run)": 0.8463},
    },
    "simsv2": {
        "dataset": {"name": "simsv2"},
        "features": {"text": "e5:pooled"},
        "headline": "acc2",
        "floor": 0.716,
        "target": 0.75,
        "published": {"EGMF (A+V+T)": 0.8257, "MFN (MMSA re-run)": 0.8114},
    },
    "ravdess": {
        "dataset": {"name": "ravdess"},
        "folds": 6,
        "features": {"audio": "egemaps:functionals"},
        # eGeMAPS dimensions range from Hz to dB to ratios: z-score them with train statistics
        "model_options": {"standardize_inputs": True},
        "headline": "ua",
        "floor": 0.557,
        "target": 0.62,
        "published": {},
    },
    # The same protocol on Whisper tiny.en encoder states (mean over the clip's frames), the one
    # neural speech encoder with shipped weights; a linear probe on them is reported beside.
    "ravdess-whisper": {
        "dataset": {"name": "ravdess"},
        "folds": 6,
        "features": {"audio": "whisper-encoder:pooled"},
        "model_options": {"standardize_inputs": True},
        "probe": True,
        "headline": "ua",
        "floor": 0.557,
        "target": 0.62,
        "published": {},
    },
    # The same MOSI task with the text encoder fine-tuned in the model (LoRA r=8 on MiniLM's
    # query/value projections; adapter-only saves) instead of frozen cached features.
    "mosi-lora": {
        "dataset": {"name": "mosi"},
        "features": {"text": "minilm:tokens"},
        "headline": "non0_acc2",
        "floor": 0.787,
        "target": 0.83,
        "published": {"Self-MM (MMSA re-run)": 0.8546, "MulT (MMSA re-run)": 0.8098},
        "models": ["mlp"],
        "model_options": {"text_encoder": {"r": 8, "alpha": 16}},
        "train": {"epochs": 6, "patience": 3, "optimizer": {"lr": 5e-4, "weight_decay": 0.01}},
    },
    # Two-stage: MiniLM fine-tuned in full with dialogue context (past and future turns, no
    # speaker names), then every model on its cached features (see the module docstring).
    "iemocap6-ft": {
        "dataset": {"name": "iemocap", "options": {"protocol": "erc6"}},
        "finetune": _finetune(epochs=3, context=(2, 1)),
        "features": TUNED_TEXT,
        "headline": "weighted_f1",
        "floor": 0.470,
        "target": 0.62,
        "published": {
            "MiSTER-E (A+T)": 0.709,
            "COSMIC (T)": 0.6528,
            "RoBERTa utterance (T)": 0.5455,
        },
    },
    "meld-ft": {
        "dataset": {"name": "meld"},
        "finetune": _finetune(epochs=2, context=(1, 1)),
        "features": TUNED_TEXT,
        "headline": "weighted_f1",
        "floor": 0.564,
        "target": 0.62,
        "published": {
            "MiSTER-E (A+T, Qwen-7B encoders)": 0.695,
            "EGMF (A+V+T)": 0.6557,
            "RoBERTa utterance (T)": 0.6202,
        },
    },
    # CH-SIMS v2 through the English translations shipped with the data (derived/simsv2.csv):
    # the only verified Chinese encoder (e5) is frozen, while MiniLM can be fine-tuned.
    "simsv2-en-ft": {
        "dataset": {"name": "simsv2", "options": {"text_language": "en"}},
        "finetune": _finetune(epochs=3),
        "features": TUNED_TEXT,
        "headline": "acc2",
        "floor": 0.716,
        "target": 0.75,
        "published": {"EGMF (A+V+T)": 0.8257, "MFN (MMSA re-run)": 0.8114},
    },
    # MOSEI's segments are read on their own (no context); one epoch of full fine-tuning over its
    # 16k training segments is what 2 CPU cores afford per seed.
    "mosei-ft": {
        "dataset": {"name": "mosei"},
        "finetune": _finetune(epochs=1),
        "features": TUNED_TEXT,
        "headline": "non0_acc2",
        "floor": 0.816,
        "target": 0.84,
        "published": {"CENET (MMSA re-run)": 0.8638, "MulT (MMSA re-run)": 0.8463},
    },
    "emotiontalk": {
        "dataset": {"name": "emotiontalk"},
        "features": {"text": "e5:pooled"},
        "headline": "weighted_f1",
        "floor": None,
        "target": None,
        "published": {},
    },
}

# EGMF's LLM head (pseudo-tokens into LoRA-tuned SmolLM2-135M-Instruct) next to the
# discriminative EGMF on the same features and seeds. On MOSI each trained LM head is also scored
# with its other sentiment read-out (constrained decoding of the written number instead of the
# regression head on the last hidden state), reported as "llm-decode", so that validation picks
# the default read-out.
# The discriminative EGMF trains as in its own target; the LM heads with fewer epochs.
TARGETS["meld-llm"] = TARGETS["meld"] | {
    "models": ["llm", "egmf"],
    "train_by_model": {"llm": {"epochs": 3, "patience": 2}},
}
TARGETS["mosi-llm"] = TARGETS["mosi"] | {
    "models": ["llm", "egmf"],
    "train_by_model": {"llm": {"epochs": 10, "patience": 3}},
    "readouts": {"llm": "decode"},
}

# MELD's validation score was still rising at the end of meld-ft's second epoch (all 3 seeds): the
# same recipe with a third epoch. Between the two, the validation score decides, not the test.
TARGETS["meld-ft3"] = TARGETS["meld-ft"] | {"finetune": _finetune(epochs=3, context=(1, 1))}

TRAIN = {"epochs": 30, "patience": 6, "batch_size": 32}
# AdamW settings per model; MiSTER-E's experts overfit within 2-3 epochs at 1e-3 (seen on MELD val).
OPTIMIZER: dict[str, dict[str, float]] = {
    "mister": {"lr": 3e-4, "weight_decay": 0.01},
    # the LLM head: fusion model and projector at 1e-3, LoRA matrices at 2e-4
    "llm": {"lr": 1e-3, "encoder_lr": 2e-4, "weight_decay": 0.01},
}
DEFAULT_OPTIMIZER = {"lr": 1e-3, "weight_decay": 0.01}
MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "egmf": {"hidden": 128, "dropout": 0.2},
    "mister": {"hidden": 128, "dropout": 0.3},
    "mlp": {"hidden": 128, "dropout": 0.2},
    "late-fusion": {"hidden": 128, "dropout": 0.2},
    "tfn": {"hidden": 128, "dropout": 0.2},
    "mult": {"hidden": 64, "dropout": 0.2},
    "llm": {"hidden": 128, "dropout": 0.2},
}
# Model keys that name a registered model differently.
MODEL_NAMES = {"llm": "egmf-llm"}
ACCELERATOR = "cpu"
"""Lightning accelerator of every run (``--accelerator``)."""


def run_target(
    name: str, seeds: list[int], models: list[str], cache: Path, runs: Path, threads: int
) -> Path:
    """Train and test every model of one target; write results/accuracy/<name>.json."""
    from emofuse.evaluate import fit_seeds
    from emofuse.train import TrainConfig

    t = TARGETS[name]
    folds = list(range(t["folds"])) if t.get("folds") else [None]
    out: dict[str, Any] = {
        "target": name,
        "command": " ".join([sys.executable, *sys.argv]),
        "git": PROVENANCE or git_state(),
        "machine": machine(packages=["transformers", "peft", "lightning"], threads=threads)
        | {"load_average": load_average()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "setup": {
            k: t[k] for k in ("dataset", "features", "headline", "floor", "target", "published")
        }
        | {
            "train": TRAIN | t.get("train", {}),
            "train_by_model": t.get("train_by_model", {}),
            "extra_model_options": t.get("model_options", {}),
            "optimizer": {m: OPTIMIZER.get(m, DEFAULT_OPTIMIZER) for m in models},
            "model_options": {m: MODEL_OPTIONS[m] for m in models},
            "seeds": seeds,
            "folds": t.get("folds"),
            "accelerator": ACCELERATOR,
        },
        "models": {},
    }
    path = RESULTS / "accuracy" / f"{name}.json"
    if path.is_file():
        # models of this target run by other invocations (another machine) stay, each with its
        # own machine and command; a model run again is replaced once it finishes
        out["models"] = dict(json.loads(path.read_text()).get("models", {}))
    if "finetune" in t:
        out["setup"]["finetune"] = t["finetune"]
        return run_two_stage(name, t, seeds, models, cache, runs, threads, out, path)
    for model in models:
        started = time.perf_counter()
        per_fold = []
        for fold in folds:
            dataset = json.loads(json.dumps(t["dataset"]))
            if fold is not None:
                dataset.setdefault("options", {})["fold"] = fold
            tag = f"{name}-{model}" + (f"-fold{fold}" if fold is not None else "")
            cfg = TrainConfig.model_validate(
                {
                    "dataset": dataset,
                    "features": t["features"],
                    "cache": str(cache),
                    "model": {
                        "name": MODEL_NAMES.get(model, model),
                        "options": MODEL_OPTIONS[model] | t.get("model_options", {}),
                    },
                    "accelerator": ACCELERATOR,
                    "seeds": seeds,
                    "out_dir": str(runs / tag),
                    "num_threads": threads,
                    "monitor": t["headline"],
                    **(
                        TRAIN
                        | {"optimizer": OPTIMIZER.get(model, DEFAULT_OPTIMIZER)}
                        | t.get("train", {})
                        | t.get("train_by_model", {}).get(model, {})
                    ),
                }
            )
            mark_provenance(runs / tag, seeds, threads)
            per_fold.append(fit_seeds(cfg))
        out["models"][model] = summarise(per_fold, t["headline"]) | {
            "provenance": {
                f"fold{fold}" if fold is not None else "runs": read_provenance(
                    runs / (f"{name}-{model}" + (f"-fold{fold}" if fold is not None else "")), seeds
                )
                for fold in folds
            },
            "wall_s": round(time.perf_counter() - started, 1),
            "machine": out["machine"],
            "command": out["command"],
        }
        print(f"{name} {model}: {json.dumps(out['models'][model]['headline'])}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        readout = t.get("readouts", {}).get(model)
        if readout is not None:
            key = f"{model}-{readout}"
            out["models"][key] = summarise(
                [rescore(f, readout, threads) for f in per_fold], t["headline"]
            ) | {"same_models_as": model, "sentiment_head": readout, "machine": out["machine"]}
            print(f"{name} {key}: {json.dumps(out['models'][key]['headline'])}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    if t.get("probe"):
        started = time.perf_counter()
        per_fold = [linear_probe(t, fold, cache, seeds) for fold in folds]
        out["models"]["linear-probe"] = summarise(per_fold, t["headline"]) | {
            "wall_s": round(time.perf_counter() - started, 1),
            "machine": out["machine"],
            "command": out["command"],
        }
        print(f"{name} linear-probe: {json.dumps(out['models']['linear-probe']['headline'])}")
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return path


def rescore(fold: dict[str, Any], readout: str, threads: int) -> dict[str, Any]:
    """Each seed's trained LLM head scored again on val and test with another sentiment
    read-out (no training): the comparison behind the default ``sentiment_head``."""
    from emofuse.evaluate import evaluate
    from emofuse.models import load_model
    from emofuse.train import TrainConfig
    from emofuse.train.run import torch_threads

    runs = []
    for run in fold["runs"]:
        folder = Path(run["out_dir"])
        cfg = TrainConfig.model_validate(json.loads((folder / "run.json").read_text()))
        model = load_model(folder / "model")
        model.use_sentiment_head(readout)
        scores = {}
        with torch_threads(threads):
            for split in ("val", "test"):
                scores[split] = evaluate(
                    model,
                    dataset=cfg.dataset,
                    split=getattr(cfg.dataset, f"{split}_split"),
                    cache=cfg.cache_dir(),
                    batch_size=cfg.batch_size,
                    device=cfg.inference_device(),
                ).metrics
        runs.append({"seed": run["seed"], "best_epoch": run["best_epoch"]} | scores)
    return {"runs": runs}


def mark_provenance(run_dir: Path, seeds: list[int], threads: int) -> None:
    """Before a sweep: record, for each seed that is about to train, where its numbers come
    from (commit and tree state at this invocation's start, command, threads, time). A seed
    that already finished keeps the record of the invocation that trained it."""
    for s in seeds:
        seed_dir = run_dir / f"seed-{s}"
        record = seed_dir / "provenance.json"
        if (seed_dir / "result.json").is_file() or record.is_file():
            continue
        seed_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps(
                {
                    "git": PROVENANCE or git_state(),
                    "command": " ".join([sys.executable, *sys.argv]),
                    "torch_threads": threads,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
                indent=2,
            )
            + "\n"
        )


def read_provenance(run_dir: Path, seeds: list[int]) -> dict[str, Any]:
    """``seed → record`` of the invocation that trained each seed (see mark_provenance)."""
    out: dict[str, Any] = {}
    for s in seeds:
        record = run_dir / f"seed-{s}" / "provenance.json"
        out[str(s)] = (
            json.loads(record.read_text())
            if record.is_file()
            else "unknown: trained before provenance was recorded per seed"
        )
    return out


def linear_probe(
    t: dict[str, Any], fold: int | None, cache: Path, seeds: list[int]
) -> dict[str, Any]:
    """Logistic regression on the time-averaged, z-scored features (C chosen on val).

    The same splits and cached features as the models; deterministic, so every seed gets the
    same numbers (kept per seed so it sits in the same table).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from emofuse.data import FeatureTable, parse_features
    from emofuse.datasets import DatasetChoice
    from emofuse.features.store import FeatureStore
    from emofuse.metrics import compute_metrics

    dataset = json.loads(json.dumps(t["dataset"]))
    if fold is not None:
        dataset.setdefault("options", {})["fold"] = fold
    ds = DatasetChoice.model_validate(dataset).load()
    refs = parse_features(t["features"])
    store = FeatureStore(cache)
    xs, ys = {}, {}
    for split in ("train", "val", "test"):
        table = FeatureTable.load(ds[split], refs, store, ds.spec)
        xs[split] = np.stack(
            [np.concatenate([it.features[m].mean(axis=0) for m in refs]) for it in table.items]
        )
        ys[split] = np.array([it.emotion for it in table.items])
    scaler = StandardScaler().fit(xs["train"])
    best: tuple[float, dict[str, Any], Any] | None = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        clf = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(xs["train"]), ys["train"])
        val = compute_metrics(ds.spec, ys["val"], clf.predict(scaler.transform(xs["val"])))
        if best is None or val[t["headline"]] > best[0]:
            best = (val[t["headline"]], val, clf)
    assert best is not None
    _, val, clf = best
    test = compute_metrics(ds.spec, ys["test"], clf.predict(scaler.transform(xs["test"])))
    runs = [{"seed": s, "val": val, "test": test, "best_epoch": None, "C": clf.C} for s in seeds]
    return {"runs": runs}


def _config(
    t: dict[str, Any],
    model: str,
    options: dict[str, Any],
    features: dict[str, Any],
    train: dict[str, Any],
    seeds: list[int],
    out_dir: Path,
    cache: Path,
    threads: int,
) -> Any:
    from emofuse.train import TrainConfig

    return TrainConfig.model_validate(
        {
            "dataset": t["dataset"],
            "features": features,
            "cache": str(cache),
            "model": {"name": MODEL_NAMES.get(model, model), "options": options},
            "accelerator": ACCELERATOR,
            "seeds": seeds,
            "out_dir": str(out_dir),
            "num_threads": threads,
            "monitor": t["headline"],
            **train,
        }
    )


def run_two_stage(
    name: str,
    t: dict[str, Any],
    seeds: list[int],
    models: list[str],
    cache: Path,
    runs: Path,
    threads: int,
    out: dict[str, Any],
    path: Path,
) -> Path:
    """Per seed: fine-tune the text encoder, cache its features, train every model on them."""
    from emofuse.evaluate import fit_seeds

    ft = t["finetune"]
    started: dict[str, float] = {}
    per_model: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        mark_provenance(runs / f"{name}-finetune", [seed], threads)
        stage1 = fit_seeds(
            _config(
                t,
                ft["model"],
                ft["model_options"],
                {"text": "minilm:tokens"},
                TRAIN | ft["train"],
                [seed],
                runs / f"{name}-finetune",
                cache,
                threads,
            )
        )
        per_model.setdefault("finetuned", []).extend(stage1["runs"])
        started["finetuned"] = started.get("finetuned", 0.0) + time.perf_counter() - t0
        tuned = Path(stage1["runs"][0]["out_dir"]) / "model"
        features = json.loads(json.dumps(t["features"]))
        for ref in features.values():
            ref.setdefault("options", {})["model"] = str(tuned)
        for model in models:
            t0 = time.perf_counter()
            mark_provenance(runs / f"{name}-{model}", [seed], threads)
            result = fit_seeds(
                _config(
                    t,
                    model,
                    MODEL_OPTIONS[model] | t.get("model_options", {}),
                    features,
                    TRAIN
                    | {"optimizer": OPTIMIZER.get(model, DEFAULT_OPTIMIZER)}
                    | t.get("train", {}),
                    [seed],
                    runs / f"{name}-{model}",
                    cache,
                    threads,
                )
            )
            per_model.setdefault(model, []).extend(result["runs"])
            started[model] = started.get(model, 0.0) + time.perf_counter() - t0
        for model, model_runs in per_model.items():
            tag = f"{name}-finetune" if model == "finetuned" else f"{name}-{model}"
            out["models"][model] = summarise([{"runs": model_runs}], t["headline"]) | {
                "provenance": {"runs": read_provenance(runs / tag, seeds)},
                "wall_s": round(started[model], 1),
                "seeds_done": [r["seed"] for r in model_runs],
            }
            print(f"{name} {model}: {json.dumps(out['models'][model]['headline'])}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return path


def summarise(per_fold: list[dict[str, Any]], headline: str) -> dict[str, Any]:
    """Mean ± std over seeds; with folds, each seed's score is its mean over folds."""
    import numpy as np

    def per_seed(split: str, metric: str) -> list[float]:
        values = np.array(
            [[run[split][metric] for run in f["runs"]] for f in per_fold], dtype=float
        )
        return values.mean(axis=0).tolist()  # average folds → one value per seed

    metrics = sorted(
        k for k, v in per_fold[0]["runs"][0]["test"].items() if isinstance(v, int | float)
    )
    agg: dict[str, Any] = {}
    for split in ("val", "test"):
        agg[split] = {}
        for m in metrics:
            vals = per_seed(split, m)
            finite = [v for v in vals if np.isfinite(v)]
            agg[split][m] = {
                "mean": float(np.mean(finite)) if finite else None,
                "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                "values": vals,
            }
    return {
        "headline": {"val": agg["val"][headline], "test": agg["test"][headline]},
        "val": agg["val"],
        "test": agg["test"],
        "best_epochs": [[r["best_epoch"] for r in f["runs"]] for f in per_fold],
    }


def report() -> Path:
    """Merge per-target results into results/accuracy.json and results/accuracy.md."""
    merged: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "targets": {}}
    lines = [
        "| target | metric | floor | target | EGMF | MiSTER-E | best baseline (by val) "
        "| fine-tuned encoder + MLP (stage 1) | published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in TARGETS:
        f = RESULTS / "accuracy" / f"{name}.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        models = r["models"]
        baselines = {m: v for m, v in models.items() if m in BASELINES}
        best = (
            max(baselines, key=lambda m: baselines[m]["headline"]["val"]["mean"])
            if baselines
            else None
        )
        r["best_baseline"] = best
        merged["targets"][name] = r
        setup = r["setup"]

        def cell(m: str | None, models: dict[str, Any] = models) -> str:
            if m is None or m not in models:
                return "—"
            h = models[m]["headline"]["test"]
            std = f" ± {h['std']:.3f}" if h["std"] is not None else ""
            return f"{h['mean']:.3f}{std}"

        pub = "; ".join(f"{k} {v:.3f}" for k, v in setup["published"].items()) or "—"
        fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(
            f"| {name} | {setup['headline']} | {fmt(setup['floor'])} | {fmt(setup['target'])} | "
            f"{cell('egmf')} | {cell('mister')} | {best}: {cell(best)} | {cell(FINETUNED)} | {pub} |"
        )
    out = RESULTS / "accuracy.json"
    out.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    (RESULTS / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="train and test one or more targets")
    run.add_argument("targets", nargs="*", default=list(TARGETS), help=f"of {', '.join(TARGETS)}")
    for p in (parser, run):
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument(
            "--models",
            nargs="+",
            default=None,
            choices=[*MODELS, *MODEL_NAMES],
            help="only these of each target's models (default: all of them)",
        )
        default_data = os.environ.get("EMOFUSE_SHARED_DATA", REPO.parent / "shared" / "data")
        default_cache = os.environ.get("EMOFUSE_CACHE", Path.home() / ".cache/emofuse/features")
        p.add_argument("--data", type=Path, default=Path(default_data))
        p.add_argument("--cache", type=Path, default=Path(default_cache))
        p.add_argument("--runs", type=Path, default=REPO / "runs" / "benchmarks")
        p.add_argument("--threads", type=int, default=1, help="torch threads per run")
        p.add_argument(
            "--accelerator", choices=["cpu", "gpu"], default="cpu", help="Lightning accelerator"
        )
        p.add_argument(
            "--allow-dirty",
            action="store_true",
            help="run with uncommitted changes (the result records them and is marked dirty)",
        )
    sub.add_parser("report", help="merge per-target results")
    args = parser.parse_args()
    if args.cmd == "report":
        report()
        return
    global PROVENANCE, ACCELERATOR
    ACCELERATOR = args.accelerator
    PROVENANCE = git_state()  # the whole tree, once, before anything is written
    require_clean(PROVENANCE, args.allow_dirty)
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found at {args.data} (set EMOFUSE_SHARED_DATA)")
    os.environ["EMOFUSE_DATA"] = str(args.data)
    targets = args.targets if args.cmd == "run" else list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        sys.exit(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    for name in targets:
        own = TARGETS[name].get("models", MODELS)
        models = own if args.models is None else [m for m in own if m in args.models]
        run_target(name, args.seeds, models, args.cache, args.runs, args.threads)
    report()


if __name__ == "__main__":
    main()

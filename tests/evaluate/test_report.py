"""Evaluation reports: JSON, Markdown table, figures."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from emofuse.errors import InputError
from emofuse.evaluate import (
    confusion_matrix_plot,
    gate_weights_per_class,
    markdown_table,
    mean_gates_per_class,
    training_curves,
    write_report,
)
from emofuse.metrics import IGNORE_INDEX, compute_metrics
from emofuse.spec import TaskSpec

pytest.importorskip("matplotlib")

LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
SPEC = TaskSpec(name="meld-7", emotion_labels=LABELS, metrics=["weighted_f1", "accuracy"])


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _assert_real_png(path, min_bytes=10_000):
    assert path.is_file()
    w, h = _png_size(path)
    assert w >= 400 and h >= 300
    assert path.stat().st_size > min_bytes  # an empty canvas compresses to a few kB


def _predictions(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, len(LABELS), n))
    y[:5] = IGNORE_INDEX
    return y, pred


# --------------------------------------------------------------------------------------------
# markdown_table


def test_markdown_table_formats_cells():
    table = markdown_table(
        [["acc", 0.123456, 3], {"Metric": "a|b", "Value": float("nan")}, ["x", None, np.int64(2)]],
        ["Metric", "Value", "N"],
    )
    assert table.splitlines() == [
        "| Metric | Value | N |",
        "|:---|---:|---:|",
        "| acc | 0.1235 | 3 |",
        "| a\\|b | – |  |",
        "| x | – | 2 |",
    ]


def test_markdown_table_rejects_ragged_rows():
    with pytest.raises(InputError, match="2 cells for 3 columns"):
        markdown_table([["a", 1]], ["A", "B", "C"])


# --------------------------------------------------------------------------------------------
# write_report


def test_single_run_report(tmp_path):
    y, pred = _predictions(0)
    metrics = compute_metrics(SPEC, emotion_true=y, emotion_pred=pred)
    rng = np.random.default_rng(1)
    gates = rng.dirichlet([1.0, 2.0, 3.0], size=len(y))
    history = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "val_loss": 2.2 / e + 0.01 * e,
            "val_metric": 0.3 + 0.05 * e,
        }
        for e in range(1, 6)
    ]
    result = {
        "model": "egmf",
        "dataset": "meld",
        "split": "test",
        "spec": SPEC,
        "metrics": metrics,
        "published": {"weighted_f1": 0.6591},
        "published_source": "MiSTER-E",
        "history": history,
        "gates": {"weights": gates, "names": ["local", "semantic", "global"], "y": y},
    }
    paths = write_report(result, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "confusion_matrix", "gate_weights", "training_curves"}

    data = json.loads(paths["json"].read_text())
    assert data["headline"] == "weighted_f1"
    assert data["metrics"]["weighted_f1"] == metrics["weighted_f1"]  # unrounded
    assert data["spec"]["emotion_labels"] == LABELS
    assert "gates" not in data
    g = data["gate_weights_per_class"]["joy"]
    joy = y == LABELS.index("joy")
    assert g["n"] == int(joy.sum())
    assert g["semantic"] == pytest.approx(gates[joy, 1].mean())
    # sorted keys, pretty printed
    text = paths["json"].read_text()
    assert text.startswith("{\n  ") and list(data) == sorted(data)

    md = paths["markdown"].read_text()
    assert "# egmf · meld · test" in md
    assert "| Metric | Value | Published (MiSTER-E) |" in md
    assert f"| **weighted_f1** | {metrics['weighted_f1']:.4f} | 0.6591 |" in md
    assert md.index("weighted_f1") < md.index("| accuracy") < md.index("| macro_f1")
    assert "## Per class" in md and "| joy |" in md
    assert "![confusion matrix](confusion_matrix.png)" in md

    for key in ("confusion_matrix", "gate_weights", "training_curves"):
        _assert_real_png(paths[key])


def test_multi_seed_report(tmp_path):
    spec = TaskSpec(
        name="mosi",
        sentiment_range=(-3, 3),
        sentiment_scheme="mosi",
        metrics=["has0_acc2", "mae", "corr"],
    )
    runs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        t = rng.uniform(-3, 3, 50)
        runs.append(
            compute_metrics(spec, sentiment_true=t, sentiment_pred=t + rng.normal(0, 1, 50))
        )
    runs[2]["corr"] = float("nan")
    paths = write_report({"spec": spec, "seeds": runs, "seed_values": [1111, 1112, 1113]}, tmp_path)
    assert set(paths) == {"json", "markdown"}  # no labels, gates or history: no figures

    data = json.loads(paths["json"].read_text())
    agg = data["aggregate"]
    maes = [r["mae"] for r in runs]
    assert agg["mae"]["mean"] == pytest.approx(np.mean(maes))
    assert agg["mae"]["std"] == pytest.approx(np.std(maes, ddof=1))
    assert agg["corr"]["n"] == 2 and agg["corr"]["values"][2] is None  # NaN -> null
    assert data["seeds"][2]["corr"] is None

    md = paths["markdown"].read_text()
    assert "over 3 runs (seeds 1111, 1112, 1113)" in md
    assert "| Metric | Mean ± std |" in md
    mean, std = np.mean(maes), np.std(maes, ddof=1)
    assert f"| mae ↓ | {mean:.4f} ± {std:.4f} |" in md
    assert "(n=2) |" in md  # corr over the two finite runs
    first_rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")]
    assert first_rows[1:4] == ["**has0_acc2**", "mae ↓", "corr"]


def test_multi_seed_confusion_is_summed(tmp_path):
    runs = [compute_metrics(SPEC, *_predictions(s)) for s in range(2)]
    paths = write_report({"spec": SPEC.model_dump(), "seeds": runs}, tmp_path)
    _assert_real_png(paths["confusion_matrix"])
    assert "## Per class" not in paths["markdown"].read_text()


def test_report_carries_mmsa_and_merbench_names_and_shows_them_on_request(tmp_path):
    spec = TaskSpec(
        name="mosi", sentiment_range=(-3, 3), sentiment_scheme="mosi", metrics=["has0_acc2", "mae"]
    )
    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, 40)
    metrics = compute_metrics(spec, sentiment_true=t, sentiment_pred=t + rng.normal(0, 1, 40))
    ours = write_report({"spec": spec, "metrics": metrics}, tmp_path / "ours")
    data = json.loads(ours["json"].read_text())
    assert data["metrics"]["has0_acc2"] == metrics["has0_acc2"]  # our names stay the keys
    assert data["metric_names"]["mmsa"] == {
        "has0_acc2": "Has0_acc_2",
        "has0_f1": "Has0_F1_score",
        "non0_acc2": "Non0_acc_2",
        "non0_f1": "Non0_F1_score",
        "acc5": "Mult_acc_5",
        "acc7": "Mult_acc_7",
        "mae": "MAE",
        "corr": "Corr",
    }
    assert data["metric_names"]["merbench"] == {}  # no emotion metric
    md = ours["markdown"].read_text()
    assert "| **has0_acc2** |" in md and "Has0_acc_2" not in md

    mmsa = write_report({"spec": spec, "metrics": metrics}, tmp_path / "mmsa", names="mmsa")
    md = mmsa["markdown"].read_text()
    assert "| Metric (MMSA) | Value |" in md
    assert f"| **Has0_acc_2** | {metrics['has0_acc2']:.4f} |" in md
    assert f"| MAE ↓ | {metrics['mae']:.4f} |" in md and "| Mult_acc_7 |" in md
    assert "| has0_acc2" not in md and "| n_sentiment |" in md  # counts keep our names
    assert json.loads(mmsa["json"].read_text()) == data

    emo = write_report(
        {"spec": SPEC, "metrics": compute_metrics(SPEC, *_predictions(0))},
        tmp_path / "emo",
        names="merbench",
    )
    names = json.loads(emo["json"].read_text())["metric_names"]
    assert names == {"mmsa": {}, "merbench": {"weighted_f1": "WAF", "accuracy": "ACC"}}
    md = emo["markdown"].read_text()
    assert "| Metric (MERBench) |" in md and "| **WAF** |" in md and "| ACC |" in md
    assert "| ua |" in md  # MERBench has no name for it
    # a result without a spec: the scheme is told by the metric names
    bare = write_report({"metrics": {"acc2": 0.5, "f1": 0.4, "mae": 0.3}}, tmp_path / "bare")
    mapped = json.loads(bare["json"].read_text())["metric_names"]["mmsa"]
    assert mapped == {"acc2": "Mult_acc_2", "f1": "F1_score", "mae": "MAE"}
    with pytest.raises(InputError, match="unknown metric-name style"):
        write_report({"metrics": metrics}, tmp_path / "x", names="paper")


def test_report_needs_metrics(tmp_path):
    with pytest.raises(InputError, match="'metrics'"):
        write_report({"model": "x"}, tmp_path)


# --------------------------------------------------------------------------------------------
# plots


def test_confusion_matrix_plot(tmp_path):
    cm = [[50, 3, 0], [10, 20, 5], [0, 0, 0]]  # last class has no samples: row stays zero
    p = confusion_matrix_plot(cm, ["neutral", "joy", "anger"], tmp_path / "cm.png")
    _assert_real_png(p, min_bytes=8_000)
    p2 = confusion_matrix_plot(
        cm, ["neutral", "joy", "anger"], tmp_path / "raw.png", normalize=False
    )
    assert p2.read_bytes() != p.read_bytes()
    with pytest.raises(InputError, match="does not fit"):
        confusion_matrix_plot(cm, ["a", "b"], tmp_path / "bad.png")


def test_mean_gates_per_class():
    gates = np.array([[0.2, 0.8], [0.4, 0.6], [1.0, 0.0], [0.5, 0.5]])
    y = np.array([0, 0, 2, IGNORE_INDEX])
    means, counts = mean_gates_per_class(gates, y, 3)
    # class 0: mean of rows 0, 1 = (0.3, 0.7); class 1: none; class 2: row 2
    np.testing.assert_allclose(means[0], [0.3, 0.7])
    assert np.isnan(means[1]).all()
    np.testing.assert_allclose(means[2], [1.0, 0.0])
    assert counts.tolist() == [2, 0, 1]
    with pytest.raises(InputError, match=r"0\.\.2"):
        mean_gates_per_class(gates, [0, 1, 3, 0], 3)


def test_gate_weights_plot_checks_names(tmp_path):
    gates = np.full((4, 3), 1 / 3)
    with pytest.raises(InputError, match="3 columns but 2 names"):
        gate_weights_per_class(gates, ["a", "b"], [0, 1, 0, 1], ["x", "y"], tmp_path / "g.png")


def test_training_curves_mixed_step_records(tmp_path):
    # per-step train loss, per-epoch validation, sharing the "step" axis; mae is minimised
    history = [{"step": s, "train_loss": 1.0 / s} for s in range(1, 41)]
    history += [
        {"step": s, "val_loss": 0.5 + 1 / s, "val_metric": 1 / s + 0.3} for s in (10, 20, 30, 40)
    ]
    p = training_curves(history, tmp_path / "curves.png", metric_name="mae")
    _assert_real_png(p)
    with pytest.raises(InputError, match="empty"):
        training_curves([], tmp_path / "x.png")
    with pytest.raises(InputError, match="'epoch' or a 'step'"):
        training_curves([{"train_loss": 1.0}], tmp_path / "x.png")


def test_plots_accept_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    gates = torch.softmax(torch.randn(20, 2, requires_grad=True), dim=-1)
    y = torch.arange(20) % 2
    p = gate_weights_per_class(gates, ["speech", "text"], y, ["a", "b"], tmp_path / "g.png")
    assert p.is_file()
    assert not math.isnan(float(mean_gates_per_class(gates, y, 2)[0].sum()))


def test_reports_name_ones_own_data_not_just_folder(tmp_path):
    from emofuse.datasets import DatasetChoice
    from emofuse.evaluate.evaluation import data_name

    assert data_name(DatasetChoice(name="folder", options={"root": "/x/my_calls"}), "folder") == (
        "folder (my_calls)"
    )
    assert data_name(DatasetChoice(name="folder", options={"root": "/x/calls.csv"}), "folder") == (
        "folder (calls)"
    )
    assert data_name(DatasetChoice(prepared=tmp_path / "meld"), "meld") == "meld"
    assert data_name(DatasetChoice(name="meld"), "meld") == "meld"

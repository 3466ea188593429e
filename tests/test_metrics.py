"""Metrics pinned on hand-computed cases (arithmetic in the comments), FIELD.md §D2/§D5."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emofuse.errors import InputError
from emofuse.metrics import (
    EMOTION_METRICS,
    GENERIC_SENTIMENT_METRICS,
    IGNORE_INDEX,
    MOSI_METRICS,
    SIMS_METRICS,
    aggregate_seeds,
    compute_metrics,
    emotion_metrics,
    headline,
    metric_mode,
    sentiment_metrics,
    sims_bin,
)
from emofuse.spec import METRICS, TaskSpec

approx = pytest.approx


def test_every_spec_metric_is_computed_by_some_family():
    computed = set(EMOTION_METRICS) | set(MOSI_METRICS) | set(SIMS_METRICS)
    assert computed | set(GENERIC_SENTIMENT_METRICS) == set(METRICS)


def test_ignore_index_matches_the_models():
    from emofuse.models import IGNORE_INDEX as MODELS_IGNORE

    assert IGNORE_INDEX == MODELS_IGNORE


# --------------------------------------------------------------------------------------------
# emotion

LABELS3 = ["neutral", "joy", "anger"]


def test_emotion_metrics_hand_computed():
    # last row is unlabelled and must be dropped with its (wrong) prediction
    t = [0, 0, 0, 1, 1, 2, IGNORE_INDEX]
    p = [0, 0, 1, 1, 2, 2, 1]
    m = emotion_metrics(t, p, LABELS3)
    # kept: t = 0 0 0 1 1 2, p = 0 0 1 1 2 2 -> hits at 0,1,3,5 -> 4/6
    assert m["n"] == 6
    assert m["accuracy"] == approx(4 / 6)
    assert m["wa"] == m["accuracy"]
    # neutral: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 = 2*(2/3)/(5/3) = 0.8, support 3
    # joy:     TP 1, FP 1 (row 2), FN 1 (row 4) -> P 1/2, R 1/2, F1 1/2, support 2
    # anger:   TP 1, FP 1 (row 4), FN 0 -> P 1/2, R 1, F1 = 2*(1/2)/(3/2) = 2/3, support 1
    pc = m["per_class"]
    assert pc["neutral"] == approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert pc["joy"] == approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["anger"] == approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # weighted F1 = (3*0.8 + 2*0.5 + 1*2/3) / 6 = (12/5 + 1 + 2/3) / 6 = 61/90
    assert m["weighted_f1"] == approx(61 / 90)
    # macro F1 = (0.8 + 0.5 + 2/3) / 3 = 59/90
    assert m["macro_f1"] == approx(59 / 90)
    # UA = mean recall = (2/3 + 1/2 + 1) / 3 = 13/18
    assert m["ua"] == approx(13 / 18)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_emotion_classes_absent_from_truth():
    # 4 labels; class 3 never occurs, class 2 is only predicted.
    t = np.array([0, 0, 1, 1])
    p = np.array([0, 2, 1, 1])
    m = emotion_metrics(t, p, ["a", "b", "c", "d"])
    # UA = mean recall over the classes in the truth: (1/2 + 2/2) / 2 = 0.75
    assert m["ua"] == approx(0.75)
    # macro over classes in truth or prediction {0,1,2} (sklearn's default, as the reference
    # code calls it): a: P 1, R 1/2 -> 2/3; b: 1; c: TP 0 -> 0 -> (2/3 + 1 + 0) / 3 = 5/9
    assert m["macro_f1"] == approx(5 / 9)
    # weighted: supports a 2, b 2, c 0 -> (2*2/3 + 2*1) / 4 = 5/6
    assert m["weighted_f1"] == approx(5 / 6)
    # every label is reported; undefined precision/recall are 0
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_emotion_constant_prediction():
    # always "neutral": acc 3/6; neutral P 1/2 R 1 F1 2/3; the others F1 0
    m = emotion_metrics([0, 0, 0, 1, 1, 2], [0] * 6, LABELS3)
    assert m["accuracy"] == approx(0.5)
    assert m["weighted_f1"] == approx(3 * (2 / 3) / 6)  # = 1/3
    assert m["ua"] == approx((1 + 0 + 0) / 3)


def test_emotion_accepts_tensors_and_column_vectors():
    torch = pytest.importorskip("torch")
    m = emotion_metrics(torch.tensor([[0], [1]]), torch.tensor([0, 0]), ["a", "b"])
    assert m["accuracy"] == approx(0.5)


@pytest.mark.parametrize(
    ("t", "p", "match"),
    [
        ([0, 1], [0], "2 rows"),
        ([0, 3], [0, 1], "index 3"),
        ([0, 1], [0, -1], "index -1"),
        ([IGNORE_INDEX] * 2, [0, 1], "no labelled"),
        ([0.5, 1.0], [0, 1], "integer"),
    ],
)
def test_emotion_bad_input(t, p, match):
    with pytest.raises(InputError, match=match):
        emotion_metrics(t, p, LABELS3)


# --------------------------------------------------------------------------------------------
# MOSI / MOSEI


def test_mosi_hand_computed():
    t = np.array([-2.0, -0.4, 0.0, 0.0, 1.2, 2.6, 3.0])
    p = np.array([-1.5, 0.3, 0.0, -0.2, 0.4, 2.5, 3.8])
    m = sentiment_metrics(t, p, "mosi")
    assert set(MOSI_METRICS) <= set(m)
    assert m["n"] == 7 and m["n_non0"] == 5
    # Has0: truth>=0 = F F T T T T T, pred>=0 = F T T F T T T -> misses at 1 and 3 -> 5/7
    assert m["has0_acc2"] == approx(5 / 7)
    # Has0 F1: True (support 5): TP 4, FP 1, FN 1 -> F1 0.8; False (2): TP 1, FP 1, FN 1 -> 0.5
    #          (5*0.8 + 2*0.5) / 7 = 5/7
    assert m["has0_f1"] == approx(5 / 7)
    # Non0: drop the two zero truths -> t = -2 -0.4 1.2 2.6 3, p = -1.5 0.3 0.4 2.5 3.8
    #       >0: F F T T T vs F T T T T -> 4/5
    assert m["non0_acc2"] == approx(4 / 5)
    # Non0 F1: True (3): TP 3, FP 1 -> P 3/4 R 1 F1 6/7; False (2): TP 1, FN 1 -> P 1 R 1/2 F1 2/3
    #          (3*6/7 + 2*2/3) / 5 = 82/105
    assert m["non0_f1"] == approx(82 / 105)
    # Acc-7: clip [-3,3] -> p[6] = 3; round half to even:
    #   t -> -2 -0 0 0 1 3 3 ; p -> -2 (-1.5) 0 0 -0 0 2 (2.5) 3 -> misses at 4 and 5 -> 5/7
    assert m["acc7"] == approx(5 / 7)
    # Acc-5: clip [-2,2] -> t = -2 -0.4 0 0 1.2 2 2, p = -1.5 0.3 0 -0.2 0.4 2 2
    #   round: t -2 -0 0 0 1 2 2 ; p -2 0 0 -0 0 2 2 -> miss at 4 only -> 6/7
    assert m["acc5"] == approx(6 / 7)
    # MAE unclipped: 0.5 + 0.7 + 0 + 0.2 + 0.8 + 0.1 + 0.8 = 3.1 -> 3.1/7
    assert m["mae"] == approx(3.1 / 7)
    assert m["corr"] == approx(np.corrcoef(p, t)[0, 1])


def test_mosi_round_half_to_even():
    # np.round: 2.5 -> 2, 0.5 -> 0, -0.5 -> -0, 1.5 -> 2, -2.5 -> -2
    t = np.array([3.0, 2.0, 0.0, 0.0, 1.0, 2.0, -3.0])
    p = np.array([2.5, 2.5, 0.5, -0.5, 1.5, 1.5, -2.5])
    m = sentiment_metrics(t, p, "mosi")
    # hits: (2 vs 2), (0 vs 0), (-0 vs 0), (2 vs 2); misses: (2 vs 3), (2 vs 1), (-2 vs -3)
    assert m["acc7"] == approx(4 / 7)
    # Acc-5 clips to [-2,2] first: t = 2 2 0 0 1 2 -2; p = 2 (2.5->2) 2 0.5 -0.5 1.5 1.5 -2
    # round: t 2 2 0 0 1 2 -2 ; p 2 2 0 -0 2 2 -2 -> miss only (1 vs 2) -> 6/7
    assert m["acc5"] == approx(6 / 7)


def test_mosi_mae_is_unclipped_but_acc7_clips():
    m = sentiment_metrics([3.0, -3.0], [4.0, -5.0], "mosi")
    assert m["acc7"] == 1.0  # 4 -> 3, -5 -> -3
    assert m["mae"] == approx((1.0 + 2.0) / 2)


def test_mosi_zero_truth_handling():
    # Has0 counts zero as non-negative: (t 0, p 0) hit, (t 0, p -0.1) miss, (t -1, p 0) miss
    m = sentiment_metrics([0.0, 0.0, -1.0], [0.0, -0.1, 0.0], "mosi")
    assert m["has0_acc2"] == approx(1 / 3)
    # Non0 keeps only t=-1 (p=0 is not > 0 -> both False) -> 1/1
    assert m["n_non0"] == 1
    assert m["non0_acc2"] == 1.0
    assert m["non0_f1"] == 1.0
    # every truth zero: Non0 is undefined -> nan
    m = sentiment_metrics([0.0, 0.0], [0.5, -0.5], "mosi")
    assert m["n_non0"] == 0
    assert math.isnan(m["non0_acc2"]) and math.isnan(m["non0_f1"])
    assert m["has0_acc2"] == approx(0.5)


def test_sentiment_nan_truth_is_unlabelled():
    m = sentiment_metrics([1.0, np.nan, -1.0], [1.0, 99.0, -0.5], None)
    assert m["n"] == 2
    assert m["mae"] == approx(0.25)


# --------------------------------------------------------------------------------------------
# SIMS


EDGE_VALUES = np.array([-1.5, -1.0, -0.7, -0.69, -0.1, 0.0, 0.1, 0.7, 0.71, 1.0, 1.5])


def test_sims_bin_edges_are_right_closed():
    # acc2: [-1, 0] | (0, 1]
    assert sims_bin(EDGE_VALUES, "acc2").tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    # acc3: [-1, -0.1] | (-0.1, 0.1] | (0.1, 1]
    assert sims_bin(EDGE_VALUES, "acc3").tolist() == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    # acc5: [-1, -0.7] | (-0.7, -0.1] | (-0.1, 0.1] | (0.1, 0.7] | (0.7, 1]
    assert sims_bin(EDGE_VALUES, "acc5").tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 4]


def test_sims_edges_compare_in_input_precision():
    # float32(0.1) == edge in float32 -> (-0.1, 0.1]; its float64 value 0.10000000149 is above
    assert sims_bin(np.array([0.1], dtype=np.float32), "acc3").tolist() == [1]
    assert sims_bin(np.array([np.float64(np.float32(0.1))]), "acc3").tolist() == [2]
    assert sims_bin(np.array([-0.7], dtype=np.float32), "acc5").tolist() == [0]


def _mmsa_bins(x: np.ndarray, ms: list[float]) -> np.ndarray:
    # the reference loop from MMSA metricsTop.py (__eval_sims_regression), on clipped input
    x = np.clip(x, -1.0, 1.0)
    out = x.copy()
    for i in range(len(ms) - 1):
        out[np.logical_and(x > ms[i], x <= ms[i + 1])] = i
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sims_bins_match_the_reference_loop(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1.3, 1.3, 500), EDGE_VALUES, -EDGE_VALUES]).astype(dtype)
    for name, ms in {
        "acc2": [-1.01, 0.0, 1.01],
        "acc3": [-1.01, -0.1, 0.1, 1.01],
        "acc5": [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01],
    }.items():
        np.testing.assert_array_equal(sims_bin(x, name), _mmsa_bins(x, ms))


def test_sims_hand_computed():
    t = np.array([-1.0, -0.2, 0.0, 0.0, 0.4, 0.8, 1.0])
    p = np.array([-1.4, -0.1, 0.05, 0.2, 0.6, 0.7, 1.3])
    m = sentiment_metrics(t, p, "sims")
    assert set(SIMS_METRICS) <= set(m) and m["n"] == 7
    # clip p -> -1 -0.1 0.05 0.2 0.6 0.7 1
    # acc2: t 0 0 0 0 1 1 1 ; p 0 0 1 1 1 1 1 -> 5/7
    assert m["acc2"] == approx(5 / 7)
    # acc3: t 0 0 1 1 2 2 2 ; p 0 0 (-0.1 is in [-1,-0.1]) 1 2 2 2 2 -> 6/7
    assert m["acc3"] == approx(6 / 7)
    # acc5: t 0 1 2 2 3 4 4 ; p 0 1 2 3 3 3 (0.7 is in (0.1,0.7]) 4 -> 5/7
    assert m["acc5"] == approx(5 / 7)
    # f1 on acc2 bins: 0 (support 4): TP 2 FN 2 -> P 1 R 1/2 F1 2/3;
    #                  1 (support 3): TP 3 FP 2 -> P 3/5 R 1 F1 3/4
    #                  (4*2/3 + 3*3/4) / 7 = 59/84
    assert m["f1"] == approx(59 / 84)
    # MAE on the clipped values (as MMSA): 0 + 0.1 + 0.05 + 0.2 + 0.2 + 0.1 + 0 = 0.65 -> /7
    assert m["mae"] == approx(0.65 / 7)
    tc, pc = np.clip(t, -1, 1), np.clip(p, -1, 1)
    assert m["corr"] == approx(np.corrcoef(pc, tc)[0, 1])


def test_sims_zero_is_negative_in_acc2():
    m = sentiment_metrics([0.0, 0.0], [-0.3, 0.001], "sims")
    assert m["acc2"] == 0.5


# --------------------------------------------------------------------------------------------
# correlation


def test_pearson_hand_computed():
    # t = 1 2 3 (mean 2), p = 2 4 7 (mean 13/3); deviations -1 0 1 and -7/3 -1/3 8/3
    # cov sum = 7/3 + 8/3 = 5; sum dt^2 = 2; sum dp^2 = (49 + 1 + 64)/9 = 114/9
    # r = 5 / sqrt(2 * 114/9) = 15 / sqrt(228)
    m = sentiment_metrics([1.0, 2.0, 3.0], [2.0, 4.0, 7.0], None)
    assert m["corr"] == approx(15 / math.sqrt(228))
    assert set(m) == {"mae", "corr", "n"}


@pytest.mark.parametrize("scheme", ["mosi", "sims", None])
def test_constant_predictions_give_nan_corr(scheme, recwarn):
    m = sentiment_metrics([-0.5, 0.2, 0.9], [0.3, 0.3, 0.3], scheme)
    assert math.isnan(m["corr"])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert math.isnan(sentiment_metrics([0.5], [0.2], scheme)["corr"])  # one sample


@pytest.mark.parametrize(
    ("t", "p", "scheme", "match"),
    [
        ([0.1, 0.2], [0.1], "mosi", "2 rows"),
        ([0.1, 0.2], [0.1, np.nan], "mosi", "prediction 1"),
        ([np.nan], [0.0], "mosi", "no labelled"),
        ([0.1], [0.1], "iemocap", "unknown sentiment scheme"),
    ],
)
def test_sentiment_bad_input(t, p, scheme, match):
    with pytest.raises(InputError, match=match):
        sentiment_metrics(t, p, scheme)


# --------------------------------------------------------------------------------------------
# by task


MELD = TaskSpec(name="meld-7", emotion_labels=LABELS3, metrics=["weighted_f1", "accuracy"])
MOSI = TaskSpec(
    name="mosi", sentiment_range=(-3, 3), sentiment_scheme="mosi", metrics=list(MOSI_METRICS)
)


def test_compute_metrics_emotion_task():
    m = compute_metrics(MELD, emotion_true=[0, 1, 2, IGNORE_INDEX], emotion_pred=[0, 1, 1, 2])
    assert m["accuracy"] == approx(2 / 3)
    assert m["n_emotion"] == 3 and "n" not in m
    assert headline(MELD) == "weighted_f1"


def test_compute_metrics_joint_task_keeps_both_families():
    spec = TaskSpec(
        name="talk",
        emotion_labels=LABELS3,
        sentiment_range=(-2, 2),
        metrics=["weighted_f1", "wa", "ua", "mae", "corr"],
    )
    m = compute_metrics(spec, [0, 1], [0, 0], [1.0, -1.0], [0.5, -1.0])
    assert m["wa"] == 0.5 and m["mae"] == approx(0.25) and m["corr"] == approx(1.0)
    assert m["n_emotion"] == 2 and m["n_sentiment"] == 2


def test_compute_metrics_sentiment_scheme_from_spec():
    m = compute_metrics(MOSI, sentiment_true=[1.0, -1.0, 0.0], sentiment_pred=[0.5, 0.5, 0.5])
    assert m["has0_acc2"] == approx(2 / 3)
    assert headline(MOSI) == "has0_acc2"


def test_compute_metrics_refuses_what_it_cannot_compute():
    with pytest.raises(InputError, match="weighted_f1"):
        compute_metrics(MELD)
    with pytest.raises(InputError, match="both"):
        compute_metrics(MELD, emotion_true=[0])


def test_headline_fallback_and_modes():
    assert headline(TaskSpec(name="x", sentiment_range=(-1, 1))) == "mae"
    assert headline(TaskSpec(name="x", emotion_labels=["a"])) == "weighted_f1"
    assert metric_mode("mae") == "min"
    assert metric_mode("corr") == "max"
    with pytest.raises(KeyError):
        metric_mode("bleu")


# --------------------------------------------------------------------------------------------
# seeds


def test_aggregate_seeds():
    runs = [
        {
            "acc": 0.5,
            "corr": float("nan"),
            "per_class": {"a": {"f1": 1.0}},
            "confusion_matrix": [[1]],
        },
        {"acc": 0.7, "corr": 0.2},
        {"acc": 0.9, "corr": 0.4, "extra": 3},
    ]
    agg = aggregate_seeds(runs)
    assert set(agg) == {"acc", "corr", "extra"}
    # mean 0.7; deviations -0.2 0 0.2 -> sum sq 0.08 / (3-1) = 0.04 -> std 0.2 (ddof=1)
    assert agg["acc"]["mean"] == approx(0.7)
    assert agg["acc"]["std"] == approx(0.2)
    assert agg["acc"]["n"] == 3 and agg["acc"]["values"] == [0.5, 0.7, 0.9]
    # nan skipped: mean of 0.2, 0.4 = 0.3; std sqrt((0.01 + 0.01) / 1)
    assert agg["corr"]["mean"] == approx(0.3)
    assert agg["corr"]["std"] == approx(math.sqrt(0.02))
    assert agg["corr"]["n"] == 2 and math.isnan(agg["corr"]["values"][0])
    # present in one run only: std undefined
    assert agg["extra"]["mean"] == 3.0 and math.isnan(agg["extra"]["std"])


def test_aggregate_seeds_all_nan_and_empty():
    agg = aggregate_seeds([{"corr": float("nan")}, {"corr": float("nan")}])
    assert math.isnan(agg["corr"]["mean"]) and agg["corr"]["n"] == 0
    with pytest.raises(InputError):
        aggregate_seeds([])


# --------------------------------------------------------------------------------------------
# names of other toolkits (MMSA metricsTop.py, MERBench)

MMSA_MOSI_KEYS = {
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
}
MMSA_SIMS_KEYS = {"Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"}


def test_mosi_scheme_metrics_map_to_exactly_mmsas_keys_with_the_same_values():
    from emofuse.metrics import field_names

    ours = {
        "has0_acc2": 0.812345678,
        "has0_f1": 0.81111111,
        "non0_acc2": 0.8333333333,
        "non0_f1": 0.8299999,
        "acc7": 0.4285714285714,
        "acc5": 0.5,
        "mae": 0.7123456789,
        "corr": 0.798765,
    }
    theirs = field_names(ours, "mosi", style="mmsa")
    assert set(theirs) == MMSA_MOSI_KEYS
    assert theirs == {
        "Has0_acc_2": 0.812345678,
        "Has0_F1_score": 0.81111111,
        "Non0_acc_2": 0.8333333333,
        "Non0_F1_score": 0.8299999,
        "Mult_acc_7": 0.4285714285714,
        "Mult_acc_5": 0.5,
        "MAE": 0.7123456789,
        "Corr": 0.798765,
    }
    assert list(theirs.values()) == list(ours.values())  # unrounded, in order
    # a task spec says the same as its scheme; counts and unknown keys keep their names
    spec = TaskSpec(name="mosi", sentiment_range=(-3, 3), sentiment_scheme="mosi")
    computed = sentiment_metrics([-2.0, 0.0, 1.0, 2.5], [-1.5, 0.5, 0.2, 3.0], "mosi")
    named = field_names(computed, spec, style="mmsa")
    assert set(named) == MMSA_MOSI_KEYS | {"n", "n_non0"}
    assert named["Mult_acc_7"] == computed["acc7"] and named["n"] == 4


def test_sims_scheme_metrics_map_to_exactly_mmsas_keys_with_the_same_values():
    from emofuse.metrics import field_names

    computed = sentiment_metrics([-0.8, -0.2, 0.0, 0.4, 1.0], [-0.6, 0.1, -0.1, 0.5, 0.8], "sims")
    scalars = {k: v for k, v in computed.items() if k in SIMS_METRICS}
    theirs = field_names(scalars, {"name": "sims", "sentiment_scheme": "sims"}, style="mmsa")
    assert set(theirs) == MMSA_SIMS_KEYS
    assert theirs["Mult_acc_2"] == computed["acc2"] and theirs["F1_score"] == computed["f1"]
    assert theirs["Mult_acc_3"] == computed["acc3"] and theirs["Mult_acc_5"] == computed["acc5"]
    assert theirs["MAE"] == computed["mae"] and theirs["Corr"] == computed["corr"]
    # the same key means another metric under each scheme: acc5 is MMSA's Mult_acc_5 in both
    assert field_names({"acc2": 0.5}, "mosi", style="mmsa") == {"acc2": 0.5}


def test_merbench_names_the_emotion_metrics_and_keeps_the_rest():
    from emofuse.metrics import field_names

    spec = TaskSpec(name="meld-7", emotion_labels=["a", "b"], metrics=["weighted_f1"])
    metrics = emotion_metrics([0, 1, 1, 0], [0, 1, 0, 0], ["a", "b"])
    named = field_names(metrics, spec, style="merbench")
    assert named["WAF"] == metrics["weighted_f1"] and named["ACC"] == metrics["accuracy"]
    assert "weighted_f1" not in named and "accuracy" not in named
    assert named["ua"] == metrics["ua"] and named["per_class"] == metrics["per_class"]
    # MMSA has no emotion metrics: they keep our names; "ours" is a copy
    assert field_names(metrics, spec, style="mmsa") == metrics
    assert field_names(metrics, spec, style="ours") == metrics


def test_field_names_refuses_unknown_styles_schemes_and_clashes():
    from emofuse.metrics import field_names, infer_scheme

    with pytest.raises(InputError, match="unknown metric-name style 'paper'"):
        field_names({"mae": 1.0}, "mosi", style="paper")
    with pytest.raises(InputError, match="unknown sentiment scheme"):
        field_names({"mae": 1.0}, "mosei", style="mmsa")
    with pytest.raises(InputError, match="'MAE'"):
        field_names({"mae": 1.0, "MAE": 2.0}, "mosi", style="mmsa")
    # the generic scheme (no binning) has no MMSA names
    assert field_names({"mae": 1.0, "corr": 0.5}, None, style="mmsa") == {"mae": 1.0, "corr": 0.5}
    assert infer_scheme({"non0_acc2": 1}) == "mosi" and infer_scheme({"acc3": 1}) == "sims"
    assert infer_scheme({"mae": 1, "weighted_f1": 1}) is None

"""Build the bundled default model: one head per modality, each on its own corpus.

No corpus in reach labels words, voice and face together, so the default model
(:class:`~emofuse.models.calibrated.CalibratedLate`) is assembled from heads trained apart:

1. for every modality and target in the config, the corpus is loaded, its labels are mapped onto
   the shared label set (e.g. RAVDESS *calm* → *neutral*), and the cached features are read
   (extracted first when missing);
2. an L2-regularised linear head (multinomial logistic regression for emotion, ridge regression
   for sentiment; scikit-learn) is fitted on the training split of standardised features, its
   regularisation (and class weighting) chosen on the validation split by the corpus's headline
   metric (MAE for sentiment); the standardisation is folded into the linear layer;
3. the emotion head's temperature is fitted on the validation split (minimum negative
   log-likelihood; Guo et al., ICML 2017);
4. each modality's pooling weight is its validation skill above chance,
   ``(UA − 1/K) / (1 − 1/K)`` (at least ``min_weight``);
5. every head is scored on its corpus's own test split, and the pooled model on whatever test
   data carries several modalities (RAVDESS: voice + the spoken sentence).

``emofuse models build-default`` runs it from ``configs/default-model.yaml``; the result is a
regular model folder (``load_model`` reads it) plus ``card.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from emofuse.config import Config, load_config
from emofuse.data.inputs import MODALITIES, FeatureRef, input_specs
from emofuse.data.table import FeatureTable
from emofuse.datasets.base import load_dataset
from emofuse.errors import ConfigError
from emofuse.features.store import FeatureStore
from emofuse.hooks import Hook
from emofuse.metrics import emotion_metrics, sentiment_metrics
from emofuse.records import Utterance, dump_json, write_text_atomic
from emofuse.spec import TaskSpec

SPLITS = ("train", "val", "test")


class HeadSource(Config):
    """Where one head learns: a dataset recipe, its options and its label mapping."""

    dataset: str = Field(description="Dataset recipe name (`emofuse datasets list`).")
    root: str | None = Field(
        None, description="Its root folder; relative paths are under the data folder."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Recipe options.")
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Corpus label → shared label (unlisted labels keep their name).",
    )
    holdout: tuple[float, float] | None = Field(
        None,
        description="(val, test) fractions re-split by a stable hash of the utterance id, for a "
        "corpus that ships a single split.",
    )
    trim_to_speech: bool = Field(
        False,
        description="Cut each recording to its speech (first to last stretch Silero VAD finds, "
        "with the settings emofuse analyze segments by), so the head learns from what analysis "
        "will feed it rather than from clips with leading and trailing silence.",
    )
    select: str | None = Field(
        None,
        description="Validation metric that picks the regularisation (default: the corpus's headline).",
    )
    licence: str = Field("", description="The corpus licence, for the model card.")


class ModalityHeads(Config):
    """The feature one modality reads and the corpora its heads learn from."""

    feature: FeatureRef
    emotion: HeadSource | None = None
    sentiment: HeadSource | None = None


class DefaultModelConfig(Config):
    """``configs/default-model.yaml``: everything the bundled default model is built from."""

    name: str = "emofuse-default"
    labels: list[str] = Field(min_length=2, description="The shared emotion label set.")
    sentiment_range: tuple[float, float] = (-3.0, 3.0)
    heads: dict[str, ModalityHeads]
    c_grid: list[float] = Field(
        [0.001, 0.01, 0.1, 1.0], description="Logistic-regression C values tried."
    )
    class_weights: list[str | None] = Field(
        [None, "balanced"], description="Class weightings tried."
    )
    alpha_grid: list[float] = Field([1.0, 10.0, 100.0, 1000.0], description="Ridge alphas tried.")
    min_weight: float = Field(0.05, gt=0, description="Smallest pooling weight of a modality.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DefaultModelConfig:
        unknown = set(self.heads) - set(MODALITIES)
        if unknown:
            raise ValueError(
                f"heads: unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}"
            )
        return self


def _stable_fraction(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _corpus(
    source: HeadSource, data_root: Path | None, labels: Sequence[str] | None
) -> tuple[dict[str, list[Utterance]], TaskSpec]:
    """The corpus's utterances by split, labels mapped onto the shared set."""
    root = source.root
    if root is not None and not os.path.isabs(root):
        if data_root is None:
            raise ConfigError(
                f"{source.dataset}: root {root!r} is relative and no data folder is set"
            )
        root = os.fspath(data_root / root)
    ds = load_dataset(source.dataset, root=root, **source.options)
    utts = [u for split in SPLITS for u in ds.splits.get(split, [])]
    if source.holdout is not None:
        val, test = source.holdout

        def split_of(u: Utterance) -> str:
            f = _stable_fraction(u.id)
            return "val" if f < val else "test" if f < val + test else "train"

        utts = [u.model_copy(update={"split": split_of(u)}) for u in utts]
    if source.trim_to_speech:
        utts = [_trimmed(u) for u in utts]
    if labels is not None:
        mapped = []
        unknown: set[str] = set()
        for u in utts:
            e = u.labels.emotion
            if e is None:
                continue
            e = source.label_map.get(e, e)
            if e not in labels:
                unknown.add(e)
            mapped.append(
                u.model_copy(update={"labels": u.labels.model_copy(update={"emotion": e})})
            )
        if unknown:
            raise ConfigError(
                f"{source.dataset}: labels {sorted(unknown)} are not in the shared set {list(labels)}; "
                "map them with label_map"
            )
        utts = mapped
    by_split: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for u in utts:
        if u.split in by_split:
            by_split[u.split].append(u)
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        raise ConfigError(f"{source.dataset}: no utterances in split(s) {empty} (set holdout)")
    return by_split, ds.spec


def _trimmed(utt: Utterance) -> Utterance:
    """``utt`` cut to the span of speech in its audio (unchanged when none is found)."""
    from emofuse.features.asr import SEGMENT_VAD
    from emofuse.features.vad import SpeechDetector

    source = utt.media.get("audio") or utt.media.get("video")
    if source is None:
        return utt
    stretches = SpeechDetector(SEGMENT_VAD)(source, start=utt.start, end=utt.end)
    if not stretches:
        return utt
    return utt.model_copy(update={"start": stretches[0][0], "end": stretches[-1][1]})


def _arrays(table: FeatureTable, modality: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, emotion index, sentiment)`` of a table's items, pooled per utterance."""
    x = np.stack([it.features[modality].mean(axis=0) for it in table.items]).astype(np.float64)
    y = np.array([it.emotion for it in table.items], dtype=np.int64)
    s = np.array([it.sentiment for it in table.items], dtype=np.float64)
    return x, y, s


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature ``T`` minimising the negative log-likelihood of ``softmax(logits / T)``.

    Guo et al., *On Calibration of Modern Neural Networks* (ICML 2017), §4.2; searched over
    ``log T`` in ``[log 0.05, log 20]`` (bounded Brent, SciPy).
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(res.x))


def _select_metric(source: HeadSource, spec: TaskSpec) -> str:
    if source.select:
        return source.select
    for m in spec.metrics:
        if m in ("weighted_f1", "ua", "wa", "macro_f1", "accuracy"):
            return m
    return "ua"


def fit_emotion_head(
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    labels: Sequence[str],
    metric: str,
    c_grid: Sequence[float],
    class_weights: Sequence[str | None],
    seed: int,
) -> dict[str, Any]:
    """Fit a standardised multinomial logistic regression, chosen and calibrated on ``val``.

    ``C`` and the class weighting are chosen by ``metric``; the temperature minimises the
    validation negative log-likelihood.

    Returns:
        ``weight (C, D)`` and ``bias (C,)`` acting on raw features (the standardisation folded
        in), ``temperature``, the chosen options and every candidate's validation score.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x["train"])
    xt, xv = scaler.transform(x["train"]), scaler.transform(x["val"])
    k = len(labels)
    best: tuple[float, Any, dict[str, Any]] | None = None
    tried = []
    for c in c_grid:
        for cw in class_weights:
            clf = LogisticRegression(C=c, class_weight=cw, max_iter=3000, random_state=seed)
            clf.fit(xt, y["train"])
            full = _full_logits(clf, xv, k)
            score = emotion_metrics(y["val"], full.argmax(1), list(labels))[metric]
            tried.append({"C": c, "class_weight": cw, metric: round(float(score), 4)})
            if best is None or score > best[0] + 1e-12:
                best = (score, clf, {"C": c, "class_weight": cw})
    assert best is not None
    _, clf, chosen = best
    w = np.full((k, x["train"].shape[1]), 0.0)
    b = np.full(k, -30.0)  # a class the corpus never shows gets (almost) no probability
    classes = clf.classes_
    coef = clf.coef_ if len(classes) > 2 else np.vstack([-clf.coef_[0], clf.coef_[0]]) / 2
    icpt = (
        clf.intercept_
        if len(classes) > 2
        else np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
    )
    w[classes] = coef / scaler.scale_
    b[classes] = icpt - (coef * scaler.mean_ / scaler.scale_).sum(axis=1)
    temperature = fit_temperature(x["val"] @ w.T + b, y["val"])
    return {"weight": w, "bias": b, "temperature": temperature, "chosen": chosen, "tried": tried}


def _full_logits(clf: Any, x: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(x), k), -np.inf)
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return out


def fit_sentiment_head(
    x: dict[str, np.ndarray], s: dict[str, np.ndarray], alpha_grid: Sequence[float]
) -> dict[str, Any]:
    """Fit standardised ridge regression; choose ``alpha`` on ``val`` by MAE."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x["train"])
    xt, xv = scaler.transform(x["train"]), scaler.transform(x["val"])
    best = None
    tried = []
    for a in alpha_grid:
        reg = Ridge(alpha=a).fit(xt, s["train"])
        mae = float(np.abs(reg.predict(xv) - s["val"]).mean())
        tried.append({"alpha": a, "mae": round(mae, 4)})
        if best is None or mae < best[0] - 1e-12:
            best = (mae, reg, {"alpha": a})
    assert best is not None
    _, reg, chosen = best
    w = (reg.coef_ / scaler.scale_)[None, :]
    b = np.array([reg.intercept_ - float((reg.coef_ * scaler.mean_ / scaler.scale_).sum())])
    return {"weight": w, "bias": b, "chosen": chosen, "tried": tried}


def build_default_model(
    config: DefaultModelConfig | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cache: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    hook: Hook | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Train, calibrate, combine and score the default model; save it to ``out``.

    Args:
        config: A :class:`DefaultModelConfig` or its YAML file.
        out: The model folder to write (``load_model`` reads it).
        cache: Feature store folder (features missing there are extracted into it).
        data_root: Folder that relative dataset roots are under (e.g. ``../shared/data``).
        hook: Progress hook for feature extraction.
        log: Called with one line per step.

    Returns:
        The card: provenance, chosen options, temperatures, weights and test scores (also
        written to ``out/card.json`` and ``out/MODEL_CARD.md``).
    """
    import torch

    from emofuse.models.base import build_model
    from emofuse.models.inference import Inference

    t0 = time.perf_counter()
    if not isinstance(config, DefaultModelConfig):
        config = load_config(DefaultModelConfig, config)
    data = Path(data_root) if data_root is not None else None
    store = FeatureStore(cache)
    labels = list(config.labels)
    spec = TaskSpec(
        name=config.name,
        emotion_labels=labels,
        sentiment_range=config.sentiment_range,
        sentiment_scheme="mosi",
        metrics=["weighted_f1", "ua", "wa", "mae"],
    )
    refs = {m: h.feature.resolved(m) for m, h in sorted(config.heads.items())}
    emotion_spec = spec.model_copy(
        update={"sentiment_range": None, "sentiment_scheme": None, "metrics": []}
    )
    sentiment_spec = spec.model_copy(update={"emotion_labels": None, "metrics": []})

    heads: dict[str, dict[str, Any]] = {}
    card: dict[str, Any] = {"name": config.name, "labels": labels, "heads": {}, "scores": {}}
    test_sets: dict[str, dict[str, Any]] = {}
    for m, h in sorted(config.heads.items()):
        for target, source in (("emotion", h.emotion), ("sentiment", h.sentiment)):
            if source is None:
                continue
            log(f"{m} {target}: {source.dataset}")
            splits, corpus_spec = _corpus(source, data, labels if target == "emotion" else None)
            tspec = emotion_spec if target == "emotion" else sentiment_spec
            tables = {
                s: FeatureTable.load(splits[s], {m: refs[m]}, store, tspec, hook=hook)
                for s in SPLITS
            }
            arrays = {s: _arrays(tables[s], m) for s in SPLITS}
            x = {s: a[0] for s, a in arrays.items()}
            if target == "emotion":
                metric = _select_metric(source, corpus_spec)
                fit = fit_emotion_head(
                    x,
                    {s: a[1] for s, a in arrays.items()},
                    labels,
                    metric,
                    config.c_grid,
                    config.class_weights,
                    config.seed,
                )
                fit["select"] = metric
            else:
                fit = fit_sentiment_head(x, {s: a[2] for s, a in arrays.items()}, config.alpha_grid)
                fit["select"] = "mae"
            heads[f"{m}/{target}"] = fit
            test_sets[f"{m}/{target}"] = {
                "table": tables["test"],
                "val": tables["val"],
                "source": source,
            }
            card["heads"][f"{m}/{target}"] = {
                "dataset": source.dataset,
                "options": source.options,
                "label_map": source.label_map,
                "holdout": source.holdout,
                "trim_to_speech": source.trim_to_speech,
                "licence": source.licence,
                "feature": refs[m].key,
                "feature_options": h.feature.options,
                "n": {s: len(tables[s]) for s in SPLITS},
                "skipped": {s: len(tables[s].skipped) for s in SPLITS},
                "select": fit["select"],
                "chosen": fit["chosen"],
                "tried": fit["tried"],
                **({"temperature": round(fit["temperature"], 4)} if "temperature" in fit else {}),
            }

    emotion_from = [m for m in refs if f"{m}/emotion" in heads]
    sentiment_from = [m for m in refs if f"{m}/sentiment" in heads]
    temperatures = {m: heads[f"{m}/emotion"]["temperature"] for m in emotion_from}
    # pooling weights: each head's validation skill above chance
    weights = {}
    for m in emotion_from:
        fit = heads[f"{m}/emotion"]
        val = test_sets[f"{m}/emotion"]["val"]
        xv, yv, _ = _arrays(val, m)
        pred = (xv @ fit["weight"].T + fit["bias"]).argmax(1)
        present = sorted(set(yv.tolist()))
        ua = emotion_metrics(yv, pred, labels)["ua"]
        chance = 1.0 / len(present)
        weights[m] = round(max((ua - chance) / (1 - chance), config.min_weight), 4)
    provenance = {
        k: f"{v['dataset']} {v['options'] or ''}".strip() for k, v in card["heads"].items()
    }
    inputs = input_specs(refs)
    model = build_model(
        "calibrated-late",
        spec,
        inputs,
        {
            "emotion_from": emotion_from,
            "sentiment_from": sentiment_from,
            "temperatures": {m: round(t, 6) for m, t in temperatures.items()},
            "weights": weights,
            "provenance": provenance,
            "standardize_inputs": False,
        },
    )
    with torch.no_grad():
        for m in emotion_from:
            fit = heads[f"{m}/emotion"]
            model.emotion_heads[m].weight.copy_(torch.from_numpy(fit["weight"]).float())
            model.emotion_heads[m].bias.copy_(torch.from_numpy(fit["bias"]).float())
        for m in sentiment_from:
            fit = heads[f"{m}/sentiment"]
            model.sentiment_heads[m].weight.copy_(torch.from_numpy(fit["weight"]).float())
            model.sentiment_heads[m].bias.copy_(torch.from_numpy(fit["bias"]).float())
    model.eval()
    card["temperatures"] = temperatures
    card["weights"] = weights

    # test scores: each head on its own corpus's test split, through the saved model's code path
    runner = Inference(model, batch_size=256)
    for key, t in test_sets.items():
        m, target = key.split("/")
        table = t["table"]
        output = runner(table)
        if target == "emotion":
            card["scores"][key] = _emotion_scores(table, output.emotion_index, labels)
        else:
            s = np.array([it.sentiment for it in table.items])
            scores = sentiment_metrics(s, output.sentiment, "mosi")
            card["scores"][key] = {
                k: int(v) if k in ("n", "n_non0") else round(float(v), 4)
                for k, v in scores.items()
                if isinstance(v, (int, float))
            }
        log(f"  test {key}: {card['scores'][key]}")

    # the combination, where one corpus carries several modalities
    combined = {}
    for key, t in test_sets.items():
        m, target = key.split("/")
        if target != "emotion":
            continue
        utts = [it.utt for it in t["table"].items]
        readers = {o: refs[o].build() for o in emotion_from if o != m}
        extra = {o: refs[o] for o, ext in readers.items() if any(ext.reads(u) for u in utts)}
        if not extra:
            continue
        table = FeatureTable.load(utts, {m: refs[m], **extra}, store, emotion_spec, hook=hook)
        used = [o for o in refs if any(o in it.features for it in table.items)]
        if used == [m]:
            continue  # the other modalities' inputs could not be read: nothing combined
        output = runner(table)
        label = f"{t['source'].dataset}:{'+'.join(used)}"
        combined[label] = _emotion_scores(table, output.emotion_index, labels) | {
            "n": len(table),
            "with": {o: sum(o in it.features for it in table.items) for o in used},
            "alone": card["scores"][key],
        }
        log(f"  test {label}: {combined[label]}")
    card["combined"] = combined
    card["seconds"] = round(time.perf_counter() - t0, 1)
    folder = model.save_pretrained(out)
    dump_json(folder / "card.json", card)
    write_text_atomic(folder / "MODEL_CARD.md", model_card(card))
    return card


def _emotion_scores(table: FeatureTable, predicted: Any, labels: list[str]) -> dict[str, Any]:
    """The card's emotion scores of predictions on a table's items (4 decimals), with ``n``."""
    y = np.array([it.emotion for it in table.items])
    scores = emotion_metrics(y, predicted, labels)
    kept = {k: round(float(scores[k]), 4) for k in ("weighted_f1", "ua", "wa", "macro_f1")}
    return kept | {"n": len(table)}


def model_card(card: dict[str, Any]) -> str:
    """The Markdown model card of a built default model (from its ``card.json``)."""
    lines = [
        f"# {card['name']}",
        "",
        "The model `emofuse analyze` uses when no `--model` is given. Built by "
        "`emofuse models build-default` from `configs/default-model.yaml`.",
        "",
        f"**Labels** (shared by every head): {', '.join(card['labels'])}. Sentiment in [−3, 3] "
        "(CMU-MOSEI scale, from words only).",
        "",
        "**How the modalities are combined.** No corpus here labels words, voice and face together, "
        "so each modality has its own linear head trained on its own corpus, calibrated by a "
        "temperature on that corpus's validation split; the calibrated log-probabilities of the "
        "modalities present are averaged with fixed weights (each head's validation skill above "
        "chance): a weighted product of experts. Sentiment comes from the words alone.",
        "",
        "## Heads",
        "",
        "| head | corpus | feature | train / val / test | chosen on val | temperature | licence |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, h in card["heads"].items():
        n = h["n"]
        corpus = f"{h['dataset']} {h['options'] or ''}".strip()
        if h.get("trim_to_speech"):
            corpus += ", cut to speech"
        if h.get("holdout"):
            corpus += f", re-split {h['holdout'][0]:g}/{h['holdout'][1]:g} (val/test) by id"
        feature = f"`{h['feature']}`" + (
            f" {h['feature_options']}" if h.get("feature_options") else ""
        )
        lines.append(
            f"| {key} | {corpus} | {feature} | "
            f"{n['train']} / {n['val']} / {n['test']} | {h['chosen']} by {h['select']} | "
            f"{h.get('temperature', '—')} | {h['licence']} |"
        )
    lines += [
        "",
        f"Pooling weights: {card['weights']}.",
        "",
        "## Test scores (each corpus's own test split)",
        "",
    ]
    lines += ["| head | scores |", "|---|---|"]
    for key, s in card["scores"].items():
        lines.append(f"| {key} | " + ", ".join(f"{k} {v}" for k, v in s.items()) + " |")
    if card.get("combined"):
        lines += [
            "",
            "## Combination",
            "",
            "| test data | pooled | that modality alone |",
            "|---|---|---|",
        ]
        for key, s in card["combined"].items():
            alone = s["alone"]
            lines.append(
                f"| {key} (n={s['n']}; "
                + ", ".join(f"{o} {c}" for o, c in s["with"].items())
                + f") | UA {s['ua']}, WA {s['wa']}, weighted F1 {s['weighted_f1']} | "
                f"UA {alone['ua']}, WA {alone['wa']}, weighted F1 {alone['weighted_f1']} |"
            )
    lines += [
        "",
        "## Known limits",
        "",
        "- Words are read by an English encoder (all-MiniLM-L6-v2); text in other languages is "
        "left out of the prediction, not scored.",
        "- The voice head learned from 16 RAVDESS actors reading two neutral sentences in acted "
        "emotions; expect much lower accuracy on spontaneous speech.",
        "- The face head learned from 48×48 FER2013 test faces (a re-split of its PrivateTest "
        "set); webcam and film faces differ.",
        "- The pooling weights are fixed: a modality that says nothing about emotion in some "
        "recording (RAVDESS actors read two neutral sentences) still pulls the decision towards "
        "its own reading by its weight; each modality's own probabilities are in "
        "`Prediction.experts`.",
        "- Test sets are small where the corpus is (RAVDESS: 32 clips of 4 actors), so those "
        "scores are rough.",
        "- Trained data licences are research-only or non-commercial (see Heads); so is the use "
        "of these weights.",
        "",
    ]
    return "\n".join(lines)

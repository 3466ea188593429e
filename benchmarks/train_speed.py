"""Training speed and memory of EGMF, MiSTER-E and the MLP baseline on MELD-sized dialogues.

One training step = forward + loss (the model's own ``loss``, auxiliary terms included) +
backward + gradient-norm clip (1.0, the ``emofuse train`` default) + AdamW step, on CPU. Features
are random (speed does not depend on their values) but shaped like the cached MELD features:

* text ``minilm:pooled`` ``(N, 1, 384)`` (variant ``pooled``) or ``minilm:tokens``
  ``(N, T, 384)`` with ``T`` = ``--tokens`` padded steps (variant ``tokens``);
* audio ``egemaps:functionals`` ``(N, 1, 88)``.

A batch is ``--dialogues`` whole dialogues whose lengths are drawn from MELD's real train-split
dialogue-length distribution (``train_sent_emo.csv``) when that file is found, else
``--fixed-length`` turns each. The same batches (same seed) are given to every model.

Every model runs in its own subprocess, so its resident-memory peak (``ru_maxrss``) is its own.

    python benchmarks/train_speed.py                          # egmf, mister, mlp; both variants
    python benchmarks/train_speed.py --steps 3 --warmup 1 --out /tmp/ts.json   # smoke run
    python benchmarks/train_speed.py --reference /path/to/MiSTER-E            # + the public code

``--reference`` points at a local checkout of the public MiSTER-E code (``iiscleap/MiSTER-E``;
emofuse neither ships nor downloads it). Its ``AttentionMoE`` (``hierarchical_moe.py``) is
timed on the same dialogue batches with the input widths its constructor hard-codes (2048 for
both speech and text), and our MiSTER-E is timed once more at those widths, so the ratio is
reported both for our default shapes and for equal input shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, median
from typing import Any

from _env import git_state, load_average, machine  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
TEXT_DIM, AUDIO_DIM = 384, 88
REF_DIM = 2048  # AttentionMoE builds its experts for 2048-wide speech and text embeddings
VARIANTS = ("pooled", "tokens")


# -- environment -----------------------------------------------------------------------------
def default_meld_csv() -> Path:
    root = os.environ.get("EMOFUSE_DATA") or os.environ.get("EMOFUSE_SHARED_DATA")
    base = Path(root) if root else Path("/work/shared/data")
    return base / "meld" / "train_sent_emo.csv"


def dialogue_lengths(csv: Path) -> list[int] | None:
    """Utterances per dialogue of the MELD train split, or ``None`` when the CSV is absent."""
    if not csv.is_file():
        return None
    import pandas as pd

    table = pd.read_csv(csv, usecols=["Dialogue_ID"])
    return [int(c) for c in table.groupby("Dialogue_ID").size().tolist()]


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- batches ---------------------------------------------------------------------------------
def batch_lengths(cfg: dict[str, Any]) -> list[list[int]]:
    """Dialogue lengths of every batch (warm-up + timed), identical for every model."""
    import numpy as np

    rng = np.random.default_rng(cfg["seed"])
    pool = cfg["length_pool"]
    n = cfg["warmup"] + cfg["steps"]
    if pool is None:
        return [[cfg["fixed_length"]] * cfg["dialogues"] for _ in range(n)]
    return [[int(x) for x in rng.choice(pool, size=cfg["dialogues"])] for _ in range(n)]


def our_batch(lengths: list[int], variant: str, cfg: dict[str, Any], step: int) -> dict[str, Any]:
    """A flat batch of the contract in ``emofuse.models.base`` (random features)."""
    import torch

    g = torch.Generator().manual_seed(cfg["seed"] * 100_003 + step)
    n = sum(lengths)
    dialogue = torch.cat([torch.full((k,), i, dtype=torch.long) for i, k in enumerate(lengths)])
    turn = torch.cat([torch.arange(k) for k in lengths])
    batch: dict[str, Any] = {"dialogue": dialogue, "turn": turn}
    if variant == "tokens":
        t = cfg["tokens"]
        valid = torch.randint(max(1, t // 4), t + 1, (n,), generator=g)
        batch["text"] = torch.randn(n, t, TEXT_DIM, generator=g)
        batch["text_mask"] = torch.arange(t)[None, :] < valid[:, None]
        batch["text"] = batch["text"] * batch["text_mask"][..., None]
    else:
        dim = REF_DIM if variant == "ref-dims" else TEXT_DIM
        batch["text"] = torch.randn(n, 1, dim, generator=g)
        batch["text_mask"] = torch.ones(n, 1, dtype=torch.bool)
    adim = REF_DIM if variant == "ref-dims" else AUDIO_DIM
    batch["audio"] = torch.randn(n, 1, adim, generator=g)
    batch["audio_mask"] = torch.ones(n, 1, dtype=torch.bool)
    batch["emotion"] = torch.randint(0, len(MELD_LABELS), (n,), generator=g)
    return batch


def our_inputs(variant: str) -> dict[str, Any]:
    from emofuse.data.inputs import InputSpec

    if variant == "tokens":
        text = InputSpec(feature="minilm:tokens", dim=TEXT_DIM, kind="sequence")
    else:
        dim = REF_DIM if variant == "ref-dims" else TEXT_DIM
        text = InputSpec(feature="minilm:pooled", dim=dim, kind="vector")
    adim = REF_DIM if variant == "ref-dims" else AUDIO_DIM
    audio = InputSpec(feature="egemaps:functionals", dim=adim, kind="vector")
    return {"text": text, "audio": audio}


def meld_spec() -> Any:
    from emofuse.datasets import DATASETS

    try:
        return DATASETS.get("meld")().spec()
    except Exception:  # the recipe should not need its data for spec(); fall back if it does
        from emofuse.spec import TaskSpec

        return TaskSpec(
            name="meld-7",
            emotion_labels=MELD_LABELS,
            conversational=True,
            metrics=["weighted_f1", "accuracy"],
        )


# -- timing ----------------------------------------------------------------------------------
def time_steps(step_fn: Any, batches: list[Any], warmup: int) -> dict[str, Any]:
    rss_setup = rss_mib()
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        step_fn(b)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    rss_peak = rss_mib()
    return {
        "timed_steps": len(times),
        "step_s_median": round(median(times), 5),
        "step_s_mean": round(mean(times), 5),
        "steps_per_s_median": round(1.0 / median(times), 3),
        "steps_per_s_mean": round(len(times) / sum(times), 3),
        "rss_setup_mib": round(rss_setup, 1),
        "rss_peak_mib": round(rss_peak, 1),
        "rss_train_delta_mib": round(rss_peak - rss_setup, 1),
    }


def worker_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from emofuse.models.base import build_model

    torch.manual_seed(cfg["seed"])
    lengths = batch_lengths(cfg)
    batches = [our_batch(ls, cfg["variant"], cfg, i) for i, ls in enumerate(lengths)]
    model = build_model(cfg["model"], meld_spec(), our_inputs(cfg["variant"]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

    def step(batch: dict[str, Any]) -> None:
        opt.zero_grad(set_to_none=True)
        out = model(batch)
        loss = model.loss(out, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    result = time_steps(step, batches, cfg["warmup"])
    timed = lengths[cfg["warmup"] :]
    result.update(
        parameters=sum(p.numel() for p in params),
        shapes={m: list(batches[0][m].shape[1:]) for m in ("text", "audio")},
        shape_note="per utterance (T, D); N = sum of the batch's dialogue lengths",
        utterances_per_batch_mean=round(mean(sum(ls) for ls in timed), 2),
    )
    result["utterances_per_s"] = round(
        result["utterances_per_batch_mean"] * result["steps_per_s_mean"], 1
    )
    return result


def worker_reference(cfg: dict[str, Any]) -> dict[str, Any]:
    """The public MiSTER-E ``AttentionMoE`` on the same dialogue batches, padded per dialogue."""
    import importlib

    import torch
    import torch.nn.functional as F

    from emofuse.models.losses import supervised_contrastive

    path = str(Path(cfg["reference"]).expanduser().resolve())
    sys.path.insert(0, path)
    module = importlib.import_module("hierarchical_moe")
    torch.manual_seed(cfg["seed"])
    classes = len(MELD_LABELS)
    # train_moe.py builds AttentionMoE(2048, 768, num_classes); input_dim is not used by the
    # class (its experts are built for 2048-wide inputs), hidden_dim sizes an unused projection.
    model = module.AttentionMoE(REF_DIM, 768, classes)
    model.train()
    lengths = batch_lengths(cfg)
    batches = []
    for i, ls in enumerate(lengths):
        g = torch.Generator().manual_seed(cfg["seed"] * 100_003 + i)
        b, u = len(ls), max(ls)
        valid = torch.arange(u)[None, :] < torch.tensor(ls)[:, None]
        labels = torch.randint(0, classes, (b, u), generator=g).masked_fill(~valid, -100)
        audio = torch.randn(b, u, REF_DIM, generator=g) * valid[..., None]
        text = torch.randn(b, u, REF_DIM, generator=g) * valid[..., None]
        batches.append((audio, text, labels, valid))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

    def step(batch: tuple[Any, ...]) -> None:
        audio, text, labels, valid = batch
        opt.zero_grad(set_to_none=True)
        moe, aud, txt, aud_logits, txt_logits, fus_logits, div, _, _ = model(audio, text)
        y = labels[valid]
        # train_moe.py: mixture + each expert's classification loss + 2 * SupCon(aud, text)
        # + 0.1 * symmetric KL (returned by forward); plain CE here (it uses focal, gamma 3).
        loss = sum(
            F.cross_entropy(lg[valid], y) for lg in (moe, aud_logits, txt_logits, fus_logits)
        )
        loss = loss + 2.0 * supervised_contrastive(aud[valid], txt[valid], y) + 0.1 * div
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    result = time_steps(step, batches, cfg["warmup"])
    timed = lengths[cfg["warmup"] :]
    result.update(
        parameters=sum(p.numel() for p in params),
        constructor="AttentionMoE(input_dim=2048, hidden_dim=768, num_classes=7)",
        shapes={"audio": ["B", "U", REF_DIM], "text": ["B", "U", REF_DIM]},
        shape_note="B = dialogues per batch, U = longest dialogue of the batch (zero-padded); "
        "the constructor hard-codes 2048-wide speech and text inputs, so our 384/88 widths "
        "cannot be used",
        loss="CE(mixture) + CE(each of 3 experts) + 2 * SupCon(fusion audio, fusion text) "
        "+ 0.1 * symmetric KL, on valid turns only (reference: focal loss, gamma 3)",
        utterances_per_batch_mean=round(mean(sum(ls) for ls in timed), 2),
    )
    result["utterances_per_s"] = round(
        result["utterances_per_batch_mean"] * result["steps_per_s_mean"], 1
    )
    return result


def worker_main(raw: str) -> int:
    cfg = json.loads(raw)
    import torch

    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    try:
        result = worker_reference(cfg) if cfg["model"] == "reference" else worker_ours(cfg)
    except Exception as err:  # reported in the JSON, never a crash of the whole benchmark
        result = {"error": f"{type(err).__name__}: {err}"}
    result["torch_threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result))
    return 0


def run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["egmf", "mister", "mlp"])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--dialogues", type=int, default=8, help="dialogues per batch")
    ap.add_argument("--tokens", type=int, default=26, help="padded token steps (tokens variant)")
    ap.add_argument("--fixed-length", type=int, default=12, help="turns when no MELD CSV")
    ap.add_argument("--meld-csv", type=Path, default=default_meld_csv())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", type=Path, default=None, help="checkout of iiscleap/MiSTER-E")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    load_start = load_average()
    pool = dialogue_lengths(args.meld_csv)
    base = {
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "dialogues": args.dialogues,
        "tokens": args.tokens,
        "fixed_length": args.fixed_length,
        "seed": args.seed,
        "length_pool": pool,
    }
    report: dict[str, Any] = {
        "command": [sys.executable, *sys.argv],
        "git": git_state(),
        "machine": machine(threads=args.threads),
        "load_average_start": load_start,
        "step": "forward + model loss + backward + grad-norm clip 1.0 + AdamW (lr 1e-3, wd 0.01)",
        "memory_note": "RSS from resource.getrusage(RUSAGE_SELF).ru_maxrss in a fresh subprocess "
        "per model: rss_setup = peak after building the model and all batches, rss_peak = peak "
        "after the steps, rss_train_delta = the difference. torch offers no CPU allocator "
        "statistics (torch.cpu has no memory_stats), so none are reported.",
        "batches": {
            "dialogues_per_batch": args.dialogues,
            "dialogue_lengths": (
                f"sampled from MELD train ({args.meld_csv}: {len(pool)} dialogues, "
                f"mean {mean(pool):.2f} utterances)"
                if pool
                else f"fixed {args.fixed_length} (no MELD CSV at {args.meld_csv})"
            ),
            "text_tokens_padded": args.tokens,
            "text_tokens_valid": f"uniform in [{max(1, args.tokens // 4)}, {args.tokens}]",
        },
        "results": {},
    }
    for model in args.models:
        for variant in args.variants:
            key = f"{model}/{variant}"
            print(f"[train_speed] {key} ...", file=sys.stderr, flush=True)
            report["results"][key] = run_worker({**base, "model": model, "variant": variant})
    if args.reference is not None:
        ref: dict[str, Any] = {"path": str(args.reference)}
        print("[train_speed] reference AttentionMoE ...", file=sys.stderr, flush=True)
        ref["theirs"] = run_worker(
            {**base, "model": "reference", "variant": "ref-dims", "reference": str(args.reference)}
        )
        print("[train_speed] mister/ref-dims ...", file=sys.stderr, flush=True)
        ours_same = run_worker({**base, "model": "mister", "variant": "ref-dims"})
        report["results"]["mister/ref-dims"] = ours_same
        theirs = ref["theirs"].get("steps_per_s_median")
        ratios = {}
        for key in ("mister/pooled", "mister/tokens", "mister/ref-dims"):
            ours = report["results"].get(key, {}).get("steps_per_s_median")
            if ours and theirs:
                ratios[key] = round(ours / theirs, 3)
        ref["steps_per_s_ratio_ours_over_theirs"] = ratios
        ref["note"] = (
            "mister/ref-dims = our MiSTER-E with 2048-wide text and audio vectors, the input "
            "widths the reference constructor hard-codes; mister/pooled and mister/tokens use "
            "our MELD features (384 / 88)."
        )
        report["reference"] = ref
    report["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for key, res in report["results"].items():
        line = res.get("error") or (
            f"{res['steps_per_s_median']} steps/s (median), {res['utterances_per_s']} utt/s, "
            f"RSS peak {res['rss_peak_mib']} MiB (+{res['rss_train_delta_mib']})"
        )
        print(f"{key:18s} {line}")
    if "reference" in report:
        res = report["reference"]["theirs"]
        print(
            f"{'reference':18s} {res.get('error') or str(res['steps_per_s_median']) + ' steps/s'}"
        )
        print(f"ratio ours/theirs: {report['reference']['steps_per_s_ratio_ours_over_theirs']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

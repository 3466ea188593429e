"""Speed and memory of the LLM head (``egmf-llm``, SmolLM2-135M-Instruct + LoRA) on CPU.

Measured on real MELD transcripts (``train_sent_emo.csv`` under ``$EMOFUSE_DATA`` or
``$EMOFUSE_SHARED_DATA``; a fixed sentence when absent) with random 384-d text features (speed
does not depend on their values), MELD's 7 labels, batch 32, in one fresh process:

* ``train_s_per_step`` — forward + loss + backward + AdamW step, median over ``--steps``;
  ``meld_epoch_min`` — that × MELD's 312 training batches, in minutes;
* ``score_utt_per_s`` — eval forward with closed-set label scoring (7 labels);
* ``decode_utt_per_s`` — the same with sentiment decoded as a number (MOSI's range);
* ``generate_tok_per_s`` — free greedy generation of the answer, new tokens per second;
* ``rationale_tok_per_s`` — the base model writing a rationale (adapter off), tokens per second;
* ``load_s`` — building the model from the cached base weights; ``peak_rss_mb``.

    python benchmarks/llm_speed.py                       # → benchmarks/results/llm_speed.json
    python benchmarks/llm_speed.py --steps 2 --out /tmp/llm.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from statistics import median

from _env import git_state, load_average, machine, require_clean  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
BATCH = 32
MELD_TRAIN_BATCHES = 312  # ceil(9,989 / 32)


def meld_texts(n: int) -> list[str]:
    """``n`` transcripts from MELD's train split (in file order), or a fixed one."""
    root = os.environ.get("EMOFUSE_DATA") or os.environ.get("EMOFUSE_SHARED_DATA")
    csv = Path(root or REPO.parent / "shared" / "data") / "meld" / "train_sent_emo.csv"
    if csv.is_file():
        import pandas as pd

        texts = pd.read_csv(csv)["Utterance"].astype(str).tolist()
        return [t.replace("\x92", "'") for t in texts[:n]]
    return ["Oh my God, I can't believe you did that to me yesterday!"] * n


def batch_for(model, texts: list[str], emotion: bool = True):
    import torch

    tok = model.format.tokenize(texts, [None] * len(texts))
    n = len(texts)
    batch = {
        "text": torch.randn(n, 1, 384),
        "text_mask": torch.ones(n, 1, dtype=torch.bool),
        "prompt_input_ids": tok["input_ids"],
        "prompt_attention_mask": tok["attention_mask"],
    }
    if emotion:
        batch["emotion"] = torch.randint(0, len(MELD_LABELS), (n,))
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/llm_speed.json")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    state = git_state()
    require_clean(state, args.allow_dirty)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from emofuse.data.inputs import InputSpec
    from emofuse.models import build_model
    from emofuse.spec import TaskSpec

    text_in = {"text": InputSpec(feature="minilm:pooled", dim=384, kind="vector")}
    meld = TaskSpec(name="meld", emotion_labels=MELD_LABELS, metrics=["weighted_f1"])
    mosi = TaskSpec(name="mosi", sentiment_range=(-3.0, 3.0), sentiment_scheme="mosi")
    started = time.perf_counter()
    model = build_model("egmf-llm", meld, text_in, {"hidden": 128})
    load_s = time.perf_counter() - started
    texts = meld_texts(BATCH * (args.steps + 4))
    batches = [batch_for(model, texts[i * BATCH : (i + 1) * BATCH]) for i in range(args.steps + 1)]
    lengths = [int(b["prompt_attention_mask"].sum(1).float().mean()) for b in batches]

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    times = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i > 0:  # the first step pays one-off costs
            times.append(time.perf_counter() - t0)
    train_s = median(times)

    model.eval()
    score = texts[-BATCH * 2 :]
    with torch.inference_mode():
        model(batch_for(model, score[:BATCH], emotion=False))  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(score), BATCH):
            model(batch_for(model, score[i : i + BATCH], emotion=False))
        score_rate = len(score) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        answers = model.generate(batch_for(model, score[:BATCH], emotion=False), max_new_tokens=8)
        generated = sum(
            len(model.tokenizer(a.removeprefix("emotion:"))["input_ids"]) for a in answers
        )
        gen_rate = generated / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    rationales = model.rationales(score[:4], ["joy", "anger", "neutral", "sadness"])
    words = sum(len(model.tokenizer(r)["input_ids"]) for r in rationales)
    rationale_rate = words / (time.perf_counter() - t0)

    decoder = build_model("egmf-llm", mosi, text_in, {"hidden": 128, "sentiment_head": "decode"})
    decoder.eval()
    with torch.inference_mode():
        decoder(batch_for(decoder, score[:BATCH], emotion=False))
        t0 = time.perf_counter()
        for i in range(0, len(score), BATCH):
            decoder(batch_for(decoder, score[i : i + BATCH], emotion=False))
        decode_rate = len(score) / (time.perf_counter() - t0)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git": state,
        "machine": machine(packages=["transformers", "peft"], threads=args.threads)
        | {"load_average": load_average()},
        "batch_size": BATCH,
        "prompt_tokens_after_prefix_mean": round(sum(lengths) / len(lengths), 1),
        "prefix_tokens": len(model.format.prefix_ids),
        "pseudo_tokens": model.config.pseudo_tokens,
        "train_s_per_step": round(train_s, 3),
        "train_s_per_step_all": [round(t, 3) for t in times],
        "meld_epoch_min": round(train_s * MELD_TRAIN_BATCHES / 60, 1),
        "score_utt_per_s": round(score_rate, 2),
        "decode_utt_per_s": round(decode_rate, 2),
        "generate_tok_per_s": round(gen_rate, 2),
        "rationale_tok_per_s": round(rationale_rate, 2),
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(peak_mb),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("git", "machine")}, indent=2))


if __name__ == "__main__":
    main()

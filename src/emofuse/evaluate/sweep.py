"""Seed sweeps: train one run per seed, test each best model once, report mean ± std.

This is the benchmark protocol of the field (MMSA reports five seeds): model selection on the
validation split only, the test split touched once per seed by the model validation chose.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from emofuse.evaluate.evaluation import evaluate
from emofuse.hooks import Hook
from emofuse.metrics import aggregate_seeds
from emofuse.records import dump_json, read_json
from emofuse.train.config import TrainConfig, TrainResult
from emofuse.train.run import fit, is_rank_zero, torch_threads


def fit_seeds(
    config: TrainConfig,
    *,
    hook: Hook | None = None,
    on_seed: Callable[[int, TrainResult], None] | None = None,
) -> dict[str, Any]:
    """Train one run per seed into ``<out_dir>/seed-<s>``, then test each best model.

    Finished seeds are skipped, so a sweep stopped half-way resumes. Each seed's best model
    (chosen on ``val``) is evaluated once on the test split (``seed-<s>/test.json``).

    Args:
        config: The run, with ``seeds`` (or ``seed``).
        hook: Progress hook, passed to :func:`~emofuse.train.fit` and :func:`evaluate`.
        on_seed: Called as ``on_seed(seed, result)`` after each seed's training.

    Returns:
        ``{"seeds", "monitor", "val": aggregate, "test": aggregate, "runs": [...]}`` where each
        aggregate maps a metric to ``{"mean", "std", "n", "values"}``; also written to
        ``<out_dir>/summary.json``. Non-zero DDP ranks return ``{}``.
    """
    seeds = config.seeds or [config.seed]
    out = Path(config.out_dir)
    runs = []
    for s in seeds:
        cfg = config.model_copy(update={"seed": s, "seeds": None, "out_dir": out / f"seed-{s}"})
        res = fit(cfg, hook=hook)
        if on_seed is not None and is_rank_zero():
            on_seed(s, res)
        runs.append((s, res))
    if not is_rank_zero():
        return {}
    tests = []
    for _s, res in runs:
        test_file = Path(res.out_dir) / "test.json"
        if test_file.is_file():
            test = read_json(test_file, expect=dict)
        else:
            with torch_threads(config.num_threads):  # as in training: same sums
                ev = evaluate(
                    res.model_dir,
                    dataset=config.dataset,
                    split=config.dataset.test_split,
                    cache=config.cache_dir(),
                    batch_size=config.batch_size,
                    device=config.inference_device(),
                    hook=hook,
                )
            test = ev.metrics
            dump_json(test_file, test)
        tests.append(test)
    summary = {
        "seeds": seeds,
        "monitor": runs[0][1].monitor,
        "val": aggregate_seeds([r.val_metrics for _, r in runs]),
        "test": aggregate_seeds(tests),
        "runs": [
            {
                "seed": s,
                "out_dir": r.out_dir,
                "best_epoch": r.best_epoch,
                "val": r.val_metrics,
                "test": t,
            }
            for (s, r), t in zip(runs, tests, strict=True)
        ],
    }
    dump_json(out / "summary.json", summary)
    return summary


__all__ = ["fit_seeds"]

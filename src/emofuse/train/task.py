"""The LightningModule that trains a fusion model: joint loss, whole-split validation, history.

:class:`FusionTask` wraps any :class:`~emofuse.models.base.FusionModel`. Its data order and
random generators are functions of ``(seed, epoch, rank)`` (see :func:`seed_all` and
:mod:`emofuse.data.samplers`), and its own state (history, data epoch) travels in Lightning's
checkpoint, so a killed and resumed run ends with the same weights and history as an
uninterrupted one. After every epoch the whole validation split is predicted (gathered across
DDP processes) and scored with :func:`emofuse.metrics.compute_metrics`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from emofuse.data.collate import Collator
from emofuse.data.samplers import batch_sampler
from emofuse.data.table import FeatureTable
from emofuse.hooks import Hook, call_hook
from emofuse.models.base import FusionModel
from emofuse.models.inference import score_predictions

if TYPE_CHECKING:
    from emofuse.train.config import TrainConfig


class FusionTask(L.LightningModule):
    """Wraps a :class:`FusionModel`: joint loss, whole-split validation metrics, history."""

    def __init__(
        self,
        model: FusionModel,
        config: TrainConfig,
        train: FeatureTable,
        val: FeatureTable,
        monitor: str,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = config
        self.train_table, self.val_table = train, val
        self.monitor = monitor
        self.history: list[dict[str, Any]] = []
        self._train_sum = 0.0
        self._train_n = 0
        self._val_sum = 0.0
        self._val_n = 0
        self._val_out: list[Tensor] = []
        self.collate_calls: list[list[int]] = []  # for inspection in tests
        # Training epochs whose data were fully consumed. Lightning creates a resumed run's
        # first iterator before its own epoch counter is restored, so data order and seeds
        # follow this counter, which travels in the checkpoint.
        self.data_epoch = 0
        # checkpoints leave frozen pretrained weights out (on_save_checkpoint); the rest is
        # checked in on_load_checkpoint
        self.strict_loading = False
        self._train_collate = model.collator(train)
        self._val_collate = model.collator(val)

    # data
    def _loader(self, table: FeatureTable, collate: Collator, train: bool) -> Any:
        from torch.utils.data import DataLoader

        sampler = batch_sampler(
            table,
            self.cfg.batch_size,
            conversational=self.model.conversational,
            shuffle=train,
            seed=self.cfg.seed,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
            pad=train,
            epoch_source=(lambda: self.data_epoch) if train else None,
            lengths=collate.lengths(),
        )
        return DataLoader(
            list(range(len(table))), batch_sampler=sampler, collate_fn=collate, num_workers=0
        )

    def train_dataloader(self) -> Any:
        return self._loader(self.train_table, self._train_collate, True)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_table, self._val_collate, False)

    # training
    def on_train_epoch_start(self) -> None:
        self._train_sum, self._train_n = 0.0, 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout and modality dropout draw from generators re-seeded at the first step of
        # every epoch (after Lightning has fetched the batch, which may draw from them), so a
        # run resumed at an epoch boundary continues exactly as the uninterrupted one.
        if batch_idx == 0:
            seed_all(self.cfg.seed, self.data_epoch, self.global_rank)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.trainer.num_training_batches - 1:
            self.data_epoch += 1  # before the epoch-end checkpoint is written

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.model(batch)
        terms = self.model.loss(out, batch)
        n = int(batch["index"].shape[0])
        self._train_sum += float(terms["loss"].detach()) * n
        self._train_n += n
        for k, v in terms.items():
            self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=False, batch_size=n)
        return terms["loss"]

    def configure_optimizers(self) -> Any:
        opt = self.cfg.optimizer
        pretrained = self.model.pretrained_parameters()
        mine = {id(p) for p in pretrained}
        groups = [
            {
                "params": [
                    p for p in self.model.parameters() if p.requires_grad and id(p) not in mine
                ]
            },
            {"params": pretrained, "lr": opt.encoder_lr or opt.lr},
        ]
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=opt.lr, weight_decay=opt.weight_decay
        )
        if opt.schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(opt.warmup * total)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            return max(0.0, (total - step) / max(1, total - warm))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # validation
    def on_validation_epoch_start(self) -> None:
        self._val_out, self._val_sum, self._val_n = [], 0.0, 0

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.model(batch)
        n = int(batch["index"].shape[0])
        self._val_sum += float(self.model.loss(out, batch)["loss"]) * n
        self._val_n += n
        self._val_out.append(_prediction_rows(batch["index"], out))

    def on_validation_epoch_end(self) -> None:
        rows = torch.cat(self._val_out) if self._val_out else torch.zeros(0, 3)
        stats = torch.tensor(
            [self._val_sum, float(self._val_n), self._train_sum, float(self._train_n)],
            dtype=torch.float64,
        )
        if self.trainer.world_size > 1:  # every rank reports the same, global numbers
            rows = _gather_rows(self, rows)
            stats = self.all_gather(stats).sum(dim=0)
        metrics = score_rows(self.val_table, rows)
        for k, v in metrics.items():
            if _is_scalar(v):
                self.log(f"val/{k}", float(v), on_epoch=True, sync_dist=False)
        self.log("val/loss", float(stats[0] / max(stats[1], 1.0)), on_epoch=True)
        if not self.trainer.sanity_checking:
            train_loss = float(stats[2] / stats[3]) if stats[3] else math.nan
            row = {
                "epoch": int(self.current_epoch),
                "train_loss": train_loss,
                "val_loss": float(stats[0] / max(stats[1], 1.0)),
            }
            row |= {f"val_{k}": float(v) for k, v in metrics.items() if _is_scalar(v)}
            self.history = [h for h in self.history if h["epoch"] < row["epoch"]] + [row]

    # checkpoint extras
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["emofuse"] = {"history": self.history, "data_epoch": self.data_epoch}
        # frozen pretrained weights (a base LM, a LoRA'd encoder's base) load from their
        # package: leaving them out keeps checkpoints the size of what trains
        frozen = {f"model.{k}" for k in self.model.frozen_pretrained_keys()}
        if frozen:
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        frozen = {f"model.{k}" for k in self.model.frozen_pretrained_keys()}
        lacking = set(self.state_dict()) - set(checkpoint.get("state_dict", {})) - frozen
        if lacking:
            from emofuse.errors import InputError

            raise InputError(
                None,
                f"checkpoint lacks {len(lacking)} weights of the model (e.g. {sorted(lacking)[0]}): "
                "it was written for another model",
            )
        extra = checkpoint.get("emofuse", {})
        self.history = list(extra.get("history", []))
        self.data_epoch = int(extra.get("data_epoch", checkpoint.get("epoch", -1) + 1))




def seed_all(seed: int, epoch: int, rank: int) -> None:
    """Seed Python, numpy and torch from ``(seed, epoch, rank)`` (a resumed epoch repeats)."""
    import random

    mixed = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)


def _prediction_rows(index: Tensor, out: Any) -> Tensor:
    """``(N, 3)`` float64 rows: table index, emotion prediction (or -1), sentiment (or NaN)."""
    n = index.shape[0]
    emo = (
        out.emotion_logits.argmax(dim=-1).double()
        if out.emotion_logits is not None
        else torch.full((n,), -1.0, dtype=torch.float64)
    )
    sen = (
        out.sentiment.detach().double()
        if out.sentiment is not None
        else torch.full((n,), math.nan, dtype=torch.float64)
    )
    return torch.stack([index.double().cpu(), emo.cpu(), sen.cpu()], dim=1)


def _gather_rows(module: Any, rows: Tensor) -> Tensor:
    """All processes' prediction rows (different counts per process), duplicates dropped."""
    counts = module.all_gather(torch.tensor(rows.shape[0], device=module.device)).flatten()
    width = int(counts.max())
    padded = rows.new_full((width, rows.shape[1]), math.nan)
    padded[: rows.shape[0]] = rows
    gathered = module.all_gather(padded.to(module.device)).cpu()
    parts = [gathered[r, : int(c)] for r, c in enumerate(counts.cpu())]
    allrows = torch.cat(parts)
    _, first = np.unique(allrows[:, 0].numpy(), return_index=True)
    return allrows[torch.as_tensor(first)]


def score_rows(table: FeatureTable, rows: Tensor) -> dict[str, Any]:
    """The metrics of :func:`_prediction_rows` rows (gathered across processes) on ``table``."""
    return score_predictions(
        table,
        rows[:, 1].long().numpy() if table.spec.emotion_labels else None,
        rows[:, 2].numpy() if table.spec.sentiment_range is not None else None,
        positions=rows[:, 0].long().tolist(),
    )


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)

class HookCallback(L.Callback):
    """Forwards training progress to a progress hook (:mod:`emofuse.hooks`).

    Calls ``hook("train epoch <e>", total=<batches>, completed=<done>)`` after every training
    batch, and ``hook("train epoch <e>", <validation row>)`` once the epoch is validated.
    """

    def __init__(self, hook: Hook) -> None:
        self.hook = hook

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        call_hook(
            self.hook,
            f"train epoch {trainer.current_epoch}",
            total=int(trainer.num_training_batches),
            completed=batch_idx + 1,
        )

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if pl_module.history:
            call_hook(self.hook, f"train epoch {trainer.current_epoch}", pl_module.history[-1])


__all__ = ["FusionTask", "HookCallback", "score_rows", "seed_all"]

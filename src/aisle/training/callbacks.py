"""Per-epoch bookkeeping: best and last checkpoints (safetensors), a history CSV, resumable state."""

from __future__ import annotations

import csv
import math
import time
from typing import cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from torch import nn

from aisle.rundir import FoldDir
from aisle.serialization import load_optimizer_state, save_optimizer_state, save_weights, write_json

__all__ = ["HISTORY_FIELDS", "EpochCheckpoint", "ResumeState", "epoch_bar", "seed_epoch"]


def _epoch_label(trainer: L.Trainer, epoch: int) -> str:
    """``Epoch 3/15``: counted from 1, like ``history.csv`` and ``best_epoch`` (Lightning's bars count from 0 and
    end at ``Epoch 14/14`` for 15 epochs)."""
    return (
        f"Epoch {epoch + 1}/{trainer.max_epochs}"
        if trainer.max_epochs and trainer.max_epochs > 0
        else f"Epoch {epoch + 1}"
    )


class _NoRunId:
    """Leaves out Lightning's ``v_num``: the last characters of the W&B / MLflow run ids, nothing to read."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict]:
        metrics = super().get_metrics(trainer, pl_module)  # type: ignore[misc]  # a mixin before a progress bar
        metrics.pop("v_num", None)
        return metrics


class _RichEpochBar(_NoRunId, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        label = _epoch_label(self.trainer, current_epoch)
        return f"{label:{len(self.validation_description)}}"  # padded as Lightning does (no flicker)


class _TqdmEpochBar(_NoRunId, TQDMProgressBar):
    def on_train_epoch_start(self, trainer: L.Trainer, *_: object) -> None:  # Lightning's, with our label
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        total = self.total_train_batches
        self.train_progress_bar.reset(total=None if math.isinf(total) else int(total))
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(_epoch_label(trainer, trainer.current_epoch))


def epoch_bar(kind: str | None) -> L.Callback | None:
    """Lightning's epoch bar of the kind the caller draws (``rich`` for the CLI, ``tqdm`` for the API), 1-based."""
    return {"rich": _RichEpochBar, "tqdm": _TqdmEpochBar}[kind]() if kind else None


def seed_epoch(seed: int, epoch: int, generator: torch.Generator | None) -> None:
    """Seed the global RNGs (augmentation, dropout) and the loader's data-order generator for one epoch."""
    L.seed_everything(seed + epoch, workers=True, verbose=False)
    if generator is not None:
        generator.manual_seed(seed + epoch)


HISTORY_FIELDS = ["epoch", "train_loss", "val_loss", "val_acc", "val_top3", "val_macro_f1", "lr", "seconds"]


class EpochCheckpoint(L.Callback):
    """After each validation: append a history row, save ``best`` when the monitored metric improves,
    and always save ``last`` (model, optimizer, schedule, early-stopping and progress state) for resuming.

    Args:
        fold_dir: this fold's folder (its files are named by :class:`aisle.rundir.FoldDir`).
        monitor: metric name (``val_macro_f1``, ``val_loss``, ...).
        epoch_offset: epochs already done before this fit (resume).
        best_score: the best monitored value so far (resume).
        generator: the training DataLoader's generator, reseeded with the epoch seed.
        exclude: state-dict prefixes of frozen towers, left out of the checkpoints (they equal the template).
        seed: each epoch reseeds with ``seed + epoch`` (before its data order is drawn), so a resumed run
            replays exactly what an uninterrupted run would have done.
    """

    def __init__(
        self,
        fold_dir: FoldDir,
        monitor: str,
        epoch_offset: int = 0,
        best_score: float | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        exclude: tuple[str, ...] = (),
    ) -> None:
        self.fold_dir, self.monitor, self.seed, self.generator = fold_dir, monitor, seed, generator
        self.exclude = exclude
        self.mode = "min" if monitor == "val_loss" else "max"
        self.epoch_offset, self.best_score = epoch_offset, best_score
        self._t0 = time.perf_counter()

    def _better(self, value: float) -> bool:
        if self.best_score is None:
            return True
        return value < self.best_score if self.mode == "min" else value > self.best_score

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        # Lightning draws a trainer's first batch before this hook in its first epoch only, so the caller
        # seeds that epoch before ``fit`` and we seed the later ones here, before their first batch.
        if trainer.current_epoch > 0:
            seed_epoch(self.seed, self.epoch_offset + trainer.current_epoch, self.generator)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation ran before this hook (check_val_every_n_epoch=1), so metrics hold both sides
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        epoch = self.epoch_offset + trainer.current_epoch + 1
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        row = {
            "epoch": epoch,
            **{k: m.get(k, np.nan) for k in HISTORY_FIELDS[1:6]},
            "lr": lr,
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        hist = self.fold_dir.history
        new = not hist.exists()
        with open(hist, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
        value = m.get(self.monitor)
        if value is not None and self._better(value):
            self.best_score = value
            save_weights(cast(nn.Module, pl_module.model), self.fold_dir.best, exclude=self.exclude)
            write_json(
                self.fold_dir.best_info,
                {"epoch": epoch, "monitor": self.monitor, "score": value, "metrics": {k: v for k, v in m.items()}},
            )
        save_weights(cast(nn.Module, pl_module.model), self.fold_dir.last, exclude=self.exclude)
        save_optimizer_state(trainer.optimizers[0], self.fold_dir.last_optim)
        sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        es = trainer.early_stopping_callback
        write_json(
            self.fold_dir.last_info,
            {
                "epoch": epoch,
                "global_step": int(trainer.global_step),
                "best_score": self.best_score,
                "scheduler": {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"} if sched else None,
                "early_stopping": {"wait_count": int(es.wait_count), "best_score": float(es.best_score)}
                if es
                else None,
            },
        )


class ResumeState(L.Callback):
    """Restores the optimizer and learning-rate schedule of a cut-off fit, once Lightning has built them
    (``on_fit_start`` runs after the strategy set up the optimizers, before the first step).

    Args:
        fold_dir: the fold whose ``last`` state is restored.
        last: the saved progress (``last.json``: scheduler step counters).
    """

    def __init__(self, fold_dir: FoldDir, last: dict) -> None:
        self.fold_dir, self.last = fold_dir, last

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_optimizer_state(trainer.optimizers[0], self.fold_dir.last_optim)
        saved = self.last.get("scheduler")
        if saved and trainer.lr_scheduler_configs:
            sched = trainer.lr_scheduler_configs[0].scheduler
            # our lambdas are plain closures rebuilt identically; only the step counters are state
            lambdas = cast(torch.optim.lr_scheduler.LambdaLR, sched).lr_lambdas  # the schedule is a LambdaLR
            sched.load_state_dict({**saved, "lr_lambdas": [None] * len(lambdas)})

"""The LightningModule: one training step, one validation step, metrics at epoch end."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from aisle.config import LearningRates, TrainConfig
from aisle.evaluation.metrics import classification_metrics
from aisle.models.classifier import ProductClassifier
from aisle.training.losses import RowTargets
from aisle.training.optim import build_optimizer, build_schedule

__all__ = ["ClassifierModule"]


class ClassifierModule(L.LightningModule):
    """Wraps a :class:`ProductClassifier` and its criterion for Lightning.

    Args:
        model: the classifier.
        criterion: ``criterion(out, y) -> loss``.
        tcfg: train settings (weight decay, schedule, warmup).
        lrs: learning rates for this stage.
        total_steps: optimizer steps in the whole fit (for the schedule).
        frozen: towers that stay frozen: kept in eval mode (BatchNorm statistics and dropout off).
        row_targets: per-row target distributions and weights of the training rows (pseudo-labelled rows in
            them): training steps then use ``criterion.soft``; validation always uses the hard labels.
    """

    def __init__(
        self,
        model: ProductClassifier,
        criterion: torch.nn.Module,
        tcfg: TrainConfig,
        lrs: LearningRates,
        total_steps: int,
        frozen: tuple[str, ...] = (),
        row_targets: RowTargets | None = None,
    ) -> None:
        super().__init__()
        self.model, self.criterion, self.tcfg, self.lrs = model, criterion, tcfg, lrs
        self.row_targets = row_targets
        soft = getattr(criterion, "soft", None)
        if row_targets is not None and soft is None:
            raise ValueError(f"the loss {type(criterion).__name__} takes no soft targets: pseudo-labelled rows need ce")
        self._soft_loss = soft
        self.total_steps, self.frozen = max(1, total_steps), frozen
        self._val_probs: list[torch.Tensor] = []
        self._val_y: list[torch.Tensor] = []
        self.val_metrics: dict[str, float] = {}

    def forward(self, batch: dict) -> dict[str, object]:
        return self.model(batch)

    def on_train_epoch_start(self) -> None:
        for name in self.frozen:
            tower = getattr(self.model, name, None)
            if tower is not None:
                tower.eval()

    def on_validation_epoch_start(self) -> None:
        if self.model.class_tower_trains():  # the class-text head scores against the texts as now encoded
            self.model.refresh_class_texts()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        if self.row_targets is None or self._soft_loss is None:
            loss = self.criterion(out, batch["label"])
        else:
            loss = self._soft_loss(out, *self.row_targets.rows(batch["index"], batch["label"].device))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(batch)
        loss = self.criterion(out, batch["label"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["label"]))
        self._val_probs.append(torch.softmax(out["logits"].float(), -1).cpu())
        self._val_y.append(batch["label"].cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs).numpy()
        y = torch.cat(self._val_y).numpy()
        self._val_probs.clear()
        self._val_y.clear()
        m = classification_metrics(y, probs)
        self.val_metrics = m
        for key in ("acc", "top3", "macro_f1"):
            self.log(f"val_{key}", m[key], prog_bar=key != "top3")

    def configure_optimizers(self):
        opt = build_optimizer(self.model, self.lrs, self.tcfg.weight_decay)
        sched = build_schedule(opt, self.total_steps, self.tcfg.warmup_ratio, self.tcfg.scheduler)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def predict_probs(model: ProductClassifier, loader, device: torch.device | str = "cpu") -> np.ndarray:
    """Softmax probabilities for every row of ``loader``, in order."""
    model.eval()
    out = []
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            out.append(torch.softmax(model(batch)["logits"].float(), -1).cpu())
    return torch.cat(out).numpy()

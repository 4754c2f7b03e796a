"""Losses (a registry) and class weighting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aisle.registry import Registry

__all__ = ["LOSSES", "RowTargets", "class_weights"]

LOSSES: Registry = Registry("loss")


def class_weights(
    y: np.ndarray,
    num_classes: int,
    scheme: Literal["auto", "none", "inverse_freq", "inverse_sqrt", "balanced"],
    smoothing: float = 0.0,
) -> np.ndarray | None:
    """Per-class weights, normalised to mean 1 over the classes present.

    ``inverse_freq``: 1/n_c; ``inverse_sqrt``: 1/sqrt(n_c); ``balanced``: N / (C * n_c) (scikit-learn's);
    ``auto`` (``train.class_weights``' default for the models trained by gradient, who call this): ``inverse_sqrt``.
    ``smoothing`` in [0, 1] blends towards uniform weights: (1 - s) * w + s.
    """
    scheme = "inverse_sqrt" if scheme == "auto" else scheme
    if scheme == "none":
        return None
    counts = np.bincount(y[y >= 0], minlength=num_classes).astype(np.float64)
    safe = np.maximum(counts, 1.0)
    w = {
        "inverse_freq": 1.0 / safe,
        "inverse_sqrt": 1.0 / np.sqrt(safe),
        "balanced": counts.sum() / (num_classes * safe),
    }[scheme]
    w = w / w[counts > 0].mean()
    return (1.0 - smoothing) * w + smoothing


@LOSSES.register("ce")
class CrossEntropyCriterion(nn.Module):
    """Cross-entropy with label smoothing and class weights; plus ``aux_weight`` x the mean of per-tower losses."""

    weight: torch.Tensor | None  # a buffer

    def __init__(self, weight: np.ndarray | None = None, label_smoothing: float = 0.0, aux_weight: float = 0.0):
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.label_smoothing, self.aux_weight = label_smoothing, aux_weight

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, y, weight=w, label_smoothing=self.label_smoothing)

    def forward(self, out: dict[str, object], y: torch.Tensor) -> torch.Tensor:
        loss = self._ce(cast(torch.Tensor, out["logits"]), y)
        aux = cast("list[torch.Tensor] | None", out.get("aux_logits")) or []
        if self.aux_weight > 0 and aux:
            loss = loss + self.aux_weight * torch.stack([self._ce(a, y) for a in aux]).mean()
        return loss

    def _soft_ce(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """sum_i s_i * (-sum_c w_c q'_ic log p_ic) / sum_i s_i * (sum_c w_c q_ic): q' the smoothed targets, w the
        class weights, s the row weights. One-hot targets with row weights 1 give exactly the hard-label loss."""
        w = None if self.weight is None else self.weight.to(logits.dtype)
        target, weight = target.to(logits.dtype), weight.to(logits.dtype)
        per_row = F.cross_entropy(logits, target, weight=w, label_smoothing=self.label_smoothing, reduction="none")
        norm = weight if w is None else weight * (target @ w)
        return (weight * per_row).sum() / norm.sum().clamp_min(torch.finfo(logits.dtype).tiny)

    def soft(self, out: dict[str, object], target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The loss against per-row target distributions ``target`` (B, C) with per-row weights ``weight`` (B,)."""
        loss = self._soft_ce(cast(torch.Tensor, out["logits"]), target, weight)
        aux = cast("list[torch.Tensor] | None", out.get("aux_logits")) or []
        if self.aux_weight > 0 and aux:
            loss = loss + self.aux_weight * torch.stack([self._soft_ce(a, target, weight) for a in aux]).mean()
        return loss


@dataclass(frozen=True)
class RowTargets:
    """Target distributions and loss weights of a training loader's rows, looked up by each batch's ``index``
    (pseudo-labelled rows: soft or one-hot targets, weight ``train.pseudo_weight``; real rows: one-hot, 1)."""

    targets: torch.Tensor  # (N, C)
    weights: torch.Tensor  # (N,)

    def rows(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        i = index.cpu()
        return self.targets[i].to(device), self.weights[i].to(device)


@LOSSES.register("clip")
class ClipCriterion(nn.Module):
    """CLIP's symmetric InfoNCE between the batch's products and their classes' texts (``train.loss: clip``).

    Logits are ``logit_scale * product @ class_text.T`` over the batch (B, B), averaged over both directions
    (product -> text, text -> product). Several items of one class in a batch share one class text, so their pairs
    are positives, not negatives: each row's target is uniform over the batch's items of its class. Because those
    items' class texts are one text, this is exactly open_clip's ``ClipLoss`` on the (product, class text) pairs,
    repeated classes included (a class with n items in the batch has a floor of log n, a constant). Class weights
    and label smoothing apply to ``ce`` only.
    """

    def forward(self, out: dict[str, object], y: torch.Tensor) -> torch.Tensor:
        products = out.get("embeddings")
        if products is None:
            raise ValueError("train.loss clip needs the class-text head (model.head class_text)")
        texts = cast(torch.Tensor, out["class_embeddings"])[y]  # (B, E): each item's class text
        logits = cast(torch.Tensor, out["logit_scale"]) * cast(torch.Tensor, products) @ texts.T  # (B, B)
        same = (y[:, None] == y[None, :]).to(logits.dtype)
        targets = same / same.sum(1, keepdim=True)  # symmetric: same-class rows have equal counts
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

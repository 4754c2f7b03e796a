"""AdamW parameter groups per module (with the no-decay split) and warmup schedules."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from aisle.config import LearningRates

__all__ = ["build_optimizer", "build_schedule", "param_groups"]

MODULE_GROUPS = {
    "image_encoder": "image_encoder",
    "text_encoder": "text_encoder",
    "class_text_encoder": "text_encoder",  # an image model's class-text tower trains at the text towers' rate
    "head": "head",
    "missing_image": "other",
}


def param_groups(model: nn.Module, lrs: LearningRates, weight_decay: float) -> list[dict]:
    """One group per (module, decay) pair; norms, biases and embeddings-like 1-d params get no decay.

    Module groups: ``image_encoder``, ``text_encoder``, ``head``, and ``other`` (everything else);
    a group's lr falls back to ``lrs.default`` when unset, the head's to ``lrs.head_scale`` x that while a tower
    trains (see :class:`aisle.config.LearningRates`).
    """
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = MODULE_GROUPS.get(name.split(".", 1)[0], "other")
        decay = p.ndim >= 2
        buckets.setdefault((group, decay), []).append(p)
    towers_train = any(group in ("image_encoder", "text_encoder") for group, _ in buckets)
    groups = []
    for (group, decay), params in sorted(buckets.items()):
        lr = getattr(lrs, group) or lrs.default * (lrs.head_scale if group == "head" and towers_train else 1.0)
        groups.append(
            {
                "params": params,
                "lr": lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{group}{'' if decay else '_no_decay'}",
            }
        )
    return groups


def build_optimizer(model: nn.Module, lrs: LearningRates, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, lrs, weight_decay)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(groups)


def build_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float,
    kind: Literal["linear", "cosine", "constant"],
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_ratio`` of the steps, then linear/cosine decay to 0 or constant."""
    warmup = round(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

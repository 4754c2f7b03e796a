"""Fusion heads: image + text features -> logits. Every fusion returns ``(logits, aux_logits)``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aisle.registry import Registry

__all__ = ["FUSIONS", "mlp_head"]

FUSIONS: Registry = Registry("fusion")


def mlp_head(in_dim: int, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    """LayerNorm -> (Linear -> GELU -> Dropout) -> Linear; ``hidden=0`` gives a linear head."""
    if hidden <= 0:
        return nn.Sequential(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, num_classes))
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


class _Fusion(nn.Module):
    def __init__(self, dims: list[int], num_classes: int, fusion_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()


@FUSIONS.register("logits")
class TowerLogits(_Fusion):
    """No head: the last tower's output already is the class logits (the ``tfidf:`` linear model); an image tower
    before it (a linear model with ``model.image``) adds ``normalize(image features) @ image_weight.T``, a linear
    layer fitted with the TF-IDF weights (zero until then; a product without images has zero features)."""

    def __init__(self, dims, num_classes, fusion_dim, hidden, dropout):
        super().__init__(dims, num_classes, fusion_dim, hidden, dropout)
        if len(dims) not in (1, 2) or dims[-1] != num_classes:
            raise ValueError(f"the logits head takes a tower of {num_classes} outputs (and an image tower), got {dims}")
        self.image = nn.Linear(dims[0], num_classes, bias=False) if len(dims) == 2 else None
        if self.image is not None:
            nn.init.zeros_(self.image.weight)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.image is None:
            return feats[0], []
        image = nn.functional.normalize(feats[0].to(self.image.weight.dtype), dim=-1)
        return feats[1] + self.image(image).to(feats[1].dtype), []

    def set_image_weights(self, coef: np.ndarray) -> None:
        """Take the fitted weights of the L2-normalised image features: ``coef`` (C, image width)."""
        if self.image is None or coef.shape != tuple(self.image.weight.shape):
            raise ValueError(f"image weights of shape {coef.shape} do not fit this head")
        with torch.no_grad():
            self.image.weight.copy_(torch.as_tensor(coef, dtype=self.image.weight.dtype))


@FUSIONS.register("concat")
class ConcatFusion(_Fusion):
    """Normalise each tower's features on its own, weigh the towers alike, concatenate, then the MLP head.

    Per-tower LayerNorm matters: towers' feature scales differ by orders of magnitude (a CNN's pooled
    activations vs a sentence embedding), and one joint normalisation lets the larger one drown the other.
    After it every feature has unit scale, so a wider tower still brings more squared norm into the head (1,280
    image features vs 384 text ones: 3.3x); each tower is scaled by ``sqrt(mean width / its width)`` so that each
    brings the same. On small catalogues the unscaled head fitted the wide, weaker image features and lost to
    text alone; the scaled one does not (``benchmarks/fusion_study.py``, README "Why fusion lost").
    """

    tower_scale: torch.Tensor  # (towers,), a buffer saved with the weights

    def __init__(self, dims, num_classes, fusion_dim, hidden, dropout):
        super().__init__(dims, num_classes, fusion_dim, hidden, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        width = torch.tensor(dims, dtype=torch.float32)
        self.register_buffer("tower_scale", (width.mean() / width).sqrt())
        self.head = mlp_head(sum(dims), num_classes, hidden, dropout)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        parts = [n(f) * self.tower_scale[i] for i, (n, f) in enumerate(zip(self.norms, feats))]
        return self.head(torch.cat(parts, dim=-1)), []

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the towers were scaled hold no tower_scale: they were trained (and predict) unscaled
        state_dict.setdefault(prefix + "tower_scale", torch.ones_like(self.tower_scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@FUSIONS.register("sum")
class SumFusion(_Fusion):
    """Project each tower to ``fusion_dim`` and add."""

    def __init__(self, dims, num_classes, fusion_dim, hidden, dropout):
        super().__init__(dims, num_classes, fusion_dim, hidden, dropout)
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, fusion_dim)) for d in dims)
        self.head = mlp_head(fusion_dim, num_classes, hidden, dropout)

    def forward(self, feats):
        return self.head(torch.stack([p(f) for p, f in zip(self.proj, feats)]).sum(0)), []


@FUSIONS.register("gated")
class GatedFusion(_Fusion):
    """Project to ``fusion_dim``; a learned per-sample softmax gate weighs the modalities."""

    def __init__(self, dims, num_classes, fusion_dim, hidden, dropout):
        super().__init__(dims, num_classes, fusion_dim, hidden, dropout)
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, fusion_dim)) for d in dims)
        self.gate = nn.Linear(fusion_dim * len(dims), len(dims))
        self.head = mlp_head(fusion_dim, num_classes, hidden, dropout)

    def forward(self, feats):
        z = torch.stack([p(f) for p, f in zip(self.proj, feats)], dim=1)  # (B, M, F)
        w = torch.softmax(self.gate(z.flatten(1)), dim=-1)  # (B, M)
        return self.head((w.unsqueeze(-1) * z).sum(1)), []


@FUSIONS.register("late")
class LateFusion(_Fusion):
    """One head per tower; logits averaged. Per-tower logits come back for an auxiliary loss."""

    def __init__(self, dims, num_classes, fusion_dim, hidden, dropout):
        super().__init__(dims, num_classes, fusion_dim, hidden, dropout)
        self.heads = nn.ModuleList(mlp_head(d, num_classes, hidden, dropout) for d in dims)

    def forward(self, feats):
        per = [h(f) for h, f in zip(self.heads, feats)]
        return torch.stack(per).mean(0), per

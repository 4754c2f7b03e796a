"""The class-text head: products and their classes' texts meet in one space; logits = cos / temperature.

How it starts (what makes 0-shot -> K-shot continuous): every projection whose input is no wider than
``embed_dim`` starts as the identity (zero-padded, orthonormal columns), so at step 0 the cosine between a product
and a class is the cosine of the towers' own features: the head predicts what zero-shot predicts on the same towers
(:mod:`aisle.inference.zero_shot`), and training moves on from there. Wider inputs start from a random projection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aisle.models.base import Tower

__all__ = ["MAX_LOGIT_SCALE", "ClassTextHead", "encode_class_texts"]

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of its learned logit scale (temperature >= 0.01)


def _projection(in_dim: int, out_dim: int) -> nn.Linear:
    proj = nn.Linear(in_dim, out_dim, bias=False)  # no bias: a product without an image (zeros) stays at zero
    if in_dim <= out_dim:
        with torch.no_grad():
            proj.weight.copy_(torch.eye(out_dim, in_dim))  # keeps every inner product: cos as the towers give it
    return proj


def encode_class_texts(
    tower: Tower, tokens: dict[str, torch.Tensor], owner: torch.Tensor, classes: int
) -> torch.Tensor:
    """One vector per class: each text encoded and L2-normalised, averaged over the class's texts (CLIP's prompt
    ensembling), normalised again. ``owner`` (T,) gives each text's class. Returns (C, D)."""
    feats = F.normalize(tower(tokens).float(), dim=-1)  # (T, D)
    summed = torch.zeros(classes, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add(0, owner, feats)
    return F.normalize(summed, dim=-1)  # (C, D): the mean's direction


class ClassTextHead(nn.Module):
    """Project product features (one input per tower) and class-text features to ``embed_dim``; logits are their
    cosine times ``exp(logit_scale)``, clamped at :data:`MAX_LOGIT_SCALE`.

    With several towers a product's embedding is the normalised sum of each tower's normalised projection.

    Args:
        dims: product feature width per tower.
        text_dim: width of the class-text tower's features.
        num_classes: classes.
        embed_dim: the joint space.
        temperature: initial (or fixed) temperature; ``logit_scale = log(1 / temperature)``.
        learn_temperature: the logit scale is a parameter (else a buffer: no gradient).
    """

    class_features: torch.Tensor  # (C, text_dim), a buffer: the class texts as last encoded
    logit_scale: torch.Tensor

    def __init__(
        self,
        dims: Sequence[int],
        text_dim: int,
        num_classes: int,
        embed_dim: int = 512,
        temperature: float = 0.07,
        learn_temperature: bool = False,
    ) -> None:
        super().__init__()
        self.product_proj = nn.ModuleList(_projection(d, embed_dim) for d in dims)
        self.class_proj = _projection(text_dim, embed_dim)
        scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.register_buffer("class_features", torch.zeros(num_classes, text_dim))

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped at :data:`MAX_LOGIT_SCALE` (no gradient beyond the clamp)."""
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def embed_products(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """(B, embed_dim), unit length (zero for a product whose every tower gave zeros)."""
        summed = sum(F.normalize(p(f.float()), dim=-1) for p, f in zip(self.product_proj, feats))
        return F.normalize(torch.as_tensor(summed), dim=-1)

    def embed_classes(self, class_features: torch.Tensor | None = None) -> torch.Tensor:
        """(C, embed_dim), unit length; from ``class_features`` (fresh, with gradient) or the buffer."""
        feats = self.class_features if class_features is None else class_features
        return F.normalize(self.class_proj(feats.float()), dim=-1)

    def forward(
        self, feats: list[torch.Tensor], class_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (logits (B, C), product embeddings (B, E), class embeddings (C, E))."""
        products, classes = self.embed_products(feats), self.embed_classes(class_features)
        return self.scale() * products @ classes.T, products, classes

"""Test-time augmentation policies (a registry): each maps an image batch to one augmented view."""

from __future__ import annotations

import torch

from aisle.registry import Registry

__all__ = ["TTA_POLICIES"]

TTA_POLICIES: Registry = Registry("TTA policy")


@TTA_POLICIES.register("hflip")
def hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror left-right. ``images``: (B, K, 3, H, W)."""
    return images.flip(-1)


@TTA_POLICIES.register("vflip")
def vflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror top-bottom (flat-lay product shots)."""
    return images.flip(-2)

"""Image towers: any timm backbone (hub name or ``local-dir:`` folder), classifier removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from aisle.models.base import ImagePreprocess, Tower, masked_mean
from aisle.registry import Registry

__all__ = ["IMAGE_TOWERS", "TimmImageTower"]

IMAGE_TOWERS: Registry = Registry("image tower")


@IMAGE_TOWERS.register("timm")
class TimmImageTower(Tower):
    """``timm.create_model(name, pretrained, num_classes=0)``; the preprocessing comes from timm's config.

    Args:
        name: a timm model name (``convnext_tiny.fb_in22k``, ``test_resnet``) or ``local-dir:PATH``.
        pretrained: load pretrained weights (hub or the local folder).
        image_size: override the model's input size (None: its own).
        architecture: rebuild from a saved run: create this architecture instead of ``name`` (no download).
    """

    modality = "image"

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        image_size: int | None = None,
        architecture: str | None = None,
        pretrained_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        if architecture is not None:
            self.model = timm.create_model(
                architecture, pretrained=False, num_classes=0, pretrained_cfg_overlay=pretrained_cfg or {}
            )
        else:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0)
        self.output_dim = int(cast(int, self.model.num_features))
        data_cfg = resolve_data_config({}, model=self.model)
        size = image_size or int(data_cfg["input_size"][-1])
        self.preprocess = ImagePreprocess(
            size, tuple(data_cfg["mean"]), tuple(data_cfg["std"]), str(data_cfg.get("interpolation", "bicubic"))
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images = self.pixels(batch["image"])  # (B, K, 3, H, W), uint8 or float -> normalised float
        b, k = images.shape[:2]
        flat = images.flatten(0, 1)
        if getattr(self, "channels_last", False):
            flat = flat.contiguous(memory_format=torch.channels_last)
        feats = self.model(flat)  # (B*K, D)
        return masked_mean(feats.view(b, k, -1), batch["image_mask"])  # (B, D)

    def use_channels_last(self) -> None:
        """Channels-last weights and inputs: faster convolutions on GPUs and on CPUs (README, Performance); the
        same numbers, only the memory layout changes."""
        self.model.to(memory_format=torch.channels_last)
        self.channels_last = True

    def blocks(self) -> list[nn.Module]:
        # timm exposes stage/block boundaries as feature_info; fall back to top-level children.
        for attr in ("blocks", "stages", "layers"):
            mod = getattr(self.model, attr, None)
            if isinstance(mod, nn.Sequential | nn.ModuleList):
                return list(mod)
        return [m for m in self.model.children() if any(p.requires_grad for p in m.parameters())]

    def save_assets(self, folder: Path) -> dict[str, Any]:
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        arch = cfg.get("architecture") or cast(dict[str, Any], self.model.default_cfg).get("architecture") or self.name
        keep = {k: v for k, v in cfg.items() if k in ("input_size", "mean", "std", "interpolation", "crop_pct")}
        return {"architecture": arch, "pretrained_cfg": keep, "image_size": self.preprocess.size}

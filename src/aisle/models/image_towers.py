"""Image towers: any timm backbone (hub name or ``local-dir:`` folder), classifier removed."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from aisle.models.base import ImagePreprocess, Tower, masked_mean
from aisle.registry import Registry

__all__ = ["IMAGE_TOWERS", "TimmImageTower", "check_timm_name"]

IMAGE_TOWERS: Registry = Registry("image tower")

_TIMM_FIX = (
    "use a name from timm.list_models() (e.g. timm:resnet18, timm:convnext_tiny.fb_in22k), or "
    "timm:local-dir:/path/to/folder for weights saved in a folder (config.json + model.safetensors)"
)


def check_timm_name(name: str) -> None:
    """Raise ``ValueError`` unless timm can build ``name`` (the part after ``timm:``), without building it.

    Registry names and their pretrained tags are checked against timm's lists, ``local-dir:`` folders for their
    ``config.json``; ``hf-hub:`` names cannot be checked offline and are left to the download.
    """
    try:
        source, model = timm.models.parse_model_name(name)
    except ValueError as e:
        raise ValueError(f"timm:{name}: {e}") from None
    if source == "local-dir":
        if not (Path(model).expanduser() / "config.json").is_file():
            raise ValueError(f"timm:{name}: {model} is not a folder with a timm config.json; {_TIMM_FIX}")
        return
    if source is not None:
        return
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3)
        hint = f" (closest: {', '.join(f'timm:{c}' for c in close)})" if close else ""
        raise ValueError(f"timm has no model {model!r}{hint}; {_TIMM_FIX}")
    arch, _, tag = model.partition(".")
    if tag and not timm.list_pretrained(model):
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        raise ValueError(f"timm model {arch!r} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}")


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

"""The tower contract and helpers shared by every tower."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ImagePreprocess", "Tower", "masked_mean", "normalise_pixels", "parse_tower_name"]


@dataclass(frozen=True)
class ImagePreprocess:
    """What an image tower expects: side length, normalisation, resize interpolation."""

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tower(nn.Module):
    """Every tower: ``output_dim`` and ``forward(batch) -> Tensor[B, D]``.

    Image towers read ``batch["image"]`` ``(B, K, 3, H, W)`` and ``batch["image_mask"]`` ``(B, K)``; text
    towers read ``batch["input_ids"]`` / ``batch["attention_mask"]`` made by their own ``tokenize``.
    """

    output_dim: int
    modality: str  # "image" or "text"
    fixed_length: bool = False  # text towers whose inputs must keep their full padded length (SigLIP, OpenCLIP)
    from_scratch: bool = False  # no pretrained weights (ngram:): trained even in stages that freeze the encoders
    preprocess: ImagePreprocess  # image towers
    tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]]  # text towers
    dual_saver: Callable[[Path], dict[str, Any]]  # the image view of a dual encoder: saves both views' assets

    @property
    def pad_id(self) -> int:
        """The token id that pads text batches (0 for towers without a tokenizer)."""
        return getattr(getattr(self, "tokenizer", None), "pad_token_id", 0) or 0

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Image batches arrive as uint8 (the loaders ship 1 byte per value from their workers and normalise here,
        on the model's device) or already normalised floats; both leave as normalised floats."""
        return normalise_pixels(images, self.preprocess)

    def blocks(self) -> list[nn.Module]:
        """The encoder's blocks in input-to-output order, for ``train_last_n_blocks``."""
        return []

    def save_assets(self, folder: Path) -> dict[str, Any]:
        """Write what a rebuild needs besides the weights (configs, tokenizer); return JSON settings."""
        return {}


def normalise_pixels(images: torch.Tensor, pre: ImagePreprocess) -> torch.Tensor:
    """uint8 images ``(..., 3, H, W)`` -> ``(x / 255 - mean) / std`` as float32; float input is returned as it is.

    One fused multiply-add after the conversion (``x * scale + shift``) instead of the three passes of
    ``(x.float() - mean) / std``.
    """
    if images.dtype != torch.uint8:
        return images
    std = torch.tensor(pre.std, device=images.device).view(3, 1, 1) * 255.0
    scale = 1.0 / std
    shift = -torch.tensor(pre.mean, device=images.device).view(3, 1, 1) * 255.0 * scale
    return torch.addcmul(shift, images.float(), scale)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``x`` ``(B, K, D)`` where ``mask`` ``(B, K)`` is True; all-False rows average everything."""
    m = mask.to(x.dtype)
    none = m.sum(1, keepdim=True) == 0  # (B, 1)
    m = torch.where(none, torch.ones_like(m), m)
    return (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)


def parse_tower_name(spec: str, known: list[str]) -> tuple[str, str]:
    """Split ``prefix:name`` once (``timm:resnet18`` -> ``("timm", "resnet18")``); the prefix must be known."""
    prefix, sep, name = spec.partition(":")
    if not sep or prefix not in known or not name:
        raise ValueError(
            f"tower name {spec!r} must be '<prefix>:<model>' with prefix one of: {', '.join(known)} "
            f"(e.g. timm:resnet18, hf:bert-base-multilingual-cased, open_clip:ViT-L-14/openai)"
        )
    return prefix, name

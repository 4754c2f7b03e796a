"""Pure factories for image and text transforms; datasets only apply them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from aisle.registry import Registry

__all__ = [
    "AUGMENT_POLICIES",
    "ImageTransform",
    "RandomResizedCropFlip",
    "TextTransform",
    "build_image_transform",
    "build_whitespace_text_transform",
]

ImageTransform = Callable[[Image.Image], torch.Tensor]
TextTransform = Callable[[str], dict[str, torch.Tensor]]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomResizedCropFlip:
    """PIL image or uint8 tensor -> uint8 tensor (3, size, size): a random resized crop, then a horizontal flip.

    What ``v2.Compose([v2.ToImage(), v2.RandomResizedCrop(...), v2.RandomHorizontalFlip(...)])`` does (the crop box
    comes from torchvision's own ``RandomResizedCrop.make_params``), with the functional ops called directly:
    the per-call dispatch of three composed transforms costs more than the resize itself on small cached images.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.7, 1.0), hflip: float = 0.5) -> None:
        self.size, self.hflip = [size, size], hflip
        self.crop = v2.RandomResizedCrop(size, scale=scale, antialias=True)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        t = image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)
        p = self.crop.make_params([t])
        t = F.resized_crop(t, p["top"], p["left"], p["height"], p["width"], self.size, antialias=True)
        return t.flip(-1) if self.hflip > 0 and torch.rand(()) < self.hflip else t


# Training augmentation policies (``data.augment``): (image_size, crop_scale, hflip) -> ops from a PIL image (or
# uint8 tensor) to a uint8 tensor (3, size, size). Every random draw comes from torch's RNG, so a seed fixes them.
AUGMENT_POLICIES: Registry = Registry("augment policy")


def _eval_ops(size: int) -> list[Callable]:
    return [v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size)]


@AUGMENT_POLICIES.register("none")
def _no_augment(size: int, crop_scale: tuple[float, float], hflip: float) -> list[Callable]:
    """What evaluation sees: resize the short side, centre crop."""
    return _eval_ops(size)


@AUGMENT_POLICIES.register("minimal")
def _minimal(size: int, crop_scale: tuple[float, float], hflip: float) -> list[Callable]:
    """A random resized crop (area fraction in ``crop_scale``) and a horizontal flip: aisle's default."""
    return [RandomResizedCropFlip(size, crop_scale, hflip)]


@AUGMENT_POLICIES.register("standard")
def _standard(size: int, crop_scale: tuple[float, float], hflip: float) -> list[Callable]:
    """``minimal`` + colour jitter (brightness, contrast, saturation 0.2; hue 0.02)."""
    return [*_minimal(size, crop_scale, hflip), v2.ColorJitter(0.2, 0.2, 0.2, 0.02)]


@AUGMENT_POLICIES.register("strong")
def _strong(size: int, crop_scale: tuple[float, float], hflip: float) -> list[Callable]:
    """``standard`` + Gaussian blur (p 0.2, kernel ~10% of the size, sigma 0.1-2) + JPEG re-encode (p 0.2, q 30-90)."""
    kernel = max(3, (size // 10) | 1)  # odd, as GaussianBlur needs
    return [
        *_standard(size, crop_scale, hflip),
        v2.RandomApply([v2.GaussianBlur(kernel, (0.1, 2.0))], p=0.2),
        v2.RandomApply([v2.JPEG((30, 90))], p=0.2),
    ]


def build_image_transform(
    image_size: int,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    hflip: float = 0.5,
    crop_scale: tuple[float, float] = (0.7, 1.0),
    normalize: bool = True,
    augment: str = "minimal",
) -> ImageTransform:
    """PIL RGB image (or uint8 tensor) -> normalised float tensor (3, image_size, image_size).

    Training: the ``augment`` policy (``AUGMENT_POLICIES``; default: random resized crop and horizontal flip).
    Evaluation: resize the short side, centre crop. ``normalize=False`` stops at the uint8 tensor: the loaders use
    it so that workers ship a quarter of the bytes, and image towers normalise on their own device
    (``Tower.pixels``).

    Raises:
        ValueError: ``augment`` is not a registered policy (the message lists them).
    """
    policy = AUGMENT_POLICIES.get(augment)  # checked in evaluation too: a bad name never waits for training
    ops = policy(image_size, crop_scale, hflip) if train else _eval_ops(image_size)
    if not normalize:
        return ops[0] if len(ops) == 1 else v2.Compose(ops)
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def build_whitespace_text_transform(vocab: dict[str, int], max_length: int) -> TextTransform:
    """A tiny stand-in tokenizer (lower-cased whitespace words, 0 = pad, 1 = unknown) for tests and checks.

    Real text towers bring their own tokenizer; this keeps the dataset contract testable without one.
    """

    def encode(text: str) -> dict[str, torch.Tensor]:
        tokens = [vocab.get(w, 1) for w in text.lower().split()][:max_length]
        ids = torch.zeros(max_length, dtype=torch.long)
        mask = torch.zeros(max_length, dtype=torch.long)
        ids[: len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[: len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return encode

"""DataLoaders: the dataset, the batch tokenizer (collate) and optional weighted sampling."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler, default_collate

from aisle.config import DataConfig
from aisle.data.dataset import ImageReading, Precomputed, ProductDataset
from aisle.data.products import Products
from aisle.data.transforms import build_image_transform

__all__ = ["Collate", "LoaderOptions", "Preprocess", "Tokenize", "build_loader", "pretokenize"]

Tokenize = Callable[[Sequence[str]], dict[str, torch.Tensor]]
# what a tower's tokenize returns, each (B, T): ids, the mask, and per-token weights (tfidf: the TF-IDF values)
TOKEN_KEYS = ("input_ids", "attention_mask", "token_weights")


class Preprocess(Protocol):
    """An image tower's preprocessing (``aisle.models.ImagePreprocess``)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + fast tokenizers


class Collate:
    """Stack tensors and keep strings as lists; tokenize the batch's texts (when they were not tokenized ahead,
    see :func:`pretokenize`), or trim pre-tokenized batches to their longest row unless ``fixed_length``."""

    def __init__(self, tokenize: Tokenize | None = None, fixed_length: bool = False) -> None:
        self.tokenize, self.fixed_length = tokenize, fixed_length

    def __call__(self, items: list[dict]) -> dict[str, object]:
        batch = default_collate(items)
        if self.tokenize is not None:
            batch.update(self.tokenize(batch["text"]))
        elif "attention_mask" in batch and not self.fixed_length:
            longest = int(batch["attention_mask"].sum(1).max())  # (B, T) -> (B, longest)
            for key in TOKEN_KEYS:
                if key in batch:
                    batch[key] = batch[key][:, :longest]
        return batch


def pretokenize(
    tokenize: Tokenize, texts: Sequence[str] | np.ndarray, pad_id: int = 0, chunk: int = 8192
) -> dict[str, np.ndarray]:
    """Tokenize every text once (per run), padded to the longest; batches are trimmed again by ``Collate``."""
    parts = [tokenize(list(texts[i : i + chunk])) for i in range(0, len(texts), chunk)]
    width = max(p["input_ids"].shape[1] for p in parts)
    out = {}
    for key in [k for k in TOKEN_KEYS if k in parts[0]]:
        pad = pad_id if key == "input_ids" else 0
        out[key] = np.concatenate(
            [torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=pad).numpy() for p in parts]
        )
    return out


@dataclass(frozen=True)
class LoaderOptions:
    """Batching and reading settings shared by every loader of a run.

    Attributes:
        batch_size: rows per batch.
        num_workers: loader worker processes (loaders that only read in-memory features use none).
        seed: seed of the loader's own data-order generator.
        reading: how images are chosen and decoded (its ``placeholder_size`` is replaced by the image size).
        augment: the training augmentation policy (``data.augment``); evaluation loaders never augment.
        crop_scale: the random resized crop's area range (``data.crop_scale``).
    """

    batch_size: int = 32
    num_workers: int = 0
    seed: int = 42
    reading: ImageReading = field(default_factory=ImageReading)
    augment: str = "minimal"
    crop_scale: tuple[float, float] = (0.7, 1.0)

    @classmethod
    def create(cls, data: DataConfig, batch_size: int, num_workers: int, seed: int = 42) -> LoaderOptions:
        reading = ImageReading(data.multi_image, data.max_images, max_pixels=data.max_image_pixels)
        return cls(batch_size, num_workers, seed, reading, data.augment, data.crop_scale)


def build_loader(
    products: Products,
    y: np.ndarray | None,
    opts: LoaderOptions,
    train: bool,
    preprocess: Preprocess | None = None,
    tokenize: Tokenize | None = None,
    fixed_length: bool = False,
    sample_weights: np.ndarray | None = None,
    image_size: int | None = None,
    precomputed: Precomputed | None = None,
) -> DataLoader:
    """A DataLoader whose transforms follow a model's own preprocessing.

    Args:
        products: the rows.
        y: class indices (None: unlabelled).
        opts: batch size, workers, seed and image reading.
        train: augment and shuffle (or sample by ``sample_weights``).
        preprocess: the image tower's preprocessing (``size``, ``mean``, ``std``); None: no images.
        tokenize: the text tower's batch tokenizer; None: no text tower.
        fixed_length: the text tower needs every batch padded to its full length (no trimming).
        sample_weights: per-row weights for a WeightedRandomSampler (training only).
        image_size: overrides the preprocessing size (multi-scale inference).
        precomputed: cached features, decoded pixels or tokens for these rows (no pixels or tokenizing then).
    """
    pre = precomputed or Precomputed()
    image_tf = None
    if preprocess is not None:
        # uint8 out of the workers (a quarter of the bytes); the image tower normalises on its device
        image_tf = build_image_transform(
            image_size or preprocess.size,
            train,
            preprocess.mean,
            preprocess.std,
            crop_scale=opts.crop_scale,
            normalize=False,
            augment=opts.augment,
        )
    reading = replace(opts.reading, placeholder_size=image_size or (preprocess.size if preprocess else 224))
    ds = ProductDataset(products, y, image_transform=image_tf, reading=reading, train=train, precomputed=pre)
    # Data order comes from the loader's own generator (reseeded each epoch by EpochCheckpoint), never from
    # the global RNG, whose draws differ between a trainer's first epoch and later ones (exact resume).
    generator = torch.Generator().manual_seed(opts.seed)
    sampler = None
    if train and sample_weights is not None:
        sampler = WeightedRandomSampler(
            # torch's stubs say Sequence[float]; it takes a tensor too (torch.as_tensor inside)
            cast(Sequence[float], torch.as_tensor(sample_weights, dtype=torch.double)),
            len(products),
            replacement=True,
            generator=generator,
        )
    # cached features are in memory already: worker processes would only add start-up cost
    in_memory = (pre.image_features is not None or image_tf is None) and (
        pre.text_features is not None or tokenize is None
    )
    workers = 0 if in_memory else opts.num_workers
    batch_tokenize = tokenize if pre.text_features is None and pre.tokens is None else None
    return DataLoader(
        ds,
        batch_size=opts.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(batch_tokenize, fixed_length),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        drop_last=False,
        generator=generator,
    )

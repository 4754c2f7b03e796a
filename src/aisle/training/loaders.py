"""DataLoaders: the dataset, the batch tokenizer (collate) and optional weighted sampling."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler, default_collate

from aisle.config import AisleConfig
from aisle.data.dataset import ProductDataset
from aisle.data.products import Products
from aisle.data.transforms import build_image_transform
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import image_preprocess

__all__ = ["Collate", "build_loader"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + fast tokenizers


class Collate:
    """Stack tensors and keep strings as lists; tokenize the batch's texts (when they were not tokenized ahead,
    see :func:`pretokenize`), or trim pre-tokenized batches to their longest row unless ``fixed_length``."""

    def __init__(self, tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None = None,
                 fixed_length: bool = False) -> None:
        self.tokenize, self.fixed_length = tokenize, fixed_length

    def __call__(self, items: list[dict]) -> dict[str, object]:
        batch = default_collate(items)
        if self.tokenize is not None:
            batch.update(self.tokenize(batch["text"]))
        elif "attention_mask" in batch and not self.fixed_length:
            longest = int(batch["attention_mask"].sum(1).max())  # (B, T) -> (B, longest)
            batch["input_ids"] = batch["input_ids"][:, :longest]
            batch["attention_mask"] = batch["attention_mask"][:, :longest]
        return batch


def pretokenize(tower, texts: Sequence[str], chunk: int = 8192) -> dict[str, np.ndarray]:
    """Tokenize every text once (per run), padded to the longest; batches are trimmed again by ``Collate``."""
    parts = [tower.tokenize(list(texts[i:i + chunk])) for i in range(0, len(texts), chunk)]
    width = max(p["input_ids"].shape[1] for p in parts)
    out = {}
    for key in ("input_ids", "attention_mask"):
        pad = 0 if key == "attention_mask" else getattr(getattr(tower, "tokenizer", None), "pad_token_id", 0) or 0
        out[key] = np.concatenate([torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=pad).numpy()
                                   for p in parts])
    return out


def build_loader(products: Products, y: np.ndarray | None, model: ProductClassifier, cfg: AisleConfig,
                 train: bool, sample_weights: np.ndarray | None = None, batch_size: int | None = None,
                 image_size: int | None = None, image_features: tuple[list[np.ndarray], np.ndarray] | None = None,
                 text_features: np.ndarray | None = None, decoded=None,
                 tokens: dict[str, np.ndarray] | None = None) -> DataLoader:
    """A DataLoader whose transforms follow the model's own preprocessing.

    Args:
        products: the rows.
        y: class indices (None: unlabelled).
        model: supplies image preprocessing and the tokenizer.
        cfg: data (multi-image) and train (batch size, workers) settings.
        train: augment and shuffle (or sample by ``sample_weights``).
        sample_weights: per-row weights for a WeightedRandomSampler (training only).
        batch_size: overrides ``train.batch_size``.
        image_size: overrides the preprocessing size (multi-scale inference).
        image_features / text_features: cached tower features (see ``ProductDataset``); no pixels or tokens then.
        decoded: ``DecodedImages`` for these rows (pixels decoded once, read from a memory map).
        tokens: :func:`pretokenize` output for these rows (tokenized once per run, not per batch and epoch).
    """
    pre = image_preprocess(model)
    image_tf = None
    if pre is not None:
        # uint8 out of the workers (a quarter of the bytes); the image tower normalises on its device
        image_tf = build_image_transform(image_size or pre.size, train, pre.mean, pre.std, normalize=False)
    text = model.text_encoder
    ds = ProductDataset(products, y, image_transform=image_tf, multi_image=cfg.data.multi_image, train=train,
                        max_images=cfg.data.max_images, placeholder_size=image_size or (pre.size if pre else 224),
                        max_pixels=cfg.data.max_image_pixels, image_features=image_features,
                        text_features=text_features, decoded=decoded if image_features is None else None,
                        tokens=tokens if text_features is None else None)
    # Data order comes from the loader's own generator (reseeded each epoch by EpochCheckpoint), never from
    # the global RNG, whose draws differ between a trainer's first epoch and later ones (exact resume).
    generator = torch.Generator().manual_seed(cfg.train.seed)
    sampler = None
    if train and sample_weights is not None:
        sampler = WeightedRandomSampler(torch.as_tensor(sample_weights, dtype=torch.double), len(products),
                                        replacement=True, generator=generator)
    # cached features are in memory already: worker processes would only add start-up cost
    workers = 0 if (image_features is not None or image_tf is None) and (text_features is not None or text is None) \
        else cfg.train.num_workers
    tokenize = text.tokenize if text is not None and text_features is None and tokens is None else None
    return DataLoader(ds, batch_size=batch_size or cfg.train.batch_size, shuffle=train and sampler is None,
                      sampler=sampler, num_workers=workers,
                      collate_fn=Collate(tokenize, getattr(text, "fixed_length", False)),
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      drop_last=False, generator=generator)

"""Encoding products with one frozen tower, through the feature store."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from aisle.cache.keys import image_item_keys, text_item_keys, tower_key
from aisle.cache.store import FeatureStore
from aisle.config import DataConfig, RuntimeConfig
from aisle.config.data_schema import MAX_IMAGE_PIXELS
from aisle.data.dataset import ImageReading, ProductDataset
from aisle.data.loaders import Collate
from aisle.data.products import Products
from aisle.data.transforms import build_image_transform
from aisle.data.tta import TTA_POLICIES
from aisle.devices import run_device
from aisle.models.base import Tower
from aisle.paths import require_writable
from aisle.progress import step

__all__ = ["EncodeOptions", "encode_batch_size", "encode_products", "tower_features"]

log = logging.getLogger(__name__)

_CACHE = "feature cache (runtime.cache_dir)"


def encode_batch_size(requested: int) -> int:
    """Batch size for a frozen-tower pass: on CPUs small batches stay in cache (at most 32 rows; measured in the
    README's Performance section); GPUs take the requested size."""
    return requested if torch.cuda.is_available() else min(requested, 32)


@dataclass(frozen=True)
class EncodeOptions:
    """How a frozen-tower pass reads products (the same for every view and image size).

    Attributes:
        batch_size: requested rows per batch (see :func:`encode_batch_size`).
        num_workers: loader worker processes.
        multi_image: ``first`` / ``random`` (encoded as ``first``) / ``mean_pool``.
        max_images: images per product for ``mean_pool``.
        max_pixels: decompression-bomb limit.
        device: where the tower runs (``runtime.accelerator``, see :func:`aisle.devices.run_device`).
    """

    batch_size: int = 64
    num_workers: int = 0
    multi_image: str = "first"
    max_images: int = 4
    max_pixels: int = MAX_IMAGE_PIXELS
    device: str = "cpu"

    @classmethod
    def create(cls, data: DataConfig, runtime: RuntimeConfig, batch_size: int | None = None) -> EncodeOptions:
        return cls(
            batch_size or runtime.batch_size_infer,
            runtime.num_workers,
            data.multi_image,
            data.max_images,
            data.max_image_pixels,
            run_device(runtime.accelerator),
        )

    @property
    def image_choice(self) -> str:
        """Which images a product's features come from: a random pick is not repeatable, so the first."""
        return "first" if self.multi_image == "random" else self.multi_image


def _loader(tower: Tower, products: Products, opts: EncodeOptions, image_size: int | None) -> DataLoader:
    image = tower.modality == "image"
    tf = None
    if image:
        pre = tower.preprocess
        tf = build_image_transform(image_size or pre.size, False, pre.mean, pre.std, normalize=False)
    reading = ImageReading(opts.image_choice, opts.max_images, image_size or 224, opts.max_pixels)
    ds = ProductDataset(products, image_transform=tf, reading=reading, train=False)
    return DataLoader(
        ds,
        batch_size=encode_batch_size(opts.batch_size),
        num_workers=opts.num_workers,
        collate_fn=Collate(None if image else tower.tokenize),
    )


def encode_products(
    tower: Tower,
    products: Products,
    view: str = "orig",
    opts: EncodeOptions | None = None,
    image_size: int | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a tower over products in eval mode on ``device`` (default ``opts.device``): (features (N, D) float32,
    has-image mask (N,)); the tower goes back to its own device afterwards."""
    opts = opts or EncodeOptions()
    device = device or opts.device
    home = next(tower.parameters(), torch.empty(0)).device
    tower = tower.eval().to(device)
    image = tower.modality == "image"
    order = None
    if not image:  # texts run shortest first, so each batch pads only to about its own length
        order = np.argsort([len(t) for t in products.texts], kind="stable")
        products = products.subset(order)
    loader = _loader(tower, products, opts, image_size)
    flip = TTA_POLICIES.get(view) if view != "orig" else None
    feat_batches: list[np.ndarray] = []
    mask_batches: list[np.ndarray] = []
    on_gpu = torch.device(device).type == "cuda"
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=on_gpu):
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if image and flip is not None:
                batch["image"] = flip(batch["image"])
            feat_batches.append(tower(batch).float().cpu().numpy())
            mask_batches.append(batch["image_mask"].any(1).cpu().numpy() if image else np.ones(len(batch["id"]), bool))
            if progress is not None:
                progress(len(batch["id"]))
    tower.to(home)  # where the caller had it
    feats, masks = np.concatenate(feat_batches), np.concatenate(mask_batches)
    if order is not None:
        inverse = np.argsort(order)
        feats, masks = feats[inverse], masks[inverse]
    return feats, masks


def tower_features(
    tower: Tower,
    products: Products,
    cache_dir: str | Path,
    view: str = "orig",
    opts: EncodeOptions | None = None,
    image_size: int | None = None,
    key: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of a frozen tower for every product, from the cache where present (float16 (N, D), mask (N,)).

    Args:
        key: the tower's cache key if already known (it hashes the weights; pass it to skip that work).
    """
    opts = opts or EncodeOptions()
    image = tower.modality == "image"
    size = image_size or (tower.preprocess.size if image else None)
    tkey = key or tower_key(tower, {"image_size": size} if image else None)
    t0 = time.perf_counter()
    if image:
        items = image_item_keys(
            products.image_paths, opts.image_choice, opts.max_images, products.roots, max_pixels=opts.max_pixels
        )
    else:
        items = text_item_keys(products.texts)

    def compute(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        require_writable(cache_dir, _CACHE)  # before encoding: what is encoded now must be stored
        with step(f"encoding {tower.modality} ({view})", len(positions)) as advance:
            return encode_products(tower, products.subset(positions), view, opts, size, progress=advance)

    try:  # only new features need a writable cache: one that holds them all may be read-only
        feats, masks, n_new = FeatureStore(cache_dir).get(tkey, view, items, compute)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            require_writable(cache_dir, _CACHE)  # a message that names the folder and the setting
        raise
    log.info(
        "%s features (%s view) for %d rows: %d computed, the rest from the cache (%.1f s)",
        tower.modality,
        view,
        len(items),
        n_new,
        time.perf_counter() - t0,
    )
    return feats, masks

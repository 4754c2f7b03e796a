"""The torch Dataset: reads one product row and applies the pluggable transforms."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from aisle.config.data_schema import MAX_IMAGE_PIXELS
from aisle.data.images import open_image, placeholder_image
from aisle.data.products import Products
from aisle.data.transforms import ImageTransform, TextTransform

__all__ = ["ImageReading", "Precomputed", "ProductDataset"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageReading:
    """How a dataset reads a product's images.

    Attributes:
        multi_image: ``first``; ``random`` (training only, evaluation uses the first); ``mean_pool`` (up to
            ``max_images``, for the model to pool).
        max_images: images per product for ``mean_pool``.
        placeholder_size: size of the placeholder image before the transform (and the JPEG draft size).
        max_pixels: decompression-bomb limit.
        jpeg_draft: decode JPEGs at the smallest DCT scale that is still >= ``placeholder_size`` (much faster
            for large photos; False decodes at full resolution).
    """

    multi_image: str = "first"  # first | random | mean_pool (DataConfig validates the choice)
    max_images: int = 4
    placeholder_size: int = 224
    max_pixels: int = MAX_IMAGE_PIXELS
    jpeg_draft: bool = True


@dataclass(frozen=True)
class Precomputed:
    """Work done once per run that a dataset reads instead of decoding or tokenizing.

    Attributes:
        image_features: cached image-tower features, one (N, D) array per view, and the has-image mask (N,):
            items then carry ``image_features`` (D,) and ``image_mask`` (1,) instead of pixels (training picks
            a random view per item, evaluation the first).
        text_features: cached text-tower features (N, D): items carry ``text_features`` instead of tokens.
        decoded: an ``aisle.cache.DecodedImages`` (first image per product, decoded once) to read pixels from.
        tokens: pre-tokenized texts (``{"input_ids": (N, T), "attention_mask": (N, T)}``).
    """

    image_features: tuple[list[np.ndarray], np.ndarray] | None = None
    text_features: np.ndarray | None = None
    decoded: Any = None
    tokens: dict[str, np.ndarray] | None = None

    def subset(self, idx: np.ndarray, views: int | None = None) -> Precomputed:
        """The same work for rows ``idx`` (and the first ``views`` image views)."""
        image = None
        if self.image_features is not None:
            feats, has = self.image_features
            image = ([f[idx] for f in feats[:views]], has[idx])
        return Precomputed(
            image,
            None if self.text_features is None else self.text_features[idx],
            None if self.decoded is None else self.decoded.subset(idx),
            None if self.tokens is None else {k: v[idx] for k, v in self.tokens.items()},
        )


class ProductDataset(Dataset):
    """One fixed dict per product.

    Keys:
        ``index`` (int): row position; ``id`` (str); ``label`` (int, -1 when unlabelled or unseen);
        ``text`` (str); ``image`` (tensor ``(K, 3, H, W)``, as the image transform leaves it: normalised float, or
        uint8 for the towers to normalise; K = 1, or ``max_images`` for ``mean_pool``);
        ``image_mask`` (bool tensor ``(K,)``: True where a real image was decoded); and whatever the
        text transform returns (e.g. ``input_ids``, ``attention_mask``).

    Missing or broken images become placeholders with ``image_mask`` False, logged at DEBUG level only: a
    run reports them once, up front, in one summary line and a CSV (``aisle.data.image_report``).

    Args:
        products: the resolved products.
        label_index: class index per row (``LabelMap.encode``); None: all -1.
        image_transform: PIL image -> tensor (3, H, W); None: no images (text-only models).
        text_transform: str -> dict of tensors; None: the raw text only.
        multi_image: ``first``; ``random`` (training only, evaluation uses the first); ``mean_pool`` (up to
            ``max_images``, for the model to pool).
        reading: how images are chosen and decoded.
        train: training mode (random image choice).
        precomputed: cached features, decoded pixels or tokens to read instead (see :class:`Precomputed`).
    """

    def __init__(
        self,
        products: Products,
        label_index: np.ndarray | None = None,
        image_transform: ImageTransform | None = None,
        text_transform: TextTransform | None = None,
        reading: ImageReading | None = None,
        train: bool = False,
        precomputed: Precomputed | None = None,
    ) -> None:
        self.products = products
        self.label_index = label_index if label_index is not None else np.full(len(products), -1, dtype=np.int64)
        if len(self.label_index) != len(products):
            raise ValueError(f"label_index has {len(self.label_index)} entries for {len(products)} products")
        self.image_transform = image_transform
        self.text_transform = text_transform
        self.reading = reading or ImageReading()
        self.train = train
        self.k = self.reading.max_images if self.reading.multi_image == "mean_pool" else 1
        pre = precomputed or Precomputed()
        self.image_features, self.text_features, self.tokens = pre.image_features, pre.text_features, pre.tokens
        self.decoded = pre.decoded if pre.image_features is None else None
        if self.decoded is not None and (self.reading.multi_image == "mean_pool" or len(self.decoded) != len(products)):
            raise ValueError("the decoded image cache holds one image per product: use multi_image first/random")

    def __len__(self) -> int:
        return len(self.products)

    def _choose_paths(self, paths: tuple[str, ...]) -> list[str | None]:
        if not paths:
            return [None]
        if self.reading.multi_image == "mean_pool":
            return list(paths[: self.k])
        if self.reading.multi_image == "random" and self.train:
            return [paths[np.random.randint(len(paths))]]
        return [paths[0]]

    def _load(self, pid: str, path: str | None, i: int):
        if self.decoded is not None:
            image = self.decoded.image(i)
            if image is None:
                log.debug("product %s: no usable image; using a placeholder", pid)
            return image
        reason: str | None
        if path is None:
            image, reason = None, "missing"
        else:
            # JPEGs decode at the smallest DCT scale still >= the working size: big photos decode several times faster
            draft = (self.reading.placeholder_size,) * 2 if self.reading.jpeg_draft else None
            image, reason = open_image(path, self.products.roots, self.reading.max_pixels, draft=draft)
        if image is None:  # reported once per run by aisle.data.image_report; here at DEBUG level only
            log.debug("product %s: image %s unusable (%s); using a placeholder", pid, path or "<none>", reason)
        return image

    def __getitem__(self, i: int) -> dict[str, object]:
        pid = str(self.products.ids[i])
        text = str(self.products.texts[i])
        item: dict[str, object] = {"index": i, "id": pid, "label": int(self.label_index[i]), "text": text}
        if self.image_features is not None:
            views, has = self.image_features
            v = np.random.randint(len(views)) if self.train and len(views) > 1 else 0
            item["image_features"] = torch.from_numpy(np.asarray(views[v][i], dtype=np.float32))  # (D,)
            item["image_mask"] = torch.tensor([bool(has[i])])  # (1,)
        elif self.image_transform is not None:
            tensors, mask = [], []
            for path in self._choose_paths(self.products.image_paths[i]):
                image = self._load(pid, path, i)
                mask.append(image is not None)
                tensors.append(
                    self.image_transform(
                        image if image is not None else placeholder_image(self.reading.placeholder_size)
                    )
                )
            while len(tensors) < self.k:  # pad mean_pool slots
                tensors.append(torch.zeros_like(tensors[0]))
                mask.append(False)
            item["image"] = torch.stack(tensors)  # (K, 3, H, W)
            item["image_mask"] = torch.tensor(mask, dtype=torch.bool)  # (K,)
        if self.text_features is not None:
            item["text_features"] = torch.from_numpy(np.asarray(self.text_features[i], dtype=np.float32))  # (D,)
        elif self.tokens is not None:
            item.update({k: torch.from_numpy(v[i]) for k, v in self.tokens.items()})
        elif self.text_transform is not None:
            item.update(self.text_transform(text))
        return item

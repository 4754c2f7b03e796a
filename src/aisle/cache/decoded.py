"""The decoded image cache: each product's image decoded and resized once into a uint8 memory map.

Large catalogue photos (1000 px JPEGs) cost far more to decode than to train on at 224 px; with this cache
every epoch after the first reads a small uint8 array and does its random crops and flips from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aisle.cache.keys import image_item_keys
from aisle.data.images import open_image
from aisle.data.products import Products

__all__ = ["DecodedImages"]

log = logging.getLogger(__name__)


class DecodedImages:
    """Rows of a (M, S, S, 3) uint8 memory map (short side resized to S, centre-cropped) and a has-image mask.

    Args:
        pixels: the memory map.
        mask: True where a real image was decoded.
        rows: memory-map row of each dataset position (``subset`` re-maps without copying).
    """

    def __init__(self, pixels: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> None:
        self.pixels, self.mask, self.rows = pixels, mask, rows

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: np.ndarray) -> DecodedImages:
        return DecodedImages(self.pixels, self.mask, self.rows[index])

    def image(self, i: int) -> torch.Tensor | None:
        """Row ``i`` as a uint8 (3, S, S) tensor (torchvision's transforms take it as an image), or None."""
        r = self.rows[i]
        return torch.from_numpy(np.array(self.pixels[r])).permute(2, 0, 1) if self.mask[r] else None

    @classmethod
    def build(
        cls, products: Products, size: int, cache_dir: str | Path, workers: int = 4, max_pixels: int = 89_478_485
    ) -> DecodedImages:
        """Decode each product's first image once (content-keyed on disk: a rebuild only when images change)."""
        keys = image_item_keys(products.image_paths, "first", 1)
        unique = sorted(set(keys))
        key = hashlib.blake2b(json.dumps([size, unique]).encode(), digest_size=16).hexdigest()
        folder = Path(cache_dir) / "decoded"
        folder.mkdir(parents=True, exist_ok=True)
        data, done = folder / f"{key}.u8", folder / f"{key}.json"
        row_of = {k: i for i, k in enumerate(unique)}
        rows = np.array([row_of[k] for k in keys], dtype=np.int64)
        shape = (len(unique), size, size, 3)
        if done.exists():
            mask = np.array(json.loads(done.read_text())["mask"], dtype=bool)
            return cls(np.memmap(data, dtype=np.uint8, mode="r", shape=shape), mask, rows)
        first_pos: dict[str, int] = {}
        for pos, k in enumerate(keys):
            first_pos.setdefault(k, pos)
        pixels = np.memmap(data, dtype=np.uint8, mode="w+", shape=shape)
        mask = np.zeros(len(unique), dtype=bool)

        def work(j: int) -> None:
            paths = products.image_paths[first_pos[unique[j]]]
            image = open_image(paths[0], products.roots, max_pixels, draft=(size, size))[0] if paths else None
            if image is None:
                return
            w, h = image.size
            scale = size / min(w, h)
            image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            pixels[j] = np.asarray(image.crop((left, top, left + size, top + size)))
            mask[j] = True

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(len(unique))))
        pixels.flush()
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"size": size, "mask": mask.tolist()}))
        os.replace(tmp, done)  # the marker goes last: a cut-off build is redone
        log.info("decoded image cache: %d images at %d px (%.0f MiB)", len(unique), size, pixels.nbytes / 2**20)
        return cls(np.memmap(data, dtype=np.uint8, mode="r", shape=shape), mask, rows)

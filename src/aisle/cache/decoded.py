"""The decoded image cache: each product's image decoded and resized once into a uint8 memory map.

Large catalogue photos (1000 px JPEGs) cost far more to decode than to train on at 224 px; with this cache
every epoch after the first reads a small uint8 array and does its random crops and flips from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
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
        """Decode each product's first image once (content-keyed on disk: a rebuild only when images change).

        A cache file whose size or checksum does not match what its build recorded is rebuilt (with a
        warning naming it): damaged pixels are never used.
        """
        keys = image_item_keys(products.image_paths, "first", 1, products.roots)
        unique = sorted(set(keys))
        key = hashlib.blake2b(json.dumps([size, unique]).encode(), digest_size=16).hexdigest()
        folder = Path(cache_dir) / "decoded"
        folder.mkdir(parents=True, exist_ok=True)
        data, done = folder / f"{key}.u8", folder / f"{key}.json"
        row_of = {k: i for i, k in enumerate(unique)}
        rows = np.array([row_of[k] for k in keys], dtype=np.int64)
        shape = (len(unique), size, size, 3)
        mask = _intact_mask(data, done, shape)
        if mask is None:
            first_pos: dict[str, int] = {}
            for pos, k in enumerate(keys):
                first_pos.setdefault(k, pos)
            paths = [products.image_paths[first_pos[k]] for k in unique]
            mask = _write(data, done, shape, paths, products.roots, workers, max_pixels)
        return cls(np.memmap(data, dtype=np.uint8, mode="r", shape=shape), mask, rows)


def _checksum(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _intact_mask(data: Path, done: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The has-image mask of a finished, undamaged build; None when it must be (re)built."""
    if not done.exists():
        return None  # never built, or cut off before its marker
    nbytes = int(np.prod(shape))
    try:
        meta = json.loads(done.read_text())
    except (OSError, ValueError):
        meta = None
    found = data.stat().st_size if data.is_file() else None
    if not isinstance(meta, dict) or "mask" not in meta:
        problem = "its marker is unreadable"
    elif found != nbytes:
        problem = f"{found or 0} bytes, {nbytes} expected"
    elif "blake2b" not in meta:
        log.info("decoded image cache %s has no checksum (an older build); rebuilding it", data)
        return None
    elif meta.get("bytes") != nbytes or meta.get("blake2b") != _checksum(data):
        problem = "its checksum does not match the one recorded when it was built"
    else:
        return np.array(meta["mask"], dtype=bool)
    log.warning("decoded image cache %s is damaged (%s); rebuilding it", data, problem)
    done.unlink(missing_ok=True)
    return None


def _write(
    data: Path,
    done: Path,
    shape: tuple[int, int, int, int],
    paths: list[tuple[str, ...]],
    roots: Sequence[Path],
    workers: int,
    max_pixels: int,
) -> np.ndarray:
    """Decode ``paths[j][0]`` into row ``j`` of a new data file, then record its size and checksum in the
    marker; return the has-image mask."""
    size = shape[1]
    tmp = data.with_name(data.name + ".tmp")
    pixels = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    mask = np.zeros(shape[0], dtype=bool)

    def work(j: int) -> None:
        image = open_image(paths[j][0], roots, max_pixels, draft=(size, size))[0] if paths[j] else None
        if image is None:
            return
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        pixels[j] = np.asarray(image.crop((left, top, left + size, top + size)))
        mask[j] = True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(shape[0])))
    pixels.flush()
    os.replace(tmp, data)  # a new file: readers of an old one keep their own pages
    nbytes = int(np.prod(shape))
    meta = {"size": size, "mask": mask.tolist(), "bytes": nbytes, "blake2b": _checksum(data)}
    marker = done.with_suffix(".tmp")
    marker.write_text(json.dumps(meta))
    os.replace(marker, done)  # the marker goes last: a cut-off build is redone
    log.info("decoded image cache: %d images at %d px (%.0f MiB)", shape[0], size, nbytes / 2**20)
    return mask

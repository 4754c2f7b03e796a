"""The decoded image cache: each product's first image decoded once into a uint8 memory map.

Large catalogue photos (1000 px JPEGs) cost far more to decode than to train on at 224 px; with this cache every
epoch after the first reads the decoded pixels and does its random crops and flips from there. Each image is
stored as the uncached path decodes it (JPEGs at the smallest DCT scale still >= the working size), with its own
width and height: nothing is upscaled or cropped, so the transforms see the same geometry (and for JPEGs the very
same pixels) as without the cache, and the cache never holds more pixels than its sources. Only an image whose
short side is over ``max_side`` (a large PNG, which has no DCT scales) is resized down, aspect kept.
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
from PIL import Image

from aisle.cache.keys import image_item_keys
from aisle.config.data_schema import MAX_IMAGE_PIXELS
from aisle.data.images import open_image
from aisle.data.products import Products

__all__ = ["DecodedImages"]

log = logging.getLogger(__name__)


class DecodedImages:
    """Ragged rows of a 1-D uint8 memory map: row ``r`` is an (h, w, 3) image at ``offsets[r]``, or no image.

    Args:
        pixels: the memory map.
        shapes: (M, 2) height and width of each stored image (0, 0: no usable image).
        rows: memory-map row of each dataset position (``subset`` re-maps without copying).
    """

    def __init__(self, pixels: np.ndarray, shapes: np.ndarray, rows: np.ndarray) -> None:
        self.pixels, self.shapes, self.rows = pixels, shapes, rows
        self.mask = shapes[:, 0] > 0
        self.offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1] * 3)])

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: np.ndarray) -> DecodedImages:
        return DecodedImages(self.pixels, self.shapes, self.rows[index])

    def image(self, i: int) -> Image.Image | None:
        """Position ``i``'s image as the uncached path would hand it to the transforms (an RGB PIL image), or
        None."""
        r = self.rows[i]
        if not self.mask[r]:
            return None
        h, w = (int(v) for v in self.shapes[r])
        return Image.fromarray(np.array(self.pixels[self.offsets[r] : self.offsets[r + 1]]).reshape(h, w, 3), "RGB")

    @classmethod
    def build(
        cls,
        products: Products,
        draft: int,
        cache_dir: str | Path,
        max_side: int | None = None,
        workers: int = 4,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> DecodedImages:
        """Decode each product's first image once (content-keyed on disk: a rebuild only when images change).

        Args:
            draft: the working size: JPEGs decode at the smallest DCT scale still >= it, as without the cache.
            max_side: images whose short side is larger are resized down to it (default: twice ``draft``).

        A cache file whose size or checksum does not match what its build recorded is rebuilt (with a warning
        naming it): damaged pixels are never used.
        """
        max_side = max_side or 2 * draft
        keys = image_item_keys(products.image_paths, "first", 1, products.roots, max_pixels=max_pixels)
        unique = sorted(set(keys))
        key = hashlib.blake2b(json.dumps([2, draft, max_side, unique]).encode(), digest_size=16).hexdigest()
        folder = Path(cache_dir) / "decoded"
        folder.mkdir(parents=True, exist_ok=True)
        data, done = folder / f"{key}.u8", folder / f"{key}.json"
        row_of = {k: i for i, k in enumerate(unique)}
        rows = np.array([row_of[k] for k in keys], dtype=np.int64)
        shapes = _intact_shapes(data, done, len(unique))
        if shapes is None:
            first_pos: dict[str, int] = {}
            for pos, k in enumerate(keys):
                first_pos.setdefault(k, pos)
            paths = [products.image_paths[first_pos[k]] for k in unique]
            shapes = _write(data, done, paths, products.roots, (draft, max_side), workers, max_pixels)
            _say_if_not_worth_it(shapes, draft)
        nbytes = int((shapes[:, 0] * shapes[:, 1]).sum() * 3)
        pixels = np.memmap(data, dtype=np.uint8, mode="r", shape=(nbytes,)) if nbytes else np.zeros(0, np.uint8)
        return cls(pixels, shapes, rows)


def _say_if_not_worth_it(shapes: np.ndarray, draft: int) -> None:
    """Small sources decode quickly every epoch: the cache then only costs its build and its disk."""
    have = shapes[shapes[:, 0] > 0]
    if len(have) and float(np.median(have.min(1))) < draft:
        h, w = np.median(have, axis=0)
        log.info(
            "decoded image cache: the images are small (median %d x %d px, under the working size %d): decoding "
            "them each epoch costs little, so data.decoded_cache: false would save the build and its disk",
            w,
            h,
            draft,
        )


def _checksum(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _intact_shapes(data: Path, done: Path, n: int) -> np.ndarray | None:
    """The (n, 2) image shapes of a finished, undamaged build; None when it must be (re)built."""
    if not done.exists():
        return None  # never built, or cut off before its marker
    try:
        meta = json.loads(done.read_text())
        shapes = np.array(meta["shapes"], dtype=np.int64).reshape(-1, 2)
    except (OSError, ValueError, KeyError, TypeError):
        meta, shapes = None, None
    nbytes = int((shapes[:, 0] * shapes[:, 1]).sum() * 3) if shapes is not None else -1
    found = data.stat().st_size if data.is_file() else None
    if meta is None or shapes is None or len(shapes) != n:
        problem = "its marker is unreadable"
    elif found != nbytes:
        problem = f"{found or 0} bytes, {nbytes} expected"
    elif meta.get("bytes") != nbytes or meta.get("blake2b") != _checksum(data):
        problem = "its checksum does not match the one recorded when it was built"
    else:
        return shapes
    log.warning("decoded image cache %s is damaged (%s); rebuilding it", data, problem)
    done.unlink(missing_ok=True)
    return None


def _decode(path: str, roots: Sequence[Path], draft: int, max_side: int, max_pixels: int) -> np.ndarray | None:
    """The image as the uncached path decodes it, resized down only when its short side is over ``max_side``."""
    image = open_image(path, roots, max_pixels, draft=(draft, draft))[0]
    if image is None:
        return None
    w, h = image.size
    if min(w, h) > max_side:
        scale = max_side / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _write(
    data: Path,
    done: Path,
    paths: list[tuple[str, ...]],
    roots: Sequence[Path],
    sizes: tuple[int, int],
    workers: int,
    max_pixels: int,
) -> np.ndarray:
    """Decode ``paths[j][0]`` and append it to a new data file in row order, then record the shapes, size and
    checksum in the marker; return the shapes."""
    draft, max_side = sizes
    tmp = data.with_name(data.name + ".tmp")
    shapes = np.zeros((len(paths), 2), dtype=np.int64)

    def work(j: int) -> np.ndarray | None:
        return _decode(paths[j][0], roots, draft, max_side, max_pixels) if paths[j] else None

    with open(tmp, "wb") as f, ThreadPoolExecutor(max_workers=workers) as pool:
        for j, pixels in enumerate(pool.map(work, range(len(paths)))):  # in order: rows are appended in turn
            if pixels is not None:
                shapes[j] = pixels.shape[:2]
                f.write(pixels.tobytes())
    os.replace(tmp, data)  # a new file: readers of an old one keep their own pages
    nbytes = int((shapes[:, 0] * shapes[:, 1]).sum() * 3)
    meta = {
        "draft": draft,
        "max_side": max_side,
        "shapes": shapes.tolist(),
        "bytes": nbytes,
        "blake2b": _checksum(data),
    }
    marker = done.with_suffix(".tmp")
    marker.write_text(json.dumps(meta))
    os.replace(marker, done)  # the marker goes last: a cut-off build is redone
    log.info("decoded image cache: %d images (%.0f MiB)", len(paths), nbytes / 2**20)
    return shapes

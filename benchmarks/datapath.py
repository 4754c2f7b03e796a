"""Data path: DataLoader samples/s on generated 1000x1000 JPEG catalogue photos, decoding every epoch vs the
decoded image cache (decode + resize once into a uint8 memory map, random crops and flips from there)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from aisle.cache.decoded import DecodedImages
from aisle.config import DataConfig
from aisle.data.dataset import ImageReading, Precomputed, ProductDataset
from aisle.data.loaders import Collate
from aisle.data.products import load_products
from aisle.data.transforms import build_image_transform
from aisle.models.base import ImagePreprocess, normalise_pixels


def _photos(folder: Path, n: int, side: int = 1000, seed: int = 0) -> Path:
    """Product-photo-like JPEGs: soft background gradient, a few shapes, sensor noise (~150-250 KB each)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for i in range(n):
        base = rng.uniform(150, 250, 3)
        img = (base[None, None] * (0.8 + 0.2 * xx[..., None] * yy[..., None])).clip(0, 255)
        im = Image.fromarray((img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x, y, r = [*rng.uniform(150, side - 150, 2).tolist(), float(rng.uniform(60, 250))]
            d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.save(folder / "images" / f"p{i:05d}.jpg", quality=90)
    pd.DataFrame({"id": [f"p{i:05d}" for i in range(n)], "title": "photo", "categories": "a"}).to_csv(
        folder / "products.csv", index=False
    )
    return folder / "products.csv"


def _epochs(ds: ProductDataset, epochs: int, normalise: bool, workers: int = 2) -> list[float]:
    """Samples/s per epoch out of the DataLoader; ``normalise``: each batch also normalised in this process, as an
    image tower does on its device (``normalise_pixels``; on a GPU machine that work leaves the CPU)."""
    pre = ImagePreprocess()
    loader = DataLoader(
        ds, batch_size=32, shuffle=True, num_workers=workers, persistent_workers=True, collate_fn=Collate()
    )
    rates = []
    for _ in range(epochs):
        t0, n = time.perf_counter(), 0
        for batch in loader:
            if normalise:
                normalise_pixels(batch["image"], pre)
            n += len(batch["id"])
        rates.append(n / (time.perf_counter() - t0))
    return rates


def run_datapath(work: Path, quick: bool) -> dict:
    n, epochs, size = (200, 2, 224) if quick else (1000, 3, 224)
    csv = _photos(work, n)
    products = load_products(csv, DataConfig())
    tf = build_image_transform(size, train=True, normalize=False)  # as the loaders run it: uint8 out of the workers
    t0 = time.perf_counter()
    decoded = DecodedImages.build(products, size, work / "cache")
    build_s = time.perf_counter() - t0
    ways = {
        "decode every epoch, full resolution": dict(reading=ImageReading(placeholder_size=size, jpeg_draft=False)),
        "decode every epoch (JPEG draft at working size, the default)": dict(
            reading=ImageReading(placeholder_size=size)
        ),
        "decoded image cache": dict(
            reading=ImageReading(placeholder_size=size), precomputed=Precomputed(decoded=decoded)
        ),
    }
    table, rates = [], {}
    for normalise in (False, True):
        for way, kwargs in ways.items():
            r = _epochs(ProductDataset(products, image_transform=tf, train=True, **kwargs), epochs, normalise)
            rates[way, normalise] = r
            table.append(
                {
                    "way": way,
                    "measured": "+ normalised in the consumer" if normalise else "out of the DataLoader",
                    **{f"epoch {e + 1} samples/s": round(v, 1) for e, v in enumerate(r)},
                }
            )
    table[-1]["cache build s"] = table[len(ways) - 1]["cache build s"] = round(build_s, 1)
    full, plain, cached = ways

    def ratio(a: str, b: str, normalise: bool) -> float:
        return round(min(rates[a, normalise][1:]) / max(rates[b, normalise][1:]), 1)

    return {
        "table": table,
        "setup": {
            "images": n,
            "photo side": 1000,
            "train size": size,
            "workers": 2,
            "batch": 32,
            "cache": "each image as the loaders decode it (JPEG draft), short side at most 2x the train size",
        },
        "ratio_from_second_epoch": ratio(cached, plain, False),
        "ratio_vs_full_resolution_decode": ratio(cached, full, False),
        "with_normalisation": {
            "ratio_from_second_epoch": ratio(cached, plain, True),
            "ratio_vs_full_resolution_decode": ratio(cached, full, True),
        },
        "targets": {">= 5x from the second epoch": ratio(cached, plain, False) >= 5},
    }

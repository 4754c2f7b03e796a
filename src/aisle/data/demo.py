"""A built-in synthetic product catalogue, small enough to train on in seconds on a CPU.

Each class is an (item, material) pair such as ``"Wool Cushion"``. The item is told only by the shape
drawn in the image (circle -> Cushion, square -> Box, triangle -> Tent); the material is told only by
the text (synonyms such as "merino" or "satin"). Neither modality alone can name the class, so an
image+text fusion model should beat either tower alone. A few images are missing or broken on purpose,
so the loaders' error handling has something to report.

Layout written under ``out_dir``::

    train.csv         id,title,description,categories
    test.csv          id,title,description
    test_labels.csv   id,categories
    images/<id>.jpg   one per product; some also have a second view <id>_1.jpg
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BROKEN_KINDS",
    "MATERIAL_WORDS",
    "SHAPE_ITEMS",
    "BrokenKind",
    "DemoSummary",
    "write_demo_catalogue",
]

log = logging.getLogger(__name__)

BrokenKind = Literal["missing", "empty_file", "truncated", "not_an_image"]
BROKEN_KINDS: tuple[BrokenKind, ...] = ("missing", "empty_file", "truncated", "not_an_image")

# Shape drawn in the image -> the item word in the class name. Item words never appear in the text.
SHAPE_ITEMS: dict[str, str] = {"circle": "Cushion", "square": "Box", "triangle": "Tent"}

# Material -> the words that may name it in the text. The image says nothing about material.
MATERIAL_WORDS: dict[str, tuple[str, ...]] = {
    "Wool": ("wool", "woollen", "woolly", "knit", "knitted", "merino", "tweed", "fleece"),
    "Silk": ("silk", "silken", "silky", "satin", "charmeuse", "chiffon", "habotai"),
}

# Relative class frequencies, in (material, shape) order: the largest is 2.5x the smallest.
_CLASS_WEIGHTS = (2.5, 1.0, 1.7, 1.3, 2.0, 1.15)

# Neutral filler. None of it may contain an item word even as a substring ("content" holds "tent").
_BRANDS = (
    "Nordhaus",
    "Lumo",
    "Casa Rilo",
    "Hearth & Co",
    "Mirela",
    "Okko",
    "Vanta Home",
    "Brindle",
    "Solenne",
    "Kiri",
    "Pellam",
    "Odalys",
)
_ADJECTIVES = (
    "cosy",
    "elegant",
    "classic",
    "modern",
    "soft",
    "handmade",
    "premium",
    "minimal",
    "rustic",
    "luxurious",
    "everyday",
    "lightweight",
    "durable",
    "timeless",
    "bright",
    "gentle",
    "refined",
)
_NOUNS = ("piece", "item", "essential", "design", "edition", "find", "favourite", "pick")
_CITIES = ("Lisbon", "Oslo", "Kyoto", "Porto", "Ghent", "Turin", "Bergen", "Leeds")
_NEUTRAL = (
    "Made by {brand} for everyday use.",
    "Ships in recyclable packaging.",
    "A {adj} addition to any home.",
    "Available in several colours.",
    "Designed in {city}.",
    "Easy to care for and built to last.",
    "A thoughtful gift for friends and family.",
    "Pairs well with the rest of the {brand} range.",
    "Customers love its {adj} look.",
    "Free returns within 30 days.",
)
# Templates that read well with a noun ("merino") or an adjective ("silken") in the {mat} slot.
_WITH_MATERIAL = (
    "The {mat} finish feels {adj} to the touch.",
    "A {mat} blend, {pct}% natural fibre.",
    "Part of our {mat} range, sourced responsibly.",
    "Soft {mat} texture with a {adj} look.",
    "Care: hand wash the {mat} fabric cold.",
)
_NOT_AN_IMAGE_TEXT = b"this is not an image, only text with a .jpg name\n"
_P_NO_MATERIAL = 0.05  # texts that are empty or name no material, so text alone is not perfect either
_EXTRA_VIEW_EVERY = 7  # every 7th product in each split gets a second image <id>_1.jpg
_NOISE_STD = 6.0
_MIN_CONTRAST = 140
# A typical fill colour per item (as product photos of one type share a look); jittered per image.
_ITEM_HUES = {
    "circle": (200, 60, 70),
    "square": (60, 170, 70),
    "triangle": (70, 80, 200),
}  # minimum L1 distance (over RGB) between shape and background colours


@dataclass(frozen=True)
class DemoSummary:
    """What ``write_demo_catalogue`` wrote.

    Attributes:
        out_dir: the catalogue folder.
        classes: the class names, sorted.
        n_train: rows in ``train.csv``.
        n_test: rows in ``test.csv`` (and ``test_labels.csv``).
        broken: product id -> how its image is broken: ``missing``, ``empty_file``, ``truncated`` or
            ``not_an_image``.
    """

    out_dir: Path
    classes: list[str]
    n_train: int
    n_test: int
    broken: dict[str, str]


@dataclass(frozen=True)
class _Product:
    id: str
    material: str
    shape: str
    title: str
    description: str
    n_views: int

    @property
    def category(self) -> str:
        return f"{self.material} {SHAPE_ITEMS[self.shape]}"


def _class_counts(n: int, rng: random.Random) -> list[int]:
    """Split ``n`` rows over the classes by ``_CLASS_WEIGHTS`` (largest remainder), each class >= 1 if n allows."""
    total = sum(_CLASS_WEIGHTS)
    exact = [n * w / total for w in _CLASS_WEIGHTS]
    counts = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), rng.random()))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    # Tiny n: lend one row from the largest class to any empty one so every class still appears.
    for i in range(len(counts)):
        if counts[i] == 0 and n >= len(counts):
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    return counts


def _make_text(material: str, rng: random.Random) -> tuple[str, str]:
    """A (title, description) that names the material, or ~5% of the time names none (or is empty)."""
    brand, adj, noun = rng.choice(_BRANDS), rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
    fill = {"brand": brand, "adj": rng.choice(_ADJECTIVES), "city": rng.choice(_CITIES)}
    neutral = [s.format(**fill) for s in rng.sample(_NEUTRAL, rng.randint(1, 3))]
    if rng.random() < _P_NO_MATERIAL:
        if rng.random() < 0.5:
            return "", ""
        return f"{brand} {adj} {noun}", " ".join(neutral)

    words = MATERIAL_WORDS[material]
    in_title, in_desc = rng.random() < 0.7, rng.random() < 0.7
    if not (in_title or in_desc):
        in_title = rng.random() < 0.5
        in_desc = not in_title
    title = f"{brand} {adj} {rng.choice(words)} {noun}" if in_title else f"{brand} {adj} {noun}"
    if in_desc:
        sentence = rng.choice(_WITH_MATERIAL).format(
            mat=rng.choice(words), adj=rng.choice(_ADJECTIVES), pct=rng.choice((60, 70, 80, 90, 100))
        )
        neutral.insert(rng.randint(0, len(neutral)), sentence)
    return title.title() if rng.random() < 0.2 else title, " ".join(neutral)


def _make_split(ids: Sequence[str], rng: random.Random) -> list[_Product]:
    pairs = [(m, s) for m in MATERIAL_WORDS for s in SHAPE_ITEMS]
    labels = [pair for pair, k in zip(pairs, _class_counts(len(ids), rng)) for _ in range(k)]
    rng.shuffle(labels)
    products = []
    for pos, (pid, (material, shape)) in enumerate(zip(ids, labels)):
        title, description = _make_text(material, rng)
        n_views = 2 if pos % _EXTRA_VIEW_EVERY == _EXTRA_VIEW_EVERY // 2 else 1
        products.append(_Product(pid, material, shape, title, description, n_views))
    return products


def _shape_points(shape: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    corners = 4 if shape == "square" else 3
    return [
        (cx + r * math.cos(theta + 2 * math.pi * k / corners), cy + r * math.sin(theta + 2 * math.pi * k / corners))
        for k in range(corners)
    ]


def _render(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One view of ``shape``: pale random background, a fill hue typical of the item (jittered), random
    position, scale, rotation and noise. Shape and hue both tell the item, never the material."""
    bg = rng.integers(150, 251) + rng.integers(-15, 16, 3)
    fg = np.asarray(_ITEM_HUES[shape]) + rng.integers(-45, 46, 3)
    while int(np.abs(fg - bg).sum()) < _MIN_CONTRAST:
        fg = np.asarray(_ITEM_HUES[shape]) + rng.integers(-45, 46, 3)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(image)
    r = float(rng.uniform(0.18, 0.3)) * size
    # Polygons are drawn on a larger circumradius so the three shapes cover similar areas.
    reach = r * {"circle": 1.0, "square": 1.25, "triangle": 1.5}[shape]
    margin = min(reach + 1, size / 2)
    cx, cy = rng.uniform(margin, size - margin, 2)
    colour = tuple(int(v) for v in fg)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon(_shape_points(shape, cx, cy, reach, float(rng.uniform(0, 2 * math.pi))), fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, _NOISE_STD, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def _jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _truncate_jpeg(data: bytes) -> bytes:
    """Half the bytes, but always past the scan header so PIL opens it and fails only while decoding."""
    start_of_scan = data.find(b"\xff\xda")
    cut = max(len(data) // 2, start_of_scan + 32)
    if start_of_scan < 0 or cut >= len(data) - 2:
        raise RuntimeError(f"cannot truncate a {len(data)}-byte JPEG inside its scan data")
    return data[:cut]


def _choose_broken(train: list[_Product], test: list[_Product], n_broken: int, rng: random.Random) -> dict[str, str]:
    """Pick single-view products in both splits (in proportion) and deal the kinds out in turn."""
    pools = [[p.id for p in split if p.n_views == 1] for split in (train, test)]
    if n_broken > sum(map(len, pools)):
        raise ValueError(f"n_broken={n_broken} exceeds the {sum(map(len, pools))} single-image products")
    n_test = min(len(pools[1]), round(n_broken * len(test) / max(1, len(train) + len(test))))
    if n_broken >= 2 and pools[1]:
        n_test = max(1, n_test)
    n_test = max(n_test, n_broken - len(pools[0]))
    chosen = rng.sample(pools[0], n_broken - n_test) + rng.sample(pools[1], n_test)
    kinds = [BROKEN_KINDS[i % len(BROKEN_KINDS)] for i in range(n_broken)]
    rng.shuffle(kinds)
    return dict(zip(chosen, kinds))


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_images(
    products: Sequence[_Product], image_dir: Path, size: int, broken: dict[str, str], rng: np.random.Generator
) -> int:
    """Write every product's views (or its broken stand-in); returns the number of readable images."""
    written = 0
    for p in products:
        # Render every view, even of products whose image is broken, so the random stream (and so the
        # other images) does not depend on which products are broken.
        views = [_render(p.shape, size, rng) for _ in range(p.n_views)]
        main, extra = image_dir / f"{p.id}.jpg", image_dir / f"{p.id}_1.jpg"
        if p.n_views == 1:
            extra.unlink(missing_ok=True)  # a stale second view from an earlier run would contradict the CSVs
        kind = broken.get(p.id)
        if kind == "missing":
            main.unlink(missing_ok=True)
        elif kind == "empty_file":
            main.write_bytes(b"")
        elif kind == "truncated":
            main.write_bytes(_truncate_jpeg(_jpeg_bytes(views[0])))
        elif kind == "not_an_image":
            main.write_bytes(_NOT_AN_IMAGE_TEXT)
        else:
            main.write_bytes(_jpeg_bytes(views[0]))
            written += 1
        for k, view in enumerate(views[1:], start=1):
            (image_dir / f"{p.id}_{k}.jpg").write_bytes(_jpeg_bytes(view))
            written += 1
    return written


def write_demo_catalogue(
    out_dir: str | Path,
    n_train: int = 600,
    n_test: int = 200,
    seed: int = 0,
    image_size: int = 64,
    n_broken: int | None = None,
) -> DemoSummary:
    """Write a synthetic product catalogue whose classes need both the image and the text.

    The same arguments always give byte-identical CSVs (and images). Files of the same names in
    ``out_dir`` are overwritten; other files there are left alone.

    Args:
        out_dir: folder to write into (created if needed).
        n_train: labelled training products; at least one per class.
        n_test: test products (labels go to ``test_labels.csv``); may be 0.
        seed: random seed.
        image_size: width and height of every image, in pixels (at least 16).
        n_broken: products whose main image is missing or broken, the four kinds dealt out in turn;
            None: ``max(4, 1%)`` of all products.

    Returns:
        A summary of what was written, including which images are broken and how.

    Raises:
        ValueError: a size or count is out of range.
    """
    n_classes = len(MATERIAL_WORDS) * len(SHAPE_ITEMS)
    if n_train < n_classes:
        raise ValueError(f"n_train={n_train}: need at least {n_classes} (one product per class)")
    if n_test < 0:
        raise ValueError(f"n_test={n_test}: must be >= 0")
    if image_size < 16:
        raise ValueError(f"image_size={image_size}: must be at least 16 pixels")
    total = n_train + n_test
    if n_broken is None:
        n_broken = max(len(BROKEN_KINDS), round(0.01 * total))
    if n_broken < 0:
        raise ValueError(f"n_broken={n_broken}: must be >= 0")

    rng = random.Random(seed)
    width = max(5, len(str(total)))
    ids = [f"p{i:0{width}d}" for i in range(1, total + 1)]
    train = _make_split(ids[:n_train], rng)
    test = _make_split(ids[n_train:], rng)
    broken = _choose_broken(train, test, n_broken, rng)

    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(
        out / "train.csv",
        ("id", "title", "description", "categories"),
        [(p.id, p.title, p.description, p.category) for p in train],
    )
    _write_csv(out / "test.csv", ("id", "title", "description"), [(p.id, p.title, p.description) for p in test])
    _write_csv(out / "test_labels.csv", ("id", "categories"), [(p.id, p.category) for p in test])
    n_images = _write_images(train + test, image_dir, image_size, broken, np.random.default_rng(seed))

    classes = sorted(f"{m} {item}" for m in MATERIAL_WORDS for item in SHAPE_ITEMS.values())
    kinds = ", ".join(f"{k}={sum(v == k for v in broken.values())}" for k in BROKEN_KINDS)
    log.info(
        "wrote demo catalogue to %s: %d train + %d test products, %d classes, %d readable %dpx images, "
        "%d broken (%s), seed %d",
        out,
        n_train,
        n_test,
        len(classes),
        n_images,
        image_size,
        len(broken),
        kinds,
        seed,
    )
    return DemoSummary(
        out_dir=out, classes=classes, n_train=n_train, n_test=n_test, broken=dict(sorted(broken.items()))
    )

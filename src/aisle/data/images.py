"""Finding product images on disk and opening them without ever stopping a run.

A product's images are ``<id>.<ext>`` and ``<id>_*.<ext>`` under the image folder (or one folder level
below it, e.g. ``train_images/train_images/``), or the paths in an image column (several separated by
``;``, relative to the CSV). Whatever cannot be opened is reported with a reason and replaced by a
placeholder; nothing outside the data root is ever read.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageIssue",
    "ImageProbe",
    "build_image_index",
    "is_inside",
    "open_image",
    "paths_from_column",
    "placeholder_image",
    "probe_image",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})

# Reasons an image could not be used; each is counted and reported.
MISSING = "missing"
EMPTY = "empty_file"
TRUNCATED = "truncated"
NOT_IMAGE = "not_an_image"
BOMB = "decompression_bomb"
OUTSIDE_ROOT = "outside_data_root"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ImageIssue:
    """One product image that could not be used."""

    id: str
    path: str
    reason: str


def _natural_key(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _scan(folder: Path) -> Iterable[os.DirEntry[str]]:
    """Image files directly in ``folder`` and in its immediate subfolders."""
    try:
        top = list(os.scandir(folder))
    except FileNotFoundError:
        raise FileNotFoundError(f"image folder {folder} does not exist; set data.image_dir") from None
    for entry in top:
        if entry.is_dir(follow_symlinks=False):
            with os.scandir(entry.path) as inner:
                yield from (e for e in inner if not e.is_dir(follow_symlinks=False))
        else:
            yield entry


def build_image_index(image_dir: str | Path, ids: Iterable[str]) -> dict[str, list[str]]:
    """Map each product id to its image files: ``<id>.<ext>`` first, then ``<id>_*.<ext>`` in natural order.

    Args:
        image_dir: the image folder; files one folder level down are found too.
        ids: the product ids to look for.

    Returns:
        ``{id: [path, ...]}`` for every id that has at least one image.
    """
    wanted = set(ids)
    exact: dict[str, list[str]] = {}
    extra: dict[str, list[str]] = {}
    for entry in _scan(Path(image_dir)):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in wanted:
            exact.setdefault(stem, []).append(entry.path)
            continue
        # <id>_<anything>: the id itself may contain underscores, so try every split point.
        # Try split points from the right so the longest matching id wins (ids "a" and "a_b": a_b_1.jpg is a_b's).
        pos = stem.rfind("_")
        while pos > 0:
            if stem[:pos] in wanted:
                extra.setdefault(stem[:pos], []).append(entry.path)
                break
            pos = stem.rfind("_", 0, pos)
    index: dict[str, list[str]] = {}
    for key in exact.keys() | extra.keys():
        index[key] = sorted(exact.get(key, []), key=_natural_key) + sorted(extra.get(key, []), key=_natural_key)
    return index


def paths_from_column(value: object, base_dir: str | Path, sep: str = ";") -> list[str]:
    """Split an image-column cell into paths, relative ones taken from ``base_dir``."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    out = []
    for part in str(value).split(sep):
        part = part.strip()
        if part:
            p = Path(part)
            out.append(str(p if p.is_absolute() else Path(base_dir) / p))
    return out


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(r) for r in roots)


@dataclass(frozen=True)
class ImageProbe:
    """What opening one image found: its size, or why it cannot be used."""

    ok: bool
    reason: str | None = None
    size: tuple[int, int] | None = None


def _decode(
    path: str | Path, roots: Sequence[Path], max_pixels: int, draft: tuple[int, int] | None
) -> tuple[Image.Image | None, str | None, tuple[int, int] | None]:
    """(RGB image or None, reason or None, size on disk or None)."""
    p = Path(path)
    if roots and not is_inside(p, roots):
        return None, OUTSIDE_ROOT, None
    try:
        if p.stat().st_size == 0:
            return None, EMPTY, None
    except FileNotFoundError:
        return None, MISSING, None
    except OSError:
        return None, UNREADABLE, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                size = im.size
                if im.width * im.height > max_pixels:
                    return None, BOMB, size
                if draft is not None:
                    im.draft("RGB", draft)
                im.load()
                return im.convert("RGB"), None, size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, BOMB, None
    except UnidentifiedImageError:
        return None, NOT_IMAGE, None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL says "image file is truncated" / "broken data stream" / "Truncated File Read" for cut-off files.
        msg = str(e).lower()
        return None, TRUNCATED if ("truncat" in msg or "broken data stream" in msg) else UNREADABLE, None


def open_image(
    path: str | Path, roots: Sequence[Path], max_pixels: int = 89_478_485, draft: tuple[int, int] | None = None
) -> tuple[Image.Image | None, str | None]:
    """Open and fully decode an image as RGB, or say why it cannot be used.

    Args:
        path: the image file.
        roots: folders the file must lie in (after resolving symlinks and ``..``); empty: no restriction.
        max_pixels: larger images are refused as decompression bombs.
        draft: decode JPEGs at reduced scale, at least this size (fast checks and small working sizes).

    Returns:
        (the RGB image, None) or (None, one of the reasons above).
    """
    image, reason, _ = _decode(path, roots, max_pixels, draft)
    return image, reason


def probe_image(path: str | Path, roots: Sequence[Path], max_pixels: int = 89_478_485) -> ImageProbe:
    """Check that an image decodes completely (JPEGs at reduced scale, which still reads every byte)."""
    image, reason, size = _decode(path, roots, max_pixels, draft=(32, 32))
    return ImageProbe(image is not None, reason, size)


def placeholder_image(size: int | tuple[int, int] = 224) -> Image.Image:
    """A mid-grey stand-in for a missing or broken image."""
    wh = (size, size) if isinstance(size, int) else size
    return Image.new("RGB", wh, (128, 128, 128))

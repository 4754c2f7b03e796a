"""Finding product images on disk and opening them without ever stopping a run.

A product's images are ``<id>.<ext>`` and ``<id>_*.<ext>`` under the image folder (or one folder level
below it, e.g. ``train_images/train_images/``), or the paths in an image column (several separated by
``;``, relative to the CSV). Whatever cannot be opened is reported with a reason and replaced by a
placeholder; nothing outside the data root is ever read.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aisle.config.data_schema import MAX_IMAGE_PIXELS

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageIssue",
    "ImageProbe",
    "as_rgb",
    "build_image_index",
    "decode_image_bytes",
    "file_problem",
    "image_files",
    "is_inside",
    "natural_key",
    "open_checked",
    "open_image",
    "paths_from_column",
    "placeholder_image",
    "probe_image",
]

log = logging.getLogger(__name__)

# GIF, WebP and TIFF files may hold several frames: the first one is the product's image.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# Reasons an image could not be used; each is counted and reported.
MISSING = "missing"
EMPTY = "empty_file"
TRUNCATED = "truncated"
NOT_IMAGE = "not_an_image"
BOMB = "decompression_bomb"
OUTSIDE_ROOT = "outside_data_root"
UNREADABLE = "unreadable"
NOT_A_FILE = "not_a_file"
REASONS = (MISSING, EMPTY, TRUNCATED, NOT_IMAGE, BOMB, OUTSIDE_ROOT, UNREADABLE, NOT_A_FILE)

_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})  # more than 8 bits per pixel
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class ImageIssue:
    """One product image that could not be used."""

    id: str
    path: str
    reason: str


def natural_key(s: str) -> list[object]:
    """Sort key that puts ``a_2`` before ``a_10``."""
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


def image_files(folder: str | Path) -> Iterator[str]:
    """Paths of the files with an image extension directly in ``folder`` and one level down."""
    for entry in _scan(Path(folder)):
        if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            yield entry.path


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
    for path in image_files(image_dir):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in wanted:
            exact.setdefault(stem, []).append(path)
            continue
        # <id>_<anything>: the id itself may contain underscores, so try every split point.
        # Try split points from the right so the longest matching id wins (ids "a" and "a_b": a_b_1.jpg is a_b's).
        pos = stem.rfind("_")
        while pos > 0:
            if stem[:pos] in wanted:
                extra.setdefault(stem[:pos], []).append(path)
                break
            pos = stem.rfind("_", 0, pos)
    index: dict[str, list[str]] = {}
    for key in exact.keys() | extra.keys():
        index[key] = sorted(exact.get(key, []), key=natural_key) + sorted(extra.get(key, []), key=natural_key)
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


def file_problem(path: str | Path, roots: Sequence[Path]) -> str | None:
    """Why a file may not be read, from the fence and ``stat`` alone (nothing is opened); None when it may.

    Args:
        path: the file.
        roots: folders it must lie in (after resolving symlinks and ``..``); empty: no restriction.

    Returns:
        None, or ``outside_data_root`` / ``missing`` / ``unreadable`` / ``not_a_file`` (a FIFO, device or
        folder: opening a FIFO would block forever) / ``empty_file``.
    """
    p = Path(path)
    if roots and not is_inside(p, roots):
        return OUTSIDE_ROOT
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return MISSING
    except OSError:
        return UNREADABLE
    if not stat.S_ISREG(st.st_mode):
        return NOT_A_FILE
    return EMPTY if st.st_size == 0 else None


def open_checked(path: str | Path, roots: Sequence[Path]) -> tuple[io.BufferedReader | None, str | None]:
    """Open a file for reading only once the fence and ``stat`` accept it: (binary file, None) or (None, reason).

    The file is opened non-blocking and checked again on the open descriptor, so a path swapped for a FIFO
    between the check and the open fails as ``not_a_file`` instead of hanging.
    """
    reason = file_problem(path, roots)
    if reason is not None:
        return None, reason
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, MISSING
    except OSError:
        return None, UNREADABLE
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, NOT_A_FILE
    return os.fdopen(fd, "rb"), None


@dataclass(frozen=True)
class ImageProbe:
    """What opening one image found: its size, or why it cannot be used."""

    ok: bool
    reason: str | None = None
    size: tuple[int, int] | None = None


_limit_lock = threading.Lock()


def _allow_pixels(max_pixels: int) -> None:
    """Let PIL open images up to ``max_pixels``: the limit is ours to apply (see ``_decode``), and PIL's own
    guard (a warning above ``Image.MAX_IMAGE_PIXELS``, an error above twice that) must not refuse an image
    under it. PIL reads the guard from a module global, so it is only ever raised, under a lock: lowering it
    back could race with another thread's open."""
    with _limit_lock:
        if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16/32-bit or float greyscale image as 8-bit ``L``, scaled by its real range (PIL would clip it to 255)."""
    a = np.asarray(im)
    out: np.ndarray
    if im.mode.startswith("I;16"):
        out = a.astype(np.uint16) >> 8
    elif im.mode == "I":  # 16-bit files open as "I" too: their range is 0..65535 unless the data says more
        out = np.clip(a, 0, None).astype(np.float64) * (255 / max(65535, int(a.max(initial=0))))
    else:  # "F": 0..1 is the usual float convention, else its own maximum
        out = np.nan_to_num(np.clip(a, 0, None), nan=0.0) * (255 / max(1.0, float(np.nanmax(a, initial=0.0))))
    return Image.fromarray(np.round(out).astype(np.uint8), "L")


def _to_rgb(im: Image.Image) -> Image.Image:
    """A loaded image as a new RGB image: EXIF orientation applied, wide greyscale scaled to 8 bits and
    transparency composited on white (product photos are shot on white; black would invent a dark frame)."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # a malformed EXIF block must not lose a decodable image
        log.debug("ignoring unreadable EXIF orientation", exc_info=True)
    if im.mode in _WIDE_MODES:
        im = _to_8bit(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")


def _decode_stream(
    f: BinaryIO, max_pixels: int, draft: tuple[int, int] | None
) -> tuple[Image.Image | None, str | None, tuple[int, int] | None]:
    """Decode an open image file (closed here): (RGB image or None, reason or None, size or None)."""
    _allow_pixels(max_pixels)
    try:
        with f, Image.open(f) as im:  # the first frame of an animated GIF/WebP or a multi-page TIFF
            size = im.size
            if im.width * im.height > max_pixels:
                return None, BOMB, size
            if draft is not None:
                im.draft("RGB", draft)
            im.load()
            return _to_rgb(im), None, size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, BOMB, None
    except UnidentifiedImageError:
        return None, NOT_IMAGE, None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL says "image file is truncated" / "broken data stream" / "Truncated File Read" for cut-off files.
        msg = str(e).lower()
        return None, TRUNCATED if ("truncat" in msg or "broken data stream" in msg) else UNREADABLE, None


def _decode(
    path: str | Path, roots: Sequence[Path], max_pixels: int, draft: tuple[int, int] | None
) -> tuple[Image.Image | None, str | None, tuple[int, int] | None]:
    """(RGB image or None, reason or None, size on disk or None)."""
    f, reason = open_checked(path, roots)
    if f is None:
        return None, reason, None
    return _decode_stream(f, max_pixels, draft)


def decode_image_bytes(
    data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, draft: tuple[int, int] | None = None
) -> tuple[Image.Image | None, str | None]:
    """Decode an image held in memory exactly as :func:`open_image` decodes a file: (RGB image, None) or
    (None, the reason it cannot be used)."""
    if not data:
        return None, EMPTY
    image, reason, _ = _decode_stream(io.BytesIO(data), max_pixels, draft)
    return image, reason


def as_rgb(image: Image.Image) -> Image.Image:
    """A PIL image handed over in memory, made RGB as a decoded file is (EXIF, wide greyscale, transparency);
    the caller's image is not changed."""
    return _to_rgb(image.copy())


def open_image(
    path: str | Path, roots: Sequence[Path], max_pixels: int = MAX_IMAGE_PIXELS, draft: tuple[int, int] | None = None
) -> tuple[Image.Image | None, str | None]:
    """Open and fully decode an image as RGB, or say why it cannot be used.

    The EXIF orientation is applied, 16-bit and float greyscale are scaled to 8 bits by their range,
    transparent pixels become white, and a multi-frame file gives its first frame. Nothing that is not a
    regular file inside ``roots`` is opened.

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


def probe_image(path: str | Path, roots: Sequence[Path], max_pixels: int = MAX_IMAGE_PIXELS) -> ImageProbe:
    """Check that an image decodes completely (JPEGs at reduced scale, which still reads every byte)."""
    image, reason, size = _decode(path, roots, max_pixels, draft=(32, 32))
    return ImageProbe(image is not None, reason, size)


def placeholder_image(size: int | tuple[int, int] = 224) -> Image.Image:
    """A mid-grey stand-in for a missing or broken image."""
    wh = (size, size) if isinstance(size, int) else size
    return Image.new("RGB", wh, (128, 128, 128))

"""One summary line for the unusable images of a run or a prediction, and a CSV that names every one.

The loaders meet a broken image once per epoch and per worker process, and not at all when its features come
from a cache, so reporting from there repeats itself and misses images. Instead the images a run will read
are checked once, up front: the fence and ``stat`` for every path (missing, empty, outside the data root, not a
regular file), then a decode at reduced scale for the rest (truncated, not an image, too many pixels). Decode
results are remembered per file (inode, size, times) in the cache folder, so a later run over the same files
only calls ``stat``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aisle.config import DataConfig
from aisle.config.data_schema import MAX_IMAGE_PIXELS
from aisle.data.images import MISSING, REASONS, ImageIssue, file_problem, probe_image
from aisle.data.products import Products
from aisle.progress import step

__all__ = ["images_read", "report_image_issues", "scan_image_issues", "summarise", "write_image_issues"]

log = logging.getLogger(__name__)

PROBE_MEMO = "image_probes.json"  # in the cache folder: decode results by file identity
_SHOWN_IDS = 10  # ids named in a summary line that has no CSV to point to


def images_read(multi_image: str, max_images: int, train: bool) -> int | None:
    """How many of a product's images are read: the first, up to ``max_images`` (``mean_pool``), or all of
    them (``random`` in training; evaluation takes the first). None: all."""
    if multi_image == "mean_pool":
        return max_images
    return None if multi_image == "random" and train else 1


def _memo_key(path: str, max_pixels: int) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{max_pixels}"


def _read_memo(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        log.debug("ignoring an unreadable image probe memo %s", path, exc_info=True)
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(path: Path, memo: dict[str, str]) -> None:
    """Replace the memo whole (concurrent runs only lose each other's entries); a memo that cannot be written
    costs the next run a decode, nothing more."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(memo, f)
        os.replace(f.name, path)
    except OSError:
        log.debug("could not write the image probe memo %s", path, exc_info=True)


def _decode_problems(
    jobs: Sequence[tuple[str, str]], products: Products, max_pixels: int, memo_path: Path | None, workers: int
) -> list[ImageIssue]:
    """Decode each (id, path) once (threads: PIL releases the GIL) unless the memo knows the file."""
    paths = sorted({p for _, p in jobs})
    keys = {p: _memo_key(p, max_pixels) for p in paths}
    memo = _read_memo(memo_path)
    todo = [p for p in paths if keys[p] is None or keys[p] not in memo]
    found: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool, step("checking images", len(todo)) as advance:
        for p, probe in zip(todo, pool.map(lambda p: probe_image(p, products.roots, max_pixels), todo)):
            found[p] = probe.reason or ""
            advance(1)
    for p, reason in found.items():
        key = keys[p]
        if key is not None:
            memo[key] = reason
    if found and memo_path is not None:
        _write_memo(memo_path, memo)
    reason_of = {p: found[p] if p in found else memo[keys[p] or ""] for p in paths}
    return [ImageIssue(pid, p, reason_of[p]) for pid, p in jobs if reason_of[p]]


def scan_image_issues(
    products: Products,
    per_product: int | None = 1,
    max_pixels: int = MAX_IMAGE_PIXELS,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> list[ImageIssue]:
    """Every unusable image a run over ``products`` would read, in table order.

    Args:
        products: the products; their ``refused`` paths (outside the data root) are included, and a product
            with no image file at all is ``missing`` (path ``""``).
        per_product: how many of each product's images are read (see :func:`images_read`); None: all.
        max_pixels: the decompression-bomb limit.
        cache_dir: where decode results are remembered (None: nothing is remembered).
        workers: decoding threads (default: the CPU count, at most 8).

    Returns:
        One :class:`ImageIssue` per unusable (product, image).
    """
    refused: dict[str, list[ImageIssue]] = {}
    for r in products.refused:
        refused.setdefault(r.id, []).append(r)
    with_refusals = set(refused)
    found: list[ImageIssue] = []
    to_decode: list[tuple[str, str]] = []
    for raw_id, paths in zip(products.ids, products.image_paths):
        pid = str(raw_id)
        found += refused.pop(pid, [])
        if not paths and pid not in with_refusals:  # its only paths were refused: counted once, as those
            found.append(ImageIssue(pid, "", MISSING))
        for p in paths[:per_product]:
            reason = file_problem(p, products.roots)
            if reason is None:
                to_decode.append((pid, p))
            else:
                found.append(ImageIssue(pid, p, reason))
    memo = Path(cache_dir) / PROBE_MEMO if cache_dir is not None else None
    decoded = _decode_problems(to_decode, products, max_pixels, memo, workers or min(8, os.cpu_count() or 1))
    order = {pid: k for k, pid in enumerate(dict.fromkeys(map(str, products.ids)))}
    return sorted(found + decoded, key=lambda i: order.get(i.id, len(order)))  # stable: a product's own order kept


def summarise(issues: Sequence[ImageIssue], n_products: int, csv_path: str | Path | None = None) -> str:
    """``images: 3 of 600 products have an unusable image (missing 2, truncated 1); ids in <csv_path>``
    (without a CSV, the first ids themselves)."""
    ids = list(dict.fromkeys(i.id for i in issues))
    if not ids:
        return f"images: all {n_products} products have a usable image"
    counts = Counter(i.reason for i in issues)
    reasons = [r for r in REASONS if r in counts] + sorted(set(counts) - set(REASONS))
    if csv_path is not None:
        where = f"ids in {csv_path}"
    else:
        where = "ids: " + ", ".join(ids[:_SHOWN_IDS]) + (", …" if len(ids) > _SHOWN_IDS else "")
    detail = ", ".join(f"{r} {counts[r]}" for r in reasons)
    return f"images: {len(ids)} of {n_products} products have an unusable image ({detail}); {where}"


def write_image_issues(issues: Sequence[ImageIssue], path: str | Path) -> Path:
    """``id,path,reason``, one row per unusable image (a header only when there is none)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "reason"])
        w.writerows((i.id, i.path, i.reason) for i in issues)
    return p


def report_image_issues(
    products: Products,
    cfg: DataConfig,
    train: bool,
    cache_dir: str | Path | None = None,
    csv_path: str | Path | None = None,
) -> list[ImageIssue]:
    """Scan the images a run reads, write them to ``csv_path`` (when given) and log one summary line.

    Args:
        products: the run's (or the prediction's) products.
        cfg: the data settings (``multi_image``, ``max_images``, ``max_image_pixels``).
        train: a training run (``random`` then reads every image of a product).
        cache_dir: where decode results are remembered.
        csv_path: the CSV to write (its path is named in the summary line instead of the ids).
    """
    per_product = images_read(cfg.multi_image, cfg.max_images, train)
    issues = scan_image_issues(products, per_product, cfg.max_image_pixels, cache_dir)
    if csv_path is not None:
        write_image_issues(issues, csv_path)
    log.log(logging.WARNING if issues else logging.INFO, "%s", summarise(issues, len(products), csv_path))
    return issues

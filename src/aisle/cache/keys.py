"""Cache keys: what a cached feature depends on, hashed.

A tower's key covers its class, name, weights and preprocessing (image size/mean/std/interpolation, tokenizer
vocabulary, max length, pooler); an item's key covers the bytes of the images it uses (for an image the
data-root fence refuses, the reason instead) or its text, and the multi-image settings. Change any of them and
the entry is simply not found, so it is computed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aisle.config.data_schema import MAX_IMAGE_PIXELS
from aisle.data.images import UNREADABLE, open_checked

__all__ = ["file_digest", "image_item_keys", "text_item_keys", "tower_key", "weights_digest"]


def _h(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def weights_digest(module: nn.Module | dict[str, torch.Tensor]) -> str:
    """Hash of every parameter and buffer (names, shapes, bytes) of a module or a state dict."""
    state = module if isinstance(module, dict) else module.state_dict()
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(
            t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous().numpy().tobytes()
        )
    return h.hexdigest()


def tower_key(tower: nn.Module, extra: dict[str, Any] | None = None) -> str:
    """Key of a tower's outputs: class, name, weights and preprocessing (plus ``extra``, e.g. image size)."""
    pre = getattr(tower, "preprocess", None)
    tok = getattr(tower, "tokenizer", None)
    vocab = None
    if tok is not None and hasattr(tok, "get_vocab"):
        vocab = _h(sorted(tok.get_vocab().items()))
    spec = {
        "class": type(tower).__name__,
        "name": getattr(tower, "name", None),
        "preprocess": pre.to_dict() if pre is not None else None,
        "vocab": vocab,
        "max_length": getattr(tower, "max_length", None),
        "pooler": getattr(tower, "pooler", None),
        "extra": extra or {},
    }
    if getattr(tower, "segments", 1) > 1:  # only then: every other tower keeps the keys it had
        spec["segments"] = tower.segments
    return _h(spec, weights_digest(tower))


def file_digest(path: str | None, roots: Sequence[Path]) -> str:
    """Content hash of a file the fence accepts, else why it is refused (``outside_data_root``, ``missing``,
    ``not_a_file``, ...; see ``aisle.data.images.file_problem``).

    A refused file never reads as its bytes: its features are never computed from it, and a valid image with
    the same bytes keeps a key of its own. Nothing but a regular file inside ``roots`` is opened.
    """
    if path is None:
        return "none"
    f, reason = open_checked(path, roots)
    if f is None:
        return reason or UNREADABLE
    try:
        with f:
            return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError:
        return UNREADABLE


def image_item_keys(
    image_paths: Sequence[tuple[str, ...]] | np.ndarray,
    mode: str,
    max_images: int,
    roots: Sequence[Path],
    workers: int = 4,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> list[str]:
    """One key per product from the bytes of the images it uses (``first``/``random`` use the first).

    Args:
        image_paths: per product, its image paths.
        mode: ``first`` / ``random`` / ``mean_pool``.
        max_images: images per product for ``mean_pool``.
        roots: the data roots (``Products.roots``): a path outside them is keyed by the refusal, not its bytes.
        workers: hashing threads.
        max_pixels: the decompression-bomb limit the images are read under (``data.max_image_pixels``): an image
            refused under one limit is a placeholder, so another limit is another key (the default keeps the keys
            made before it was part of them).
    """
    chosen = [tuple(p[:max_images]) if mode == "mean_pool" else tuple(p[:1]) for p in image_paths]
    flat = sorted({q for c in chosen for q in c})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = dict(zip(flat, pool.map(partial(file_digest, roots=roots), flat, chunksize=256)))
    limit = () if max_pixels == MAX_IMAGE_PIXELS else (("max_pixels", max_pixels),)
    return [_h(mode, max_images, *limit, [digests[q] for q in c]) for c in chosen]


def text_item_keys(texts: Sequence[str] | np.ndarray) -> list[str]:
    return [hashlib.blake2b(str(t).encode(), digest_size=16).hexdigest() for t in texts]

"""Cache keys: what a cached feature depends on, hashed.

A tower's key covers its class, name, weights and preprocessing (image size/mean/std/interpolation, tokenizer
vocabulary, max length, pooler); an item's key covers the bytes of the images it uses (or its text) and the
multi-image settings. Change any of them and the entry is simply not found, so it is computed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

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
    return _h(spec, weights_digest(tower))


def file_digest(path: str | None) -> str:
    """Content hash of a file ("missing" / "unreadable" when it cannot be read)."""
    if path is None:
        return "none"
    try:
        with open(path, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def image_item_keys(
    image_paths: Sequence[tuple[str, ...]] | np.ndarray, mode: str, max_images: int, workers: int = 4
) -> list[str]:
    """One key per product from the bytes of the images it uses (``first``/``random`` use the first)."""
    chosen = [tuple(p[:max_images]) if mode == "mean_pool" else tuple(p[:1]) for p in image_paths]
    flat = sorted({q for c in chosen for q in c})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = dict(zip(flat, pool.map(file_digest, flat, chunksize=256)))
    return [_h(mode, max_images, [digests[q] for q in c]) for c in chosen]


def text_item_keys(texts: Sequence[str] | np.ndarray) -> list[str]:
    return [hashlib.blake2b(str(t).encode(), digest_size=16).hexdigest() for t in texts]

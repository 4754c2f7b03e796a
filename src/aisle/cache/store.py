"""An on-disk feature store: per (tower key, view) a folder of shards (float16 ``.npy`` + JSON keys)."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["FeatureStore"]

log = logging.getLogger(__name__)


class FeatureStore:
    """Cached features keyed by item; new items are computed and appended as a new shard.

    Layout: ``root/<tower key>/<view>/<shard>.npy`` (float16, memory-mapped when read),
    ``<shard>.mask.npy`` (bool: a real image was decoded) and ``<shard>.keys.json``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _folder(self, tower: str, view: str) -> Path:
        return self.root / tower / view

    def _index(self, folder: Path) -> dict[str, tuple[str, int]]:
        index: dict[str, tuple[str, int]] = {}
        for keys_file in sorted(folder.glob("*.keys.json")):
            shard = keys_file.name[: -len(".keys.json")]
            if not (folder / f"{shard}.npy").exists():
                continue  # a shard cut off while being written
            for row, key in enumerate(json.loads(keys_file.read_text())):
                index[key] = (shard, row)
        return index

    def get(
        self, tower: str, view: str, keys: Sequence[str], compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Features and masks for ``keys`` (in order), computing only the missing ones.

        Args:
            tower: the tower key.
            view: the augmentation view name (``orig``, ``hflip``...).
            keys: one key per item (duplicates allowed).
            compute: given the positions of missing items, returns their (features (M, D), masks (M,)).

        Returns:
            (features float16 (N, D), masks bool (N,), number of items computed now).
        """
        folder = self._folder(tower, view)
        folder.mkdir(parents=True, exist_ok=True)
        index = self._index(folder)
        missing_keys = sorted({k for k in keys if k not in index})
        first_pos: dict[str, int] = {}
        for i, k in enumerate(keys):
            first_pos.setdefault(k, i)
        if missing_keys:
            positions = np.array([first_pos[k] for k in missing_keys])
            feats, masks = compute(positions)
            shard = uuid.uuid4().hex[:12]
            # data first, keys last (atomically): a shard without its keys file is ignored
            np.save(folder / f"{shard}.npy", feats.astype(np.float16))
            np.save(folder / f"{shard}.mask.npy", masks.astype(bool))
            tmp = folder / f"{shard}.keys.json.tmp"
            tmp.write_text(json.dumps(missing_keys))
            os.replace(tmp, folder / f"{shard}.keys.json")
            index.update({k: (shard, i) for i, k in enumerate(missing_keys)})
        shards = {
            s: (np.load(folder / f"{s}.npy", mmap_mode="r"), np.load(folder / f"{s}.mask.npy", mmap_mode="r"))
            for s in {index[k][0] for k in keys}
        }
        dim = next(iter(shards.values()))[0].shape[1] if shards else 0
        shard_of = np.array([index[k][0] for k in keys], dtype=object)
        rows = np.array([index[k][1] for k in keys], dtype=np.int64)
        out = np.empty((len(keys), dim), dtype=np.float16)
        mask = np.empty(len(keys), dtype=bool)
        for s, (f, m) in shards.items():
            pos = np.flatnonzero(shard_of == s)
            pos = pos[np.argsort(rows[pos])]  # ascending reads from the memory map
            out[pos] = f[rows[pos]]
            mask[pos] = m[rows[pos]]
        return out, mask, len(missing_keys)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

"""An on-disk feature store: per (tower key, view) a folder of shards (float16 ``.npy`` + JSON keys)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["FeatureStore"]

log = logging.getLogger(__name__)


def _keys_digest(keys: list[str]) -> str:
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureStore:
    """Cached features keyed by item; new items are computed and appended as a new shard.

    Layout: ``root/<tower key>/<view>/<shard>.npy`` (float16, memory-mapped when read),
    ``<shard>.mask.npy`` (bool: a real image was decoded) and ``<shard>.keys.json`` (the keys and both files'
    SHA-256, written last).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._checked: dict[tuple[Path, str], tuple] = {}

    def _folder(self, tower: str, view: str) -> Path:
        return self.root / tower / view

    def _index(self, folder: Path) -> dict[str, tuple[str, int]]:
        index: dict[str, tuple[str, int]] = {}
        for keys_file in sorted(folder.glob("*.keys.json")):
            shard = keys_file.name[: -len(".keys.json")]
            if not (folder / f"{shard}.npy").exists():
                continue  # a shard cut off while being written
            entry = self._entry(keys_file)
            if entry is None:
                self._drop(folder, shard, "its keys file is not valid")
                continue
            for row, key in enumerate(entry["keys"]):
                index[key] = (shard, row)
        return index

    @staticmethod
    def _entry(keys_file: Path) -> dict | None:
        try:
            entry = json.loads(keys_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None
        ok = isinstance(entry, dict) and isinstance(entry.get("keys"), list) and isinstance(entry.get("sha256"), dict)
        return entry if ok else None

    def _verified(self, folder: Path, shard: str) -> bool:
        """Whether a shard's files hold exactly what was written (checked once per process and file version)."""
        files = [folder / f"{shard}.npy", folder / f"{shard}.mask.npy"]
        try:
            stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        except OSError:
            return False
        if self._checked.get((folder, shard)) == stamp:
            return True
        entry = self._entry(folder / f"{shard}.keys.json")
        sums = entry["sha256"] if entry is not None else {}
        if [_sha256(f) for f in files] + [_keys_digest(entry["keys"] if entry else [])] != [
            sums.get("data"),
            sums.get("mask"),
            sums.get("keys"),
        ]:
            return False
        self._checked[(folder, shard)] = stamp
        return True

    @staticmethod
    def _drop(folder: Path, shard: str, why: str) -> None:
        log.warning("feature cache: shard %s in %s is damaged (%s); it is removed and recomputed", shard, folder, why)
        for suffix in (".keys.json", ".npy", ".mask.npy"):
            (folder / f"{shard}{suffix}").unlink(missing_ok=True)

    def _write(self, folder: Path, keys: list[str], feats: np.ndarray, masks: np.ndarray) -> str:
        shard = uuid.uuid4().hex[:12]
        data, mask = folder / f"{shard}.npy", folder / f"{shard}.mask.npy"
        # data first, keys + checksums last (atomically): a shard without its keys file is ignored
        np.save(data, feats.astype(np.float16))
        np.save(mask, masks.astype(bool))
        entry = {"keys": keys, "sha256": {"data": _sha256(data), "mask": _sha256(mask), "keys": _keys_digest(keys)}}
        tmp = folder / f"{shard}.keys.json.tmp"
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, folder / f"{shard}.keys.json")
        return shard

    def _valid_index(self, folder: Path, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        """The index, without the shards of ``keys`` that fail their checksum (those are removed)."""
        index = self._index(folder)
        bad = {s for s in {index[k][0] for k in keys if k in index} if not self._verified(folder, s)}
        for s in bad:
            self._drop(folder, s, "its contents do not match their checksum")
        return {k: v for k, v in index.items() if v[0] not in bad}

    def get(
        self, tower: str, view: str, keys: Sequence[str], compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Features and masks for ``keys`` (in order), computing only the missing ones.

        A shard whose files do not match the checksums written with them is removed and its items computed
        again: a damaged cache never feeds a model.

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
        index = self._valid_index(folder, keys)
        missing_keys = sorted({k for k in keys if k not in index})
        first_pos: dict[str, int] = {}
        for i, k in enumerate(keys):
            first_pos.setdefault(k, i)
        if missing_keys:
            feats, masks = compute(np.array([first_pos[k] for k in missing_keys]))
            shard = self._write(folder, missing_keys, feats, masks)
            index.update({k: (shard, i) for i, k in enumerate(missing_keys)})
        return (*self._gather(folder, index, keys), len(missing_keys))

    @staticmethod
    def _gather(folder: Path, index: dict[str, tuple[str, int]], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
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
        return out, mask

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

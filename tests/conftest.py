"""Shared fixtures: a tiny products catalogue (CSV + real image files) written into ``tmp_path``."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]

# the tiny fusion model of the end-to-end tests: random test_resnet at 32 px + tiny BERT, trains in seconds
TINY_FUSION = {
    "type": "fusion",
    "image_size": 32,
    "head_hidden": 16,
    "image": {"name": "timm:test_resnet", "pretrained": False},
    "text": {"name": "tiny:bert", "max_length": 16},
}

# A spec for one image file: an RGB colour (a real 16x16 image of that colour) or one of these broken kinds.
BROKEN_KINDS = ("empty", "truncated", "text")


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> Path:
    """A real solid-colour image; the format follows the extension (.jpg/.jpeg -> JPEG, else PNG/WebP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]
    Image.new("RGB", (size, size), color).save(path, format=fmt)
    return path


def noise_jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    """A JPEG of random noise: the entropy-coded data is most of the file, so cutting it in half cuts the scan."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_broken(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = noise_jpeg_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not an image\n")
    else:
        raise ValueError(f"unknown broken kind {kind!r}; one of {BROKEN_KINDS}")
    return path


def write_file(path: Path, spec: str | tuple[int, int, int]) -> Path:
    return write_broken(path, spec) if isinstance(spec, str) else write_image(path, spec)


def write_csv(path: Path, rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


@dataclass(frozen=True)
class Catalogue:
    root: Path
    csv: Path
    images: Path


@pytest.fixture
def make_catalogue(tmp_path: Path) -> Callable[..., Catalogue]:
    """Factory: ``make_catalogue(rows, images={"a.jpg": (r, g, b) | "empty" | "truncated" | "text"})``.

    Writes ``<tmp>/<subdir>/train.csv`` and the image files under ``<tmp>/<subdir>/images/``.
    """

    def make(
        rows: Sequence[Mapping[str, object]],
        images: Mapping[str, str | tuple[int, int, int]] | None = None,
        csv_name: str = "train.csv",
        subdir: str = "data",
        columns: Sequence[str] | None = None,
    ) -> Catalogue:
        root = tmp_path / subdir
        image_dir = root / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        for name, spec in (images or {}).items():
            write_file(image_dir / name, spec)
        return Catalogue(root, write_csv(root / csv_name, rows, columns), image_dir)

    return make


def labelled_rows(n_per_class: Mapping[str, int], prefix: str = "p") -> list[dict[str, object]]:
    """Rows ``{id, title, categories}`` with ``n`` rows per class, classes interleaved."""
    rows: list[dict[str, object]] = []
    counters = dict.fromkeys(n_per_class, 0)
    while any(counters[c] < n for c, n in n_per_class.items()):
        for c, n in n_per_class.items():
            if counters[c] < n:
                rows.append({"id": f"{prefix}{len(rows)}", "title": f"item {len(rows)}", "categories": c})
                counters[c] += 1
    return rows


def save_tiny_clip(folder: Path, texts: Sequence[str] = ("a photo",)) -> Path:
    """A whole tiny random ``CLIPModel`` (text projection 24 wide) and its word tokenizer, saved as a checkpoint
    folder is (``save_pretrained``): what ``hf:openai/clip-vit-base-patch32`` is, offline."""
    from aisle.models.dual import _tiny_hf_dual

    model, tokenizer = _tiny_hf_dual("clip", texts, 32, None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""A products table resolved into arrays: ids, texts, labels, image paths (and folds, later)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.data.images import (
    IMAGE_EXTENSIONS,
    OUTSIDE_ROOT,
    ImageIssue,
    build_image_index,
    image_files,
    is_inside,
    natural_key,
    paths_from_column,
)
from aisle.data.schema import ProductSchema, build_texts, infer_schema
from aisle.tables import read_table

__all__ = [
    "Products",
    "find_image_dir",
    "image_folder_frame",
    "load_products",
    "products_from_frame",
    "read_class_folder",
    "read_image_folder",
]

log = logging.getLogger(__name__)


@dataclass
class Products:
    """Products as parallel numpy arrays (cheap to share with forked DataLoader workers).

    Attributes:
        ids: product ids as strings, in input order (duplicates kept).
        texts: joined text per product ("" when none).
        labels: raw label values as strings, None where unlabelled; None when the table has no label column.
        image_paths: per product a tuple of image paths (possibly empty).
        schema: the resolved columns.
        source: where the table came from (for messages).
        roots: folders images may be read from; anything resolving outside them is refused.
        refused: image paths refused while resolving (outside the data root).
        frame: the original table.
    """

    ids: np.ndarray
    texts: np.ndarray
    labels: np.ndarray | None
    image_paths: np.ndarray
    schema: ProductSchema
    source: str
    roots: tuple[Path, ...]
    refused: list[ImageIssue] = field(default_factory=list)
    frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def duplicate_ids(self) -> list[str]:
        s = pd.Series(self.ids)
        return sorted(set(s[s.duplicated()]))

    def join(self, other: Products) -> Products:
        """These rows, then ``other``'s (this table's schema; images may come from either's folders)."""
        labels = None
        if self.labels is not None or other.labels is not None:
            labels = np.concatenate(
                [p.labels if p.labels is not None else np.full(len(p), None, dtype=object) for p in (self, other)]
            )
        return Products(
            ids=np.concatenate([self.ids, other.ids]),
            texts=np.concatenate([self.texts, other.texts]),
            labels=labels,
            image_paths=np.concatenate([self.image_paths, other.image_paths]),
            schema=self.schema,
            source=f"{self.source} + {other.source}",
            roots=tuple(dict.fromkeys((*self.roots, *other.roots))),
            refused=[*self.refused, *other.refused],
            frame=None,  # two tables' columns and line numbers do not make one table
        )

    def subset(self, index: np.ndarray) -> Products:
        """Rows ``index`` (positions) as a new ``Products``."""
        kept_ids = set(self.ids[index]) if self.refused else set()
        return Products(
            ids=self.ids[index],
            texts=self.texts[index],
            labels=None if self.labels is None else self.labels[index],
            image_paths=self.image_paths[index],
            schema=self.schema,
            source=self.source,
            roots=self.roots,
            refused=[r for r in self.refused if r.id in kept_ids],
            frame=None if self.frame is None else self.frame.iloc[index],  # original index: CSV line numbers
        )


def _as_text(v: object) -> str | None:
    """A cell as the exact string in the file (None when empty); numbers from a DataFrame become their text."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, bytes):
        return v.decode()
    return str(v)


def _ids(col: pd.Series, source: str) -> np.ndarray:
    """Ids exactly as given; an empty (or blank) id is an error naming its lines."""
    ids = np.array([_as_text(v) for v in col], dtype=object)
    empty = np.array([v is None or not v.strip() for v in ids])
    if empty.any():
        rows = (np.flatnonzero(empty) + 2).tolist()[:10]  # +2: header line and 1-based lines
        raise ValueError(f"{source}: {int(empty.sum())} row(s) have an empty id (CSV lines {rows}); fill or drop them")
    return ids


def _labels(col: pd.Series) -> np.ndarray:
    """Labels exactly as given; an empty or blank cell is no label."""
    return np.array([v if v is not None and v.strip() else None for v in map(_as_text, col)], dtype=object)


def find_image_dir(table_path: Path) -> Path | None:
    """The conventional image folder beside a table: ``images/`` or ``<stem>_images/``."""
    for name in ("images", f"{table_path.stem}_images"):
        cand = table_path.parent / name
        if cand.is_dir():
            return cand
    return None


def products_from_frame(
    df: pd.DataFrame,
    cfg: DataConfig,
    base_dir: str | Path,
    image_dir: str | Path | None = None,
    source: str = "table",
    require_label: bool = False,
    extra_roots: Sequence[Path] = (),
) -> Products:
    """Resolve a products DataFrame.

    Args:
        df: the table.
        cfg: data settings (columns, text joining, image column separator).
        base_dir: relative paths in the image column start here (the table's folder); it is a data root.
        image_dir: folder with ``<id>.<ext>`` / ``<id>_*.<ext>`` images (used when there is no image column).
        source: a name for messages.
        require_label: raise if there is no label column.
        extra_roots: more folders images may be read from (besides ``base_dir`` and ``image_dir``).

    Raises:
        ValueError: missing/empty ids or columns (the message names the rows or columns).
    """
    schema = infer_schema(df, cfg, source, require_label=require_label)
    if len(df) == 0:
        raise ValueError(f"{source}: the table has a header but no rows; nothing to read")
    ids = _ids(df[schema.id_col], source)
    texts = build_texts(df, schema, cfg.text_sep)
    labels = None if schema.label_col is None else _labels(df[schema.label_col])

    base = Path(base_dir).resolve()
    roots: list[Path] = [base, *(Path(r).resolve() for r in extra_roots)]
    refused: list[ImageIssue] = []
    if schema.image_col is not None:
        per_row = []
        for pid, cell in zip(ids, df[schema.image_col].to_numpy(dtype=object)):
            kept = []
            for p in paths_from_column(cell, base, cfg.image_sep):
                if is_inside(Path(p), roots):
                    kept.append(p)
                else:
                    refused.append(ImageIssue(pid, p, OUTSIDE_ROOT))
            per_row.append(tuple(kept))
    else:
        if image_dir is not None:
            idir = Path(image_dir).resolve()
            roots.append(idir)
            index = build_image_index(idir, ids)
        else:
            index = {}
        per_row = [tuple(index.get(pid, ())) for pid in ids]
    if refused:
        log.warning(
            "%s: refused %d image path(s) outside the data root %s (first: %s)",
            source,
            len(refused),
            [str(r) for r in roots],
            refused[0].path,
        )
    image_paths = np.empty(len(ids), dtype=object)
    image_paths[:] = per_row
    return Products(ids, texts, labels, image_paths, schema, source, tuple(roots), refused, frame=df)


def load_products(
    path: str | Path, cfg: DataConfig, require_label: bool = False, frame: pd.DataFrame | None = None
) -> Products:
    """Read a products CSV/parquet and resolve it (image folder: ``data.image_dir`` or the one beside it).

    Args:
        frame: the table already read from ``path`` (not read again).
    """
    p = Path(path)
    df = frame if frame is not None else read_table(p, cfg.sep, cfg.encoding)
    image_dir: Path | None = Path(cfg.image_dir) if cfg.image_dir else find_image_dir(p)
    if cfg.image_dir and image_dir is not None and not image_dir.is_dir():
        raise FileNotFoundError(f"data.image_dir {image_dir} does not exist")
    return products_from_frame(
        df, cfg, cfg.data_root or p.parent, image_dir, source=str(p), require_label=require_label
    )


def _sidecar_text(image: Path) -> str:
    """The text of a ``<stem>.txt`` beside an image ("" when there is none)."""
    side = image.with_suffix(".txt")
    return side.read_text(errors="replace").strip() if side.is_file() else ""


def image_folder_frame(root: str | Path) -> pd.DataFrame:
    """A folder of images to predict, as a table: one row per image file directly in ``root`` or one folder
    down (a class tree works too), its id the file's path inside ``root`` (``shirts/a1.jpg``: unique, and the
    file it names), an ``image`` column with the same path and a ``text`` column from a ``<stem>.txt`` beside it.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no image files in it.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"image folder {r} does not exist")
    rows = []
    for path in sorted(image_files(r), key=natural_key):
        rel = Path(path).relative_to(r).as_posix()
        rows.append({"id": rel, "text": _sidecar_text(Path(path)), "image": rel})
    if not rows:
        raise ValueError(
            f"{r} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or one folder down: pass a "
            f"products table (--data TABLE) or a folder of images"
        )
    return pd.DataFrame(rows)


def read_image_folder(root: str | Path, cfg: DataConfig, frame: pd.DataFrame | None = None) -> Products:
    """A folder of images to predict (:func:`image_folder_frame`) as products; ``cfg`` says which text columns
    are read (``text``, or none) and how, the folder's layout sets the rest.

    Args:
        frame: the folder's table, already read by :func:`image_folder_frame` (not read again).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no image files in it.
    """
    layout = {"id_col": "id", "label_col": None, "image_col": "image", "image_dir": None}
    folder_cfg = cfg.model_copy(update=layout)
    df = image_folder_frame(root) if frame is None else frame
    return products_from_frame(df, folder_cfg, root, source=str(root))


def read_class_folder(root: str | Path, cfg: DataConfig) -> Products:
    """Read a folder-per-class tree ``root/<class>/*.jpg`` as labelled products.

    The id of an image is ``<class>/<file stem>``; a ``<stem>.txt`` beside an image becomes its text. Class
    descriptions (``data.class_texts``) are read by :mod:`aisle.data.class_texts`, for any data source.

    Raises:
        FileNotFoundError: the root does not exist.
        ValueError: no class folders with images.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"class folder root {r} does not exist")
    rows = []
    for class_dir in sorted(d for d in r.iterdir() if d.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append(
                    {
                        "id": f"{class_dir.name}/{f.stem}",
                        "label": class_dir.name,
                        "text": _sidecar_text(f),
                        "image": str(f.relative_to(r)),
                    }
                )
    if not rows:
        raise ValueError(f"class folder root {r} has no <class>/<image> files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    df = pd.DataFrame(rows)
    folder_cfg = cfg.model_copy(
        update={
            "id_col": "id",
            "label_col": "label",
            "text_cols": ["text"],
            "image_col": "image",
            "text_prefixes": {},
            "attribute_cols": None,
        }
    )
    return products_from_frame(df, folder_cfg, r, source=str(r), require_label=True)

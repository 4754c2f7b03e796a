"""A small products DataFrame as the items the in-memory predictor takes (texts by column, images by path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from aisle.config import DataConfig
from aisle.data.images import paths_from_column
from aisle.data.schema import ProductSchema, infer_schema
from aisle.inference.inputs import trained_text_columns
from aisle.inference.predictor import FolderImages, Predictor

__all__ = ["frame_items"]


def _image_lookup(
    df: pd.DataFrame,
    schema: ProductSchema,
    image_dir: str | Path | None,
    folders: dict[Path, FolderImages],
) -> list[list[str]]:
    """Each row's image paths: its image column (relative to ``image_dir``'s parent, else the working folder),
    else ``<id>.<ext>`` / ``<id>_*`` under ``image_dir`` (default ``images/``), listed once per folder."""
    if schema.image_col is not None:
        base = Path(image_dir).parent if image_dir else Path(".")
        return [paths_from_column(v, base) for v in df[schema.image_col]]
    folder = Path(image_dir) if image_dir else Path("images")
    if not folder.is_dir():
        return [[] for _ in range(len(df))]
    key = folder.resolve()
    if key not in folders:
        folders[key] = FolderImages(key)
    return [folders[key].get(str(pid)) for pid in df[schema.id_col]]


def frame_items(
    df: pd.DataFrame,
    p: Predictor,
    image_dir: str | Path | None,
    folders: dict[Path, FolderImages],
    allow_missing_text: bool = False,
) -> list[dict[str, Any]]:
    """One item per row, in order: ``id``, the run's text columns and ``image`` (a list of paths, or None).

    Raises:
        ValueError: no id column, or a text column the run was trained with is absent (unless allowed).
    """
    cols = trained_text_columns(df, p.text_columns, allow_missing_text, "DataFrame")
    image_col = p.image_col if p.image_col in df.columns else None
    schema = infer_schema(df, DataConfig(text_cols=cols, image_col=image_col), "DataFrame")
    images = _image_lookup(df, schema, image_dir, folders)
    rows: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in df[cols].to_dict("records")]
    return [{"id": str(pid), **row, "image": paths or None} for pid, row, paths in zip(df[schema.id_col], rows, images)]

"""Reading a products table and inferring which column is which."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from aisle.config import DataConfig

__all__ = ["ProductSchema", "build_texts", "infer_schema", "text_of"]

_LABEL_CANDIDATES = ("categories", "label")
_TEXT_CANDIDATES = (("title", "description"), ("text",))
_IMAGE_CANDIDATES = ("image", "image_path", "images", "image_paths")


@dataclass(frozen=True)
class ProductSchema:
    """Which columns hold the id, the label, the text parts and the image paths."""

    id_col: str
    label_col: str | None
    text_cols: tuple[str, ...]
    image_col: str | None
    text_prefixes: dict[str, str] = field(default_factory=dict)
    attribute_cols: tuple[str, ...] = ()  # structured columns rendered into the text as "name: value"


def _require(df: pd.DataFrame, col: str, what: str, source: str) -> str:
    if col not in df.columns:
        raise ValueError(
            f"{source}: {what} column {col!r} is not in the table; columns are: {', '.join(map(str, df.columns))}"
        )
    return col


def infer_schema(
    df: pd.DataFrame, cfg: DataConfig, source: str = "table", require_label: bool = False
) -> ProductSchema:
    """Resolve the id / label / text / image columns, explicit settings first, then the conventions.

    Args:
        df: the products table.
        cfg: data settings; explicit ``id_col``, ``label_col``, ``text_cols``, ``image_col`` win.
        source: the file name, for messages.
        require_label: raise when no label column is found (training data).

    Raises:
        ValueError: an explicit column is absent, or no id / label column could be found.
    """
    if cfg.id_col is not None:
        id_col = _require(df, cfg.id_col, "id", source)
    elif "id" in df.columns:
        id_col = "id"
    else:
        raise ValueError(f"{source}: no 'id' column; set data.id_col to one of: {', '.join(map(str, df.columns))}")

    if cfg.label_col is not None:
        label_col: str | None = _require(df, cfg.label_col, "label", source)
    else:
        label_col = next((c for c in _LABEL_CANDIDATES if c in df.columns), None)
    if require_label and label_col is None:
        raise ValueError(
            f"{source}: no label column ('categories' or 'label'); set data.label_col to one of: "
            f"{', '.join(map(str, df.columns))}"
        )

    if cfg.text_cols is not None:
        text_cols = tuple(_require(df, c, "text", source) for c in cfg.text_cols)
    else:
        text_cols = ()
        for group in _TEXT_CANDIDATES:
            present = tuple(c for c in group if c in df.columns)
            if present:
                text_cols = present
                break

    if cfg.image_col is not None:
        image_col: str | None = _require(df, cfg.image_col, "image", source)
    else:
        image_col = next((c for c in _IMAGE_CANDIDATES if c in df.columns), None)

    unknown_prefix = sorted(set(cfg.text_prefixes) - set(text_cols))
    if unknown_prefix:
        raise ValueError(
            f"{source}: data.text_prefixes names {unknown_prefix}, which are not text columns {list(text_cols)}"
        )
    attribute_cols = tuple(_require(df, c, "attribute", source) for c in cfg.attribute_cols or ())
    return ProductSchema(id_col, label_col, text_cols, image_col, dict(cfg.text_prefixes), attribute_cols)


def build_texts(df: pd.DataFrame, schema: ProductSchema, sep: str = ". ") -> np.ndarray:
    """Join the text columns per row in column order, then the attribute columns as ``name: value``, dropping
    NaN/empty parts; prefixes go before each text part.

    Returns:
        An object array of strings, one per row ("" when every part is empty).
    """
    if not schema.text_cols and not schema.attribute_cols:
        return np.full(len(df), "", dtype=object)
    parts = []
    prefixes = {**schema.text_prefixes, **{col: f"{col}: " for col in schema.attribute_cols}}
    for col in [*schema.text_cols, *schema.attribute_cols]:
        s = df[col].astype("string").str.strip()
        s = s.where(s.notna() & (s != ""), None)
        prefix = prefixes.get(col, "")
        parts.append(prefix + s if prefix else s)
    frame = pd.concat(parts, axis=1)
    joined = frame.apply(lambda row: sep.join(v for v in row if isinstance(v, str)), axis=1)
    return joined.to_numpy(dtype=object)


def text_of(row: Mapping[str, object], schema: ProductSchema, sep: str = ". ") -> str:
    """One product's joined text, exactly as :func:`build_texts` joins a table's row (for a handful of products,
    where building a DataFrame would cost more than the model)."""
    prefixes = {**schema.text_prefixes, **{col: f"{col}: " for col in schema.attribute_cols}}
    parts = []
    for col in [*schema.text_cols, *schema.attribute_cols]:
        v = row.get(col)
        if v is None or (isinstance(v, float) and v != v):
            continue
        text = str(v).strip()
        if text:
            parts.append(prefixes.get(col, "") + text)
    return sep.join(parts)

"""Pseudo-label tables: confident predictions on unlabelled products, written by ``aisle pseudo-label`` and read
back as extra training rows (``data.pseudo_labels``).

The table (CSV) has the id, the run's text and attribute columns, an image column of resolved paths, the hard
label (the run's label column), ``confidence`` and, with ``--soft``, one ``soft:<class>`` column per class. A JSON
beside it (same name, ``.json``) records how it was made and the folders its images may be read from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.data.labels import LabelMap
from aisle.data.products import Products, products_from_frame
from aisle.data.schema import ProductSchema
from aisle.serialization import read_json, write_json
from aisle.tables import read_table, write_table

__all__ = [
    "CONFIDENCE_COL",
    "IMAGE_COL",
    "SOFT_PREFIX",
    "PseudoRows",
    "read_pseudo_rows",
    "settings_path",
    "write_pseudo_table",
]

log = logging.getLogger(__name__)

SOFT_PREFIX = "soft:"  # one column per class: the soft target of that class
CONFIDENCE_COL = "confidence"  # the run's highest probability for the row
IMAGE_COL = "image_paths"  # resolved image paths, joined by data.image_sep


@dataclass
class PseudoRows:
    """Pseudo-labelled products ready to join a run's training rows.

    Attributes:
        products: the rows (texts and image paths read as the run reads its own table).
        y: the hard label's class index per row.
        targets: (N, C) soft targets, rows summing to 1; None for hard labels.
    """

    products: Products
    y: np.ndarray
    targets: np.ndarray | None


def settings_path(table: str | Path) -> Path:
    """The JSON beside a pseudo-label table."""
    return Path(table).with_suffix(".json")


def write_pseudo_table(path: str | Path, frame: pd.DataFrame, settings: dict[str, Any]) -> Path:
    """Write the table and its settings JSON; return the table's path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame, p)
    write_json(settings_path(p), settings)
    return p


def _settings(path: Path) -> dict[str, Any]:
    side = settings_path(path)
    return read_json(side) if side.is_file() else {}


def _schema_for(df: pd.DataFrame, schema: ProductSchema, source: str) -> ProductSchema:
    """The training schema's columns, with this table's image column; every text column must be there."""
    label = schema.label_col or "label"
    needed = [schema.id_col, label, *schema.text_cols, *schema.attribute_cols]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: a pseudo-label table needs the run's id, label and text columns; missing {missing} "
            f"(columns are {list(df.columns)}); write it with `aisle pseudo-label RUN_DIR --data TABLE`"
        )
    image = IMAGE_COL if IMAGE_COL in df.columns else schema.image_col if schema.image_col in df.columns else None
    return ProductSchema(schema.id_col, label, schema.text_cols, image, schema.text_prefixes, schema.attribute_cols)


def _soft_targets(df: pd.DataFrame, label_map: LabelMap, ids: np.ndarray, source: str) -> np.ndarray | None:
    cols = [c for c in df.columns if str(c).startswith(SOFT_PREFIX)]
    if not cols:
        return None
    names = [str(c)[len(SOFT_PREFIX) :] for c in cols]
    if sorted(names) != sorted(label_map.classes):
        raise ValueError(
            f"{source}: its {SOFT_PREFIX}<class> columns name {sorted(set(names) ^ set(label_map.classes))[:10]} "
            f"that are not (or not all) the run's classes; soft targets need one column per class of the run"
        )
    t = df[[SOFT_PREFIX + c for c in label_map.classes]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    sums = t.sum(1)
    bad = ~np.isfinite(t).all(1) | (t < 0).any(1) | (np.abs(sums - 1.0) > 1e-3)
    if bad.any():
        raise ValueError(
            f"{source}: {int(bad.sum())} row(s) have soft targets that are not probabilities (empty, negative, "
            f"or not summing to 1), e.g. ids {list(ids[bad][:5])}; fix or drop those rows"
        )
    return (t / sums[:, None]).astype(np.float32)


def read_pseudo_rows(
    path: str | Path, cfg: DataConfig, schema: ProductSchema, label_map: LabelMap, training_ids: np.ndarray
) -> PseudoRows:
    """Read ``data.pseudo_labels`` as extra training rows of a run with ``schema`` and ``label_map``.

    Raises:
        FileNotFoundError: no such table.
        ValueError: missing columns, duplicate ids, ids also in the training table, labels the run does not
            have, or soft targets that are not probabilities (each message names the rows).
    """
    p = Path(path)
    source = f"data.pseudo_labels {p}"
    df = read_table(p)
    if len(df) == 0:
        raise ValueError(
            f"{source} has no rows (no product reached the pseudo-label threshold): lower --threshold, or leave "
            f"data.pseudo_labels unset"
        )
    sch = _schema_for(df, schema, source)
    roots = [Path(r) for r in _settings(p).get("image_roots", [])]
    read_cfg = cfg.model_copy(update={"id_col": sch.id_col, "label_col": sch.label_col, "image_col": sch.image_col})
    products = products_from_frame(df, read_cfg, p.parent, source=source, require_label=True, extra_roots=roots)
    dups = products.duplicate_ids()
    if dups:
        raise ValueError(f"{source}: {len(dups)} id(s) appear on more than one row, e.g. {dups[:5]}")
    shared = sorted(set(products.ids) & set(map(str, training_ids)))
    if shared:
        raise ValueError(
            f"{source}: {len(shared)} id(s) are also in the training table, e.g. {shared[:5]}: a product with a "
            f"real label cannot also be a pseudo-labelled one; pseudo-label only products the run did not train on"
        )
    labels = pd.Series(products.labels, dtype=object)
    unknown = sorted(set(labels.dropna()) - set(label_map.classes))
    if labels.isna().any() or unknown:
        raise ValueError(
            f"{source}: every row needs a label of the run's classes; "
            f"{int(labels.isna().sum())} row(s) have none and these labels are not classes of the run: {unknown[:10]}"
        )
    y, _ = label_map.encode(labels.to_numpy(dtype=object))
    return PseudoRows(products, y, _soft_targets(df, label_map, products.ids, source))

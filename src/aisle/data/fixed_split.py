"""A fixed train/validation split (``data.val_csv``) as one fold of the table's own fold column.

The training table and the validation table become one table whose ``data.fold_col`` puts every validation row in
fold 0 and every training row in :data:`~aisle.data.folds.TRAIN_ONLY` (trained on, never validated on). From there
the run is an ordinary one with its own fold column: one fold, whose out-of-fold predictions are the validation
rows', and ``folds.csv`` says which rows were which.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.data.folds import TRAIN_ONLY
from aisle.data.products import Products, load_products

__all__ = ["VAL_FOLD", "with_validation_table"]

log = logging.getLogger(__name__)

VAL_FOLD = 0  # the one fold of a fixed split


def with_validation_table(train: Products, cfg: DataConfig) -> Products:
    """``train`` followed by the rows of ``cfg.val_csv``, marked by a ``cfg.fold_col`` column.

    The validation table is read with the training table's columns (``id``, label, text, image), its images
    relative to its own folder (or ``data.image_dir`` / ``data.data_root``).

    Raises:
        ValueError: an id in both tables (names them), different columns, a table that already has the fold
            column, or a training table without labels.
    """
    if cfg.val_csv is None:
        raise ValueError("data.val_csv is not set")
    schema = train.schema
    columns = {
        "id_col": schema.id_col,
        "label_col": schema.label_col,
        "text_cols": list(schema.text_cols),
        "attribute_cols": list(schema.attribute_cols),
        "image_col": schema.image_col,
    }
    val = load_products(cfg.val_csv, cfg.model_copy(update=columns), require_label=True)
    (train_labels, train_frame), (val_labels, val_frame) = _check_tables(train, val, cfg)
    unseen = sorted(set(val_labels.tolist()) - set(train_labels.tolist()) - {None})
    if unseen:
        log.warning("%s: %d class(es) have no training row: %s", val.source, len(unseen), unseen[:20])
    frame = pd.concat(
        [train_frame.assign(**{cfg.fold_col: TRAIN_ONLY}), val_frame.assign(**{cfg.fold_col: VAL_FOLD})]
    )  # the tables' own indexes: CSV line numbers in messages
    joined = train.join(val)
    joined.labels, joined.frame = np.concatenate([train_labels, val_labels]), frame
    return joined


def _check_tables(
    train: Products, val: Products, cfg: DataConfig
) -> tuple[tuple[np.ndarray, pd.DataFrame], tuple[np.ndarray, pd.DataFrame]]:
    """Each table's labels and frame, once the two tables can make one split."""
    tables = []
    for p in (train, val):
        if p.labels is None or p.frame is None:
            raise ValueError(f"{p.source}: a fixed split (data.val_csv) needs labelled tables")
        if cfg.fold_col in p.frame.columns:
            raise ValueError(
                f"{p.source} has a {cfg.fold_col!r} column and data.val_csv is set: a table's own folds and a fixed "
                f"split are two splits; drop the column or data.val_csv"
            )
        tables.append((p.labels, p.frame))
    if val.schema != train.schema:
        raise ValueError(
            f"{val.source}: its columns read as {val.schema}, the training table's as {train.schema}; data.val_csv "
            f"needs the training table's columns"
        )
    shared = sorted(set(train.ids.tolist()) & set(val.ids.tolist()))
    if shared:
        raise ValueError(
            f"{val.source}: {len(shared)} id(s) are also in the training table {train.source}, e.g. {shared[:5]}; "
            f"a validation row must not be trained on: drop them from one of the tables"
        )
    return tables[0], tables[1]

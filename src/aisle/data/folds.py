"""Fold assignment: stratified K-fold with a fixed seed, or the table's own ``fold`` column (a fixed split is one:
``aisle.data.fixed_split``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from aisle.data.labels import apply_rare_class_policy

__all__ = ["PSEUDO_FOLD", "TRAIN_ONLY", "assign_folds", "few_shot_rows", "fold_numbers"]

TRAIN_ONLY = -1  # the fold number of a row that every fold trains on and none validates on (data.val_csv)
PSEUDO_FOLD = -2  # pseudo-labelled rows (data.pseudo_labels): train in every fold, in no fold's files or scores


def fold_numbers(folds: np.ndarray) -> list[int]:
    """The folds a run trains: every fold number but :data:`TRAIN_ONLY` and :data:`PSEUDO_FOLD`."""
    return sorted(set(folds.tolist()) - {TRAIN_ONLY, PSEUDO_FOLD})


def assign_folds(
    labels: np.ndarray,
    n_folds: int,
    seed: int,
    frame: pd.DataFrame | None = None,
    fold_col: str = "fold",
    source: str = "table",
) -> np.ndarray:
    """One fold number per row.

    Args:
        labels: class indices (or names), one per row; rows must all be labelled.
        n_folds: the number of folds.
        seed: shuffling seed: the same data and seed always give the same folds.
        frame: the original table; if it has ``fold_col``, that column is used as given (``-1``,
            :data:`TRAIN_ONLY`: a row always trained on, never validated).
        fold_col: the name of an existing fold column.
        source: a name for messages.

    Returns:
        int64 array of fold numbers in ``[0, n_folds)`` (or the given column's values).

    Raises:
        ValueError: the fold column has non-integer values (or only ``-1``), or some class has fewer than
            ``n_folds`` members (the message names them; see ``aisle.data.apply_rare_class_policy``).
    """
    if frame is not None and fold_col in frame.columns:
        col = pd.to_numeric(frame[fold_col], errors="coerce")
        bad = col.isna() | (col % 1 != 0) | (col < TRAIN_ONLY)
        if bad.any():
            rows = [int(i) + 2 for i in frame.index[bad.to_numpy()][:10]]  # header + 1-based
            raise ValueError(
                f"{source}: column {fold_col!r} must hold integers >= 0 (or -1: a row never validated on); "
                f"bad at CSV lines {rows}"
            )
        if not (col >= 0).any():
            raise ValueError(f"{source}: column {fold_col!r} has no fold >= 0 (-1 rows are never validated on)")
        return col.astype("int64").to_numpy()
    y = np.asarray(labels)
    try:
        apply_rare_class_policy(pd.Series(y), n_folds, "error")
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    folds = np.full(len(y), -1, dtype=np.int64)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(skf.split(np.zeros(len(y)), y)):
        folds[val_idx] = k
    return folds


def few_shot_rows(y: np.ndarray, rows: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """At most ``shots`` of ``rows`` per class (``y[rows]``), drawn with ``seed``; returned in row order.

    The same rows, classes and seed always give the same choice (few-shot runs compare across heads and models).
    """
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(rows[y[rows] == c])[:shots] for c in np.unique(y[rows])]
    return np.sort(np.concatenate(kept)) if kept else rows[:0]

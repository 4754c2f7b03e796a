"""``aisle ensemble``: a weighted average of several runs' probability files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.tables import read_numeric_table

__all__ = ["ensemble_probabilities"]


def ensemble_probabilities(files: Sequence[str | Path], weights: Sequence[float] | None = None) -> pd.DataFrame:
    """Average ``probabilities.csv`` files (``id,<class>...``) with weights (normalised to sum 1).

    Raises:
        ValueError: fewer than one file, weights of the wrong length or all zero, or files whose ids
            (in order) or classes differ (the message names the file and the first difference).
    """
    if not files:
        raise ValueError("ensemble needs at least one probabilities file")
    w = np.ones(len(files)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(files):
        raise ValueError(f"{len(w)} weights for {len(files)} files")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 and not all zero, got {list(w)}")
    frames = [read_numeric_table(f, ("id",)) for f in files]
    first = frames[0]
    classes = [c for c in first.columns if c != "id"]
    for f, df in zip(files[1:], frames[1:]):
        other = [c for c in df.columns if c != "id"]
        if sorted(other) != sorted(classes):
            diff = sorted(set(other) ^ set(classes))
            raise ValueError(f"{f}: classes differ from {files[0]} (e.g. {diff[:5]})")
        if len(df) != len(first) or not (df["id"].to_numpy() == first["id"].to_numpy()).all():
            bad = next((i for i, (a, b) in enumerate(zip(first["id"], df["id"])) if a != b), min(len(df), len(first)))
            raise ValueError(
                f"{f}: ids differ from {files[0]} (first difference at row {bad + 1}; {len(df)} vs {len(first)} rows)"
            )
    total = sum(wi * df[classes].to_numpy() for wi, df in zip(w / w.sum(), frames))
    out = pd.DataFrame(total, columns=classes)
    out.insert(0, "id", first["id"])
    return out

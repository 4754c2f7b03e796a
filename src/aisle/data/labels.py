"""A stable label index, saved with every run as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["LabelMap", "RarePolicy", "apply_rare_class_policy"]

RarePolicy = Literal["error", "drop", "merge"]


def _is_int_like(values: pd.Series) -> bool:
    try:
        as_int = pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError):
        return False
    return bool(np.all(np.equal(np.mod(as_int, 1), 0)))


@dataclass(frozen=True)
class LabelMap:
    """Class names in index order. Integer labels sort numerically, strings lexicographically."""

    classes: tuple[str, ...]
    dtype: Literal["str", "int"] = "str"

    @classmethod
    def fit(cls, labels: pd.Series | np.ndarray) -> LabelMap:
        s = pd.Series(labels).dropna()
        s = s[s.astype(str).str.strip() != ""]
        if s.empty:
            raise ValueError("no labels to build a label map from")
        if _is_int_like(s):
            ints = sorted(set(pd.to_numeric(s).astype("int64").tolist()))  # no float round trip: big codes stay exact
            return cls(tuple(str(v) for v in ints), "int")
        return cls(tuple(sorted({str(v).strip() for v in s})), "str")

    def __len__(self) -> int:
        return len(self.classes)

    def _normalise(self, labels: pd.Series | np.ndarray) -> pd.Series:
        s = pd.Series(labels, dtype=object)
        if self.dtype == "int":
            num = pd.to_numeric(s, errors="coerce")
            out = s.astype(str).str.strip()
            ok = num.notna() & np.equal(np.mod(num.fillna(0.5), 1), 0)
            out[ok] = num[ok].astype("int64").astype(str)
            return out.where(s.notna(), None)
        return s.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())

    def encode(self, labels: pd.Series | np.ndarray) -> tuple[np.ndarray, Counter[str]]:
        """Map labels to indices; unseen or missing labels become -1.

        Returns:
            (indices as int64, a Counter of the unseen label values).
        """
        index = {c: i for i, c in enumerate(self.classes)}
        norm = self._normalise(labels)
        idx = norm.map(lambda v: index.get(v, -1) if v is not None else -1).to_numpy(dtype=np.int64)
        unseen = Counter(str(v) for v, i in zip(norm, idx) if i < 0 and not pd.isna(v) and v != "")
        return idx, unseen

    def decode(self, indices: np.ndarray) -> list[Any]:
        names = [self.classes[int(i)] for i in indices]
        return [int(n) for n in names] if self.dtype == "int" else names

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "dtype": self.dtype}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelMap:
        if not isinstance(d, dict) or "classes" not in d:
            raise ValueError("label map JSON must be an object with a 'classes' list")
        dtype = d.get("dtype", "str")
        if dtype not in ("str", "int"):
            raise ValueError(f"label map dtype {dtype!r} is not one of: str, int")
        return cls(tuple(str(c) for c in d["classes"]), dtype)

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"label map {p} is not valid JSON: {e}") from e


def apply_rare_class_policy(
    labels: pd.Series, min_count: int, policy: RarePolicy, merge_name: str = "__other__"
) -> tuple[pd.Series, list[str]]:
    """Handle classes with fewer than ``min_count`` members.

    Args:
        labels: one label per row.
        min_count: the smallest allowed class size (the number of folds).
        policy: ``error`` raises; ``drop`` sets those rows' labels to NA (callers drop them);
            ``merge`` relabels them as ``merge_name``.

    Returns:
        (the labels after the policy, the names of the rare classes).

    Raises:
        ValueError: policy ``error`` and some class is rare; the message names them and the options.
    """
    counts = labels.dropna().astype(str).value_counts()
    rare = sorted(counts[counts < min_count].index)
    if not rare:
        return labels, []
    if policy == "error":
        shown = ", ".join(f"{c!r} ({int(counts[c])})" for c in rare[:20])
        more = f" and {len(rare) - 20} more" if len(rare) > 20 else ""
        raise ValueError(
            f"{len(rare)} class(es) have fewer than {min_count} rows, too few for {min_count}-fold stratified "
            f"splitting: {shown}{more}. Options: use fewer folds (--set data.folds=N), drop these rows "
            f"(--set data.rare_classes=drop), merge them into one class (--set data.rare_classes=merge), "
            f"or give your own 'fold' column."
        )
    mask = labels.notna() & labels.astype(str).isin(rare)
    if policy == "drop":
        return labels.where(~mask, None), rare
    merged = labels.copy()
    merged[mask] = merge_name
    return merged, rare

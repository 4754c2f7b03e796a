"""A stable label index, saved with every run as JSON."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["LabelMap", "RarePolicy", "apply_rare_class_policy", "class_columns"]

RarePolicy = Literal["error", "drop", "merge"]


RESERVED_COLUMNS = frozenset({"id", "fold", "label", "pred"})  # out-of-fold and probability tables use them
_INT = re.compile(r"[+-]?\d+")


def class_columns(columns: Iterable[str]) -> list[str]:
    """The per-class probability columns of an aisle table (``oof.csv``, ``probabilities.csv``), in order."""
    return [c for c in columns if c not in RESERVED_COLUMNS]


def _order(names: set[str]) -> list[str]:
    """Integer-looking names in numeric order (``2`` before ``10``; ``01`` beside ``1``, both kept), others
    lexicographically."""
    if all(_INT.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _digest(classes: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps(list(classes), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class LabelMap:
    """Class names in index order, exactly as they were written in the training table (``007`` stays
    ``007``; ``01`` and ``1`` are two classes)."""

    classes: tuple[str, ...]

    @classmethod
    def fit(cls, labels: pd.Series | np.ndarray) -> LabelMap:
        names = {str(v) for v in pd.Series(labels, dtype=object).dropna() if str(v).strip()}
        if not names:
            raise ValueError("no labels to build a label map from")
        clash = sorted(names & RESERVED_COLUMNS)
        if clash:
            raise ValueError(
                f"class name(s) {clash} are also column names of aisle's output tables ({sorted(RESERVED_COLUMNS)}): "
                f"rename those classes in the label column"
            )
        if len(names) < 2:
            raise ValueError(
                f"only one class ({next(iter(names))!r}) in the labelled rows: a classifier needs at least two; "
                f"check the label column (data.label_col)"
            )
        return cls(tuple(_order(names)))

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, labels: pd.Series | np.ndarray) -> tuple[np.ndarray, Counter[str]]:
        """Map labels to indices by exact string; unseen or missing labels become -1.

        Returns:
            (indices as int64, a Counter of the unseen label values).
        """
        index = {c: i for i, c in enumerate(self.classes)}
        values = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in labels]
        idx = np.array([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)
        unseen = Counter(v for v, i in zip(values, idx) if i < 0 and v is not None and v.strip())
        return idx, unseen

    def decode(self, indices: np.ndarray) -> list[str]:
        return [self.classes[int(i)] for i in indices]

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "sha256": _digest(self.classes)}

    def save(self, path: str | Path) -> Path:
        from aisle.serialization import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "label map") -> LabelMap:
        """Raises ValueError when the JSON is not a label map or its classes do not match its checksum."""
        if not isinstance(d, dict) or not isinstance(d.get("classes"), list):
            raise ValueError(f"{source} must be a JSON object with a 'classes' list")
        classes = tuple(str(c) for c in d["classes"])
        if d.get("sha256") != _digest(classes):
            raise ValueError(
                f"{source} was changed or damaged (its classes do not match its checksum): a run's label map must "
                f"stay as training wrote it; re-train the run"
            )
        return cls(classes)

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")), f"label map {p}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"label map {p} is not valid JSON ({e}): re-train the run") from e


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
        ValueError: policy ``error`` and some class is rare, or policy ``merge`` and the merged class is still
            rare; the message names them and only the options that would work.
    """
    counts = labels.dropna().astype(str).value_counts()
    rare = sorted(counts[counts < min_count].index)
    if not rare:
        return labels, []
    into = int(counts.get(merge_name, 0))
    merged_size = int(counts[rare].sum()) + (into if into >= min_count else 0)  # a rare merge_name is in counts[rare]
    smallest = int(counts[rare].min()) if policy == "error" else merged_size  # the most folds the classes allow
    options = []
    if smallest >= 2:
        options.append(f"use fewer folds (--set data.folds={smallest})")
    elif policy == "error":
        options.append("use fewer folds (--set data.folds=N)")
    options.append("drop these rows (--set data.rare_classes=drop)")
    if policy == "error" and merged_size >= min_count:  # merging only helps when the merged class is big enough
        options.append("merge them into one class (--set data.rare_classes=merge)")
    options.append("give your own 'fold' column")
    if policy == "error":
        shown = ", ".join(f"{c!r} ({int(counts[c])})" for c in rare[:20])
        more = f" and {len(rare) - 20} more" if len(rare) > 20 else ""
        raise ValueError(
            f"{len(rare)} class(es) have fewer than {min_count} rows, too few for {min_count}-fold stratified "
            f"splitting: {shown}{more}. Options: {'; '.join(options)}."
        )
    if policy == "merge" and merged_size < min_count:
        raise ValueError(
            f"merging the {len(rare)} rare class(es) into one still leaves {merge_name!r} ({merged_size}) with fewer "
            f"than {min_count} rows, too few for {min_count}-fold stratified splitting. Options: {'; '.join(options)}."
        )
    mask = labels.notna() & labels.astype(str).isin(rare)
    if policy == "drop":
        return labels.where(~mask, None), rare
    merged = labels.copy()
    merged[mask] = merge_name
    return merged, rare

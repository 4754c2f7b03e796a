"""From a data config to labelled products with label indices and folds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.data.fixed_split import with_validation_table
from aisle.data.folds import PSEUDO_FOLD, assign_folds, few_shot_rows, fold_numbers
from aisle.data.labels import LabelMap, apply_rare_class_policy
from aisle.data.products import Products, load_products, products_from_frame, read_class_folder
from aisle.data.pseudo import PseudoRows, read_pseudo_rows

__all__ = ["TrainingData", "load_source", "load_training_data"]

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Labelled products ready for K-fold training.

    Attributes:
        products: the rows kept (unlabelled rows and, with ``rare_classes=drop``, rare-class rows removed).
        label_map: the class index, saved with the run.
        y: class index per kept row.
        folds: fold number per kept row; ``PSEUDO_FOLD`` for ``data.pseudo_labels`` rows (after the real rows),
            which join the training part of every fold and are never validated on.
        dropped_ids: ids of rows left out, with the reason as value.
        targets: (N, C) soft targets of every row (one-hot for hard labels) when the pseudo-label table has
            soft targets; None otherwise.
        shots_per_class: few-shot: each fold trains on at most this many rows per class (None: all).
        seed: the few-shot draw's seed.
    """

    products: Products
    label_map: LabelMap
    y: np.ndarray
    folds: np.ndarray
    dropped_ids: dict[str, str]
    targets: np.ndarray | None = None
    shots_per_class: int | None = None
    seed: int = 42

    @property
    def pseudo(self) -> np.ndarray:
        """Which rows are pseudo-labelled (bool mask)."""
        return self.folds == PSEUDO_FOLD

    @property
    def fold_ids(self) -> list[int]:
        """The folds the run trains (rows of a fixed split's training table and pseudo-labelled rows are in none)."""
        return fold_numbers(self.folds)

    def with_pseudo(self, rows: PseudoRows) -> TrainingData:
        """These rows and, after them, the pseudo-labelled ones."""
        targets = None
        if rows.targets is not None:
            targets = np.concatenate([np.eye(len(self.label_map), dtype=np.float32)[self.y], rows.targets])
        return TrainingData(
            self.products.join(rows.products),
            self.label_map,
            np.concatenate([self.y, rows.y]),
            np.concatenate([self.folds, np.full(len(rows.y), PSEUDO_FOLD, dtype=self.folds.dtype)]),
            self.dropped_ids,
            targets,
            self.shots_per_class,
            self.seed,
        )

    def train_rows(self, fold: int) -> np.ndarray:
        """The rows fold ``fold`` trains on: every other fold's, or (few-shot) ``shots_per_class`` of the real ones
        per class, drawn with ``seed`` and the fold number, and every pseudo-labelled row. Validation rows
        (``folds == fold``) are never cut."""
        rows = np.flatnonzero(self.folds != fold)
        if self.shots_per_class is None:
            return rows
        pseudo = self.pseudo[rows]
        kept = few_shot_rows(self.y, rows[~pseudo], self.shots_per_class, self.seed + fold)
        log.info(
            "fold %d: few-shot, %d training row(s) of %d (at most %d per class, seed %d)",
            fold,
            len(kept),
            int((~pseudo).sum()),
            self.shots_per_class,
            self.seed + fold,
        )
        return np.sort(np.concatenate([kept, rows[pseudo]]))


def load_source(
    cfg: DataConfig, require_label: bool = True, frame: pd.DataFrame | None = None, base_dir: str | Path = "."
) -> Products:
    """The training products: ``frame`` if given, else ``data.train_csv`` or a ``data.class_folder`` tree; followed
    by ``data.val_csv``'s rows when it is set (a fixed split: see :func:`with_validation_table`).

    Args:
        cfg: data settings.
        require_label: raise if the table has no label column.
        frame: an in-memory products table (Python API); image paths in it are relative to ``base_dir``.
        base_dir: the data root for ``frame``.

    Raises:
        ValueError: neither or both sources are set.
    """
    products = _load_train_source(cfg, require_label, frame, base_dir)
    return with_validation_table(products, cfg) if cfg.val_csv is not None else products


def _load_train_source(
    cfg: DataConfig, require_label: bool, frame: pd.DataFrame | None, base_dir: str | Path
) -> Products:
    if frame is not None:
        root = Path(cfg.data_root or base_dir)
        image_dir = cfg.image_dir or (root / "images" if (root / "images").is_dir() else None)
        return products_from_frame(frame, cfg, root, image_dir, source="DataFrame", require_label=require_label)
    if bool(cfg.train_csv) == bool(cfg.class_folder):
        raise ValueError("set exactly one of data.train_csv (a products table) or data.class_folder (a class tree)")
    if cfg.class_folder:
        return read_class_folder(cfg.class_folder, cfg)
    if cfg.train_csv is None:  # unreachable: exactly one of the two is set (checked above)
        raise ValueError("set exactly one of data.train_csv (a products table) or data.class_folder (a class tree)")
    return load_products(cfg.train_csv, cfg, require_label=require_label)


def load_training_data(cfg: DataConfig, frame: pd.DataFrame | None = None, base_dir: str | Path = ".") -> TrainingData:
    """Load the training source, build the label map, apply the rare-class policy and assign folds.

    Raises:
        ValueError: duplicate ids, no labelled rows, fewer than two classes, or rare classes under
            ``rare_classes=error`` (messages name them).
    """
    products = load_source(cfg, frame=frame, base_dir=base_dir)
    dups = products.duplicate_ids()
    if dups:
        raise ValueError(
            f"{products.source}: {len(dups)} id(s) appear on more than one row, e.g. {dups[:5]}; a training table "
            f"needs one row per product (out-of-fold predictions, folds and reports are joined by id): drop or "
            f"rename the duplicates"
        )
    labels = pd.Series(products.labels, dtype=object)
    dropped: dict[str, str] = {}
    unlabelled = labels.isna().to_numpy()
    if unlabelled.any():
        ids = products.ids[unlabelled]
        log.warning(
            "%s: %d row(s) have no label and are left out of training (first ids: %s)",
            products.source,
            len(ids),
            ", ".join(map(str, ids[:10])),
        )
        dropped.update({str(i): "no_label" for i in ids})
    own_folds = products.frame is not None and cfg.fold_col in products.frame.columns
    rare: list[str]
    labels, rare = labels.where(~unlabelled, None), []
    if not own_folds:  # the table's own fold column needs no minimum class size
        labels, rare = apply_rare_class_policy(labels, cfg.folds, cfg.rare_classes, cfg.rare_class_name)
    if rare:
        log.warning(
            "%s: %d rare class(es) %s with rare_classes=%s: %s",
            products.source,
            len(rare),
            "dropped" if cfg.rare_classes == "drop" else "merged",
            cfg.rare_classes,
            rare[:20],
        )
        if cfg.rare_classes == "drop":
            newly = labels.isna().to_numpy() & ~unlabelled
            dropped.update({str(i): "rare_class" for i in products.ids[newly]})
    keep = np.flatnonzero(labels.notna().to_numpy())
    if len(keep) == 0:
        raise ValueError(f"{products.source}: no labelled rows to train on")
    kept = products.subset(keep)
    kept.labels = labels.to_numpy(dtype=object)[keep]
    label_map = LabelMap.fit(kept.labels)
    y, _ = label_map.encode(kept.labels)
    folds = assign_folds(kept.labels, cfg.folds, cfg.seed, kept.frame, cfg.fold_col, products.source)
    td = TrainingData(kept, label_map, y, folds, dropped, None, cfg.shots_per_class, cfg.seed)
    if cfg.pseudo_labels is None:
        return td
    rows = read_pseudo_rows(cfg.pseudo_labels, cfg, kept.schema, label_map, products.ids)
    log.info(
        "data.pseudo_labels: %d pseudo-labelled row(s)%s join the training part of every fold",
        len(rows.y),
        " with soft targets" if rows.targets is not None else "",
    )
    return td.with_pseudo(rows)

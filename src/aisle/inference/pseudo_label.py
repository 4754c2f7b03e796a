"""``aisle pseudo-label``: a trained run's confident predictions on unlabelled products, as a table that a later
run trains on (``data.pseudo_labels``: training rows of every fold, never validation rows)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.config import load_config
from aisle.data.products import Products
from aisle.data.pseudo import CONFIDENCE_COL, IMAGE_COL, SOFT_PREFIX, write_pseudo_table
from aisle.inference.inputs import check_predict_overrides, read_products
from aisle.inference.predict import Prediction, predict
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.tables import read_numeric_table

__all__ = ["PseudoLabels", "pseudo_label", "select_confident"]

log = logging.getLogger(__name__)


@dataclass
class PseudoLabels:
    """What ``pseudo_label`` wrote.

    Attributes:
        path: the table (its settings JSON beside it).
        counts: per class: ``predicted`` (rows whose top class it is) and ``kept`` (rows in the table).
        rows: rows in the table.
        total: rows predicted.
    """

    path: Path
    counts: pd.DataFrame
    rows: int
    total: int


def select_confident(probs: np.ndarray, threshold: float, max_per_class: int | None = None) -> np.ndarray:
    """Row positions whose top probability is at least ``threshold``; with ``max_per_class``, only the most
    confident ones of each predicted class (ties: the earlier row). Returned in input order."""
    conf, top = probs.max(1), probs.argmax(1)
    kept = np.flatnonzero(conf >= threshold)
    if max_per_class is not None:
        chosen = []
        for c in np.unique(top[kept]):
            rows = kept[top[kept] == c]
            chosen.append(rows[np.argsort(-conf[rows], kind="stable")[:max_per_class]])
        kept = np.sort(np.concatenate(chosen)) if chosen else kept
    return kept


def _reading_run(rd: RunDir) -> RunDir:
    """The run whose schema reads the input: an ensemble's first member."""
    if not rd.is_ensemble():
        return rd
    run = Path(read_json(rd.ensemble)["members"][0]["run"])
    return RunDir(run if run.is_absolute() else rd.root / run)


def _table(
    products: Products, pred: Prediction, idx: np.ndarray, soft: bool, trained: dict, image_sep: str
) -> pd.DataFrame:
    frame = products.frame.reset_index(drop=True) if products.frame is not None else pd.DataFrame()
    sch = products.schema
    df = pd.DataFrame({trained.get("id_col") or sch.id_col: products.ids[idx]})
    for col in (*sch.text_cols, *sch.attribute_cols):
        df[col] = frame[col].to_numpy(dtype=object)[idx]
    df[IMAGE_COL] = [image_sep.join(p) for p in products.image_paths[idx]]
    df[pred.label_col] = [pred.label_map.classes[i] for i in pred.probs[idx].argmax(1)]
    df[CONFIDENCE_COL] = pred.probs[idx].max(1)
    if soft:
        for j, name in enumerate(pred.label_map.classes):
            df[SOFT_PREFIX + name] = pred.probs[idx, j]
    return df


def _check_ids(products: Products, rd: RunDir) -> None:
    dups = products.duplicate_ids()
    if dups:
        raise ValueError(f"{products.source}: {len(dups)} id(s) appear more than once, e.g. {dups[:5]}")
    trained = set(read_numeric_table(rd.folds, ("id",))["id"].astype(str)) if rd.folds.is_file() else set()
    shared = sorted(trained & set(products.ids))
    if shared:
        raise ValueError(
            f"{products.source}: {len(shared)} id(s) are rows the run trained on, e.g. {shared[:5]}; pseudo-label "
            f"only products without a label (the test table)"
        )


def pseudo_label(
    run_dir: str | Path,
    data: str | Path,
    threshold: float = 0.95,
    max_per_class: int | None = None,
    soft: bool = False,
    out: str | Path | None = None,
    stage: str | None = None,
    overrides: list[str] | None = None,
) -> PseudoLabels:
    """Predict ``data`` with the run and write its confident rows as a pseudo-label table.

    Args:
        run_dir: a finished run or ensemble folder.
        data: unlabelled products (e.g. the test table), with the columns the run was trained on.
        threshold: the least top probability a row needs.
        max_per_class: at most this many rows per predicted class (the most confident).
        soft: also write the run's whole distribution per row (``soft:<class>`` columns): training then uses a
            soft-target loss on those rows.
        out: the table's path (default ``RUN_DIR/pseudo_labels/pseudo_labels.csv``).
        stage, overrides: as for ``predict``.

    Raises:
        ValueError: a threshold outside (0, 1], duplicate ids, or ids the run trained on.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold {threshold} must be in (0, 1]: it is the least top probability a row needs")
    rd = RunDir(run_dir).require_finished()
    reader = _reading_run(rd)
    cfg = load_config(reader.config, check_predict_overrides(list(overrides or [])))
    products = read_products(reader, cfg, data, None)
    _check_ids(products, rd)
    pred = predict(rd.root, data, stage=stage, overrides=overrides)
    idx = select_confident(pred.probs, threshold, max_per_class)
    trained = read_json(reader.schema) if reader.schema.is_file() else {}
    table = _table(products, pred, idx, soft, trained, cfg.data.image_sep)
    top = pred.probs.argmax(1)
    counts = pd.DataFrame(
        {
            "class": list(pred.label_map.classes),
            "predicted": np.bincount(top, minlength=len(pred.label_map)),
            "kept": np.bincount(top[idx], minlength=len(pred.label_map)),
        }
    )
    settings = {
        "run": str(rd.root.resolve()),
        "stage": pred.stage,
        "data": str(Path(data).resolve()),
        "threshold": threshold,
        "max_per_class": max_per_class,
        "soft": soft,
        "rows": len(idx),
        "total": len(top),
        "classes": list(pred.label_map.classes),
        "kept_per_class": dict(zip(counts["class"], counts["kept"].astype(int).tolist())),
        "image_roots": [str(r) for r in products.roots],  # the folders the table's image paths were read from
    }
    path = write_pseudo_table(out or rd.pseudo_labels, table, settings)
    if len(idx) == 0:
        log.warning("no row reached threshold %.3g: the pseudo-label table %s is empty", threshold, path)
    log.info("%d of %d row(s) pseudo-labelled at threshold %.3g -> %s", len(idx), len(top), threshold, path)
    return PseudoLabels(path, counts, len(idx), len(top))

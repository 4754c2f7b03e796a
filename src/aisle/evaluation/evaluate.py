"""``aisle evaluate``: metrics, per-class report and confusion matrix for predictions against labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from aisle.evaluation.metrics import classification_metrics
from aisle.evaluation.plotting import pyplot
from aisle.serialization import write_json
from aisle.tables import read_numeric_table, read_table

__all__ = ["Evaluation", "evaluate_files", "evaluate_probs", "plot_confusion"]


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: pd.DataFrame  # precision, recall, f1-score, support per class
    confusion: pd.DataFrame  # rows: true class, columns: predicted class
    n_scored: int
    n_unscored: int  # rows whose label is missing or not among the predicted classes


def evaluate_probs(y_true: list | np.ndarray, probs: np.ndarray, classes: list[str]) -> Evaluation:
    """Score class probabilities against true class names (rows with unknown or missing labels are not scored)."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(str(v), -1) if v is not None and not pd.isna(v) else -1 for v in y_true])
    keep = y >= 0
    if not keep.any():
        raise ValueError(
            f"none of the {len(y)} rows has a label among the {len(classes)} predicted classes (e.g. "
            f"{classes[:3]}): nothing to score; check the label file and its label column (--label-col)"
        )
    metrics = classification_metrics(y, probs)
    pred = probs.argmax(1)
    labels = np.arange(len(classes))
    rep = classification_report(
        y[keep], pred[keep], labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    per_class = pd.DataFrame({c: rep[c] for c in classes}).T
    cm = pd.DataFrame(confusion_matrix(y[keep], pred[keep], labels=labels), index=classes, columns=classes)
    return Evaluation(metrics, per_class, cm, int(keep.sum()), int((~keep).sum()))


def plot_confusion(cm: pd.DataFrame, path: str | Path, normalise: bool = True, max_classes: int = 60) -> Path:
    """Confusion matrix heat map (row-normalised); with many classes, the most confused ones are shown."""
    plt = pyplot()

    m = cm
    if len(cm) > max_classes:
        off = cm.to_numpy().copy()
        np.fill_diagonal(off, 0)
        worst = np.argsort(-(off.sum(0) + off.sum(1)))[:max_classes]
        m = cm.iloc[worst, worst]
    values = m.to_numpy().astype(float)
    if normalise:
        values = values / np.maximum(values.sum(1, keepdims=True), 1)
    n = len(m)
    fig, ax = plt.subplots(figsize=(min(2 + 0.3 * n, 22), min(1.5 + 0.3 * n, 20)))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    ax.set_xticks(range(n), [str(c)[:20] for c in m.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [str(c)[:20] for c in m.index], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if m.iat[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cast(int, m.iat[i, j])),  # counts (pandas-stubs: any scalar)
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if values[i, j] > 0.5 else "black",
                    )
    ax.set_title(
        "confusion matrix"
        + (" (row-normalised)" if normalise else "")
        + (f", {n} most confused of {len(cm)} classes" if len(cm) > n else ""),
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def evaluate_files(
    probabilities: str | Path, labels: str | Path, out_dir: str | Path | None = None, label_col: str | None = None
) -> Evaluation:
    """Join ``probabilities.csv`` (``id,<class>...``) with a labelled table by id and score it.

    Raises:
        ValueError: no id column, no label column, or ids that do not match at all.
    """
    probs = read_numeric_table(probabilities, ("id",))
    truth = read_table(labels)
    if "id" not in probs.columns or "id" not in truth.columns:
        raise ValueError(f"both {probabilities} and {labels} need an 'id' column")
    col = label_col or next((c for c in ("categories", "label") if c in truth.columns), None)
    if col is None or col not in truth.columns:
        raise ValueError(f"{labels}: no label column ('categories' or 'label'); pass --label-col")
    if truth["id"].duplicated().any():
        raise ValueError(f"{labels}: duplicate ids, e.g. {truth['id'][truth['id'].duplicated()].iloc[0]!r}")
    classes = [c for c in probs.columns if c != "id"]
    joined = probs[["id"]].merge(truth[["id", col]], on="id", how="left")
    if joined[col].isna().all():
        raise ValueError(f"no id of {probabilities} appears in {labels}")
    ev = evaluate_probs(joined[col].tolist(), probs[classes].to_numpy(), classes)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", {**ev.metrics, "n_scored": ev.n_scored, "n_unscored": ev.n_unscored})
        ev.per_class.to_csv(out / "per_class.csv", index_label="class")
        ev.confusion.to_csv(out / "confusion_matrix.csv", index_label="true\\predicted")
        plot_confusion(ev.confusion, out / "confusion_matrix.png")
    return ev

"""``aisle evaluate``: metrics, per-class report and confusion matrix for predictions against labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from aisle.evaluation.metrics import classification_metrics
from aisle.evaluation.plotting import pyplot, save_png, wrap_label
from aisle.rundir import RunDir
from aisle.serialization import read_json, write_json
from aisle.tables import read_numeric_table, read_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Evaluation", "EvaluationDir", "confusion_figure", "evaluate_files", "evaluate_probs"]


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: pd.DataFrame  # precision, recall, f1-score, support per class
    confusion: pd.DataFrame  # rows: true class, columns: predicted class
    n_scored: int
    n_unscored: int  # rows whose label is missing or not among the predicted classes


@dataclass(frozen=True)
class EvaluationDir:
    """The folder ``aisle evaluate`` writes: every file name in it is spelled here only.

    By default it is ``evaluation/`` beside the probabilities file, so a run's test scores live in
    ``<run>/predictions/evaluation/`` (:meth:`of_run`), where ``compare`` and ``report`` look for them.
    """

    root: Path

    @classmethod
    def beside(cls, probabilities: str | Path) -> EvaluationDir:
        """The default folder for scoring ``probabilities``."""
        return cls(Path(probabilities).parent / "evaluation")

    @classmethod
    def of_run(cls, run_dir: str | Path) -> EvaluationDir:
        """Where the scores of a run's default predictions (``aisle predict RUN``) are written."""
        return cls(RunDir(run_dir).predictions / "evaluation")

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def per_class(self) -> Path:
        return self.root / "per_class.csv"

    @property
    def confusion_csv(self) -> Path:
        return self.root / "confusion_matrix.csv"

    @property
    def confusion_png(self) -> Path:
        return self.root / "confusion_matrix.png"

    def read_metrics(self) -> dict[str, float] | None:
        """The saved metrics (with ``n_scored`` and ``n_unscored``), or None where nothing was evaluated."""
        return read_json(self.metrics) if self.metrics.is_file() else None


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


def confusion_figure(cm: pd.DataFrame, normalise: bool = True, max_classes: int = 60) -> Figure:
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
    ticks = [_tick(c) for c in m.index]
    label = 0.06 * max(len(line) for t in ticks for line in t.split("\n"))  # inches at 7 pt, about
    cell = 0.32 if any("\n" in t for t in ticks) else 0.25  # two-line names need taller rows
    side = min(cell * n, 18)
    fig, ax = plt.subplots(figsize=(side + label + 1.5, side + label + 1.0))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    ax.set_xticks(range(n), [_tick(c) for c in m.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(n), ticks, fontsize=7)
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
    return fig


def _tick(name: object, width: int = 24) -> str:
    """A class name on at most two lines; a longer one ends in a visible ellipsis."""
    lines = wrap_label(str(name), width)
    shown = [line.strip() for line in lines[:2]]
    return "\n".join(shown) + ("…" if len(lines) > 2 else "")


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
        out = EvaluationDir(Path(out_dir))
        out.root.mkdir(parents=True, exist_ok=True)
        write_json(out.metrics, {**ev.metrics, "n_scored": ev.n_scored, "n_unscored": ev.n_unscored})
        ev.per_class.to_csv(out.per_class, index_label="class")
        ev.confusion.to_csv(out.confusion_csv, index_label="true\\predicted")
        save_png(confusion_figure(ev.confusion), out.confusion_png)
    return ev

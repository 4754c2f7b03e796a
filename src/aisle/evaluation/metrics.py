"""Classification metrics from probabilities (scikit-learn underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

__all__ = ["classification_metrics", "macro_f1"]


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, top-3, macro/weighted F1, macro precision/recall.

    Args:
        y_true: class indices (N,); rows with -1 (unseen/unlabelled) are left out.
        probs: class probabilities (N, C).
    """
    keep = y_true >= 0
    y, p = y_true[keep], probs[keep]
    if len(y) == 0:
        return {}
    pred = p.argmax(1)
    top3 = np.argsort(-p, axis=1)[:, :3]
    return {
        "acc": float(accuracy_score(y, pred)),
        "top3": float((top3 == y[:, None]).any(1).mean()),
        "macro_f1": macro_f1(y, pred),
        "weighted_f1": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "macro_precision": float(precision_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)),
        "macro_recall": float(recall_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)),
    }


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``y`` (scikit-learn's ``f1_score(average="macro", labels=np.unique(y),
    zero_division=0)``) from counts: cheap enough to score a blend thousands of times while its weights are fitted.

    Args:
        y: class indices (N,); rows with -1 (unseen/unlabelled) are left out, as in :func:`classification_metrics`.
        pred: predicted class indices (N,).
    """
    keep = y >= 0
    y, pred = y[keep], pred[keep]
    if len(y) == 0:
        return 0.0
    n = int(max(y.max(), pred.max())) + 1
    tp = np.bincount(y[pred == y], minlength=n)
    support, predicted = np.bincount(y, minlength=n), np.bincount(pred, minlength=n)
    present = support > 0
    return float((2 * tp[present] / (support[present] + predicted[present])).mean())

"""One-number calibration: the scale ``s`` of a model's logits that minimises log-loss, ``softmax(s * logits)``."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

__all__ = ["fit_logit_scale", "rescale_probs"]


def fit_logit_scale(logits: np.ndarray, y: np.ndarray, low: float = 0.01, high: float = 1000.0) -> float:
    """The ``s`` in [low, high] minimising the mean negative log-likelihood of ``softmax(s * logits)`` at ``y``.

    Args:
        logits: (N, C) scores (a linear model's decision values, or log-probabilities).
        y: (N,) true class indices.
    """
    rows = np.arange(len(y))

    def nll(log_s: float) -> float:
        return -float(log_softmax(np.exp(log_s) * logits, axis=1)[rows, y].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(low), np.log(high)), method="bounded").x))


def rescale_probs(probs: np.ndarray, scale: float) -> np.ndarray:
    """``softmax(scale * log(probs))``: probabilities made sharper (scale > 1) or softer (scale < 1)."""
    return softmax(scale * np.log(np.clip(probs, 1e-15, None)), axis=1)

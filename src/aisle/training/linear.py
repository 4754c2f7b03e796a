"""Fitting a linear model (``model.type: linear``) fold by fold with scikit-learn, into the run folder's shape.

Each fold: the TF-IDF rows of its training part (computed once per run), a ``LinearSVC`` or a
``LogisticRegression`` fitted on them, the weights written into the ``tfidf:`` tower (``best.safetensors``), and
the out-of-fold probabilities computed through the tower, exactly as ``aisle predict`` computes them. LinearSVC has
no probabilities: its scores go through a softmax with one temperature, fitted on an inner 80/20 split of the
fold's training part (never on the fold's own validation rows).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.svm import LinearSVC

from aisle.config import LinearModelConfig, StageConfig
from aisle.data.loaders import LoaderOptions, build_loader
from aisle.evaluation.calibration import fit_logit_scale
from aisle.evaluation.metrics import classification_metrics
from aisle.models.factory import loader_inputs
from aisle.models.tfidf import TfidfLinearTower
from aisle.serialization import save_weights, write_json
from aisle.training.fold import FoldResult, RunContext, param_counts, write_oof
from aisle.training.module import predict_probs

__all__ = ["LinearFit", "fit_linear", "fit_linear_fold", "is_fitted_model"]

log = logging.getLogger(__name__)

ABSENT_LOGIT = -30.0  # a class with no training row in a fold: never predicted


class LinearFit:
    """A fitted linear model over all ``n_classes``: ``coef`` (C, V), ``intercept`` (C,), and the temperature
    already folded into both (``softmax(x @ coef.T + intercept)`` are the probabilities)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, temperature: float) -> None:
        self.coef, self.intercept, self.temperature = coef, intercept, temperature

    def logits(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray(x @ self.coef.T) + self.intercept


def is_fitted_model(model) -> bool:
    """The model is fitted by scikit-learn (a linear model), not trained by gradient steps."""
    return bool(getattr(model.text_encoder, "fitted", False)) and model.image_encoder is None


def _classifier(cfg: LinearModelConfig, seed: int) -> LinearSVC | LogisticRegression:
    if cfg.classifier == "logreg":
        return LogisticRegression(C=cfg.C, max_iter=3000)
    return LinearSVC(C=cfg.C, random_state=seed)


def _full(clf: LinearSVC | LogisticRegression, n_classes: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's weights for every class index (binary models score class 1 against class 0)."""
    coef = np.zeros((n_classes, n_features), dtype=np.float64)
    intercept = np.full(n_classes, ABSENT_LOGIT)
    classes = clf.classes_.astype(int)
    if len(classes) == 2 and clf.coef_.shape[0] == 1:
        coef[classes[1]], intercept[classes[1]], intercept[classes[0]] = clf.coef_[0], clf.intercept_[0], 0.0
    else:
        coef[classes], intercept[classes] = clf.coef_, clf.intercept_
    return coef, intercept


def _fit_raw(
    x: sp.csr_matrix,
    y: np.ndarray,
    n_classes: int,
    cfg: LinearModelConfig,
    seed: int,
    sample_weight: np.ndarray | None = None,
):
    if len(np.unique(y)) < 2:
        raise ValueError("a linear model needs at least two classes in every fold's training rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the model is scored on held-out rows either way
        clf = _classifier(cfg, seed).fit(x, y, sample_weight=sample_weight)
    return _full(clf, n_classes, x.shape[1])


def _temperature(x: sp.csr_matrix, y: np.ndarray, n_classes: int, cfg: LinearModelConfig, seed: int) -> float:
    """The softmax temperature of LinearSVC scores that minimises log-loss on an inner held-out 20%."""
    counts = np.bincount(y, minlength=n_classes)
    present = int((counts > 0).sum())
    held_rows = max(int(np.ceil(0.2 * len(y))), present)  # a stratified split holds at least one row per class
    if len(y) < 10 or counts[counts > 0].min() < 2 or len(y) - held_rows < present:
        return 1.0
    split = StratifiedShuffleSplit(1, test_size=held_rows, random_state=seed)
    inner, held = next(split.split(np.zeros(len(y)), y))
    coef, intercept = _fit_raw(x[inner], y[inner], n_classes, cfg, seed)
    return fit_logit_scale(np.asarray(x[held] @ coef.T) + intercept, y[held])


def fit_linear(
    x: sp.csr_matrix,
    y: np.ndarray,
    n_classes: int,
    cfg: LinearModelConfig,
    seed: int,
    pseudo: np.ndarray | None = None,
    pseudo_weight: float = 1.0,
) -> LinearFit:
    """Fit ``cfg.classifier`` on TF-IDF rows ``x`` and labels ``y`` (class indices < ``n_classes``).

    Rows marked ``pseudo`` (pseudo-labelled) train with their hard label and weight ``pseudo_weight``; the
    LinearSVC temperature is fitted on the real rows only.
    """
    real = np.ones(len(y), dtype=bool) if pseudo is None else ~pseudo
    t = _temperature(x[real], y[real], n_classes, cfg, seed) if cfg.classifier == "svm" else 1.0
    weight = None if pseudo is None or not pseudo.any() else np.where(pseudo, pseudo_weight, 1.0)
    coef, intercept = _fit_raw(x, y, n_classes, cfg, seed, weight)
    return LinearFit(coef * t, intercept * t, t)


def fit_linear_fold(ctx: RunContext, stage: StageConfig, fold: int) -> FoldResult:
    """One fold of a linear model: fit, write ``best.safetensors``, score the out-of-fold rows."""
    fd = ctx.rd.fold(stage.name, fold)
    fd.root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = copy.deepcopy(ctx.template)
    tower = model.text_encoder
    if not isinstance(tower, TfidfLinearTower):
        raise TypeError("a linear model's text tower is a tfidf: tower")
    if "tfidf" not in ctx.shared:  # the TF-IDF rows of every training product, once per run
        ctx.shared["tfidf"] = tower.transform(ctx.td.products.texts)
    x, td = ctx.shared["tfidf"], ctx.td
    tr, va = td.train_rows(fold), np.flatnonzero(td.folds == fold)
    lcfg, tcfg = ctx.cfg.model.linear_model, ctx.cfg.train
    fit = fit_linear(x[tr], td.y[tr], len(td.label_map), lcfg, tcfg.seed + fold, td.pseudo[tr], tcfg.pseudo_weight)
    tower.set_linear(fit.coef, fit.intercept)
    save_weights(model, fd.best)
    opts = LoaderOptions.create(ctx.cfg.data, ctx.cfg.runtime.batch_size_infer, 0, ctx.cfg.train.seed)
    val = build_loader(td.products.subset(va), td.y[va], opts, train=False, **loader_inputs(model))
    probs = predict_probs(model, val)
    metrics = classification_metrics(td.y[va], probs)
    seconds = time.perf_counter() - t0
    write_json(
        fd.best_info,
        {
            "epoch": 1,
            "monitor": "val_macro_f1",
            "score": metrics["macro_f1"],
            "metrics": metrics,
            "temperature": fit.temperature,
        },
    )
    write_oof(fd, td, va, fold, probs)
    write_json(fd.time, {"seconds": seconds})
    write_json(fd.done, {"metrics": metrics, "best_epoch": 1, "seconds": seconds, "params": param_counts(model)})
    log.info(
        "linear fold %d: macro-F1 %.4f, temperature %.3g (%.1f s)", fold, metrics["macro_f1"], fit.temperature, seconds
    )
    return FoldResult(fold, metrics, 1, seconds)

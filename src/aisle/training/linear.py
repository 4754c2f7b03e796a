"""Fitting a linear model (``model.type: linear``) fold by fold with scikit-learn, into the run folder's shape.

Each fold: the TF-IDF rows of its training part (computed once per run), a ``LinearSVC`` or a
``LogisticRegression`` fitted on them, the weights written into the ``tfidf:`` tower (``best.safetensors``), and
the out-of-fold probabilities computed through the tower, exactly as ``aisle predict`` computes them. LinearSVC has
no probabilities: its scores go through a softmax with one temperature, fitted on an inner 80/20 split of the
fold's training part (never on the fold's own validation rows).

With ``model.image`` the rows also hold the frozen image tower's features (from the feature cache), L2-normalised
and times a weight, side by side with the TF-IDF columns, and one linear model is fitted on both. The weight is
chosen per fold by an inner CV on its training rows (at most ``SELECT_ROWS`` of them) from ``IMAGE_WEIGHTS``, by
macro-F1 (ties: the smaller weight; 0 is the text-only model), and the temperature is fitted on that CV's scores.

``train.class_weights`` (other than ``auto``, which is unweighted here) weighs each row by its class's weight in
every fit: the inner ones that choose the temperature and the image weight, and the fold's own.
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
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.svm import LinearSVC

from aisle.config import LinearModelConfig, StageConfig
from aisle.data.dataset import Precomputed
from aisle.data.loaders import LoaderOptions, build_loader
from aisle.evaluation.calibration import fit_logit_scale
from aisle.evaluation.metrics import classification_metrics, macro_f1
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import loader_inputs
from aisle.models.fusion import TowerLogits
from aisle.models.tfidf import TfidfLinearTower
from aisle.serialization import save_weights, write_json
from aisle.training.fold import FoldResult, RunContext, param_counts, write_oof
from aisle.training.losses import class_weights
from aisle.training.module import predict_probs

__all__ = ["LinearFit", "fit_linear", "fit_linear_fold", "is_fitted_model"]

log = logging.getLogger(__name__)

ABSENT_LOGIT = -30.0  # a class with no training row in a fold: never predicted
IMAGE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)  # the image features' weights an inner CV chooses from
SELECT_ROWS = 4000  # the inner CV runs on at most this many (stratified) training rows of a fold
INNER_FOLDS = 4


class LinearFit:
    """A fitted linear model over all ``n_classes``: ``coef`` (C, V), ``intercept`` (C,), and the temperature
    already folded into both (``softmax(x @ coef.T + intercept)`` are the probabilities); with image features also
    ``image_coef`` (C, D) for the L2-normalised features (their weight folded in) and that ``image_weight``."""

    def __init__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        temperature: float,
        image_coef: np.ndarray | None = None,
        image_weight: float = 0.0,
    ) -> None:
        self.coef, self.intercept, self.temperature = coef, intercept, temperature
        self.image_coef, self.image_weight = image_coef, image_weight

    def logits(self, x: sp.csr_matrix, image: np.ndarray | None = None) -> np.ndarray:
        out = np.asarray(x @ self.coef.T) + self.intercept
        return out if self.image_coef is None or image is None else out + image @ self.image_coef.T


def with_image(x: sp.csr_matrix, image: np.ndarray | None, weight: float) -> sp.csr_matrix:
    """The TF-IDF rows with the (L2-normalised) image features times ``weight`` beside them; 0: the rows alone."""
    if image is None or weight == 0:
        return x
    return sp.hstack([x, sp.csr_matrix(image * weight)], format="csr")


def is_fitted_model(model) -> bool:
    """The model is fitted by scikit-learn (a linear model, with or without image features), not trained by
    gradient steps."""
    return bool(getattr(model.text_encoder, "fitted", False))


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


def _temperature(
    x: sp.csr_matrix, y: np.ndarray, n_classes: int, cfg: LinearModelConfig, seed: int, weight: np.ndarray | None
) -> float:
    """The softmax temperature of LinearSVC scores that minimises log-loss on an inner held-out 20% (the inner
    model fitted with the rows' ``weight``)."""
    counts = np.bincount(y, minlength=n_classes)
    present = int((counts > 0).sum())
    held_rows = max(int(np.ceil(0.2 * len(y))), present)  # a stratified split holds at least one row per class
    if len(y) < 10 or counts[counts > 0].min() < 2 or len(y) - held_rows < present:
        return 1.0
    split = StratifiedShuffleSplit(1, test_size=held_rows, random_state=seed)
    inner, held = next(split.split(np.zeros(len(y)), y))
    coef, intercept = _fit_raw(x[inner], y[inner], n_classes, cfg, seed, _rows(weight, inner))
    return fit_logit_scale(np.asarray(x[held] @ coef.T) + intercept, y[held])


def _select_rows(y: np.ndarray, seed: int) -> np.ndarray:
    """At most ~``SELECT_ROWS`` rows, every class in proportion (and ``INNER_FOLDS`` rows of each that has them)."""
    if len(y) <= SELECT_ROWS:
        return np.arange(len(y))
    rng, frac = np.random.default_rng(seed), SELECT_ROWS / len(y)
    parts = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    return np.sort(np.concatenate([p[: max(min(len(p), INNER_FOLDS), round(len(p) * frac))] for p in parts]))


def _rows(weight: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if weight is None else weight[rows]


def _select_image_weight(
    x: sp.csr_matrix,
    image: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: LinearModelConfig,
    seed: int,
    weight: np.ndarray | None,
) -> tuple[float, float | None]:
    """(the image weight of ``IMAGE_WEIGHTS`` with the best inner-CV macro-F1, the temperature fitted on its inner
    scores); (0, None) where the rows are too few to choose: text alone, its temperature fitted as without images.
    Every inner training split holds two classes: at least two classes have two rows, which stratified folds split."""
    rows = _select_rows(y, seed)
    x, image, y, weight = x[rows], image[rows], y[rows], _rows(weight, rows)
    counts = np.bincount(y, minlength=n_classes)
    if len(y) < 2 * INNER_FOLDS or counts.max() < INNER_FOLDS or (counts >= 2).sum() < 2:
        return 0.0, None
    scores = {w: np.zeros((len(y), n_classes)) for w in IMAGE_WEIGHTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes with fewer rows than inner folds: fine here
        inner = list(StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    for tr, va in inner:
        for w in IMAGE_WEIGHTS:
            coef, intercept = _fit_raw(with_image(x[tr], image[tr], w), y[tr], n_classes, cfg, seed, _rows(weight, tr))
            scores[w][va] = np.asarray(with_image(x[va], image[va], w) @ coef.T) + intercept
    best = max(IMAGE_WEIGHTS, key=lambda w: (round(macro_f1(y, scores[w].argmax(1)), 6), -w))
    if cfg.classifier != "svm":
        return best, 1.0
    seen = scores[best][np.arange(len(y)), y] != ABSENT_LOGIT  # rows whose class an inner fold had no row of
    return best, fit_logit_scale(scores[best][seen], y[seen])


def fit_linear(
    x: sp.csr_matrix,
    y: np.ndarray,
    n_classes: int,
    cfg: LinearModelConfig,
    seed: int,
    pseudo: np.ndarray | None = None,
    pseudo_weight: float = 1.0,
    image: np.ndarray | None = None,
    class_weight: np.ndarray | None = None,
) -> LinearFit:
    """Fit ``cfg.classifier`` on TF-IDF rows ``x`` (and L2-normalised ``image`` features) and labels ``y`` (class
    indices < ``n_classes``).

    Rows marked ``pseudo`` (pseudo-labelled) train with their hard label and weight ``pseudo_weight``; the
    LinearSVC temperature and the image weight are fitted on the real rows only. ``class_weight`` (one per class
    index, from ``train.class_weights``) weighs every row of a class in every fit, inner ones included.
    """
    real = np.ones(len(y), dtype=bool) if pseudo is None else ~pseudo
    svm = cfg.classifier == "svm"
    per_class = None if class_weight is None else np.asarray(class_weight, dtype=np.float64)[y]
    if per_class is not None:  # mean 1 over the rows: scikit-learn reads a weight scale as a change of C
        per_class = per_class * len(per_class) / per_class.sum()
    w, t = cfg.image_weight or 0.0, None
    if image is not None and cfg.image_weight is None:
        w, t = _select_image_weight(x[real], image[real], y[real], n_classes, cfg, seed, _rows(per_class, real))
    if t is None:
        joined = with_image(x[real], None if image is None else image[real], w)
        t = _temperature(joined, y[real], n_classes, cfg, seed, _rows(per_class, real)) if svm else 1.0
    weight = None if pseudo is None or not pseudo.any() else np.where(pseudo, pseudo_weight, 1.0)
    if per_class is not None:
        weight = per_class if weight is None else weight * per_class
    coef, intercept = _fit_raw(with_image(x, image, w), y, n_classes, cfg, seed, weight)
    v = x.shape[1]
    image_coef = None
    if image is not None:
        image_coef = coef[:, v:] * w * t if w > 0 else np.zeros((n_classes, image.shape[1]))
    return LinearFit(coef[:, :v] * t, intercept * t, t, image_coef, w)


def _image_rows(ctx: RunContext, model: ProductClassifier) -> tuple[np.ndarray, np.ndarray] | None:
    """Every training row's frozen image features (from the feature cache, once per run) and has-image mask; None
    for a linear model without ``model.image``."""
    tower = model.image_encoder
    if tower is None:
        return None
    if "linear_image" not in ctx.shared:
        from aisle.cache.encode import EncodeOptions, encode_products, tower_features

        rt, products = ctx.cfg.runtime, ctx.td.products
        opts = EncodeOptions.create(ctx.cfg.data, rt)
        if rt.feature_cache:
            feats, has = tower_features(tower, products, rt.cache_dir, opts=opts)
        else:
            feats, has = encode_products(tower, products, "orig", opts, tower.preprocess.size)
        ctx.shared["linear_image"] = (np.asarray(feats, dtype=np.float32), np.asarray(has, dtype=bool))
    return ctx.shared["linear_image"]


def _normalised(feats: np.ndarray, has: np.ndarray) -> np.ndarray:
    """What the logits head reads: unit-length features, zero for a product without an image."""
    norm = np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return np.where(has[:, None], feats / norm, 0.0)


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
    x, td, image = ctx.shared["tfidf"], ctx.td, _image_rows(ctx, model)
    tr, va = td.train_rows(fold), np.flatnonzero(td.folds == fold)
    lcfg, tcfg = ctx.cfg.model.linear_model, ctx.cfg.train
    unit = None if image is None else _normalised(*image)[tr]
    n, scheme = len(td.label_map), "none" if tcfg.class_weights == "auto" else tcfg.class_weights
    cw = class_weights(td.y[tr], n, scheme, tcfg.class_weight_smoothing)  # auto: unweighted, as before
    fit = fit_linear(x[tr], td.y[tr], n, lcfg, tcfg.seed + fold, td.pseudo[tr], tcfg.pseudo_weight, unit, cw)
    tower.set_linear(fit.coef, fit.intercept)
    if fit.image_coef is not None and isinstance(model.head, TowerLogits):
        model.head.set_image_weights(fit.image_coef)
    # the frozen image tower is the template's: left out, so predict encodes it once for every fold (cached)
    save_weights(model, fd.best, exclude=("image_encoder.",) if image is not None else ())
    opts = LoaderOptions.create(ctx.cfg.data, ctx.cfg.runtime.batch_size_infer, 0, ctx.cfg.train.seed)
    pre = None if image is None else Precomputed(image_features=([image[0][va]], image[1][va]))
    val = build_loader(td.products.subset(va), td.y[va], opts, train=False, precomputed=pre, **loader_inputs(model))
    probs = predict_probs(model, val)
    metrics = classification_metrics(td.y[va], probs)
    seconds = time.perf_counter() - t0
    info = {"temperature": fit.temperature, **({"image_weight": fit.image_weight} if image is not None else {})}
    write_json(
        fd.best_info, {"epoch": 1, "monitor": "val_macro_f1", "score": metrics["macro_f1"], "metrics": metrics, **info}
    )
    write_oof(fd, td, va, fold, probs)
    write_json(fd.time, {"seconds": seconds})
    write_json(fd.done, {"metrics": metrics, "best_epoch": 1, "seconds": seconds, "params": param_counts(model)})
    log.info("linear fold %d: macro-F1 %.4f, %s (%.1f s)", fold, metrics["macro_f1"], info, seconds)
    return FoldResult(fold, metrics, 1, seconds)

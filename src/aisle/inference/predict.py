"""Rebuild a trained run from its folder alone and predict: fold-averaged probabilities, TTA, multi-scale."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import torch

from aisle.config import AisleConfig, load_config
from aisle.data.dataset import Precomputed
from aisle.data.image_report import report_image_issues, write_image_issues
from aisle.data.images import ImageIssue
from aisle.data.labels import LabelMap
from aisle.data.loaders import LoaderOptions, build_loader, pretokenize
from aisle.data.products import Products
from aisle.data.tta import TTA_POLICIES
from aisle.devices import run_device
from aisle.evaluation.calibration import rescale_probs
from aisle.inference.inputs import check_images, check_predict_overrides, check_rows, override_key, read_products
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import create_classifier, loader_inputs, use_channels_last
from aisle.rundir import RunDir
from aisle.serialization import excluded_prefixes, load_checkpoint, read_json
from aisle.tables import require_finite, write_table

__all__ = ["Prediction", "load_fold_models", "mean_softmax", "pick_stage", "predict", "shared_towers", "write_outputs"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Probabilities for every input row, in input order.

    Attributes:
        ids: product ids (duplicates kept, one row each).
        probs: (N, C) fold-averaged probabilities.
        fold_probs: fold number -> (N, C) that fold's probabilities (TTA/scales already averaged).
        label_map: class names.
        label_col: the label column name for the submission file.
        unseen_labels: labels in the input the run never saw (when the input is labelled).
        image_issues: every unusable image among the rows (None: the model reads no images).
        stage: the training stage whose fold models predicted ("" for an ensemble).
    """

    ids: np.ndarray
    probs: np.ndarray
    fold_probs: dict[int, np.ndarray]
    label_map: LabelMap
    label_col: str
    unseen_labels: dict[str, int] = field(default_factory=dict)
    image_issues: list[ImageIssue] | None = None
    stage: str = ""

    @property
    def labels(self) -> list:
        return self.label_map.decode(self.probs.argmax(1))


def pick_stage(rd: RunDir, cfg: AisleConfig, stage: str | None) -> str:
    """``stage`` if the run trains it, else (None) the last stage.

    Raises:
        ValueError: the run has no such stage (the message lists its stages).
    """
    names = [s.name for s in rd.stages(cfg)]
    if stage is not None and stage not in names:
        raise ValueError(f"{rd.root} has no stage {stage!r}; its stages: {', '.join(names)}")
    return names[-1] if stage is None else stage


def load_fold_models(
    run_dir: str | Path, folds: list[int] | None = None, stage: str | None = None, overrides: list[str] | None = None
) -> tuple[AisleConfig, LabelMap, dict[int, ProductClassifier]]:
    """The run's config, label map and each finished fold's best model, rebuilt offline from the folder.

    Args:
        folds: which folds (default: the run's ``infer.folds``, else every finished fold).
        stage: which training stage's models (default: the last).
        overrides: ``key=value`` changes to the run's config, only keys in ``inputs.PREDICT_KEYS``.

    Raises:
        FileNotFoundError: not a run folder, or a requested fold has no best checkpoint.
        ValueError: no such stage; an override of a key the model was trained with.
    """
    rd = RunDir(run_dir).require_run()
    cfg = load_config(rd.config, check_predict_overrides(list(overrides or [])))
    label_map = LabelMap.load(rd.label_map)
    stage = pick_stage(rd, cfg, stage)
    if len(rd.stages(cfg)) > 1:
        log.info("%s: stage %r predicts (stages: %s)", rd.root, stage, ", ".join(s.name for s in rd.stages(cfg)))
    available = rd.finished_folds(stage)
    chosen = folds if folds is not None else (cfg.infer.folds or available)
    missing = sorted(set(chosen) - set(available))
    if missing or not chosen:
        raise FileNotFoundError(
            f"{rd.stage(stage)}: no best checkpoint for fold(s) {missing or chosen}; available: {available}"
        )
    models = {}
    for k in chosen:
        model = create_classifier(cfg.model, len(label_map), assets=rd.assets)
        models[k] = load_checkpoint(model, rd.fold(stage, k).best, rd.template).eval()
        if cfg.runtime.channels_last:
            use_channels_last(models[k])
    return cfg, label_map, models


def _views(tta: list[str]) -> list[Callable[[torch.Tensor], torch.Tensor] | None]:
    return [None] + [TTA_POLICIES.get(name) for name in tta]


def shared_towers(rd: RunDir, cfg: AisleConfig, folds: list[int], stage: str | None = None) -> dict[str, bool]:
    """Per tower attribute (``image_encoder``, ``text_encoder``): whether it is encoded once for all ``folds``,
    through the feature cache, rather than per fold. A fold checkpoint leaves out exactly the towers its training
    never changed (they are the run's template), so a tower every fold left out is the same in all of them."""
    if not cfg.runtime.feature_cache or not rd.template.is_file():
        return {"image_encoder": False, "text_encoder": False}
    stage = pick_stage(rd, cfg, stage)
    left_out = [set(excluded_prefixes(rd.fold(stage, k).best)) for k in folds]
    return {attr: all(f"{attr}." in s for s in left_out) for attr in ("image_encoder", "text_encoder")}


def _shared_features(
    rd: RunDir,
    models: dict[int, ProductClassifier],
    products: Products,
    cfg: AisleConfig,
    tta: list[str],
    scales: list[int],
    batch_size: int,
    stage: str,
) -> dict:
    """Features of towers that training never changed (every fold holds the run's initial weights: frozen),
    encoded once for all folds and kept in the feature cache: {("image", size, view): (feats, has_image),
    ("text",): feats}."""
    shared = shared_towers(rd, cfg, list(models), stage)
    if not any(shared.values()):
        return {}
    from aisle.cache.encode import EncodeOptions, tower_features
    from aisle.cache.keys import tower_key

    out: dict = {}
    opts = EncodeOptions.create(cfg.data, cfg.runtime, batch_size)
    first = next(iter(models.values()))
    if first.image_encoder is not None and shared["image_encoder"]:
        sizes: list[int | None] = [*scales] or [None]
        for size in sizes:
            s = size or first.image_encoder.preprocess.size
            key = tower_key(first.image_encoder, {"image_size": s})
            for view in ["orig", *tta]:
                out[("image", size, view)] = tower_features(
                    first.image_encoder, products, cfg.runtime.cache_dir, view=view, opts=opts, image_size=s, key=key
                )
    if first.text_encoder is not None and shared["text_encoder"]:
        out[("text",)] = tower_features(first.text_encoder, products, cfg.runtime.cache_dir, opts=opts)[0]
    return out


def mean_softmax(
    model: ProductClassifier,
    loader,
    views: list[Callable | None],
    progress: Callable[[int], None] | None,
    device: str = "cpu",
) -> np.ndarray:
    """Mean softmax over ``views`` (functions on the pixel batch; None = as is) for every row of ``loader``, its
    batches moved to ``device`` (where ``model`` is)."""
    chunks = []
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            acc: torch.Tensor | float = 0.0
            for fn in views:
                b = dict(batch) if fn is None else {**batch, "image": fn(batch["image"])}
                acc = acc + torch.softmax(model(b)["logits"].float(), -1)
            chunks.append(cast(torch.Tensor, acc / len(views)).cpu().numpy())  # views is never empty
            if progress is not None:
                progress(len(batch["id"]))
    return np.concatenate(chunks)


def _predict_model(
    model: ProductClassifier,
    products: Products,
    cfg: AisleConfig,
    tta: list[str],
    scales: list[int],
    batch_size: int,
    progress: Callable[[int], None] | None,
    shared: dict,
    tokens: dict[str, np.ndarray] | None,
) -> np.ndarray:
    """Mean probabilities over image sizes and TTA views, on ``runtime.accelerator``'s device; cached features
    where ``shared`` has them, pre-tokenized texts where ``tokens`` are given."""
    text = shared.get(("text",))
    opts = LoaderOptions.create(cfg.data, batch_size, cfg.runtime.num_workers)
    inputs = loader_inputs(model)

    def loader(image_features=None, image_size: int | None = None):
        return build_loader(
            products,
            None,
            opts,
            train=False,
            image_size=image_size,
            **inputs,
            precomputed=Precomputed(image_features, text, tokens=tokens),
        )

    device = run_device(cfg.runtime.accelerator)
    model.to(device)
    try:
        if model.image_encoder is None:
            return mean_softmax(model, loader(), [None], progress, device)
        names = ["orig", *tta]
        per_size = []
        sizes: list[int | None] = [*scales] or [None]
        for size in sizes:
            cached = [shared.get(("image", size, v)) for v in names]
            hits = [c for c in cached if c is not None]
            if len(hits) == len(cached):  # one pass per view over cached features: no pixels at all
                per_view = [mean_softmax(model, loader(([f], has)), [None], progress, device) for f, has in hits]
                per_size.append(np.mean(per_view, axis=0))
            else:  # decode each image once and apply every view to the batch
                views = [None if v == "orig" else TTA_POLICIES.get(v) for v in names]
                per_size.append(mean_softmax(model, loader(image_size=size), views, progress, device))
        return np.mean(per_size, axis=0)
    finally:
        model.cpu()  # one fold's model on the device at a time


def predict(
    run_dir: str | Path,
    data: str | Path | pd.DataFrame | None = None,
    folds: list[int] | None = None,
    tta: list[str] | None = None,
    scales: list[int] | None = None,
    batch_size: int | None = None,
    image_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    feature_cache: bool | None = None,
    allow_missing_text: bool = False,
    allow_missing_images: bool = False,
    stage: str | None = None,
    overrides: list[str] | None = None,
) -> Prediction:
    """Average softmax probabilities over the run's fold models (and TTA views and image sizes).

    Args:
        run_dir: a finished run folder; nothing else is needed.
        data: a products table (path) to predict, a folder of images (one product per image file, its id the
            file's path in the folder), or a DataFrame (relative image paths and the ``images/``
            folder are taken from ``image_dir``'s parent, else the working directory); default: the run's
            ``data.test_csv``.
        folds: which folds' models (default: the run's ``infer.folds``, else every finished fold).
        tta: TTA policy names (default: the run's ``infer.tta``).
        scales: image sizes to average over (default: the run's ``infer.scales``, else the model's own size).
        batch_size: default the run's ``runtime.batch_size_infer``.
        image_dir: image folder (default: ``data.image_dir`` when ``overrides`` set it; for the run's own
            ``data.test_csv`` its ``data.image_dir``; for another table ``images/`` or ``<stem>_images/`` beside it).
        progress: called with the number of rows done (per fold and scale).
        feature_cache: encode towers that training never changed once for all folds, through the feature
            cache (default: the run's ``runtime.feature_cache``); False re-encodes per fold.
        allow_missing_text: predict even when the table lacks text columns the run was trained with.
        allow_missing_images: predict even when no row has an image and the model reads images.
        stage: which training stage's fold models (default: the last; a two-stage run's first stage is the
            frozen-tower one).
        overrides: ``key=value`` changes to the run's config for reading the input and running
            (``inputs.PREDICT_KEYS``: e.g. ``data.max_image_pixels=200000000``, ``runtime.num_workers=0``).

    Raises:
        ValueError: no ``data`` and the run's config has no ``data.test_csv``; a text column the run was trained
            with is absent; no row has an image; the model's probabilities are not finite.
    """
    rd = RunDir(run_dir)
    if rd.is_ensemble():
        if stage is not None:
            raise ValueError(f"{rd.root} is an ensemble: each member predicts with its own last stage (no --stage)")
        allow: dict = {"allow_missing_text": allow_missing_text, "allow_missing_images": allow_missing_images}
        allow["overrides"] = overrides
        return _predict_ensemble(rd, data, folds, tta, scales, batch_size, image_dir, progress, feature_cache, allow)
    cfg, label_map, models = load_fold_models(rd.root, folds, stage, overrides)
    stage = pick_stage(rd, cfg, stage)
    if image_dir is None and any(override_key(o) == "data.image_dir" for o in overrides or []):
        image_dir = cfg.data.image_dir  # --set data.image_dir=...: the folder for any table
    if feature_cache is not None:
        cfg.runtime.feature_cache = feature_cache
    products = read_products(rd, cfg, data, image_dir, allow_missing_text)
    issues = None
    if next(iter(models.values())).image_encoder is not None:
        check_images(any(len(p) for p in products.image_paths), len(products), products.source, allow_missing_images)
        issues = report_image_issues(products, cfg.data, False, cfg.runtime.cache_dir)  # one line, once
    if cfg.runtime.num_workers and len(products) < 256:  # worker start-up costs more than it saves
        cfg.runtime.num_workers = 0
    tta = cfg.infer.tta if tta is None else tta
    scales = cfg.infer.scales if scales is None else scales
    for name in tta:
        TTA_POLICIES.get(name)  # unknown names fail before any work
    unseen = check_rows(products, label_map)
    bs = batch_size or cfg.runtime.batch_size_infer
    shared = _shared_features(rd, models, products, cfg, tta, scales, bs, stage)
    rows, tokens, order = products, None, None
    first = next(iter(models.values()))
    if first.text_encoder is not None and ("text",) not in shared:
        # every fold shares the run's one tokenizer: tokenize once, and run rows sorted by token count so each
        # batch pads only to its own longest row
        tokens = pretokenize(first.text_encoder.tokenize, products.texts, first.text_encoder.pad_id)
        order = np.argsort(tokens["attention_mask"].sum(1), kind="stable")
        rows, tokens = products.subset(order), {k: v[order] for k, v in tokens.items()}
        shared = {k: (v[0][order], v[1][order]) if k[0] == "image" else v[order] for k, v in shared.items()}
    fold_probs = {k: _predict_model(m, rows, cfg, tta, scales, bs, progress, shared, tokens) for k, m in models.items()}
    if order is not None:
        inverse = np.argsort(order)
        fold_probs = {k: p[inverse] for k, p in fold_probs.items()}
    probs = np.mean(np.stack(list(fold_probs.values())), axis=0)
    require_finite(probs, products.ids, f"predictions of {rd.root}")
    trained_col = read_json(rd.schema).get("label_col") if rd.schema.is_file() else None
    label_col = trained_col or products.schema.label_col or "label"
    return Prediction(products.ids, probs, fold_probs, label_map, label_col, unseen, issues, stage)


def _predict_ensemble(
    rd: RunDir, data, folds, tta, scales, batch_size, image_dir, progress, feature_cache, allow: dict
) -> Prediction:
    """The weighted average of an ensemble's members' predictions (members of weight 0 are not run)."""
    spec = read_json(rd.ensemble)
    preds: list[tuple[float, Prediction]] = []
    for m in spec["members"]:
        if m["weight"] > 0:
            run = Path(m["run"]) if Path(m["run"]).is_absolute() else rd.root / m["run"]
            if data is None and not run.is_dir():
                raise FileNotFoundError(f"{rd.ensemble}: member {m['name']!r} ({run}) is gone")
            pred = predict(run, data, folds, tta, scales, batch_size, image_dir, progress, feature_cache, **allow)
            s = float(m.get("scale", 1.0))  # the member's calibration, fitted with the weights
            pred.probs = rescale_probs(pred.probs, s)
            pred.fold_probs = {k: rescale_probs(p, s) for k, p in pred.fold_probs.items()}
            preds.append((float(m["weight"]), pred))
    first = preds[0][1]
    for _, p in preds[1:]:
        if p.label_map.classes != first.label_map.classes or not (p.ids == first.ids).all():
            raise ValueError(f"{rd.root}: the members' predictions do not line up (classes or ids differ)")
    prior = spec.get("uniform_weight", 0.0) / len(first.label_map)  # the blend's share of the uniform distribution
    probs = np.asarray(sum(w * p.probs for w, p in preds)) + prior
    shared = set.intersection(*(set(p.fold_probs) for _, p in preds))
    fold_probs = {k: np.asarray(sum(w * p.fold_probs[k] for w, p in preds)) + prior for k in sorted(shared)}
    issues = next((p.image_issues for _, p in preds if p.image_issues is not None), None)
    return Prediction(
        first.ids, np.asarray(probs), fold_probs, first.label_map, first.label_col, first.unseen_labels, issues
    )


def write_outputs(pred: Prediction, out_dir: str | Path) -> dict[str, Path]:
    """``submission.csv`` (``id,<label column>``, original class names), ``probabilities.csv`` and, for a model
    that reads images, ``image_issues.csv`` (``id,path,reason``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sub = pd.DataFrame({"id": pred.ids, pred.label_col: pred.labels})
    write_table(sub, out / "submission.csv")
    probs = pd.DataFrame(pred.probs, columns=list(pred.label_map.classes))
    probs.insert(0, "id", pred.ids)
    write_table(probs, out / "probabilities.csv")
    files = {"submission": out / "submission.csv", "probabilities": out / "probabilities.csv"}
    if pred.image_issues is not None:
        files["image_issues"] = write_image_issues(pred.image_issues, out / "image_issues.csv")
    return files

"""Rebuild a trained run from its folder alone and predict: fold-averaged probabilities, TTA, multi-scale."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aisle.config import AisleConfig, load_config
from aisle.data.labels import LabelMap
from aisle.data.products import Products, find_image_dir, load_products, products_from_frame
from aisle.inference.tta import TTA_POLICIES
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import create_classifier, use_channels_last
from aisle.training.checkpoint import excluded_prefixes, load_checkpoint
from aisle.training.loaders import build_loader, pretokenize

__all__ = ["Prediction", "load_fold_models", "predict", "write_outputs"]

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
    """

    ids: np.ndarray
    probs: np.ndarray
    fold_probs: dict[int, np.ndarray]
    label_map: LabelMap
    label_col: str
    unseen_labels: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> list:
        return self.label_map.decode(self.probs.argmax(1))


def _final_stage(run_dir: Path, cfg: AisleConfig) -> Path:
    names = [s.name for s in cfg.train.stages] or ["main"]
    return run_dir / names[-1]


def load_fold_models(run_dir: str | Path, folds: list[int] | None = None
                     ) -> tuple[AisleConfig, LabelMap, dict[int, ProductClassifier]]:
    """The run's config, label map and each finished fold's best model, rebuilt offline from the folder.

    Raises:
        FileNotFoundError: not a run folder, or a requested fold has no best checkpoint.
    """
    rd = Path(run_dir)
    if not (rd / "config.yaml").is_file() or not (rd / "label_map.json").is_file():
        raise FileNotFoundError(f"{rd} is not a finished run folder (config.yaml / label_map.json missing)")
    cfg = load_config(rd / "config.yaml")
    label_map = LabelMap.load(rd / "label_map.json")
    stage = _final_stage(rd, cfg)
    available = sorted(int(p.parent.name.split("_")[1]) for p in stage.glob("fold_*/best.safetensors"))
    chosen = folds if folds is not None else available
    missing = sorted(set(chosen) - set(available))
    if missing or not chosen:
        raise FileNotFoundError(f"{stage}: no best checkpoint for fold(s) {missing or chosen}; available: {available}")
    models = {}
    for k in chosen:
        model = create_classifier(cfg.model, len(label_map), assets=rd / "assets")
        models[k] = load_checkpoint(model, stage / f"fold_{k}" / "best.safetensors", rd / "template.safetensors").eval()
        if cfg.train.channels_last:
            use_channels_last(models[k])
    return cfg, label_map, models


def _views(tta: list[str]) -> list[Callable[[torch.Tensor], torch.Tensor] | None]:
    return [None] + [TTA_POLICIES.get(name) for name in tta]


def _shared_features(run_dir: Path, models: dict[int, ProductClassifier], products: Products, cfg: AisleConfig,
                     tta: list[str], scales: list[int], batch_size: int) -> dict:
    """Features of towers that training never changed (every fold holds the run's initial weights: frozen),
    encoded once for all folds and kept in the feature cache: {("image", size, view): (feats, has_image),
    ("text",): feats}."""
    if not cfg.train.feature_cache or not (run_dir / "template.safetensors").is_file():
        return {}
    from aisle.cache.encode import tower_features
    from aisle.cache.keys import tower_key

    stage = _final_stage(run_dir, cfg)
    # a fold checkpoint leaves out exactly the towers its training never changed (they are the template's)
    left_out = [set(excluded_prefixes(stage / f"fold_{k}" / "best.safetensors")) for k in models]

    def frozen(attr: str) -> bool:
        return all(f"{attr}." in s for s in left_out)

    out: dict = {}
    kw = {"batch_size": batch_size, "num_workers": cfg.train.num_workers, "multi_image": cfg.data.multi_image,
          "max_images": cfg.data.max_images, "max_pixels": cfg.data.max_image_pixels}
    first = next(iter(models.values()))
    if first.image_encoder is not None and frozen("image_encoder"):
        for size in scales or [None]:
            s = size or first.image_encoder.preprocess.size
            key = tower_key(first.image_encoder, {"image_size": s})
            for view in ["orig", *tta]:
                out[("image", size, view)] = tower_features(first.image_encoder, products, cfg.train.cache_dir,
                                                            view=view, image_size=s, key=key, **kw)
    if first.text_encoder is not None and frozen("text_encoder"):
        out[("text",)] = tower_features(first.text_encoder, products, cfg.train.cache_dir, **kw)[0]
    return out


def _run(model: ProductClassifier, loader, views: list[Callable | None],
         progress: Callable[[int], None] | None) -> np.ndarray:
    """Mean softmax over ``views`` (functions on the pixel batch; None = as is) for every row of ``loader``."""
    chunks = []
    with torch.inference_mode():
        for batch in loader:
            acc = 0.0
            for fn in views:
                b = dict(batch) if fn is None else {**batch, "image": fn(batch["image"])}
                acc = acc + torch.softmax(model(b)["logits"].float(), -1)
            chunks.append((acc / len(views)).numpy())
            if progress is not None:
                progress(len(batch["id"]))
    return np.concatenate(chunks)


def _predict_model(model: ProductClassifier, products: Products, cfg: AisleConfig, tta: list[str],
                   scales: list[int], batch_size: int, progress: Callable[[int], None] | None, shared: dict,
                   tokens: dict[str, np.ndarray] | None) -> np.ndarray:
    """Mean probabilities over image sizes and TTA views; cached features where ``shared`` has them,
    pre-tokenized texts where ``tokens`` are given."""
    text = shared.get(("text",))
    if model.image_encoder is None:
        loader = build_loader(products, None, model, cfg, train=False, batch_size=batch_size, text_features=text,
                              tokens=tokens)
        return _run(model, loader, [None], progress)
    names = ["orig", *tta]
    per_size = []
    for size in scales or [None]:
        cached = [shared.get(("image", size, v)) for v in names]
        if all(c is not None for c in cached):  # one pass per view over cached features: no pixels at all
            per_view = [_run(model, build_loader(products, None, model, cfg, train=False, batch_size=batch_size,
                                                 image_features=([f], has), text_features=text, tokens=tokens),
                             [None], progress)
                        for f, has in cached]
            per_size.append(np.mean(per_view, axis=0))
        else:  # decode each image once and apply every view to the batch
            loader = build_loader(products, None, model, cfg, train=False, batch_size=batch_size, image_size=size,
                                  text_features=text, tokens=tokens)
            per_size.append(_run(model, loader, [None if v == "orig" else TTA_POLICIES.get(v) for v in names],
                                 progress))
    return np.mean(per_size, axis=0)


def predict(run_dir: str | Path, data: str | Path | pd.DataFrame, folds: list[int] | None = None,
            tta: list[str] | None = None, scales: list[int] | None = None, batch_size: int | None = None,
            image_dir: str | Path | None = None, progress: Callable[[int], None] | None = None,
            feature_cache: bool | None = None) -> Prediction:
    """Average softmax probabilities over the run's fold models (and TTA views and image sizes).

    Args:
        run_dir: a finished run folder; nothing else is needed.
        data: a products table (path) to predict, or a DataFrame (relative image paths and the ``images/``
            folder are taken from ``image_dir``'s parent, else the working directory).
        folds: which folds' models (default: all finished).
        tta: TTA policy names (default: the run's ``infer.tta``).
        scales: image sizes to average over (default: the run's ``infer.scales``, else the model's own size).
        batch_size: default the run's ``infer.batch_size``.
        image_dir: image folder (default: the run's ``data.image_dir``, else ``images/`` beside the table).
        progress: called with the number of rows done (per fold and scale).
        feature_cache: encode towers that training never changed once for all folds, through the feature
            cache (default: the run's ``train.feature_cache``); False re-encodes per fold.
    """
    cfg, label_map, models = load_fold_models(run_dir, folds)
    if feature_cache is not None:
        cfg.train.feature_cache = feature_cache
    data_cfg = cfg.data.model_copy(update={"image_dir": str(image_dir) if image_dir else None})
    if isinstance(data, pd.DataFrame):
        root = Path(image_dir).parent if image_dir else Path(".")
        products = products_from_frame(data, data_cfg, root, image_dir or find_image_dir(root / "x.csv"),
                                       source="DataFrame")
    else:
        products = load_products(data, data_cfg)
    if cfg.train.num_workers and len(products) < 256:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 0})})
    tta = cfg.infer.tta if tta is None else tta
    scales = cfg.infer.scales if scales is None else scales
    for name in tta:
        TTA_POLICIES.get(name)  # unknown names fail before any work
    dups = products.duplicate_ids()
    if dups:
        log.warning("%s: %d duplicate id(s) (each row still gets its own prediction): %s", products.source,
                    len(dups), dups[:10])
    unseen: dict[str, int] = {}
    if products.labels is not None:
        _, counter = label_map.encode(products.labels)
        unseen = dict(counter)
        if unseen:
            log.warning("%s: %d label value(s) the run never saw (%d rows); they can never be predicted: %s",
                        products.source, len(unseen), sum(unseen.values()), list(unseen)[:10])
    bs = batch_size or cfg.infer.batch_size
    shared = _shared_features(Path(run_dir), models, products, cfg, tta, scales, bs)
    rows, tokens, order = products, None, None
    first = next(iter(models.values()))
    if first.text_encoder is not None and ("text",) not in shared:
        # every fold shares the run's one tokenizer: tokenize once, and run rows sorted by token count so each
        # batch pads only to its own longest row
        tokens = pretokenize(first.text_encoder, products.texts)
        order = np.argsort(tokens["attention_mask"].sum(1), kind="stable")
        rows, tokens = products.subset(order), {k: v[order] for k, v in tokens.items()}
        shared = {k: (v[0][order], v[1][order]) if k[0] == "image" else v[order] for k, v in shared.items()}
    fold_probs = {k: _predict_model(m, rows, cfg, tta, scales, bs, progress, shared, tokens)
                  for k, m in models.items()}
    if order is not None:
        inverse = np.argsort(order)
        fold_probs = {k: p[inverse] for k, p in fold_probs.items()}
    probs = np.mean(np.stack(list(fold_probs.values())), axis=0)
    schema_file = Path(run_dir) / "schema.json"
    trained_col = json.loads(schema_file.read_text()).get("label_col") if schema_file.is_file() else None
    label_col = trained_col or products.schema.label_col or "label"
    return Prediction(products.ids, probs, fold_probs, label_map, label_col, unseen)


def write_outputs(pred: Prediction, out_dir: str | Path) -> dict[str, Path]:
    """``submission.csv`` (``id,<label column>``, original class names) and ``probabilities.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sub = pd.DataFrame({"id": pred.ids, pred.label_col: pred.labels})
    sub.to_csv(out / "submission.csv", index=False)
    probs = pd.DataFrame(pred.probs, columns=list(pred.label_map.classes))
    probs.insert(0, "id", pred.ids)
    probs.to_csv(out / "probabilities.csv", index=False)
    return {"submission": out / "submission.csv", "probabilities": out / "probabilities.csv"}

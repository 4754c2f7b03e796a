"""K-fold training: ``run_cv`` runs every stage over the chosen folds; ``fit_fold`` trains one fold of one stage."""

from __future__ import annotations

import copy
import gc
import logging
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from aisle.config import AisleConfig, LearningRates, StageConfig, load_config, save_config
from aisle.data.prepare import TrainingData, load_training_data
from aisle.evaluation.metrics import classification_metrics
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import create_classifier, save_model_assets, set_trainable, use_channels_last
from aisle.training.callbacks import EpochCheckpoint, seed_epoch
from aisle.training.checkpoint import excluded_prefixes, load_optimizer_state, load_weights, read_json, write_json
from aisle.training.loaders import build_loader, pretokenize
from aisle.training.losses import LOSSES, class_weights
from aisle.training.module import ClassifierModule, predict_probs

__all__ = ["FoldResult", "resolve_precision", "run_cv"]

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    best_epoch: int
    seconds: float


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 mixed on GPUs that have it, fp16 mixed on other GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _stages(cfg: AisleConfig) -> list[StageConfig]:
    return list(cfg.train.stages) or [StageConfig(name="main")]


def _stage_lrs(cfg: AisleConfig, stage: StageConfig) -> LearningRates:
    if stage.lr is None:
        return cfg.train.lr
    merged = cfg.train.lr.model_dump()
    merged.update({k: v for k, v in stage.lr.model_dump().items() if v is not None and k in stage.lr.model_fields_set})
    return LearningRates(**merged)


def _apply_freezing(model: ProductClassifier, cfg: AisleConfig, stage: StageConfig) -> tuple[str, ...]:
    towers = {"image_encoder": cfg.model.dual if cfg.model.type == "dual" else cfg.model.image,
              "text_encoder": cfg.model.dual if cfg.model.type == "dual" else cfg.model.text}
    frozen = []
    for attr, tcfg in towers.items():
        tower = getattr(model, attr)
        if tower is None:
            continue
        # a tower with no pretrained weights (ngram:) has nothing to keep: freeze_encoders leaves it training
        trainable = tcfg.trainable and (not stage.freeze_encoders or getattr(tower, "from_scratch", False))
        set_trainable(tower, trainable, tcfg.train_last_n_blocks if trainable else None)
        if not any(p.requires_grad for p in tower.parameters()):
            frozen.append(attr)
    return tuple(frozen)


def _speed_switches(model: ProductClassifier, cfg: AisleConfig) -> None:
    """Settings that change speed, not results: channels-last image towers, torch.compile."""
    if cfg.train.channels_last:
        use_channels_last(model)
    if cfg.train.compile:
        for tower in (model.image_encoder, model.text_encoder):
            if tower is not None:
                tower.compile()  # in place: state_dict keys stay the same


def _param_counts(model: torch.nn.Module) -> dict[str, int]:
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def fit_fold(template: ProductClassifier, td: TrainingData, cfg: AisleConfig, stage: StageConfig, fold: int,
             run_dir: Path, decoded=None, tokens: dict[str, np.ndarray] | None = None,
             shared: dict | None = None) -> FoldResult:
    """Train one fold of one stage, resuming from ``last`` if an earlier run was cut off; returns its metrics.

    ``shared`` carries the features of frozen towers that still hold the template's weights from fold to fold
    (and stage to stage) of one run, so the cache is looked up once per run, not once per fold.
    """
    fold_dir = run_dir / stage.name / f"fold_{fold}"
    done = fold_dir / "done.json"
    if done.exists():
        d = read_json(done)
        log.info("stage %s fold %d already finished; skipping", stage.name, fold)
        return FoldResult(fold, d["metrics"], d["best_epoch"], d["seconds"])
    fold_dir.mkdir(parents=True, exist_ok=True)
    epochs = stage.epochs or cfg.train.epochs
    L.seed_everything(cfg.train.seed + fold, workers=True, verbose=False)

    model = copy.deepcopy(template)
    as_template = {"image_encoder.", "text_encoder."}  # towers still holding the template's weights
    if stage.init_from is not None:
        init = run_dir / stage.init_from / f"fold_{fold}" / "best.safetensors"
        load_weights(model, init)
        as_template &= set(excluded_prefixes(init))
    frozen = _apply_freezing(model, cfg, stage)
    # checkpoints leave out frozen towers that still equal the template (no copy of a ViT-L per epoch)
    exclude = tuple(f"{name}." for name in frozen if f"{name}." in as_template)
    _speed_switches(model, cfg)

    tr, va = np.flatnonzero(td.folds != fold), np.flatnonzero(td.folds == fold)
    y_tr = td.y[tr]
    weights = class_weights(y_tr, len(td.label_map), cfg.train.class_weights, cfg.train.class_weight_smoothing)
    sample_w = None
    if cfg.train.weighted_sampling:
        per_class = class_weights(y_tr, len(td.label_map), "inverse_freq")
        sample_w = per_class[y_tr]
    criterion = LOSSES.create("ce", weight=weights, label_smoothing=cfg.train.label_smoothing,
                              aux_weight=cfg.model.aux_loss_weight)
    img_f, txt_f = _cached_features(model, frozen, td, cfg, {n for n in frozen if f"{n}." in as_template},
                                    {} if shared is None else shared)
    dec = (lambda idx: decoded.subset(idx)) if decoded is not None else (lambda idx: None)
    tok = (lambda idx: {k: v[idx] for k, v in tokens.items()}) if tokens is not None else (lambda idx: None)
    train_loader = build_loader(td.products.subset(tr), y_tr, model, cfg, train=True, sample_weights=sample_w,
                                image_features=_rows(img_f, tr), text_features=None if txt_f is None else txt_f[tr],
                                decoded=dec(tr), tokens=tok(tr))
    val_loader = build_loader(td.products.subset(va), td.y[va], model, cfg, train=False,
                              image_features=_rows(img_f, va, views=1), text_features=None if txt_f is None else txt_f[va],
                              decoded=dec(va), tokens=tok(va))
    steps = math.ceil(len(train_loader) / cfg.train.accumulate_grad_batches) * epochs

    # resume: weights, optimizer, schedule and early-stopping state from the last finished epoch
    last = read_json(fold_dir / "last.json") if (fold_dir / "last.json").exists() else None
    offset = int(last["epoch"]) if last else 0
    if last:
        load_weights(model, fold_dir / "last.safetensors")
        hist = fold_dir / "history.csv"
        if hist.exists():  # drop rows of an epoch that was cut off after its row was written
            h = pd.read_csv(hist)
            h[h["epoch"] <= offset].to_csv(hist, index=False)
        log.info("stage %s fold %d: resuming after epoch %d", stage.name, fold, offset)
    module = ClassifierModule(model, criterion, cfg.train, _stage_lrs(cfg, stage), steps, frozen)

    callbacks: list[L.Callback] = [EpochCheckpoint(fold_dir, cfg.train.early_stopping_metric, offset,
                                                   last["best_score"] if last else None,
                                                   seed=cfg.train.seed + 1000 * fold,
                                                   generator=train_loader.generator,
                                                   exclude=exclude)]
    if cfg.train.early_stopping_patience:
        mode = "min" if cfg.train.early_stopping_metric == "val_loss" else "max"
        es = L.pytorch.callbacks.EarlyStopping(cfg.train.early_stopping_metric, patience=cfg.train.early_stopping_patience,
                                               mode=mode)
        if last and last.get("early_stopping"):
            es.wait_count = last["early_stopping"]["wait_count"]
            es.best_score = torch.tensor(last["early_stopping"]["best_score"])
        callbacks.append(es)
    loggers = [L.pytorch.loggers.TensorBoardLogger(str(fold_dir), name="tb", version="")]
    t0 = time.perf_counter()
    remaining = epochs - offset
    if remaining > 0:
        trainer = L.Trainer(
            max_epochs=remaining, accelerator=cfg.train.accelerator, devices=cfg.train.devices,
            strategy=cfg.train.strategy, num_nodes=cfg.train.num_nodes, precision=resolve_precision(cfg.train.precision),
            accumulate_grad_batches=cfg.train.accumulate_grad_batches, gradient_clip_val=cfg.train.gradient_clip_val,
            callbacks=callbacks, logger=loggers, enable_checkpointing=False, num_sanity_val_steps=0,
            enable_model_summary=False, log_every_n_steps=max(1, min(50, len(train_loader))),
            enable_progress_bar=os.environ.get("AISLE_PROGRESS", "1") == "1", deterministic=False,
        )
        if last:
            _restore_optimizer(module, trainer, fold_dir, last)
        seed_epoch(cfg.train.seed + 1000 * fold, offset, train_loader.generator)
        trainer.fit(module, train_loader, val_loader)
        if not trainer.is_global_zero:
            return FoldResult(fold, {}, 0, 0.0)
    seconds = time.perf_counter() - t0 + (read_json(fold_dir / "time.json")["seconds"] if (fold_dir / "time.json").exists() else 0.0)
    write_json(fold_dir / "time.json", {"seconds": seconds})

    best = read_json(fold_dir / "best.json")
    load_weights(model, fold_dir / "best.safetensors")
    device = "cuda" if torch.cuda.is_available() and cfg.train.accelerator != "cpu" else "cpu"
    probs = predict_probs(model.to(device), val_loader, device)
    model.cpu()
    metrics = classification_metrics(td.y[va], probs)
    _write_oof(fold_dir / "oof.csv", td, va, fold, probs)
    write_json(done, {"metrics": metrics, "best_epoch": best["epoch"], "seconds": seconds,
                      "params": _param_counts(model)})
    for name in ("last.safetensors", "last_optim.safetensors", "last_optim.json"):
        (fold_dir / name).unlink(missing_ok=True)  # the fold is finished: its resume state is no longer needed
    return FoldResult(fold, metrics, int(best["epoch"]), seconds)


def _cached_features(model: ProductClassifier, frozen: tuple[str, ...], td: TrainingData, cfg: AisleConfig,
                     as_template: set[str], shared: dict):
    """Frozen towers' features for every training row, from the feature cache (computed once, reused by
    every fold, stage and later run). Towers named in ``as_template`` hold the template's weights: their
    features are kept in ``shared`` for the run's other folds. Returns (image: ([views], has_image) or None,
    text: (N, D) or None)."""
    if not cfg.train.feature_cache:
        return None, None
    from aisle.cache.encode import tower_features

    kw = {"batch_size": cfg.infer.batch_size, "num_workers": cfg.train.num_workers,
          "multi_image": cfg.data.multi_image, "max_images": cfg.data.max_images,
          "max_pixels": cfg.data.max_image_pixels}

    def features(name: str, compute):
        if name not in as_template:
            return compute()
        if name not in shared:
            shared[name] = compute()
        return shared[name]

    image = text = None
    if "image_encoder" in frozen:
        def image_views():
            views = [tower_features(model.image_encoder, td.products, cfg.train.cache_dir, view=v, **kw)
                     for v in cfg.train.cache_views]
            return [f for f, _ in views], views[0][1]

        image = features("image_encoder", image_views)
    if "text_encoder" in frozen:
        text = features("text_encoder",
                        lambda: tower_features(model.text_encoder, td.products, cfg.train.cache_dir, **kw)[0])
    return image, text


def _rows(image, idx: np.ndarray, views: int | None = None):
    if image is None:
        return None
    feats, has = image
    return [f[idx] for f in feats[:views]], has[idx]


def _restore_optimizer(module: ClassifierModule, trainer: L.Trainer, fold_dir: Path, last: dict) -> None:
    """Hook the optimizer/schedule restore into ``configure_optimizers`` (Lightning builds them in ``fit``)."""
    build = module.configure_optimizers

    def configure():
        conf = build()
        load_optimizer_state(conf["optimizer"], fold_dir / "last_optim.safetensors")
        if last.get("scheduler"):
            sched = conf["lr_scheduler"]["scheduler"]
            # our lambdas are plain closures rebuilt identically; only the step counters are state
            sched.load_state_dict({**last["scheduler"], "lr_lambdas": [None] * len(sched.lr_lambdas)})
        return conf

    module.configure_optimizers = configure  # type: ignore[method-assign]


def _write_oof(path: Path, td: TrainingData, idx: np.ndarray, fold: int, probs: np.ndarray) -> None:
    df = pd.DataFrame(probs, columns=list(td.label_map.classes))
    df.insert(0, "id", td.products.ids[idx])
    df.insert(1, "fold", fold)
    df.insert(2, "label", td.products.labels[idx])
    df.insert(3, "pred", [td.label_map.classes[i] for i in probs.argmax(1)])
    df.to_csv(path, index=False)


def _summarise(results: list[FoldResult], stage: str, params: dict[str, int]) -> dict:
    keys = sorted({k for r in results for k in r.metrics})
    mean = {k: statistics.fmean(r.metrics[k] for r in results) for k in keys}
    std = {k: statistics.pstdev([r.metrics[k] for r in results]) for k in keys}
    return {"stage": stage, "folds": {str(r.fold): {**r.metrics, "best_epoch": r.best_epoch,
                                                    "seconds": round(r.seconds, 2)} for r in results},
            "mean": mean, "std": std, "train_seconds": round(sum(r.seconds for r in results), 2), "params": params}


def is_rank_zero() -> bool:
    """False in the extra processes Lightning's DDP launcher starts (they re-run the same command)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def prepare_run_dir(cfg: AisleConfig, run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"run folder {run_dir} exists; continue it with `aisle train --resume {run_dir}` "
                                  f"or start over with --overwrite")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")


def run_cv(cfg: AisleConfig, run_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
           folds: list[int] | None = None, frame: pd.DataFrame | None = None, base_dir: str | Path = ".") -> dict:
    """Train every stage over the chosen folds and write the run folder.

    Args:
        cfg: the resolved config (with ``resume``, the run folder's own config is used instead).
        run_dir: the run folder (default ``output_dir/name``).
        resume: continue an interrupted run: finished folds are kept, a cut-off fold restarts from its last epoch.
        overwrite: replace an existing run folder.
        folds: fold numbers to train (default ``train.folds`` or all).
        frame: train on this DataFrame instead of ``data.train_csv`` (Python API; it is saved in the run folder
            as ``train_data.csv`` so the run can be resumed and reported on).
        base_dir: the data root for ``frame`` (relative image paths, ``images/`` folder).

    Returns:
        The CV summary of the last stage (also in ``run_dir/cv_summary.json``), with every stage under ``stages``.
    """
    rd = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.name
    lead = is_rank_zero()  # other DDP ranks train alongside but write nothing (rank 0 prepared the folder)
    if resume or not lead:
        if not (rd / "config.yaml").exists():
            raise FileNotFoundError(f"{rd} is not a run folder (no config.yaml); nothing to resume")
        cfg = load_config(rd / "config.yaml")
    else:
        if frame is not None:
            cfg = cfg.model_copy(deep=True)
            if cfg.data.image_dir is None and (Path(base_dir) / "images").is_dir():
                cfg.data.image_dir = str((Path(base_dir) / "images").resolve())
        prepare_run_dir(cfg, rd, overwrite)
        if frame is not None:
            frame.to_csv(rd / "train_data.csv", index=False)
            cfg.data.train_csv, cfg.data.class_folder = str((rd / "train_data.csv").resolve()), None
            cfg.data.data_root = str(Path(base_dir).resolve())  # relative image paths keep their root
            save_config(cfg, rd / "config.yaml")
    td = load_training_data(cfg.data, frame=frame if lead else None, base_dir=base_dir)
    if lead:
        td.label_map.save(rd / "label_map.json")
        sch = td.products.schema
        write_json(rd / "schema.json", {"id_col": sch.id_col, "label_col": sch.label_col,
                                        "text_cols": list(sch.text_cols), "image_col": sch.image_col})
        pd.DataFrame({"id": td.products.ids, "fold": td.folds}).to_csv(rd / "folds.csv", index=False)
    chosen = folds if folds is not None else (cfg.train.folds or sorted(set(td.folds.tolist())))
    unknown = sorted(set(chosen) - set(td.folds.tolist()))
    if unknown:
        raise ValueError(f"fold(s) {unknown} do not exist; folds are {sorted(set(td.folds.tolist()))}")

    L.seed_everything(cfg.train.seed, verbose=False)
    assets = rd / "assets"
    reuse = (resume or not lead) and (assets / "towers.json").exists()
    template = create_classifier(cfg.model, len(td.label_map), td.products.texts, assets=assets if reuse else None)
    if reuse and (rd / "template.safetensors").exists():
        load_weights(template, rd / "template.safetensors")
    else:
        save_model_assets(template, cfg.model, assets)
        from aisle.training.checkpoint import save_weights

        save_weights(template, rd / "template.safetensors")  # initial weights: a resumed run starts folds identically
    params = _param_counts(template)
    decoded = None
    if cfg.data.decoded_cache and template.image_encoder is not None:
        from aisle.cache.decoded import DecodedImages

        size = cfg.data.decoded_size or round(1.15 * template.image_encoder.preprocess.size)
        decoded = DecodedImages.build(td.products, size, cfg.train.cache_dir, max_pixels=cfg.data.max_image_pixels)
    tokens = pretokenize(template.text_encoder, td.products.texts) if template.text_encoder is not None else None
    summaries, shared = {}, {}
    for stage in _stages(cfg):
        results = []
        for k in chosen:
            log.info("stage %s: fold %d (%d/%d)", stage.name, k, chosen.index(k) + 1, len(chosen))
            results.append(fit_fold(template, td, cfg, stage, k, rd, decoded, tokens, shared))
            gc.collect()  # Lightning keeps a fold's loaders in reference cycles: free their persistent workers now
        if not lead:
            continue
        oof = pd.concat([pd.read_csv(rd / stage.name / f"fold_{k}" / "oof.csv") for k in chosen])
        oof.to_csv(rd / stage.name / "oof.csv", index=False)
        summaries[stage.name] = _summarise(results, stage.name, params)
        write_json(rd / stage.name / "cv_summary.json", summaries[stage.name])
    if not lead:
        return {}
    summary = {**summaries[_stages(cfg)[-1].name], "run_dir": str(rd), "model_type": cfg.model.type,
               "fusion": cfg.model.fusion, "stages": summaries}
    write_json(rd / "cv_summary.json", summary)
    return summary

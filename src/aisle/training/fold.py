"""One fold of one stage: ``fit_fold`` = prepare (model, loaders) -> train (Lightning, resumable) -> score (OOF)."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from aisle.config import AisleConfig, LearningRates, StageConfig
from aisle.data.dataset import Precomputed
from aisle.data.loaders import LoaderOptions, build_loader
from aisle.data.prepare import TrainingData
from aisle.devices import run_device
from aisle.evaluation.metrics import classification_metrics
from aisle.logging_setup import hide_lightning_banners
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import loader_inputs, set_trainable, use_channels_last
from aisle.progress import bar_kind, bars_on
from aisle.rundir import FoldDir, RunDir
from aisle.serialization import excluded_prefixes, load_weights, read_json, write_json
from aisle.tables import read_numeric_table, require_finite, write_table
from aisle.training.callbacks import EpochCheckpoint, ResumeState, epoch_bar, seed_epoch
from aisle.training.features import frozen_features
from aisle.training.losses import LOSSES, RowTargets, class_weights
from aisle.training.module import ClassifierModule, predict_probs
from aisle.training.tracking import tracked_fold

__all__ = [
    "FoldResult",
    "RunContext",
    "apply_freezing",
    "finished_fold",
    "fit_fold",
    "param_counts",
    "resolve_precision",
    "write_oof",
]

log = logging.getLogger(__name__)

TOWERS = ("image_encoder", "text_encoder")


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    best_epoch: int
    seconds: float


@dataclass
class RunContext:
    """What every fold of a run shares.

    Attributes:
        cfg: the run's resolved config.
        td: the training rows, labels and folds.
        rd: the run folder.
        template: the model every fold starts from.
        precomputed: decoded pixels / pre-tokenized texts for every training row.
        shared: frozen towers' features that still hold the template's weights, looked up once per run.
    """

    cfg: AisleConfig
    td: TrainingData
    rd: RunDir
    template: ProductClassifier
    precomputed: Precomputed = field(default_factory=Precomputed)
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class FoldModel:
    """A fold's model before training: which towers are frozen and which checkpoints may leave out."""

    model: ProductClassifier
    frozen: tuple[str, ...]
    as_template: set[str]  # frozen towers that still hold the template's weights

    @property
    def exclude(self) -> tuple[str, ...]:
        """State-dict prefixes the checkpoints leave out (no copy of a frozen ViT-L per epoch)."""
        return tuple(f"{name}." for name in self.frozen if name in self.as_template)


@dataclass
class FoldLoaders:
    train: DataLoader
    val: DataLoader
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_targets: RowTargets | None = None  # when pseudo-labelled rows train


def row_targets(td: TrainingData, idx: np.ndarray, pseudo_weight: float) -> RowTargets | None:
    """Targets and loss weights of rows ``idx`` when pseudo-labelled rows are among them, else None."""
    pseudo = td.pseudo[idx]
    if not pseudo.any():
        return None
    targets = td.targets[idx] if td.targets is not None else np.eye(len(td.label_map), dtype=np.float32)[td.y[idx]]
    weights = np.where(pseudo, pseudo_weight, 1.0).astype(np.float32)
    return RowTargets(torch.from_numpy(np.ascontiguousarray(targets)), torch.from_numpy(weights))


def resolve_precision(
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"], accelerator: str = "auto"
) -> Literal["32-true", "bf16-mixed", "16-mixed"]:
    """``auto``: bf16 mixed on GPUs that have it, fp16 mixed on other GPUs, fp32 on CPU (``runtime.accelerator``
    cpu included)."""
    if precision != "auto":
        return precision
    if run_device(accelerator) == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def stage_lrs(cfg: AisleConfig, stage: StageConfig) -> LearningRates:
    """The stage's learning rates over the ``train.lr`` defaults (only the keys the stage sets)."""
    if stage.lr is None:
        return cfg.train.lr
    merged = cfg.train.lr.model_dump()
    merged.update({k: v for k, v in stage.lr.model_dump().items() if v is not None and k in stage.lr.model_fields_set})
    return LearningRates(**merged)


def apply_freezing(model: ProductClassifier, cfg: AisleConfig, stage: StageConfig) -> tuple[str, ...]:
    """Freeze towers as the tower configs and the stage ask; return the towers left with nothing to train."""
    frozen = []
    for attr, tcfg in cfg.model.towers().items():
        tower = getattr(model, attr)
        if tower is None:
            continue
        # a tower with no pretrained weights (ngram:) has nothing to keep: freeze_encoders leaves it training
        trainable = getattr(tcfg, "trainable", True) and (not stage.freeze_encoders or tower.from_scratch)
        last_n = getattr(tcfg, "train_last_n_blocks", None)  # ngram: has no blocks to choose from
        set_trainable(tower, trainable, last_n if trainable else None)
        if not any(p.requires_grad for p in tower.parameters()):
            frozen.append(attr)
    return tuple(frozen)


def prepare_model(ctx: RunContext, stage: StageConfig, fold: int) -> FoldModel:
    """The template's copy for this fold: initialised from an earlier stage, frozen, switched for speed."""
    model = copy.deepcopy(ctx.template)
    as_template = set(TOWERS)
    if stage.init_from is not None:
        init = ctx.rd.fold(stage.init_from, fold).best
        load_weights(model, init)
        as_template &= {p.rstrip(".") for p in excluded_prefixes(init)}
    frozen = apply_freezing(model, ctx.cfg, stage)
    if ctx.cfg.runtime.channels_last:
        use_channels_last(model)
    if ctx.cfg.runtime.compile:
        for tower in (model.image_encoder, model.text_encoder):
            if tower is not None:
                tower.compile()  # in place: state_dict keys stay the same
    return FoldModel(model, frozen, as_template & set(frozen))


def prepare_loaders(ctx: RunContext, fm: FoldModel, fold: int) -> FoldLoaders:
    """Training and validation loaders of one fold, reading cached features of frozen towers where it can."""
    cfg, td = ctx.cfg, ctx.td
    tr, va = td.train_rows(fold), np.flatnonzero(td.folds == fold)
    sample_w = None
    if cfg.train.weighted_sampling:
        # "inverse_freq" always gives weights (only "none" gives None)
        sample_w = cast(np.ndarray, class_weights(td.y[tr], len(td.label_map), "inverse_freq"))[td.y[tr]]
    image, text = frozen_features(fm.model, fm.frozen, fm.as_template, td.products, cfg, ctx.shared)
    pre = Precomputed(image, text, ctx.precomputed.decoded, ctx.precomputed.tokens)
    opts = LoaderOptions.create(cfg.data, cfg.train.batch_size, cfg.runtime.num_workers, cfg.train.seed)
    inputs = loader_inputs(fm.model)
    train = build_loader(
        td.products.subset(tr),
        td.y[tr],
        opts,
        train=True,
        sample_weights=sample_w,
        precomputed=pre.subset(tr),
        **inputs,
    )
    val = build_loader(
        td.products.subset(va), td.y[va], opts, train=False, precomputed=pre.subset(va, views=1), **inputs
    )
    return FoldLoaders(train, val, tr, va, row_targets(td, tr, cfg.train.pseudo_weight))


def _trainer(
    cfg: AisleConfig, epochs: int, callbacks: list[L.Callback], loggers: list[Logger], batches: int
) -> L.Trainer:
    hide_lightning_banners()  # accelerator summary, tips, "stopped: max_epochs reached"
    return L.Trainer(
        max_epochs=epochs,
        accelerator=cfg.runtime.accelerator,
        devices=cfg.runtime.devices,
        strategy=cfg.train.strategy,
        num_nodes=cfg.train.num_nodes,
        precision=resolve_precision(cfg.train.precision, cfg.runtime.accelerator),
        accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        gradient_clip_val=cfg.train.gradient_clip_val,
        callbacks=callbacks,
        logger=loggers,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, batches)),
        deterministic=False,
        enable_progress_bar=bars_on(),
    )


def _callbacks(
    ctx: RunContext, fm: FoldModel, fold: int, fd: FoldDir, loaders: FoldLoaders, last: dict | None
) -> list[L.Callback]:
    tcfg = ctx.cfg.train
    seed = tcfg.seed + 1000 * fold
    callbacks: list[L.Callback] = [
        EpochCheckpoint(
            fd,
            tcfg.early_stopping_metric,
            int(last["epoch"]) if last else 0,
            last["best_score"] if last else None,
            seed=seed,
            generator=loaders.train.generator,
            exclude=fm.exclude,
        )
    ]
    if tcfg.early_stopping_patience:
        mode = "min" if tcfg.early_stopping_metric == "val_loss" else "max"
        es = L.pytorch.callbacks.EarlyStopping(
            tcfg.early_stopping_metric, patience=tcfg.early_stopping_patience, mode=mode
        )
        if last and last.get("early_stopping"):
            es.load_state_dict(
                {
                    **es.state_dict(),
                    **last["early_stopping"],
                    "best_score": torch.tensor(last["early_stopping"]["best_score"]),
                }
            )
        callbacks.append(es)
    if last:
        callbacks.append(ResumeState(fd, last))
    bar = epoch_bar(bar_kind())
    if bar is not None:
        callbacks.append(bar)
    return callbacks


def _resume_point(fd: FoldDir, model: ProductClassifier, stage: str, fold: int) -> dict | None:
    """The state of the last finished epoch of a cut-off fit (weights loaded into ``model``), or None."""
    if not fd.last_info.exists():
        return None
    last = read_json(fd.last_info)
    load_weights(model, fd.last)
    if fd.history.exists():  # drop rows of an epoch that was cut off after its row was written
        h = read_numeric_table(fd.history, (), finite=False)
        write_table(h[h["epoch"] <= int(last["epoch"])], fd.history)
    log.info("stage %s fold %d: resuming after epoch %d", stage, fold, int(last["epoch"]))
    return last


def train_fold(
    ctx: RunContext, stage: StageConfig, fold: int, fm: FoldModel, loaders: FoldLoaders, fd: FoldDir
) -> float | None:
    """Fit the fold's remaining epochs; return the fold's training seconds (None on non-zero DDP ranks)."""
    cfg = ctx.cfg
    epochs = stage.epochs or cfg.train.epochs
    y_tr = ctx.td.y[loaders.train_idx]
    weights = class_weights(y_tr, len(ctx.td.label_map), cfg.train.class_weights, cfg.train.class_weight_smoothing)
    loss = stage.loss or cfg.train.loss
    criterion = (
        LOSSES.create(
            "ce", weight=weights, label_smoothing=cfg.train.label_smoothing, aux_weight=cfg.model.aux_loss_weight
        )
        if loss == "ce"
        else LOSSES.create(loss)
    )
    last = _resume_point(fd, fm.model, stage.name, fold)
    offset = int(last["epoch"]) if last else 0
    steps = math.ceil(len(loaders.train) / cfg.train.accumulate_grad_batches) * epochs
    module = ClassifierModule(
        fm.model, criterion, cfg.train, stage_lrs(cfg, stage), steps, fm.frozen, loaders.train_targets
    )
    t0 = time.perf_counter()
    if epochs > offset:
        callbacks = _callbacks(ctx, fm, fold, fd, loaders, last)
        with tracked_fold(cfg, ctx.rd, stage.name, fold) as loggers:
            trainer = _trainer(cfg, epochs - offset, callbacks, loggers, len(loaders.train))
            seed_epoch(cfg.train.seed + 1000 * fold, offset, loaders.train.generator)
            trainer.fit(module, loaders.train, loaders.val)
        if not trainer.is_global_zero:
            return None
    seconds = time.perf_counter() - t0 + (read_json(fd.time)["seconds"] if fd.time.exists() else 0.0)
    write_json(fd.time, {"seconds": seconds})
    return seconds


def score_fold(
    ctx: RunContext, fold: int, fm: FoldModel, loaders: FoldLoaders, fd: FoldDir, seconds: float
) -> FoldResult:
    """The best epoch's out-of-fold probabilities and metrics; the fold is marked done."""
    best = read_json(fd.best_info)
    model = load_weights(fm.model, fd.best)
    device = run_device(ctx.cfg.runtime.accelerator)
    probs = predict_probs(model.to(device), loaders.val, device)
    model.cpu()
    metrics = classification_metrics(ctx.td.y[loaders.val_idx], probs)
    write_oof(fd, ctx.td, loaders.val_idx, fold, probs)
    write_json(
        fd.done, {"metrics": metrics, "best_epoch": best["epoch"], "seconds": seconds, "params": param_counts(model)}
    )
    for path in fd.resume_files():
        path.unlink(missing_ok=True)  # the fold is finished: its resume state is no longer needed
    return FoldResult(fold, metrics, int(best["epoch"]), seconds)


def finished_fold(fd: FoldDir, stage: StageConfig, fold: int) -> FoldResult | None:
    """The result of a fold an earlier (interrupted) run finished, or None."""
    if not fd.done.exists():
        return None
    d = read_json(fd.done)
    log.info("stage %s fold %d already finished; skipping", stage.name, fold)
    return FoldResult(fold, d["metrics"], d["best_epoch"], d["seconds"])


def fit_fold(ctx: RunContext, stage: StageConfig, fold: int) -> FoldResult:
    """Train one fold of one stage, resuming from its last epoch if an earlier run was cut off."""
    fd = ctx.rd.fold(stage.name, fold)
    fd.root.mkdir(parents=True, exist_ok=True)
    L.seed_everything(ctx.cfg.train.seed + fold, workers=True, verbose=False)
    fm = prepare_model(ctx, stage, fold)
    loaders = prepare_loaders(ctx, fm, fold)
    seconds = train_fold(ctx, stage, fold, fm, loaders, fd)
    if seconds is None:
        return FoldResult(fold, {}, 0, 0.0)
    return score_fold(ctx, fold, fm, loaders, fd, seconds)


def write_oof(fd: FoldDir, td: TrainingData, idx: np.ndarray, fold: int, probs: np.ndarray) -> None:
    require_finite(probs, td.products.ids[idx], f"fold {fold}'s out-of-fold predictions")
    df = pd.DataFrame(probs, columns=list(td.label_map.classes))
    df.insert(0, "id", td.products.ids[idx])
    df.insert(1, "fold", fold)
    labels = td.products.labels
    if labels is None:
        raise ValueError(f"{td.products.source}: training data without labels")
    df.insert(2, "label", labels[idx])
    df.insert(3, "pred", [td.label_map.classes[i] for i in probs.argmax(1)])
    write_table(df, fd.oof)

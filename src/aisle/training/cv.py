"""K-fold training: ``run_cv`` prepares the run folder and runs every stage over the chosen folds."""

from __future__ import annotations

import gc
import logging
import shutil
import statistics
import time
from pathlib import Path

import lightning as L
import pandas as pd

from aisle.config import AisleConfig, load_config, save_config
from aisle.config.inert import warn_inert
from aisle.data.class_texts import class_texts_for
from aisle.data.dataset import Precomputed
from aisle.data.image_report import report_image_issues
from aisle.data.loaders import pretokenize
from aisle.data.prepare import TrainingData, load_training_data
from aisle.locking import hold_run_dir, is_rank_zero
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import (
    check_tower_names,
    check_tower_weights,
    create_classifier,
    has_model_assets,
    save_model_assets,
)
from aisle.rundir import RunDir
from aisle.serialization import load_weights, read_json, save_weights, write_json
from aisle.tables import read_numeric_table, write_table
from aisle.training.fold import FoldResult, RunContext, finished_fold, fit_fold, param_counts
from aisle.training.linear import fit_linear_fold, is_fitted_model
from aisle.training.tracking import check_loggers, log_run_end

__all__ = ["prepare_run_dir", "run_cv"]

log = logging.getLogger(__name__)


def _summarise(results: list[FoldResult], stage: str, params: dict[str, int]) -> dict:
    """A stage's CV summary; ``train_seconds`` is its folds' fitting time (the run's own wall time, encoding and
    image checks included, is ``train_seconds`` of ``cv_summary.json``)."""
    keys = sorted({k for r in results for k in r.metrics})
    mean = {k: statistics.fmean(r.metrics[k] for r in results) for k in keys}
    std = {k: statistics.pstdev([r.metrics[k] for r in results]) for k in keys}
    return {
        "stage": stage,
        "folds": {
            str(r.fold): {**r.metrics, "best_epoch": r.best_epoch, "seconds": round(r.seconds, 2)} for r in results
        },
        "mean": mean,
        "std": std,
        "train_seconds": round(sum(r.seconds for r in results), 2),
        "params": params,
    }


def prepare_run_dir(cfg: AisleConfig, rd: RunDir, overwrite: bool) -> None:
    """An empty run folder holding the resolved config (an existing one only with ``overwrite``).

    Call it holding the folder's lock (:func:`aisle.locking.hold_run_dir`): the lock file is kept.
    """
    old = rd.contents()
    if old:
        if not overwrite:
            raise FileExistsError(
                f"run folder {rd.root} exists; continue it with `aisle train --resume {rd.root}` "
                f"or start over with --overwrite"
            )
        for p in old:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    rd.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, rd.config)


def run_cv(
    cfg: AisleConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    folds: list[int] | None = None,
    frame: pd.DataFrame | None = None,
    base_dir: str | Path = ".",
) -> dict:
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
    started, fitted_before = time.perf_counter(), 0.0
    rd = RunDir(run_dir if run_dir is not None else Path(cfg.output_dir) / cfg.name)
    lead = is_rank_zero()  # other DDP ranks train alongside but write nothing (rank 0 prepared the folder)
    if resume or not lead:
        if not rd.is_run():
            raise FileNotFoundError(f"{rd.root} is not a run folder (no {rd.config.name}); nothing to resume")
        cfg = load_config(rd.config)
    check_tower_names(cfg.model)  # before any data is read or folder written
    check_tower_weights(cfg.model)
    check_loggers(cfg.train.loggers)
    warn_inert(cfg)
    with hold_run_dir(rd):  # one writer per run folder, before --overwrite clears anything
        if lead and not resume:
            cfg = _start_run_dir(cfg, rd, overwrite, frame, base_dir)
        td = load_training_data(cfg.data, frame=frame if lead else None, base_dir=base_dir)
        if lead:
            _write_data_files(rd, td)
            _report_images(cfg, td, rd)
        chosen = folds if folds is not None else (cfg.train.folds or td.fold_ids)
        unknown = sorted(set(chosen) - set(td.fold_ids))
        if unknown:
            raise ValueError(f"fold(s) {unknown} do not exist; folds are {td.fold_ids}")
        L.seed_everything(cfg.train.seed, verbose=False)
        ctx = _context(cfg, td, rd, reuse=(resume or not lead) and has_model_assets(rd.assets))
        summaries = {}
        fit = fit_linear_fold if is_fitted_model(ctx.template) else fit_fold
        for stage in rd.stages(cfg):
            results = []
            for k in chosen:
                log.info("stage %s: fold %d (%d/%d)", stage.name, k, chosen.index(k) + 1, len(chosen))
                earlier = finished_fold(rd.fold(stage.name, k), stage, k)
                fitted_before += earlier.seconds if earlier else 0.0  # by an earlier (interrupted) command
                results.append(earlier or fit(ctx, stage, k))
                gc.collect()  # Lightning keeps a fold's loaders in reference cycles: free their workers now
            if not lead:
                continue
            oof = pd.concat([read_numeric_table(rd.fold(stage.name, k).oof) for k in chosen])
            write_table(oof, rd.stage_oof(stage.name))
            # what trains in this stage (a frozen stage counts only its head), as its folds recorded it
            params = read_json(rd.fold(stage.name, chosen[0]).done).get("params") or param_counts(ctx.template)
            summaries[stage.name] = _summarise(results, stage.name, params)
            write_json(rd.stage_summary(stage.name), summaries[stage.name])
        if not lead:
            return {}
        summary = _run_summary(cfg, rd, summaries, time.perf_counter() - started + fitted_before)
        write_json(rd.summary, summary)
        log_run_end(cfg, rd, summary)
        return summary


def _run_summary(cfg: AisleConfig, rd: RunDir, summaries: dict[str, dict], seconds: float) -> dict:
    """The last stage's summary with the run's own facts; ``train_seconds`` is this command's wall time (every
    stage, feature encoding and image checks included) plus the fitting time of folds an earlier, interrupted
    command finished; ``fitting_seconds`` is the folds' fitting alone."""
    fitting = sum(sum(f["seconds"] for f in s["folds"].values()) for s in summaries.values())
    return {
        **summaries[rd.final_stage(cfg)],
        "train_seconds": round(seconds, 2),
        "fitting_seconds": round(fitting, 2),
        "run_dir": str(rd.root),
        "model_type": cfg.model.type,
        "fusion": cfg.model.fusion_kind,
        "stages": summaries,
    }


def _start_run_dir(
    cfg: AisleConfig, rd: RunDir, overwrite: bool, frame: pd.DataFrame | None, base_dir: str | Path
) -> AisleConfig:
    """A fresh run folder with the resolved config; a DataFrame is saved in it (the run's own data)."""
    if frame is not None:
        cfg = cfg.model_copy(deep=True)
        if cfg.data.image_dir is None and (Path(base_dir) / "images").is_dir():
            cfg.data.image_dir = str((Path(base_dir) / "images").resolve())
    prepare_run_dir(cfg, rd, overwrite)
    if frame is not None:
        write_table(frame, rd.train_data)
        cfg.data.train_csv, cfg.data.class_folder = str(rd.train_data.resolve()), None
        cfg.data.data_root = str(Path(base_dir).resolve())  # relative image paths keep their root
        save_config(cfg, rd.config)
    return cfg


def _write_data_files(rd: RunDir, td: TrainingData) -> None:
    td.label_map.save(rd.label_map)
    sch = td.products.schema
    write_json(
        rd.schema,
        {
            "id_col": sch.id_col,
            "label_col": sch.label_col,
            "text_cols": list(sch.text_cols),
            "attribute_cols": list(sch.attribute_cols),
            "image_col": sch.image_col,
        },
    )
    real, pseudo = ~td.pseudo, td.pseudo
    write_table(pd.DataFrame({"id": td.products.ids[real], "fold": td.folds[real]}), rd.folds)
    if pseudo.any():  # they train in every fold and are in no fold: not in folds.csv, oof.csv or any score
        rows = {"id": td.products.ids[pseudo], "label": td.label_map.decode(td.y[pseudo])}
        write_table(pd.DataFrame(rows), rd.pseudo_rows)


def _report_images(cfg: AisleConfig, td: TrainingData, rd: RunDir) -> None:
    """Once per run, before any fold: one summary line of the unusable images, and all of them in a CSV."""
    if "image_encoder" in cfg.model.tower_sections():
        report_image_issues(td.products, cfg.data, True, cfg.runtime.cache_dir, rd.image_issues)


def _context(cfg: AisleConfig, td: TrainingData, rd: RunDir, reuse: bool) -> RunContext:
    """The template model (rebuilt from the run's assets when resuming) and the work every fold shares."""
    texts = None  # class texts: rendered once for a new run; a resumed one reads them from its assets
    if cfg.model.head == "class_text" and not reuse:
        d = cfg.data
        texts = class_texts_for(td.label_map.classes, d.class_texts, d.class_text_templates, d.allow_extra_class_texts)
    template = create_classifier(
        cfg.model, len(td.label_map), td.products.texts, assets=rd.assets if reuse else None, class_texts=texts
    )
    if reuse and rd.template.exists():
        load_weights(template, rd.template)
    else:
        save_model_assets(template, cfg.model, rd.assets)
        save_weights(template, rd.template)  # initial weights: a resumed run starts folds identically
    return RunContext(cfg, td, rd, template, _precompute(cfg, td, template))


def _precompute(cfg: AisleConfig, td: TrainingData, template: ProductClassifier) -> Precomputed:
    """Pixels decoded once (``data.decoded_cache``) and texts tokenized once, for every training row."""
    decoded = None
    # a linear model reads its frozen image tower's cached features: no pixels to decode
    if cfg.data.decoded_cache and template.image_encoder is not None and not is_fitted_model(template):
        from aisle.cache.decoded import DecodedImages

        decoded = DecodedImages.build(
            td.products,
            template.image_encoder.preprocess.size,  # the working size the loaders decode JPEGs to
            cfg.runtime.cache_dir,
            max_side=cfg.data.decoded_size,
            max_pixels=cfg.data.max_image_pixels,
        )
    text = template.text_encoder
    tokens = None
    if text is not None and not getattr(text, "fitted", False):  # a fitted (linear) model reads sparse TF-IDF rows
        tokens = pretokenize(text.tokenize, td.products.texts, text.pad_id)
    return Precomputed(decoded=decoded, tokens=tokens)

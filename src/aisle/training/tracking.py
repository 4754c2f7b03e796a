"""Experiment tracking through Lightning's loggers (``train.loggers``).

TensorBoard and CSV write into each fold's folder. W&B (offline) and MLflow (a file store) write under the run
folder: one tracked run per fold of each stage, named ``<run>/<stage>/fold_<k>`` and grouped by run (W&B group,
MLflow experiment), so the folds' curves compare; and one ``<run>`` run at the end with the CV metrics, the
out-of-fold confusion matrix and per-class report, and ``cv_summary.json``.

Nothing here reaches the network: ``wandb sync <run>/wandb/offline-run-*`` uploads the W&B runs, and the full
``mlflow`` package's ``mlflow ui --backend-store-uri file:<run>/mlruns`` shows the MLflow ones.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aisle.config import AisleConfig, config_to_dict
from aisle.rundir import FoldDir, RunDir

if TYPE_CHECKING:
    import pandas as pd
    from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
    from PIL.Image import Image

__all__ = ["LOGGER_EXTRAS", "check_loggers", "log_run_end", "tracked_fold"]

log = logging.getLogger(__name__)

# the loggers whose package comes with an extra of aisle (pip install "aisle[NAME]"): logger -> module it imports
LOGGER_EXTRAS: dict[str, str] = {"wandb": "wandb", "mlflow": "mlflow"}
WANDB_PROJECT = "aisle"  # the project offline runs are synced to (`wandb sync --project` picks another)


def check_loggers(names: Sequence[str]) -> None:
    """Every logger's package is installed (call before reading data or writing a run folder).

    Raises:
        ImportError: names the loggers and the ``pip install "aisle[...]"`` command that brings their packages.
    """
    missing = [n for n in names if n in LOGGER_EXTRAS and importlib.util.find_spec(LOGGER_EXTRAS[n]) is None]
    if missing:
        raise ImportError(
            f"train.loggers lists {', '.join(missing)}, whose package is not installed: "
            f'pip install "aisle[{",".join(missing)}]"'
        )


@dataclass(frozen=True)
class _Tracked:
    """One tracked run: a fold of a stage, or the run's end (``stage`` and ``fold`` None)."""

    rd: RunDir
    stage: str | None = None
    fold: int | None = None

    @property
    def run(self) -> str:
        return self.rd.root.resolve().name

    @property
    def fold_dir(self) -> FoldDir:
        if self.stage is None or self.fold is None:
            raise ValueError("the run's end has no fold folder")  # it goes to W&B and MLflow only
        return self.rd.fold(self.stage, self.fold)

    @property
    def name(self) -> str:
        """``<run>/<stage>/fold_<k>`` (the fold folder's path from the run's parent), or ``<run>``."""
        if self.stage is None:
            return self.run
        return f"{self.run}/{self.fold_dir.root.relative_to(self.rd.root).as_posix()}"


def _tensorboard(t: _Tracked) -> Logger:
    from lightning.pytorch.loggers import TensorBoardLogger

    tb = t.fold_dir.tensorboard
    return TensorBoardLogger(str(tb.parent), name=tb.name, version="", default_hp_metric=False)


def _csv(t: _Tracked) -> Logger:
    from lightning.pytorch.loggers import CSVLogger

    folder = t.fold_dir.csv_logs
    return CSVLogger(str(folder.parent), name=folder.name, version="")


def _wandb(t: _Tracked) -> Logger:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        name=t.name,
        save_dir=str(t.rd.wandb.parent),  # W&B writes its wandb/ folder in here
        project=WANDB_PROJECT,
        group=t.run,
        job_type=t.stage or "summary",
        mode="offline",  # not offline=True: Lightning would then set WANDB_MODE for the whole process
        settings=wandb.Settings(silent=True),
    )


def _mlflow(t: _Tracked) -> Logger:
    # local and quiet: MLflow 3 refuses a file store, and sends usage telemetry, unless told otherwise (a value the
    # user set is kept)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from lightning.pytorch.loggers import MLFlowLogger

    tags = {"aisle.run": t.run}
    if t.stage is not None:
        tags |= {"aisle.stage": t.stage, "aisle.fold": str(t.fold)}
    return MLFlowLogger(experiment_name=t.run, run_name=t.name, tracking_uri=t.rd.mlruns.resolve().as_uri(), tags=tags)


_FOLD_LOGGERS: dict[str, Callable[[_Tracked], Logger]] = {
    "tensorboard": _tensorboard,
    "csv": _csv,
    "wandb": _wandb,
    "mlflow": _mlflow,
}


@contextmanager
def _closing_wandb(names: Sequence[str]) -> Iterator[None]:
    """End the W&B run on the way out, failed on an exception: Lightning leaves it open, and the next logger would
    carry on in it."""
    if "wandb" not in names:
        yield
        return
    import wandb

    try:
        yield
    except BaseException:
        wandb.finish(exit_code=1)
        raise
    wandb.finish(exit_code=0)


@contextmanager
def tracked_fold(cfg: AisleConfig, rd: RunDir, stage: str, fold: int) -> Iterator[list[Logger]]:
    """The loggers of one fold's fit (``train.loggers``), the resolved config logged as their hyper-parameters;
    Lightning logs the epochs' metrics into them."""
    with _closing_wandb(cfg.train.loggers):
        t = _Tracked(rd, stage, fold)
        loggers = [_FOLD_LOGGERS[name](t) for name in cfg.train.loggers]
        for logger in loggers:
            logger.log_hyperparams(config_to_dict(cfg))
        yield loggers


@dataclass
class _RunEnd:
    """What the run's end logs."""

    params: dict[str, Any]  # the resolved config
    metrics: dict[str, float]  # <stage>/<metric>_mean and _std over the folds, train_seconds
    confusion: Image  # the final stage's out-of-fold confusion matrix
    per_class: pd.DataFrame  # its precision, recall, F1 and support per class


def _run_end(cfg: AisleConfig, rd: RunDir, summary: dict) -> _RunEnd:
    from PIL import Image as PILImage

    from aisle.data.labels import class_columns
    from aisle.evaluation.evaluate import confusion_figure, evaluate_probs
    from aisle.evaluation.plotting import png_bytes
    from aisle.tables import read_numeric_table

    oof = read_numeric_table(rd.stage_oof(summary["stage"]))
    classes = class_columns(oof.columns)
    ev = evaluate_probs(oof["label"].tolist(), oof[classes].to_numpy(), classes)
    metrics = {
        f"{stage}/{key}_{kind}": float(value)
        for stage, s in summary["stages"].items()
        for kind in ("mean", "std")
        for key, value in s[kind].items()
    }
    metrics["train_seconds"] = float(summary["train_seconds"])
    confusion = PILImage.open(io.BytesIO(png_bytes(confusion_figure(ev.confusion))))
    return _RunEnd(config_to_dict(cfg), metrics, confusion, ev.per_class.reset_index(names="class"))


def _wandb_end(t: _Tracked, end: _RunEnd) -> None:
    with _closing_wandb(["wandb"]):
        logger = cast("WandbLogger", _wandb(t))
        logger.log_hyperparams(end.params)
        logger.log_metrics(end.metrics)
        logger.log_image("oof_confusion_matrix", [end.confusion])
        # files copied into the offline run (not a W&B table, whose files wait outside the run folder until a sync,
        # nor a link to cv_summary.json, which a moved run folder would break)
        files = Path(logger.experiment.dir)
        end.per_class.to_csv(files / "oof_per_class.csv", index=False)
        shutil.copy(t.rd.summary, files / t.rd.summary.name)
        for name in ("oof_per_class.csv", t.rd.summary.name):
            logger.experiment.save(str(files / name), base_path=str(files), policy="now")
    log.info("W&B runs are offline in %s: `wandb sync %s/offline-run-*` uploads them", t.rd.wandb, t.rd.wandb)


def _mlflow_end(t: _Tracked, end: _RunEnd) -> None:
    logger = cast("MLFlowLogger", _mlflow(t))
    try:
        logger.log_hyperparams(end.params)
        logger.log_metrics(end.metrics)
        client, run_id = logger.experiment, cast(str, logger.run_id)  # set: logging the params started the run
        client.log_image(run_id, end.confusion, artifact_file="oof_confusion_matrix.png")
        client.log_text(run_id, end.per_class.to_csv(index=False), "oof_per_class.csv")
        client.log_artifact(run_id, str(t.rd.summary))
    except BaseException:
        logger.finalize("failed")
        raise
    logger.finalize("success")


_RUN_END: dict[str, Callable[[_Tracked, _RunEnd], None]] = {"wandb": _wandb_end, "mlflow": _mlflow_end}


def log_run_end(cfg: AisleConfig, rd: RunDir, summary: dict) -> None:
    """W&B and MLflow: one ``<run>`` run with every stage's CV metrics, the resolved config, the final stage's
    out-of-fold confusion matrix and per-class report, and ``cv_summary.json`` (TensorBoard and CSV keep to the
    folds' folders; the run folder holds the rest)."""
    names = [name for name in cfg.train.loggers if name in _RUN_END]
    if not names:
        return
    end = _run_end(cfg, rd, summary)
    for name in names:
        _RUN_END[name](_Tracked(rd), end)

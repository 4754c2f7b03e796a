"""The run folder's layout: every file name of a run, and of each fold of each stage, is spelled here only.

::

    <run>/config.yaml  label_map.json  schema.json  folds.csv  train_data.csv (Python API)  image_issues.csv
         /pseudo_rows.csv (data.pseudo_labels)  pseudo_labels/pseudo_labels.csv + .json (aisle pseudo-label)
         /.lock (while a process writes the run: see aisle.locking)
         /assets/  template.safetensors  cv_summary.json  predictions/  report.html
         /wandb/  mlruns/ (``train.loggers``: W&B's offline runs, MLflow's file store)
         /ensemble.json  members/<name>/ (an ensemble fitted on its members' out-of-fold predictions)
         /<stage>/cv_summary.json  oof.csv
         /<stage>/fold_<k>/best.safetensors  best.json  last.safetensors  last.json  last_optim.safetensors
                           last_optim.json  history.csv  time.json  oof.csv  done.json  tb/  csv/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aisle.config import AisleConfig, StageConfig

__all__ = ["DEFAULT_STAGE", "ENSEMBLE_STAGE", "FoldDir", "RunDir"]

DEFAULT_STAGE = "main"  # the one stage of a run whose config lists no ``train.stages``
ENSEMBLE_STAGE = "ensemble"  # an ensemble folder's one "stage": its blended out-of-fold predictions


@dataclass(frozen=True)
class FoldDir:
    """One fold of one stage: checkpoints, resume state, history and out-of-fold predictions."""

    root: Path

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def best_info(self) -> Path:
        return self.root / "best.json"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def last_info(self) -> Path:
        return self.root / "last.json"

    @property
    def last_optim(self) -> Path:
        """Optimizer tensors; their JSON side file is named by ``aisle.serialization.save_optimizer_state``."""
        return self.root / "last_optim.safetensors"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def time(self) -> Path:
        return self.root / "time.json"

    @property
    def oof(self) -> Path:
        return self.root / "oof.csv"

    @property
    def done(self) -> Path:
        return self.root / "done.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's event files (``train.loggers: [tensorboard]``)."""
        return self.root / "tb"

    @property
    def csv_logs(self) -> Path:
        """Lightning's CSV logger: ``metrics.csv`` and ``hparams.yaml`` (``train.loggers: [csv]``)."""
        return self.root / "csv"

    def resume_files(self) -> list[Path]:
        """What only an unfinished fold needs (removed when the fold is done)."""
        return [self.last, self.last_optim, self.last_optim.with_suffix(".json")]


@dataclass(frozen=True)
class RunDir:
    """A run folder. Ask it for paths; nothing else spells a run-folder file name."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def lock(self) -> Path:
        """Held by the one process writing the run (:func:`aisle.locking.hold_run_dir`); not part of the run."""
        return self.root / ".lock"

    def contents(self) -> list[Path]:
        """What the folder holds, its lock file left out (empty when the folder does not exist)."""
        return [p for p in self.root.iterdir() if p != self.lock] if self.root.is_dir() else []

    @property
    def label_map(self) -> Path:
        return self.root / "label_map.json"

    @property
    def schema(self) -> Path:
        return self.root / "schema.json"

    @property
    def folds(self) -> Path:
        return self.root / "folds.csv"

    @property
    def train_data(self) -> Path:
        """The DataFrame a Python-API run was trained on."""
        return self.root / "train_data.csv"

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def template(self) -> Path:
        """The model's initial weights: every fold starts from them, frozen towers are read from them."""
        return self.root / "template.safetensors"

    @property
    def summary(self) -> Path:
        return self.root / "cv_summary.json"

    @property
    def ensemble(self) -> Path:
        """An ensemble's members and weights (a folder with it is an ensemble, not a trained run)."""
        return self.root / "ensemble.json"

    @property
    def members(self) -> Path:
        """Where a portfolio (``aisle train --preset``) keeps its member runs."""
        return self.root / "members"

    @property
    def onnx(self) -> Path:
        """``aisle export``'s folder: ``model.onnx``, ``preprocess.json`` and the tokenizer assets."""
        return self.root / "onnx"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def pseudo_rows(self) -> Path:
        """The ``data.pseudo_labels`` rows this run trained on (id, label, weight); never in folds.csv."""
        return self.root / "pseudo_rows.csv"

    @property
    def pseudo_labels(self) -> Path:
        """Where ``aisle pseudo-label`` writes its table by default (a JSON of its settings beside it)."""
        return self.root / "pseudo_labels" / "pseudo_labels.csv"

    @property
    def image_issues(self) -> Path:
        """Every unusable image of the run's products: ``id,path,reason`` (``aisle.data.image_report``)."""
        return self.root / "image_issues.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def wandb(self) -> Path:
        """W&B's offline runs (``train.loggers: [wandb]``): W&B names this folder inside the one it is given,
        the run folder."""
        return self.root / "wandb"

    @property
    def mlruns(self) -> Path:
        """MLflow's file store (``train.loggers: [mlflow]``): one experiment named after the run folder."""
        return self.root / "mlruns"

    def stage(self, name: str) -> Path:
        return self.root / name

    def stage_summary(self, name: str) -> Path:
        return self.stage(name) / "cv_summary.json"

    def stage_oof(self, name: str) -> Path:
        return self.stage(name) / "oof.csv"

    def fold(self, stage: str, k: int) -> FoldDir:
        return FoldDir(self.stage(stage) / f"fold_{k}")

    def histories(self, stage: str) -> list[Path]:
        return sorted(self.stage(stage).glob("fold_*/history.csv"))

    def finished_folds(self, stage: str) -> list[int]:
        """Fold numbers of ``stage`` that have a best checkpoint."""
        return sorted(
            int(p.parent.name.removeprefix("fold_")) for p in self.stage(stage).glob("fold_*/best.safetensors")
        )

    @staticmethod
    def stages(cfg: AisleConfig) -> list[StageConfig]:
        """The stages a config trains: ``train.stages``, or one default stage."""
        return list(cfg.train.stages) or [StageConfig(name=DEFAULT_STAGE)]

    @classmethod
    def final_stage(cls, cfg: AisleConfig) -> str:
        """The stage whose fold models predict."""
        return cls.stages(cfg)[-1].name

    def is_run(self) -> bool:
        return self.config.is_file()

    def is_ensemble(self) -> bool:
        return self.ensemble.is_file()

    def is_finished(self) -> bool:
        return self.summary.is_file()

    def require_run(self) -> RunDir:
        if not self.config.is_file() or not self.label_map.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a run folder ({self.config.name} / {self.label_map.name} "
                f"missing): train one with `aisle train`"
            )
        return self

    def require_finished(self) -> RunDir:
        if not self.is_finished():
            raise FileNotFoundError(
                f"{self.root} has no {self.summary.name}: not a finished run "
                f"(train it, or continue it with `aisle train --resume {self.root}`)"
            )
        return self

"""K-fold training on Lightning: losses, optimizer groups, checkpoints, the CV driver."""

from aisle.training.cv import run_cv
from aisle.training.fold import FoldResult, fit_fold, resolve_precision
from aisle.training.losses import LOSSES, class_weights
from aisle.training.optim import build_optimizer, build_schedule, param_groups

__all__ = [
    "LOSSES",
    "FoldResult",
    "build_optimizer",
    "build_schedule",
    "class_weights",
    "fit_fold",
    "param_groups",
    "resolve_precision",
    "run_cv",
]

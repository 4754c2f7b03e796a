"""aisle: sort products into categories from their images and their text.

The public API: :class:`Classifier` (fit / predict / predict_proba / evaluate / save / load on DataFrames),
the config tree, and the library functions the CLI calls.

Exports are lazy (PEP 562): ``import aisle`` loads no torch; each name is imported on first use, so the
CLI starts without the deep-learning stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "AisleConfig": "aisle.config",
    "Classifier": "aisle.api",
    "ConfigError": "aisle.config",
    "compare_runs": "aisle.evaluation.compare",
    "ensemble_probabilities": "aisle.inference.ensemble",
    "evaluate_files": "aisle.evaluation.evaluate",
    "evaluate_probs": "aisle.evaluation.evaluate",
    "load_config": "aisle.config",
    "predict": "aisle.inference.predict",
    "run_check": "aisle.evaluation.check",
    "run_cv": "aisle.training.cv",
    "save_config": "aisle.config",
    "write_outputs": "aisle.inference.predict",
    "write_report": "aisle.evaluation.report",
    "zero_shot": "aisle.api",
}

__all__ = [
    "AisleConfig",
    "Classifier",
    "ConfigError",
    "compare_runs",
    "ensemble_probabilities",
    "evaluate_files",
    "evaluate_probs",
    "load_config",
    "predict",
    "run_check",
    "run_cv",
    "save_config",
    "write_outputs",
    "write_report",
    "zero_shot",
]

if TYPE_CHECKING:
    from aisle.api import Classifier, zero_shot
    from aisle.config import AisleConfig, ConfigError, load_config, save_config
    from aisle.evaluation.check import run_check
    from aisle.evaluation.compare import compare_runs
    from aisle.evaluation.evaluate import evaluate_files, evaluate_probs
    from aisle.evaluation.report import write_report
    from aisle.inference.ensemble import ensemble_probabilities
    from aisle.inference.predict import predict, write_outputs
    from aisle.training.cv import run_cv


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aisle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

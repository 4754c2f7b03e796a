"""aisle: sort products into categories from their images and their text.

The public API: :class:`Classifier` (fit / predict / predict_proba / evaluate / save / load on DataFrames),
the config tree, and the library functions the CLI calls.
"""

from aisle.api import Classifier
from aisle.config import AisleConfig, ConfigError, load_config, save_config
from aisle.evaluation.check import run_check
from aisle.evaluation.compare import compare_runs
from aisle.evaluation.evaluate import evaluate_files, evaluate_probs
from aisle.evaluation.report import write_report
from aisle.inference import predict, write_outputs
from aisle.inference.ensemble import ensemble_probabilities
from aisle.training import run_cv

__version__ = "0.1.0"

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
]

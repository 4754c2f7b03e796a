"""Inference from a run folder: fold-averaged probabilities, TTA, submission files."""

from aisle.data.tta import TTA_POLICIES
from aisle.inference.predict import Prediction, load_fold_models, predict, write_outputs

__all__ = ["TTA_POLICIES", "Prediction", "load_fold_models", "predict", "write_outputs"]

"""Inference from a run folder: fold-averaged probabilities, TTA, submission files."""

from aisle.inference.predict import Prediction, load_fold_models, predict, write_outputs
from aisle.data.tta import TTA_POLICIES

__all__ = ["TTA_POLICIES", "Prediction", "load_fold_models", "predict", "write_outputs"]

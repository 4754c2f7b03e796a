"""The Python API: a scikit-learn-like ``Classifier`` over pandas DataFrames, mirroring the CLI."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from aisle.config import AisleConfig, apply_overrides, load_config, validate_config
from aisle.evaluation.evaluate import evaluate_probs
from aisle.inference.predict import Prediction, predict
from aisle.rundir import RunDir
from aisle.training.cv import run_cv

__all__ = ["Classifier"]


class Classifier:
    """Train, predict, evaluate and save a product classifier.

    Example:
        >>> clf = Classifier("configs/demo.yaml", overrides=["train.epochs=3"])
        >>> clf.fit(train_df, data_root="demo")          # images under demo/images/<id>.jpg
        >>> proba = clf.predict_proba(test_df, image_dir="demo/images")
        >>> clf.save("my_model"); clf = Classifier.load("my_model")

    Args:
        config: a config object, a YAML path, or None for defaults.
        overrides: ``key.path=value`` strings applied on top.
        run_dir: where the run folder goes (default: a new temporary folder).
    """

    def __init__(
        self,
        config: AisleConfig | str | Path | None = None,
        overrides: list[str] | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        if isinstance(config, AisleConfig):
            self.config = validate_config(apply_overrides(config.model_dump(), overrides or []), "AisleConfig")
        else:
            self.config = load_config(config, overrides)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.summary_: dict | None = None

    def fit(
        self, df: pd.DataFrame, data_root: str | Path = ".", folds: list[int] | None = None, overwrite: bool = True
    ) -> Classifier:
        """K-fold training on ``df`` (columns inferred as in the CLI); images are found under ``data_root``."""
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="aisle-run-"))
        self.summary_ = run_cv(
            self.config, self.run_dir, overwrite=overwrite, folds=folds, frame=df, base_dir=data_root
        )
        return self

    def _require_fitted(self) -> Path:
        if self.run_dir is None or not RunDir(self.run_dir).is_finished():
            raise ValueError("this Classifier is not fitted: call fit(df) or Classifier.load(path) first")
        return self.run_dir

    def _predict(
        self, df: pd.DataFrame, image_dir: str | Path | None, tta: list[str] | None, **allow: bool
    ) -> Prediction:
        unknown = sorted(set(allow) - {"allow_missing_text", "allow_missing_images"})
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; use allow_missing_text / allow_missing_images")
        return predict(
            self._require_fitted(),
            df,
            tta=tta,
            image_dir=image_dir,
            allow_missing_text=allow.get("allow_missing_text", False),
            allow_missing_images=allow.get("allow_missing_images", False),
        )

    def predict_proba(
        self, df: pd.DataFrame, image_dir: str | Path | None = None, tta: list[str] | None = None, **allow: bool
    ) -> pd.DataFrame:
        """Fold-averaged class probabilities: one row per input row (same index), one column per class.

        ``allow_missing_text=True`` / ``allow_missing_images=True`` predict even when ``df`` lacks a text column
        the run was trained with / no row has an image (otherwise a ``ValueError`` says what is missing).
        """
        pred = self._predict(df, image_dir, tta, **allow)
        return pd.DataFrame(pred.probs, columns=list(pred.label_map.classes), index=df.index)

    def predict(
        self, df: pd.DataFrame, image_dir: str | Path | None = None, tta: list[str] | None = None, **allow: bool
    ) -> pd.Series:
        """The most likely class per row (original label values), indexed like ``df``; ``allow``: as in
        :meth:`predict_proba`."""
        pred = self._predict(df, image_dir, tta, **allow)
        return pd.Series(pred.labels, index=df.index, name=pred.label_col)

    def evaluate(
        self, df: pd.DataFrame, image_dir: str | Path | None = None, tta: list[str] | None = None, **allow: bool
    ) -> dict[str, float]:
        """Accuracy, top-3, macro/weighted F1, macro precision/recall on a labelled DataFrame."""
        pred = self._predict(df, image_dir, tta, **allow)
        col = (
            pred.label_col
            if pred.label_col in df.columns
            else next((c for c in ("categories", "label") if c in df.columns), None)
        )
        if col is None:
            raise ValueError(f"evaluate needs a label column ({pred.label_col!r}) in the DataFrame")
        return evaluate_probs(
            [None if pd.isna(v) else str(v) for v in df[col]], pred.probs, list(pred.label_map.classes)
        ).metrics

    def save(self, path: str | Path) -> Path:
        """Copy the run folder (safetensors weights, JSON/YAML metadata) to ``path``."""
        src = self._require_fitted()
        dst = Path(path)
        if dst.resolve() != src.resolve():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        return dst

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """A fitted classifier from a run folder (``aisle train`` output or ``save``)."""
        rd = RunDir(path)
        if not rd.is_run():
            raise FileNotFoundError(f"{rd.root} is not a run folder (no {rd.config.name})")
        clf = cls(rd.config, run_dir=rd.root)
        clf._require_fitted()
        return clf

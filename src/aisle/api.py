"""The Python API: a scikit-learn-like ``Classifier`` over pandas DataFrames, mirroring the CLI."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from aisle.config import AisleConfig, apply_overrides, load_config, validate_config
from aisle.evaluation.evaluate import evaluate_probs
from aisle.inference.inputs import check_images
from aisle.inference.items import frame_items
from aisle.inference.predict import predict
from aisle.inference.predictor import FolderImages, Predictor
from aisle.logging_setup import quiet_libraries
from aisle.progress import show_progress, step
from aisle.rundir import RunDir
from aisle.training.cv import run_cv

__all__ = ["FAST_ROWS", "Classifier", "zero_shot"]

FAST_ROWS = 256  # inputs up to this size run on the models held in memory; larger ones through the batch path


def _index(data: pd.DataFrame | list[dict]) -> pd.Index:
    return data.index if isinstance(data, pd.DataFrame) else pd.RangeIndex(len(data))


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
        progress: draw tqdm bars for long steps (feature encoding, image checks, epochs, batch prediction).
            Lightning's banners and tips are never printed; aisle's own warnings go to the ``aisle`` logger.
    """

    def __init__(
        self,
        config: AisleConfig | str | Path | None = None,
        overrides: list[str] | None = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(config, AisleConfig):
            self.config = validate_config(apply_overrides(config.model_dump(), overrides or []), "AisleConfig")
        else:
            self.config = load_config(config, overrides)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.summary_: dict | None = None
        self._loaded: tuple[Path, Predictor] | None = None
        self.backend = "torch"
        self._folders: dict[Path, FolderImages] = {}

    def fit(
        self, df: pd.DataFrame, data_root: str | Path = ".", folds: list[int] | None = None, overwrite: bool = True
    ) -> Classifier:
        """K-fold training on ``df`` (columns inferred as in the CLI); images are found under ``data_root``."""
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="aisle-run-"))
        with self._quiet():
            self.summary_ = run_cv(
                self.config, self.run_dir, overwrite=overwrite, folds=folds, frame=df, base_dir=data_root
            )
        return self

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Bars as chosen, no third-party banners."""
        with show_progress("tqdm" if self.progress else None), quiet_libraries():
            yield

    def _require_fitted(self) -> Path:
        if self.run_dir is None or not RunDir(self.run_dir).is_finished():
            raise ValueError("this Classifier is not fitted: call fit(df) or Classifier.load(path) first")
        return self.run_dir

    def _predictor(self) -> Predictor:
        """The run's models, loaded on first use and kept (a refit loads them again)."""
        run = self._require_fitted()
        if self._loaded is None or self._loaded[0] != run:
            self._loaded = (run, Predictor(run, backend=self.backend))
        return self._loaded[1]

    def _predict(
        self, data: pd.DataFrame | list[dict], image_dir: str | Path | None, tta: list[str] | None, **allow: bool
    ) -> tuple[np.ndarray, list[str], str]:
        """(probabilities, classes, label column): up to ``FAST_ROWS`` rows (or a list of items) through the
        models held in memory, larger tables through the batch path (loaders, feature cache)."""
        unknown = sorted(set(allow) - {"allow_missing_text", "allow_missing_images"})
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; use allow_missing_text / allow_missing_images")
        run = self._require_fitted()
        if self.backend == "onnx" and isinstance(data, pd.DataFrame) and len(data) > FAST_ROWS:
            parts = [
                self._predict(data.iloc[i : i + FAST_ROWS], image_dir, tta, **allow)
                for i in range(0, len(data), FAST_ROWS)
            ]
            return np.concatenate([p[0] for p in parts]), parts[0][1], parts[0][2]
        if isinstance(data, list) or self.backend == "onnx" or (tta is None and len(data) <= FAST_ROWS):
            p = self._predictor()
            items = (
                frame_items(data, p, image_dir, self._folders, allow.get("allow_missing_text", False))
                if isinstance(data, pd.DataFrame)
                else data
            )
            if p.uses_images:
                has = any(i.get("image") for i in items)
                check_images(has, len(items), "input", allow.get("allow_missing_images", False))
            return p.predict_proba(items), p.classes, p.label_col
        with self._quiet(), step("predicting", None) as advance:
            pred = predict(
                run,
                data,
                tta=tta,
                image_dir=image_dir,
                progress=advance,
                allow_missing_text=allow.get("allow_missing_text", False),
                allow_missing_images=allow.get("allow_missing_images", False),
            )
        return pred.probs, list(pred.label_map.classes), pred.label_col

    def predict_proba(
        self,
        data: pd.DataFrame | list[dict],
        image_dir: str | Path | None = None,
        tta: list[str] | None = None,
        **allow: bool,
    ) -> pd.DataFrame:
        """Fold-averaged class probabilities: one row per input row (same index), one column per class.

        ``data`` is a DataFrame (images found by id under ``image_dir``, or by the paths in its image column) or a
        list of items: dicts with the run's text columns and ``image`` (a PIL image, bytes, a path, a list of
        them, or None). Small inputs run on the models held in memory (no set-up per call: one product takes
        milliseconds); ``allow_missing_text=True`` / ``allow_missing_images=True`` predict even when the input
        lacks a text column the run was trained with / no row has an image (otherwise a ``ValueError``).
        """
        probs, classes, _ = self._predict(data, image_dir, tta, **allow)
        return pd.DataFrame(probs, columns=classes, index=_index(data))

    def predict(
        self,
        data: pd.DataFrame | list[dict],
        image_dir: str | Path | None = None,
        tta: list[str] | None = None,
        **allow: bool,
    ) -> pd.Series:
        """The most likely class per row (original label values), indexed like ``data``; arguments as in
        :meth:`predict_proba`."""
        probs, classes, label_col = self._predict(data, image_dir, tta, **allow)
        return pd.Series(np.asarray(classes, dtype=object)[probs.argmax(1)], index=_index(data), name=label_col)

    def evaluate(
        self, df: pd.DataFrame, image_dir: str | Path | None = None, tta: list[str] | None = None, **allow: bool
    ) -> dict[str, float]:
        """Accuracy, top-3, macro/weighted F1, macro precision/recall on a labelled DataFrame."""
        probs, classes, label_col = self._predict(df, image_dir, tta, **allow)
        col = (
            label_col
            if label_col in df.columns
            else next((c for c in ("categories", "label") if c in df.columns), None)
        )
        if col is None:
            raise ValueError(f"evaluate needs a label column ({label_col!r}) in the DataFrame")
        return evaluate_probs([None if pd.isna(v) else str(v) for v in df[col]], probs, classes).metrics

    def save(self, path: str | Path) -> Path:
        """Copy the run folder (safetensors weights, JSON/YAML metadata) to ``path``."""
        src = self._require_fitted()
        dst = Path(path)
        if dst.resolve() != src.resolve():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        return dst

    @classmethod
    def load(cls, path: str | Path, backend: str = "torch", progress: bool = True) -> Classifier:
        """A fitted classifier from a run folder (``aisle train`` output or ``save``).

        Args:
            backend: ``torch``, or ``onnx`` (the graph ``aisle export`` wrote into the run's ``onnx/`` folder;
                every input then runs on it, in chunks of ``FAST_ROWS``).
        """
        rd = RunDir(path)
        if not rd.is_run():
            raise FileNotFoundError(f"{rd.root} is not a run folder (no {rd.config.name})")
        clf = cls(rd.config, run_dir=rd.root, progress=progress)
        clf.backend = backend
        clf._require_fitted()
        if backend != "torch":
            clf._predictor()  # a missing export fails here, not at the first prediction
        return clf


def zero_shot(
    data: pd.DataFrame | str | Path,
    model: str,
    classes: str | Path | list[str] | dict[str, str | list[str]],
    templates: list[str] | None = None,
    modality: Literal["image", "text", "both"] | None = None,
    temperature: float = 0.07,
    image_dir: str | Path | None = None,
    data_root: str | Path = ".",
    progress: bool = True,
) -> pd.DataFrame:
    """Zero-shot class probabilities for every row of ``data`` (a DataFrame: its index; a table: one row each, in
    order), by similarity to class texts, no training (the CLI's ``aisle zero-shot``).

    Example:
        >>> proba = zero_shot(df, "hf:../shared/models/all-MiniLM-L6-v2", {"shoes": "footwear", "bags": "handbags"},
        ...                   templates=["a product photo of {description}"])

    Args:
        model: a dual encoder (``open_clip:``, ``hf-clip:``, ``hf-siglip:``) or a text tower (``hf:``, ``tiny:``).
        classes: a JSON path, a list of class names, or ``{class: description(s)}``.
        data_root: relative image paths of a DataFrame start here.
    """
    from aisle.config import DataConfig
    from aisle.inference.zero_shot import zero_shot as run_zero_shot

    cfg = DataConfig(data_root=str(data_root))
    with show_progress("tqdm" if progress else None), quiet_libraries(), step("zero-shot", None) as advance:
        pred = run_zero_shot(model, classes, data, templates, modality, temperature, cfg, image_dir, progress=advance)
    index = data.index if isinstance(data, pd.DataFrame) else pd.RangeIndex(len(pred.ids))
    return pd.DataFrame(pred.probs, columns=list(pred.label_map.classes), index=index)

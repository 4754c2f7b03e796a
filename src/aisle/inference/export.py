"""``aisle export``: a run's fold models as one ONNX graph that returns the fold-averaged probabilities.

The graph takes what the loaders give a model: ``image`` (B, K, 3, S, S) uint8 pixels and ``image_mask`` (B, K)
for an image tower, ``input_ids`` / ``attention_mask`` (B, T) (and ``token_weights`` for TF-IDF towers) for a text
tower; the pixel normalisation is inside the graph. ``preprocess.json`` beside it says what to feed it (image
size, text columns, tokenizer folder, classes). Every export is checked: onnxruntime against torch on a sample,
and a difference above ``tolerance`` is an error.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from aisle.inference.items import frame_items
from aisle.inference.predictor import Predictor, RunModels
from aisle.models.classifier import ProductClassifier
from aisle.rundir import RunDir
from aisle.serialization import write_json

__all__ = ["ExportError", "FoldAverage", "export_onnx"]


class ExportError(RuntimeError):
    """The exported graph does not give the run's probabilities (or cannot be written)."""


class FoldAverage(nn.Module):
    """The fold models of a run as one module: named input tensors -> mean softmax probabilities.

    Towers that training never changed run once for all folds, their features rounded through float16 as the
    feature cache stores them (so the graph gives ``aisle predict``'s numbers, at the cost of one tower pass).
    """

    def __init__(self, run: RunModels, keys: list[str]) -> None:
        super().__init__()
        self.models = nn.ModuleList(list(run.models.values()))
        self.keys = keys
        self.frozen_image, self.frozen_text = run.frozen["image_encoder"], run.frozen["text_encoder"]

    def _shared(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        first = cast(ProductClassifier, self.models[0])
        if self.frozen_image and first.image_encoder is not None:
            feats = first.image_encoder(batch).float().half().float()
            batch = {**batch, "image_features": feats, "image_mask": batch["image_mask"].any(1, keepdim=True)}
        if self.frozen_text and first.text_encoder is not None:
            batch = {**batch, "text_features": first.text_encoder(batch).float().half().float()}
        return batch

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = self._shared(dict(zip(self.keys, tensors)))
        probs = [torch.softmax(m(batch)["logits"].float(), -1) for m in self.models]
        return torch.stack(probs).mean(0)


def _dynamic_axes(keys: list[str]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {k: {0: "batch"} for k in keys}
    for k in keys:
        if k in ("input_ids", "attention_mask", "token_weights"):
            axes[k][1] = "tokens"
    axes["probabilities"] = {0: "batch"}
    return axes


def _check(path: Path, module: nn.Module, sample: dict[str, torch.Tensor], tolerance: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = module(*sample.values()).numpy()
    got = session.run(None, {k: v.numpy() for k, v in sample.items()})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        raise ExportError(f"{path}: onnxruntime differs from torch by {diff:.2e} (> {tolerance:.0e}); not usable")
    return diff


def export_onnx(
    run_dir: str | Path,
    out_dir: str | Path | None,
    sample: pd.DataFrame | list[dict[str, Any]],
    image_dir: str | Path | None = None,
    folds: list[int] | None = None,
    tolerance: float = 1e-4,
    opset: int = 17,
) -> dict[str, Any]:
    """Write ``model.onnx`` (all chosen folds averaged) and ``preprocess.json`` into ``out_dir``, and check them.

    Args:
        run_dir: a finished run (an ensemble folder is not exported: export its members).
        out_dir: default the run's ``onnx/`` folder (where ``backend="onnx"`` looks).
        sample: a few products (a table, or dicts as :class:`Predictor` takes) for tracing and the parity check.
        image_dir: the sample table's image folder.
        tolerance: the largest allowed absolute difference in probability between onnxruntime and torch.

    Returns:
        What was written and the measured difference.

    Raises:
        ExportError: the graph's output differs from torch by more than ``tolerance``.
        ValueError: an ensemble folder, or no items.
    """
    predictor = Predictor(run_dir, folds)
    items = frame_items(sample, predictor, image_dir, {}) if isinstance(sample, pd.DataFrame) else sample
    if len(predictor.members) != 1 or not items:
        raise ValueError("export takes one trained run (an ensemble's members are exported one by one) and items")
    run = predictor.members[0][2]
    if run.cfg.infer.tta or len(run.sizes) > 1:
        raise ValueError("the run predicts with TTA or several image sizes (infer.tta / infer.scales): not exported")
    inputs = run.inputs(items)
    keys = list(inputs)
    module = FoldAverage(run, keys).eval()
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).onnx
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    with torch.inference_mode():
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=keys,
            output_names=["probabilities"],
            dynamic_axes=_dynamic_axes(keys),
            opset_version=opset,
            dynamo=False,
        )
    diff = _check(path, module, inputs, tolerance)
    info = _preprocess(run, predictor, keys, out)
    write_json(out / "preprocess.json", {**info, "max_abs_diff": diff})
    return {"model": str(path), "preprocess": str(out / "preprocess.json"), "max_abs_diff": diff}


def _preprocess(run: RunModels, predictor: Predictor, keys: list[str], out: Path) -> dict[str, Any]:
    text = run.first.text_encoder
    tokenizer = None
    if text is not None:
        assets = RunDir(run.root).assets
        if assets.is_dir():
            shutil.copytree(assets, out / "assets", dirs_exist_ok=True)
            tokenizer = "assets"
    return {
        "inputs": keys,
        "classes": predictor.classes,
        "text_fields": predictor.text_columns,
        "text_sep": run.cfg.data.text_sep,
        "image_size": run.sizes[0] if run.sizes else None,
        "max_images": run.k,
        "tokenizer_assets": tokenizer,
        "folds": sorted(run.models),
        "run": predictor.run_name,
    }

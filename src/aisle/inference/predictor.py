"""A run held in memory: products given as dicts (PIL images, bytes or paths) are predicted with no per-call
set-up: no model rebuild, no trainer, no DataLoader, no folder scan, no temporary files, no log lines.

Its probabilities are those of ``aisle predict`` on the same rows: towers that training never changed are run
once for all folds and their features rounded to float16, exactly as the feature cache stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aisle.data.images import (
    as_rgb,
    decode_image_bytes,
    image_files,
    natural_key,
    open_image,
    placeholder_image,
)
from aisle.data.labels import LabelMap
from aisle.data.schema import ProductSchema, text_of
from aisle.data.transforms import build_image_transform
from aisle.data.tta import TTA_POLICIES
from aisle.evaluation.calibration import rescale_probs
from aisle.inference.predict import load_fold_models, mean_softmax, shared_towers
from aisle.models.classifier import ProductClassifier
from aisle.models.factory import image_preprocess
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.tables import require_finite

__all__ = ["FolderImages", "ImageInput", "Predictor", "RunModels", "image_input"]

ImageInput = Image.Image | bytes | str | Path | None
# items per forward pass: larger batches gain little on a CPU, and a server's memory keeps the largest peak it saw
FORWARD_CHUNK = 8


def image_input(value: ImageInput, max_pixels: int, draft: int) -> tuple[Image.Image | None, str | None]:
    """One image given in memory or as a path: (RGB image, None) or (None, why it cannot be used)."""
    if value is None:
        return None, "missing"
    if isinstance(value, Image.Image):
        return as_rgb(value), None
    if isinstance(value, bytes | bytearray):
        return decode_image_bytes(bytes(value), max_pixels, (draft, draft))
    return open_image(value, (), max_pixels, draft=(draft, draft))


def _onnx_session(rd: RunDir, folds: list[int] | None) -> Any:
    """The run's exported graph (``aisle export``), checked to hold the folds asked for."""
    import onnxruntime as ort

    path = rd.onnx / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: export the run first (aisle export {rd.root})")
    info = read_json(rd.onnx / "preprocess.json")
    if folds is not None and sorted(folds) != info["folds"]:
        raise ValueError(f"{path} averages folds {info['folds']}, not {sorted(folds)}: export those folds")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class RunModels:
    """One trained run's fold models, preprocessing and text schema."""

    def __init__(self, run_dir: Path, folds: list[int] | None, backend: str = "torch") -> None:
        rd = RunDir(run_dir)
        self.root = rd.root
        self.session = _onnx_session(rd, folds) if backend == "onnx" else None
        cfg, self.label_map, self.models = load_fold_models(rd.root, folds)
        self.cfg = cfg
        trained = read_json(rd.schema) if rd.schema.is_file() else {}
        self.label_col = str(trained.get("label_col") or "label")
        self.image_col: str | None = trained.get("image_col")
        self.schema = ProductSchema(
            "id",
            None,
            tuple(trained.get("text_cols") or ()),
            None,
            {k: v for k, v in cfg.data.text_prefixes.items() if k in (trained.get("text_cols") or ())},
            tuple(trained.get("attribute_cols") or ()),
        )
        self.first = next(iter(self.models.values()))
        self.pre = image_preprocess(self.first)
        self.frozen = shared_towers(rd, cfg, list(self.models))  # encoded once for all folds, as predict does
        self.sizes = list(cfg.infer.scales) or ([self.pre.size] if self.pre is not None else [])
        self.views: list[Callable | None] = [None, *(TTA_POLICIES.get(v) for v in cfg.infer.tta)]
        self.transforms = {
            s: build_image_transform(s, False, self.pre.mean, self.pre.std, normalize=False)
            for s in self.sizes
            if self.pre is not None
        }
        self.k = cfg.data.max_images if cfg.data.multi_image == "mean_pool" else 1

    def texts(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        return [text_of(item, self.schema, self.cfg.data.text_sep) for item in items]

    def images(self, items: Sequence[Mapping[str, Any]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 3, S, S) uint8 pixels and (B, K) has-image mask, as the dataset builds them."""
        pixels, masks = [], []
        for item in items:
            given = item.get("image")
            chosen = list(given[: self.k]) if isinstance(given, list | tuple) else [given]
            tensors, mask = [], []
            for value in chosen or [None]:
                image, _ = image_input(value, self.cfg.data.max_image_pixels, size)
                mask.append(image is not None)
                tensors.append(self.transforms[size](image if image is not None else placeholder_image(size)))
            while len(tensors) < self.k:
                tensors.append(torch.zeros_like(tensors[0]))
                mask.append(False)
            pixels.append(torch.stack(tensors))
            masks.append(torch.tensor(mask, dtype=torch.bool))
        return torch.stack(pixels), torch.stack(masks)

    def _text_part(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        text = self.first.text_encoder
        if text is None:
            return {}
        tokens = text.tokenize(self.texts(items))
        if not self.frozen["text_encoder"]:
            return tokens
        with torch.inference_mode():
            feats = text.eval()(tokens).float()
        return {"text_features": feats.half().float()}  # as the feature cache stores it

    def _image_batches(self, items: Sequence[Mapping[str, Any]], size: int) -> list[dict[str, torch.Tensor]]:
        """One batch per TTA view: pixels, or (frozen tower) features computed once for every fold."""
        pixels, mask = self.images(items, size)
        image = self.first.image_encoder
        out = []
        for fn in self.views:
            b = {"image": pixels if fn is None else fn(pixels), "image_mask": mask}
            if image is not None and self.frozen["image_encoder"]:
                with torch.inference_mode():
                    feats = image.eval()(b).float().half().float()
                b = {"image_features": feats, "image_mask": mask.any(1, keepdim=True)}
            out.append(b)
        return out

    def inputs(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """The exported graph's inputs for ``items``: pixels at the run's image size and tokens."""
        batch: dict[str, torch.Tensor] = {}
        if self.first.image_encoder is not None:
            batch["image"], batch["image_mask"] = self.images(items, self.sizes[0])
        if self.first.text_encoder is not None:
            batch.update(self.first.text_encoder.tokenize(self.texts(items)))
        return batch

    def predict(self, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(N, C) probabilities: mean over folds, image sizes and TTA views."""
        if self.session is not None:
            return self.session.run(None, {k: v.numpy() for k, v in self.inputs(items).items()})[0]
        base = {"id": [str(item.get("id", i)) for i, item in enumerate(items)], **self._text_part(items)}
        if self.first.image_encoder is None:
            batches = [[base]]
        else:
            batches = [[{**base, **b} for b in self._image_batches(items, s)] for s in self.sizes]
        per_fold = []
        for model in self.models.values():
            per_size = [self._run(model, views) for views in batches]
            per_fold.append(np.mean(per_size, axis=0))
        return np.mean(per_fold, axis=0)

    @staticmethod
    def _run(model: ProductClassifier, views: list[dict]) -> np.ndarray:
        if len(views) == 1:
            return mean_softmax(model, views, [None], None)
        return np.mean([mean_softmax(model, [v], [None], None) for v in views], axis=0)


def _rescaled(probs: np.ndarray, scale: float) -> np.ndarray:
    return probs if scale == 1.0 else rescale_probs(probs, scale)


class Predictor:
    """A run folder (or an ensemble folder) loaded once, for fast predictions on products held in memory.

    Example:
        >>> p = Predictor("runs/demo-fusion")
        >>> p.predict_proba([{"id": "x1", "title": "Silk Box", "image": open("x1.jpg", "rb").read()}])

    Each item is a mapping with the run's text columns (``title``, ``description``, ... as it was trained; absent
    or None: empty) and ``image``: a PIL image, encoded bytes, a file path, a list of these (several images per
    product), or None (the missing-image path, as in training).

    Args:
        run_dir: a finished run or ensemble folder.
        folds: which folds' models (default: the run's ``infer.folds``, else all).
        backend: ``torch``, or ``onnx``: the graph ``aisle export`` wrote into the run's ``onnx/`` folder (each
            member's, for an ensemble); preprocessing stays in Python.
    """

    def __init__(self, run_dir: str | Path, folds: list[int] | None = None, backend: str = "torch") -> None:
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend {backend!r} is not one of: torch, onnx")
        rd = RunDir(run_dir)
        self.run_name = rd.root.name
        self.members: list[tuple[float, float, RunModels]] = []
        self.prior = 0.0
        if rd.is_ensemble():
            spec = read_json(rd.ensemble)
            for m in spec["members"]:
                if m["weight"] > 0:
                    run = Path(m["run"]) if Path(m["run"]).is_absolute() else rd.root / m["run"]
                    member = RunModels(run, folds, backend)
                    self.members.append((float(m["weight"]), float(m.get("scale", 1.0)), member))
            self.prior = spec.get("uniform_weight", 0.0)
        else:
            self.members.append((1.0, 1.0, RunModels(rd.root, folds, backend)))
        self.label_map: LabelMap = self.members[0][2].label_map
        self.prior /= len(self.label_map)

    @property
    def classes(self) -> list[str]:
        return list(self.label_map.classes)

    @property
    def text_columns(self) -> list[str]:
        """The item keys whose text the run reads."""
        sch = self.members[0][2].schema
        return [*sch.text_cols, *sch.attribute_cols]

    @property
    def label_col(self) -> str:
        """The label column's name in the training table (the submission's column)."""
        return self.members[0][2].label_col

    @property
    def image_col(self) -> str | None:
        """The image column the run was trained with (None: images were found by id)."""
        return self.members[0][2].image_col

    @property
    def max_image_pixels(self) -> int:
        """The decompression-bomb limit the run was trained with."""
        return min(run.cfg.data.max_image_pixels for _, _, run in self.members)

    def describe(self) -> dict[str, Any]:
        """What a client needs to know: classes, the item fields read, towers, image sizes, the run."""
        runs = [run for _, _, run in self.members]
        return {
            "run": self.run_name,
            "classes": self.classes,
            "text_fields": self.text_columns,
            "uses_images": self.uses_images,
            "image_sizes": sorted({s for r in runs for s in r.sizes}),
            "members": [
                {"model_type": r.cfg.model.type, "towers": r.cfg.model.tower_names(), "folds": sorted(r.models)}
                for r in runs
            ],
        }

    @property
    def uses_images(self) -> bool:
        return any(run.first.image_encoder is not None for _, _, run in self.members)

    def predict_proba(self, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(N, C) class probabilities for ``items``, in order.

        Raises:
            ValueError: no items, or the probabilities are not finite (a broken model).
        """
        if not items:
            raise ValueError("no items to predict")
        parts = []
        with torch.inference_mode():
            for i in range(0, len(items), FORWARD_CHUNK):  # a bounded peak of activation memory per pass
                chunk = items[i : i + FORWARD_CHUNK]
                parts.append(sum(w * _rescaled(run.predict(chunk), s) for w, s, run in self.members) + self.prior)
        out = np.concatenate(parts)
        require_finite(out, [item.get("id", i) for i, item in enumerate(items)], "predictions")
        return out


class FolderImages:
    """``<id>.<ext>`` and ``<id>_*.<ext>`` files of an image folder (and one level down), listed once and listed
    again only when the folder changes (its modification time): a call for one product costs a dictionary lookup,
    not a scan. Unlike a whole-table index, an ``<id>_*`` file is offered to every id it starts with."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._stamp: int | None = None
        self._index: dict[str, list[str]] = {}

    def _refresh(self) -> None:
        stamp = self.folder.stat().st_mtime_ns
        if stamp == self._stamp:
            return
        index: dict[str, list[str]] = {}
        for path in image_files(self.folder):
            stem = Path(path).stem
            index.setdefault(stem, []).append(path)
            pos = stem.rfind("_")
            while pos > 0:
                index.setdefault(f"{stem[:pos]}\0_", []).append(path)
                pos = stem.rfind("_", 0, pos)
        self._index, self._stamp = index, stamp

    def get(self, pid: str) -> list[str]:
        """The product's images: exact names first, then ``<id>_*`` in natural order."""
        self._refresh()
        return sorted(self._index.get(pid, []), key=natural_key) + sorted(
            self._index.get(f"{pid}\0_", []), key=natural_key
        )

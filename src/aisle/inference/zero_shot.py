"""Zero-shot classification: products scored against class texts by a pretrained model, no training.

The model is the class-text head (:class:`aisle.models.class_text.ClassTextHead`) on the named towers with
identity projections, so zero-shot is exactly what a ``model.head: class_text`` run predicts at step 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from aisle.config import DataConfig
from aisle.data.class_texts import read_class_texts, render_class_texts
from aisle.data.labels import LabelMap
from aisle.data.loaders import LoaderOptions, build_loader
from aisle.data.products import Products, load_products, products_from_frame, read_image_folder
from aisle.inference.inputs import check_images
from aisle.inference.predict import Prediction, mean_softmax
from aisle.models.base import Tower, parse_tower_name
from aisle.models.class_text import ClassTextHead
from aisle.models.classifier import ProductClassifier
from aisle.models.dual import DUAL_ENCODERS
from aisle.models.factory import loader_inputs
from aisle.models.text_towers import TEXT_TOWERS
from aisle.tables import require_finite

__all__ = ["ZERO_SHOT_TEXT_TOWERS", "Modality", "create_zero_shot_model", "read_classes", "zero_shot"]

Modality = Literal["image", "text", "both"]
ZERO_SHOT_TEXT_TOWERS = ("hf", "tiny")  # text towers that read any text (ngram: / tfidf: are fitted per run)
ClassesArg = str | Path | Sequence[str] | Mapping[str, str | Sequence[str]]


def read_classes(classes: ClassesArg) -> dict[str, list[str]]:
    """Class name -> descriptions, from a JSON file (a list of names or ``{class: description(s)}``) or the same
    as Python objects."""
    if isinstance(classes, str | Path):
        return read_class_texts(classes)
    if isinstance(classes, Mapping):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in classes.items()}
    return {str(c): [] for c in classes}


def _towers(model: str, modality: Modality | None, vocab: Sequence[str], max_length: int | None) -> tuple:
    """(image tower or None, product text tower or None, class-text tower, modality) for ``model``."""
    prefix, name = parse_tower_name(model, [*DUAL_ENCODERS.list(), *ZERO_SHOT_TEXT_TOWERS])
    length = {"max_length": max_length} if max_length else {}
    if prefix in ZERO_SHOT_TEXT_TOWERS:
        if modality not in (None, "text"):
            raise ValueError(f"{model} is a text tower: it reads product texts only (modality text, not {modality})")
        fitted = {"texts": vocab} if prefix == "tiny" else {}  # a tiny preset's tokenizer learns these texts
        text = TEXT_TOWERS.create(prefix, name, **length, **fitted)
        return None, text, text, "text"
    dual = DUAL_ENCODERS.create(prefix, name, texts=vocab, **length)
    modality = modality or "image"
    image = dual.image if modality in ("image", "both") else None
    return image, dual.text if modality in ("text", "both") else None, dual.text, modality


def create_zero_shot_model(
    model: str,
    class_texts: Sequence[Sequence[str]],
    modality: Modality | None = None,
    temperature: float = 0.07,
    max_length: int | None = None,
    vocab: Sequence[str] = (),
) -> tuple[ProductClassifier, Modality]:
    """The class-text head on ``model``'s towers, projections the identity: logits = cos / temperature.

    Args:
        model: a dual encoder (``open_clip:``, ``hf-clip:``, ``hf-siglip:``) or a text tower (``hf:``, ``tiny:``).
        class_texts: per class its texts.
        modality: what of a product is compared with the class texts (a dual encoder: ``image`` by default;
            ``both``: the normalised sum of both views, a row without an image by its text alone).
        vocab: texts a ``tiny:`` preset's tokenizer is fitted on (tests).
    """
    image, text, class_tower, modality = _towers(model, modality, vocab, max_length)
    towers: list[Tower] = [t for t in (image, text) if t is not None]
    width = max(t.output_dim for t in (*towers, class_tower))
    head = ClassTextHead([t.output_dim for t in towers], class_tower.output_dim, len(class_texts), width, temperature)
    own = class_tower if text is None else None
    clf = ProductClassifier(image, text, len(class_texts), class_head=head, class_text_encoder=own)
    clf.set_class_texts(class_texts)
    return clf.eval(), modality


def _products(data: str | Path | pd.DataFrame, cfg: DataConfig, image_dir: str | Path | None) -> Products:
    if not isinstance(data, pd.DataFrame) and Path(data).is_dir():  # a folder of images: one row per file
        texts: dict[str, object] = {"text_cols": ["text"], "attribute_cols": None, "text_prefixes": {}}
        return read_image_folder(data, cfg.model_copy(update=texts))
    if isinstance(data, pd.DataFrame):
        root = Path(cfg.data_root or ".")
        return products_from_frame(data, cfg, root, image_dir or cfg.image_dir, source="DataFrame")
    if image_dir is not None:
        cfg = cfg.model_copy(update={"image_dir": str(image_dir)})
    return load_products(data, cfg)


def zero_shot(
    model: str,
    classes: ClassesArg,
    data: str | Path | pd.DataFrame,
    templates: Sequence[str] | None = None,
    modality: Modality | None = None,
    temperature: float = 0.07,
    data_cfg: DataConfig | None = None,
    image_dir: str | Path | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Prediction:
    """Probabilities for every row of ``data`` (input order, ids as given): softmax of cos / ``temperature``
    between each product and each class's texts (templates averaged, CLIP's prompt ensembling).

    Args:
        model: see :func:`create_zero_shot_model`.
        classes: a JSON file or object: a list of class names or ``{class: description(s)}``.
        data: a products table (path) or DataFrame (columns inferred as for training; a label column is optional),
            or a folder of images (one row per image file, its id the file's path in the folder).
        templates: ``{class_name}`` / ``{description}`` templates (default: the description, else the name).
        data_cfg: how to read ``data`` (columns, separator, image folder); default: inferred.

    Raises:
        ValueError: a bad model name, template or classes file; a text tower asked for images; no row has an
            image for an image modality.
    """
    cfg = data_cfg or DataConfig()
    descriptions = read_classes(classes)
    label_map = LabelMap.fit(np.array(list(descriptions), dtype=object))
    rendered = render_class_texts(label_map.classes, descriptions, templates or ["{description}"], source="--classes")
    products = _products(data, cfg, image_dir)
    vocab = [*products.texts, *(t for ts in rendered for t in ts)]
    clf, modality = create_zero_shot_model(model, rendered, modality, temperature, max_length, vocab)
    if modality != "text":
        check_images(any(len(p) for p in products.image_paths), len(products), products.source, False)
    loader = build_loader(products, None, LoaderOptions.create(cfg, batch_size, 0), train=False, **loader_inputs(clf))
    with torch.inference_mode():
        probs = mean_softmax(clf, loader, [None], progress)
    require_finite(probs, products.ids, f"zero-shot predictions of {model}")
    return Prediction(products.ids, probs, {0: probs}, label_map, products.schema.label_col or "label")

"""Frozen towers' features for training: from the feature cache, computed once and reused by every fold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aisle.config import AisleConfig
from aisle.data.products import Products
from aisle.models.classifier import ProductClassifier

__all__ = ["frozen_features"]

ImageFeatures = tuple[list[np.ndarray], np.ndarray]  # one (N, D) array per cached view, has-image mask (N,)


def frozen_features(
    model: ProductClassifier,
    frozen: tuple[str, ...],
    as_template: set[str],
    products: Products,
    cfg: AisleConfig,
    shared: dict[str, Any],
) -> tuple[ImageFeatures | None, np.ndarray | None]:
    """Features of the frozen towers for every row, from the feature cache (computed once, reused by every fold,
    stage and later run).

    Args:
        frozen: towers with nothing to train (``image_encoder`` / ``text_encoder``).
        as_template: frozen towers that still hold the template's weights: their features are kept in ``shared``
            for the run's other folds.

    Returns:
        (image features or None, text features (N, D) or None); None also where ``runtime.feature_cache`` is off.
    """
    if not cfg.runtime.feature_cache:
        return None, None
    from aisle.cache.encode import EncodeOptions, tower_features

    rt = cfg.runtime
    opts = EncodeOptions.create(cfg.data, rt)

    def memo(name: str, compute: Callable[[], Any]) -> Any:
        if name not in as_template:
            return compute()
        if name not in shared:
            shared[name] = compute()
        return shared[name]

    def image_views() -> ImageFeatures:
        tower = model.image_encoder
        if tower is None:
            raise ValueError("image_encoder is frozen but the model has no image tower")
        views = [tower_features(tower, products, rt.cache_dir, view=v, opts=opts) for v in cfg.train.cache_views]
        return [f for f, _ in views], views[0][1]

    def text_features() -> np.ndarray:
        tower = model.text_encoder
        if tower is None:
            raise ValueError("text_encoder is frozen but the model has no text tower")
        return tower_features(tower, products, rt.cache_dir, opts=opts)[0]

    image = memo("image_encoder", image_views) if "image_encoder" in frozen else None
    text = memo("text_encoder", text_features) if "text_encoder" in frozen else None
    return image, text

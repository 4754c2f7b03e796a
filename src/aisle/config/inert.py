"""Keys given a value of their own that this config never reads: ``aisle train`` names them in one warning.

The schema refuses keys of another tower kind or model type at load time; these are keys every config has (the
model's head and fusion settings, the gradient-training settings) that act only with some choices of other keys.
Each rule: the key, when it acts, and what that is in words. A key counts as given when it differs from its
default, so a run folder's full config (every key written out) names nothing new.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from aisle.config.schema import AisleConfig

__all__ = ["inert_keys", "warn_inert"]

log = logging.getLogger(__name__)

TWO_TOWERS = ("fusion", "dual")
# what a linear model (fitted by scikit-learn) never reads: the gradient-training keys (label_smoothing and
# cache_views have rules of their own)
GRADIENT_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "scheduler",
    "warmup_ratio",
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "loss",
    "weighted_sampling",
    "early_stopping_metric",
    "early_stopping_patience",
    "strategy",
    "num_nodes",
)


def _neural(c: AisleConfig) -> bool:
    return c.model.type != "linear"


def _mlp(c: AisleConfig) -> bool:
    return _neural(c) and c.model.head == "mlp"


def _projected(c: AisleConfig) -> bool:
    return _mlp(c) and c.model.type in TWO_TOWERS and c.model.fusion_kind in ("sum", "gated")


def _has_image(c: AisleConfig) -> bool:
    return c.model.type in ("image", "fusion", "dual") or c.model.image is not None


def _cross_entropy(c: AisleConfig) -> bool:
    return _neural(c) and (c.train.loss == "ce" or any((s.loss or c.train.loss) == "ce" for s in c.train.stages))


RULES: list[tuple[str, Callable[[AisleConfig], bool], str]] = [
    ("model.fusion_dim", _projected, "the projection width of fusion sum and gated"),
    ("model.head_hidden", _mlp, "the MLP head's width (model.head mlp, neural models)"),
    ("model.dropout", _mlp, "the MLP head's dropout (model.head mlp, neural models)"),
    ("model.embed_dim", lambda c: c.model.head == "class_text", "a model.head class_text setting"),
    ("model.temperature", lambda c: c.model.head == "class_text", "a model.head class_text setting"),
    ("model.learn_temperature", lambda c: c.model.head == "class_text", "a model.head class_text setting"),
    (
        "model.aux_loss_weight",
        lambda c: _cross_entropy(c) and c.model.type in TWO_TOWERS and c.model.fusion_kind == "late",
        "the per-tower loss of fusion late with the ce loss",
    ),
    ("model.modality_dropout", lambda c: c.model.type in TWO_TOWERS, "drops a tower of two-tower models"),
    (
        "model.missing_image_embedding",
        lambda c: _neural(c) and _has_image(c),
        "stands in for missing images in neural models with an image tower",
    ),
    ("model.image_size", _has_image, "the image size of models with an image tower"),
    ("train.label_smoothing", _cross_entropy, "smooths the ce loss"),
    ("train.class_weights", lambda c: c.model.type == "linear" or _cross_entropy(c), "weighs the ce loss"),
    ("train.cache_views", lambda c: _neural(c) and _has_image(c) and c.runtime.feature_cache, "frozen image towers"),
    ("data.decoded_size", lambda c: c.data.decoded_cache and _has_image(c), "the size data.decoded_cache stores"),
    *((f"train.{k}", _neural, "gradient training (a linear model is fitted by scikit-learn)") for k in GRADIENT_KEYS),
]


def _given(cfg: AisleConfig, key: str) -> bool:
    """The key's value differs from its default."""
    *path, name = key.split(".")
    section: Any = cfg
    for part in path:
        section = getattr(section, part)
    if not isinstance(section, BaseModel):
        return False
    default = type(section).model_fields[name].get_default(call_default_factory=True)
    return getattr(section, name) != default


def inert_keys(cfg: AisleConfig) -> list[str]:
    """``key (what it is for)`` for every key given a value of its own that this config does not read."""
    found: dict[str, str] = {}
    for key, acts, what in RULES:
        if key not in found and _given(cfg, key) and not acts(cfg):
            found[key] = what
    return [f"{k} ({what})" for k, what in found.items()]


def warn_inert(cfg: AisleConfig) -> list[str]:
    """One warning naming every key :func:`inert_keys` finds (and what to do); returns them."""
    found = inert_keys(cfg)
    if found:
        log.warning(
            "these config keys do nothing for this model (type %s, head %s, fusion %s, loss %s): %s; remove them, "
            "or change the keys they depend on",
            cfg.model.type,
            cfg.model.head,
            cfg.model.fusion_kind if cfg.model.type in TWO_TOWERS else "none",
            cfg.train.loss,
            "; ".join(found),
        )
    return found

"""Typed configuration: one tree (data / model / train / infer / runtime), every default in one place.

Load order: defaults < YAML file < ``--set a.b=c`` overrides. Unknown keys, wrong types and bad
choices fail at load time with :class:`ConfigError`, naming the key, the bad value and the valid choices.
The schema is in :mod:`aisle.config.schema`, loading and error messages in :mod:`aisle.config.loading`.
"""

from aisle.config.data_schema import ConfigError, DataConfig
from aisle.config.loading import apply_overrides, config_to_dict, load_config, save_config, validate_config
from aisle.config.schema import (
    MODEL_TOWERS,
    MOVED_KEYS,
    REMOVED_KEYS,
    AisleConfig,
    DualTowerConfig,
    ImageTowerConfig,
    InferConfig,
    LearningRates,
    LinearModelConfig,
    ModelConfig,
    NgramTowerConfig,
    RuntimeConfig,
    StageConfig,
    TextTowerConfig,
    TowerConfig,
    TrainConfig,
)

__all__ = [
    "MODEL_TOWERS",
    "MOVED_KEYS",
    "REMOVED_KEYS",
    "AisleConfig",
    "ConfigError",
    "DataConfig",
    "DualTowerConfig",
    "ImageTowerConfig",
    "InferConfig",
    "LearningRates",
    "LinearModelConfig",
    "ModelConfig",
    "NgramTowerConfig",
    "RuntimeConfig",
    "StageConfig",
    "TextTowerConfig",
    "TowerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "save_config",
    "validate_config",
]

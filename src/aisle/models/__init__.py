"""Towers (image, text, dual), fusion heads and the product classifier, each built from a registry name."""

from aisle.models.base import ImagePreprocess, Tower, parse_tower_name
from aisle.models.classifier import ProductClassifier
from aisle.models.dual import DUAL_ENCODERS
from aisle.models.factory import create_classifier, create_towers, image_preprocess, save_model_assets, set_trainable
from aisle.models.fusion import FUSIONS
from aisle.models.image_towers import IMAGE_TOWERS
from aisle.models.text_towers import TEXT_TOWERS
from aisle.registry import Registry

__all__ = [
    "DUAL_ENCODERS",
    "FUSIONS",
    "IMAGE_TOWERS",
    "TEXT_TOWERS",
    "ImagePreprocess",
    "ProductClassifier",
    "Registry",
    "Tower",
    "create_classifier",
    "create_towers",
    "image_preprocess",
    "parse_tower_name",
    "save_model_assets",
    "set_trainable",
]

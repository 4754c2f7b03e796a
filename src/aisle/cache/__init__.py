"""Doing each piece of work once: the feature cache for frozen towers and the decoded image cache."""

from aisle.cache.decoded import DecodedImages
from aisle.cache.encode import encode_products, tower_features
from aisle.cache.keys import image_item_keys, text_item_keys, tower_key, weights_digest
from aisle.cache.store import FeatureStore

__all__ = [
    "DecodedImages",
    "FeatureStore",
    "encode_products",
    "image_item_keys",
    "text_item_keys",
    "tower_features",
    "tower_key",
    "weights_digest",
]

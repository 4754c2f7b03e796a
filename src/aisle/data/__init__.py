"""Product data: tables, images, labels, folds and the torch Dataset."""

from aisle.data.dataset import ProductDataset
from aisle.data.folds import assign_folds
from aisle.data.images import ImageIssue, ImageProbe, build_image_index, open_image, placeholder_image, probe_image
from aisle.data.labels import LabelMap, apply_rare_class_policy
from aisle.data.prepare import TrainingData, load_source, load_training_data
from aisle.data.products import Products, find_image_dir, load_products, products_from_frame, read_class_folder
from aisle.data.schema import ProductSchema, build_texts, infer_schema
from aisle.data.transforms import build_image_transform, build_whitespace_text_transform
from aisle.tables import read_table

__all__ = [
    "ImageIssue",
    "ImageProbe",
    "LabelMap",
    "ProductDataset",
    "ProductSchema",
    "Products",
    "TrainingData",
    "apply_rare_class_policy",
    "assign_folds",
    "build_image_index",
    "build_image_transform",
    "build_texts",
    "build_whitespace_text_transform",
    "find_image_dir",
    "infer_schema",
    "load_products",
    "load_source",
    "load_training_data",
    "open_image",
    "placeholder_image",
    "probe_image",
    "products_from_frame",
    "read_class_folder",
    "read_table",
]

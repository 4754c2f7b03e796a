"""The config tree's base section and its ``data`` section (the rest is in :mod:`aisle.config.schema`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the public names are re-exported (with __all__) by aisle.config


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or not one of the valid choices."""


MAX_IMAGE_PIXELS = 89_478_485  # data.max_image_pixels' default: PIL's decompression-bomb limit


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


# the training augmentation policies; each is built by the registry of the same names in aisle.data.transforms
AugmentPolicy = Literal["none", "minimal", "standard", "strong"]


class DataConfig(_Section):
    """Where the products are and how to read them.

    Columns left as ``None`` are inferred: id = ``id``; label = ``categories``, else ``label``;
    text = ``title`` + ``description``, else ``text``; image column = ``image``/``image_path``/``images``.
    """

    train_csv: str | None = None
    # a fixed split: a validation table (train_csv's columns) trained as one fold; sets data.folds to 1
    val_csv: str | None = None
    test_csv: str | None = None
    sep: str | None = None  # the tables' delimiter; default: sniffed among , ; TAB | (TAB for .tsv)
    encoding: str = "utf-8"  # the tables' text encoding, e.g. latin-1 or cp1252
    image_dir: str | None = None  # default: an ``images/`` folder beside the CSV, if there is one
    # relative image-column paths start here; nothing outside it (or image_dir) is read. Default: the table's folder
    data_root: str | None = None
    class_folder: str | None = None  # folder-per-class layout root: <root>/<class>/*.jpg
    id_col: str | None = None
    label_col: str | None = None
    text_cols: list[str] | None = None
    text_prefixes: dict[str, str] = Field(default_factory=dict)
    # structured columns (colour, gender, brand, ...) added to every text model's input as "name: value"
    attribute_cols: list[str] | None = None
    text_sep: str = ". "
    image_col: str | None = None
    image_sep: str = ";"
    multi_image: Literal["first", "random", "mean_pool"] = "first"
    max_images: int = Field(default=4, ge=1)
    # training image augmentation (aisle.data.transforms.AUGMENT_POLICIES); evaluation and TTA never augment
    augment: AugmentPolicy = "minimal"
    crop_scale: tuple[float, float] = (0.7, 1.0)  # the random resized crop's area fraction (minimal, standard, strong)
    decoded_cache: bool = False  # decode each image once into a uint8 memory map (large photos), as uncached
    # the largest short side it keeps (larger decoded images are resized down, aspect kept); default 2 x image size
    decoded_size: int | None = Field(default=None, ge=8)
    max_image_pixels: int = Field(default=MAX_IMAGE_PIXELS, ge=1)
    folds: int = Field(default=5, ge=1)  # K-fold; 1 only with val_csv (a fixed split), which sets it
    fold_col: str = "fold"
    seed: int = 42
    rare_classes: Literal["error", "drop", "merge"] = "error"
    rare_class_name: str = "__other__"
    # a table written by `aisle pseudo-label`: its rows join the TRAINING part of every fold (never validation)
    pseudo_labels: str | None = None

    # class texts (model.head class_text, train.loss clip): a JSON {class: description} or {class: [texts...]}
    class_texts: str | None = None
    # each class's texts: every template x description, averaged (CLIP's prompt ensembling); a class without a
    # description fills {description} with its name
    class_text_templates: list[str] = Field(default_factory=lambda: ["{description}"], min_length=1)
    allow_extra_class_texts: bool = False  # a class_texts entry for a class the data lacks: a warning, not an error
    # few-shot: keep K training rows per class in each fold (stratified, data.seed); validation rows stay whole
    shots_per_class: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _crop_scale_is_a_range(self) -> DataConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"data.crop_scale must be [low, high] with 0 < low <= high <= 1 (fractions of the image area), "
                f"got {list(self.crop_scale)}"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _fixed_split_is_one_fold(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("val_csv") is not None and "folds" not in raw:
            return {**raw, "folds": 1}
        return raw

    @model_validator(mode="after")
    def _folds_match_the_split(self) -> DataConfig:
        if self.val_csv is not None and self.class_folder is not None:
            raise ValueError("data.val_csv is a table with data.train_csv's columns: use it with data.train_csv")
        if self.val_csv is not None and self.folds != 1:
            raise ValueError(
                f"data.folds={self.folds} and data.val_csv: a fixed split is one fold (the val_csv rows); "
                f"leave data.folds out (it becomes 1) or drop data.val_csv for K-fold"
            )
        if self.val_csv is None and self.folds < 2:
            raise ValueError(
                f"data.folds={self.folds}: K-fold needs at least 2 folds; for one fixed train/validation split "
                f"set data.val_csv (a validation table)"
            )
        return self

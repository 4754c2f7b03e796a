"""The rows a run predicts, checked against what the run was trained with: nothing it needs is silently absent."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from aisle.config import MODEL_TOWERS, AisleConfig
from aisle.data.labels import LabelMap
from aisle.data.products import (
    Products,
    find_image_dir,
    image_folder_frame,
    load_products,
    products_from_frame,
    read_image_folder,
)
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.tables import read_table

__all__ = [
    "PREDICT_KEYS",
    "check_images",
    "check_predict_overrides",
    "check_rows",
    "override_key",
    "read_products",
    "trained_text_columns",
]

log = logging.getLogger(__name__)

# what ``predict --set`` may change: how the input is read and where the work runs, never what the model was
# trained on (text columns, attributes, image size, ...: those come from the run)
PREDICT_KEYS = (
    "data.sep",
    "data.encoding",
    "data.image_dir",
    "data.data_root",
    "data.image_col",
    "data.image_sep",
    "data.id_col",
    "data.max_image_pixels",
    "runtime.",
)


def override_key(item: str) -> str:
    """The key of one ``--set key=value`` item."""
    return item.partition("=")[0].strip()


def check_predict_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` if every key is one predict may change.

    Raises:
        ValueError: names the key and the keys that apply.
    """
    for item in overrides:
        key = override_key(item)
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in PREDICT_KEYS):
            raise ValueError(
                f"--set {item}: predict takes the run's own {key!r} (it is part of what the model learned); "
                f"it may change only {', '.join(k + '*' if k.endswith('.') else k for k in PREDICT_KEYS)}"
            )
    return overrides


def _columns(df: pd.DataFrame, trained: dict, allow_missing_text: bool, source: str) -> list[str] | None:
    """The trained run's text columns that ``df`` has; an error names the absent ones unless allowed."""
    wanted = list(trained.get("text_cols") or [])
    return trained_text_columns(df, wanted, allow_missing_text, source) if wanted else None


def trained_text_columns(df: pd.DataFrame, wanted: list[str], allow_missing_text: bool, source: str) -> list[str]:
    """The columns of ``wanted`` (the run's text columns) that ``df`` has.

    Raises:
        ValueError: some are absent and ``allow_missing_text`` is False (the message names them).
    """
    absent = [c for c in wanted if c not in df.columns]
    if absent and not allow_missing_text:
        raise ValueError(
            f"{source}: the run was trained on the text columns {wanted}, and this table has no {absent}; "
            f"its columns are {list(map(str, df.columns))}. Add them (or rename yours), or pass "
            f"--allow-missing-text (Python: allow_missing_text=True) to predict without them, at a cost in accuracy"
        )
    if absent:
        log.warning("%s: no text column(s) %s, which the run was trained with; predicting without them", source, absent)
    return [c for c in wanted if c in df.columns]


def _trained_cfg(rd: RunDir, cfg: AisleConfig, df: pd.DataFrame, allow_missing_text: bool, source: str):
    trained = read_json(rd.schema) if rd.schema.is_file() else {}
    if "text_encoder" not in MODEL_TOWERS[cfg.model.type]:  # an image model reads no product text, whatever
        trained = {k: [c for c in v or [] if c in df.columns] if k.endswith("cols") else v for k, v in trained.items()}
    update: dict = {"text_cols": _columns(df, trained, allow_missing_text, source)}
    attrs = [c for c in trained.get("attribute_cols") or [] if c in df.columns]
    absent_attrs = sorted(set(trained.get("attribute_cols") or []) - set(attrs))
    if absent_attrs and not allow_missing_text:
        raise ValueError(
            f"{source}: the run was trained with the attribute columns {absent_attrs}, which this table lacks; add "
            f"them, or pass --allow-missing-text to predict without them"
        )
    update["attribute_cols"] = attrs or None
    update["text_prefixes"] = {k: v for k, v in cfg.data.text_prefixes.items() if k in (update["text_cols"] or [])}
    return cfg.data.model_copy(update=update)


def read_products(
    rd: RunDir,
    cfg: AisleConfig,
    data: str | Path | pd.DataFrame | None,
    image_dir: str | Path | None,
    allow_missing_text: bool = False,
) -> Products:
    """The rows to predict: ``data`` (a table, a folder of images or a DataFrame), else the run's
    ``data.test_csv`` (with the run's ``data.image_dir``), read with the text columns the run was trained on. Images
    come from ``image_dir``, else (another table) ``images/`` or ``<stem>_images/`` beside the table.

    Raises:
        ValueError: no data, or a text / attribute column the run was trained with is absent (unless allowed).
    """
    own = data is None  # the run's own test table: its own image folder too, unless one is passed
    if data is None:
        if not cfg.data.test_csv:
            raise ValueError(
                f"nothing to predict: pass the data (--data TABLE), or set data.test_csv in the "
                f"run's config ({rd.config})"
            )
        data = cfg.data.test_csv
    source = "DataFrame" if isinstance(data, pd.DataFrame) else str(data)
    if not isinstance(data, pd.DataFrame) and Path(data).is_dir():
        return _image_folder(rd, cfg, Path(data), allow_missing_text)
    df = data if isinstance(data, pd.DataFrame) else read_table(data, cfg.data.sep, cfg.data.encoding)
    data_cfg = _trained_cfg(rd, cfg, df, allow_missing_text, source)
    data_cfg.image_dir = str(image_dir) if image_dir else (cfg.data.image_dir if own else None)
    if isinstance(data, pd.DataFrame):
        root = Path(image_dir).parent if image_dir else Path(".")
        return products_from_frame(data, data_cfg, root, image_dir or find_image_dir(root / "x.csv"), source=source)
    return load_products(data, data_cfg, frame=df)


def _image_folder(rd: RunDir, cfg: AisleConfig, folder: Path, allow_missing_text: bool) -> Products:
    """A folder of images (and ``<stem>.txt`` texts), one product per image file, read with the run's text
    columns (``text``: the folder's only one)."""
    df = image_folder_frame(folder)
    source = f"{folder} (a folder of images, whose only text is a <stem>.txt beside an image)"
    products = read_image_folder(folder, _trained_cfg(rd, cfg, df, allow_missing_text, source), frame=df)
    log.info("%s: a folder of images, %d file(s) to predict (ids are their paths in it)", folder, len(products))
    return products


def check_images(has_image: bool, n: int, source: str, allow_missing_images: bool) -> None:
    """A model that reads images and not one image among ``n`` rows: an error (a wrong folder, most likely).

    Args:
        has_image: whether any row has an image.
    """
    if n and not has_image and not allow_missing_images:
        raise ValueError(
            f"{source}: none of the {n:,} products has an image, and the run's model reads images: pass the image "
            f"folder (--image-dir, Python: image_dir=...), put an images/ folder beside the table, give each item an "
            f"'image', or pass --allow-missing-images (Python: allow_missing_images=True) to predict from text alone"
        )


def check_rows(products: Products, label_map: LabelMap) -> dict[str, int]:
    """Warn about duplicate ids and labels the run never saw; return those labels with their row counts."""
    dups = products.duplicate_ids()
    if dups:
        log.warning(
            "%s: %d duplicate id(s) (each row still gets its own prediction): %s", products.source, len(dups), dups[:10]
        )
    if products.labels is None:
        return {}
    _, counter = label_map.encode(products.labels)
    unseen = dict(counter)
    if unseen:
        log.warning(
            "%s: %d label value(s) the run never saw (%d rows); they can never be predicted: %s",
            products.source,
            len(unseen),
            sum(unseen.values()),
            list(unseen)[:10],
        )
    return unseen

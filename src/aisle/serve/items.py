"""A prediction request's items checked and turned into predictor items, or a 4xx naming the item and field.

The JSON body is parsed here; a multipart form (:mod:`aisle.serve.forms`) is turned into the same list of items
plus image bytes per item, and both go through :func:`build_items`, so every per-item check is the same.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from aisle.data.images import decode_image_bytes
from aisle.inference.predictor import Predictor
from aisle.serve.settings import ServeSettings

__all__ = ["RequestError", "build_items", "item_list", "parse_items", "top_k"]


class RequestError(ValueError):
    """A request the server will not run: ``status`` (4xx), and the item (position) and field at fault."""

    def __init__(self, status: int, message: str, item: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.item, self.field = status, item, field


def _decode(data: bytes, i: int, max_pixels: int):
    image, reason = decode_image_bytes(data, max_pixels)
    if image is None:
        raise RequestError(422, f"item {i}: 'image' cannot be used ({reason})", i, "image")
    return image


def _image(value: Any, file: bytes | None, i: int, max_pixels: int):
    if file is not None:
        if value is not None:
            raise RequestError(400, f"item {i}: an image both in 'image' and as a file part; send one", i, "image")
        return _decode(file, i, max_pixels)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(422, f"item {i}: 'image' must be a base64 string or null", i, "image")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(422, f"item {i}: 'image' is not valid base64 ({e})", i, "image") from e
    return _decode(data, i, max_pixels)


def _item(
    raw: Any, file: bytes | None, i: int, text_cols: list[str], settings: ServeSettings, max_pixels: int
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RequestError(422, f"item {i} must be a JSON object", i)
    pid = raw.get("id")
    if not isinstance(pid, str | int) or isinstance(pid, bool) or str(pid) == "":
        raise RequestError(422, f"item {i}: 'id' is missing or not a non-empty string", i, "id")
    item: dict[str, Any] = {"id": str(pid)}
    for col in text_cols:
        if col not in raw:
            raise RequestError(
                422, f'item {i}: field {col!r} is missing (the run reads {text_cols}; send "" when empty)', i, col
            )
        value = raw[col]
        if value is not None and not isinstance(value, str):
            raise RequestError(422, f"item {i}: field {col!r} must be a string or null", i, col)
        if value is not None and len(value) > settings.max_text_chars:
            raise RequestError(
                413, f"item {i}: field {col!r} has {len(value):,} characters, over {settings.max_text_chars:,}", i, col
            )
        item[col] = value
    item["image"] = _image(raw.get("image"), file, i, max_pixels)
    return item


def item_list(raw: Any, settings: ServeSettings, shape: str) -> list[Any]:
    """``raw`` if it is a non-empty list within ``--max-items``.

    Args:
        raw: what the request gave as its items.
        settings: the limits.
        shape: what the request should have sent, for the message.

    Raises:
        RequestError: 422 not a non-empty list, 413 too many items.
    """
    if not isinstance(raw, list) or not raw:
        raise RequestError(422, f"{shape} with at least one item", field="items")
    if len(raw) > settings.max_items:
        raise RequestError(
            413, f"{len(raw)} items in one request, over the limit of {settings.max_items} (--max-items)"
        )
    return raw


def build_items(
    raw: list[Any], predictor: Predictor, settings: ServeSettings, files: Mapping[int, bytes] | None = None
) -> list[dict[str, Any]]:
    """The request's items (JSON objects) as predictor items, in order, every image decoded.

    Args:
        raw: the items, as :func:`item_list` checked them.
        predictor: what the run reads (text fields, image pixel limit).
        settings: the limits.
        files: encoded image bytes by item position (multipart file parts), in place of a base64 ``image``.

    Raises:
        RequestError: a bad item (the message names it and its field).
    """
    files = files or {}
    cols, max_pixels = predictor.text_columns, predictor.max_image_pixels
    return [_item(r, files.get(i), i, cols, settings, max_pixels) for i, r in enumerate(raw)]


def parse_items(body: bytes, predictor: Predictor, settings: ServeSettings) -> list[dict[str, Any]]:
    """``{"items": [{"id", <text columns>, "image": base64 | null}, ...]}`` as predictor items, in order.

    Raises:
        RequestError: not JSON, no items, too many, or a bad item (the message names it and its field).
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not JSON: {e}") from e
    raw = payload.get("items") if isinstance(payload, dict) else None
    return build_items(item_list(raw, settings, 'the body must be {"items": [ ... ]}'), predictor, settings)


def top_k(items: list[dict[str, Any]], probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    """Per item, in order: its id and its ``k`` most likely labels with their probabilities."""
    k = min(k, len(classes))
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        {"id": item["id"], "labels": [{"label": classes[j], "probability": float(p[j])} for j in row]}
        for item, p, row in zip(items, probs, best)
    ]

"""A ``multipart/form-data`` prediction request turned into the same items as the JSON body.

Two shapes, told apart by whether the form has an ``items`` field:

- Several items: a text field ``items`` holds the JSON list of items, exactly as ``{"items": [...]}`` would (each
  ``image`` may be base64, null or left out), and each image comes as a file part named ``image.<i>``, ``<i>`` the
  item's position in that list counted from 0 (``image.0``, ``image.1``, ...). One file per item, as the JSON
  ``image`` is one image; an item with no file and no ``image`` takes the missing-image path. No other part is
  allowed.
- One item: the text fields are the item's fields (``id`` and the run's text fields) and one optional file part
  ``image``; no other file part is allowed.

A form without files is multipart too: ``application/x-www-form-urlencoded`` is refused (415) by the server. An
empty file part with an empty file name (a browser's file input with no file chosen) is no image.

The form is parsed from the body the server already read within ``--max-body-mb``, with python-multipart's
parser writing every part into memory: nothing is spooled to a temporary file, as Starlette's ``request.form()``
does past 1 MB.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from aisle.inference.predictor import Predictor
from aisle.serve.items import RequestError, build_items, item_list
from aisle.serve.settings import ServeSettings

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["media_type", "parse_form"]

_FILE_NAME = re.compile(r"image\.(0|[1-9][0-9]*)")


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


@dataclass
class _Form:
    """The form's text fields and files, each by its field name (a name given twice is refused)."""

    fields: dict[str, str]
    files: dict[str, bytes]


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, lower case, without its parameters (``""`` when there is none)."""
    return parse_options_header(content_type)[0].decode("latin-1").lower()


def _split(body: bytes, content_type: str) -> list[_Part]:
    """The body's parts, in memory."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise RequestError(400, "the multipart/form-data Content-Type has no boundary")
    parts: list[_Part] = []
    name = bytearray()
    value = bytearray()

    def header_end() -> None:
        parts[-1].headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    callbacks: MultipartCallbacks = {
        "on_part_begin": lambda: parts.append(_Part()),
        "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end]),
        "on_header_field": lambda data, start, end: name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise RequestError(400, f"the body is not valid multipart/form-data: {e}") from e
    return parts


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, f"{what} is not UTF-8 text: {e}", field=what) from e


def _form(body: bytes, content_type: str) -> _Form:
    form = _Form({}, {})
    for part in _split(body, content_type):
        _, options = parse_options_header(part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise RequestError(400, 'a form part has no name (Content-Disposition: form-data; name="...")')
        if options.get(b"filename") == b"" and not part.data:
            continue  # what a browser sends for a file input with no file chosen: no image
        name = _text(options[b"name"], "a form part's name")
        if name in form.fields or name in form.files:
            raise RequestError(
                400, f"the form part {name!r} is given twice (one value per field, one file per item)", field=name
            )
        if b"filename" in options and name == "items":
            raise RequestError(400, "the form part 'items' is a file: send it as a text field", field=name)
        if b"filename" in options:
            form.files[name] = bytes(part.data)
        else:
            form.fields[name] = _text(bytes(part.data), name)
    return form


def _several(form: _Form, settings: ServeSettings) -> tuple[list[Any], dict[int, bytes]]:
    extra = sorted(set(form.fields) - {"items"})
    if extra:
        raise RequestError(400, f"form fields {extra} next to 'items': put them in the items", field=extra[0])
    try:
        raw = json.loads(form.fields["items"])
    except json.JSONDecodeError as e:
        raise RequestError(400, f"the form field 'items' is not JSON: {e}", field="items") from e
    raw = item_list(raw, settings, "the form field 'items' must be a JSON list [ ... ]")
    files: dict[int, bytes] = {}
    for name, data in form.files.items():
        match = _FILE_NAME.fullmatch(name)
        if match is None:
            raise RequestError(
                400, f"file part {name!r}: name image files image.<i>, i the item's position", field=name
            )
        i = int(match.group(1))
        if i >= len(raw):
            raise RequestError(
                400, f"file part {name!r} names item {i}, but 'items' holds {len(raw)} (counted from 0)", i, name
            )
        files[i] = data
    return raw, files


def _one(form: _Form) -> tuple[list[Any], dict[int, bytes]]:
    extra = sorted(set(form.files) - {"image"})
    if extra:
        raise RequestError(
            400,
            f"file part {extra[0]!r}: without an 'items' field the form is one item, its file 'image'",
            field=extra[0],
        )
    return [dict(form.fields)], ({0: form.files["image"]} if "image" in form.files else {})


def parse_form(body: bytes, content_type: str, predictor: Predictor, settings: ServeSettings) -> list[dict[str, Any]]:
    """A ``multipart/form-data`` body (the module docstring gives its two shapes) as predictor items, in order.

    Args:
        body: the whole body, already within ``--max-body-mb``.
        content_type: the request's Content-Type header (it carries the boundary).
        predictor: what the run reads.
        settings: the limits.

    Raises:
        RequestError: not multipart, a part the shapes do not allow, a file for an item that is not there, bad
            ``items`` JSON, too many items, or a bad item (the message names it and its field).
    """
    form = _form(body, content_type)
    raw, files = _several(form, settings) if "items" in form.fields else _one(form)
    return build_items(raw, predictor, settings, files)

"""Class texts: the descriptions JSON (``data.class_texts``) read and rendered through ``data.class_text_templates``.

One owner for both halves: what a class-texts file may hold, and how a class becomes its texts (every template x
every description; a class without a description fills ``{description}`` with its own name). Training
(``model.head class_text``) and zero-shot read class texts only through here.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["TEMPLATE_FIELDS", "check_templates", "class_texts_for", "read_class_texts", "render_class_texts"]

log = logging.getLogger(__name__)

TEMPLATE_FIELDS = ("class_name", "description")


def read_class_texts(path: str | Path) -> dict[str, list[str]]:
    """A class-texts JSON: ``{class: description}`` or ``{class: [text, ...]}``; a list of names means no
    descriptions (``{class: []}``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or not one of the shapes above (names the file and the bad entry).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class texts file {p} does not exist")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"class texts {p} is not valid UTF-8 JSON: {e}") from e
    shape = 'a JSON object {"class": "description"} or {"class": ["text", ...]}, or a list of class names'
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return {v: [] for v in raw}
    if not isinstance(raw, dict):
        raise ValueError(f"class texts {p} must be {shape}")
    out: dict[str, list[str]] = {}
    for name, value in raw.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"class texts {p}: the entry of class {name!r} must be a non-empty text or list of them")
        out[str(name)] = texts
    return out


def check_templates(templates: Sequence[str]) -> None:
    """Every template is a ``str.format`` text with only ``{class_name}`` / ``{description}``, and at least one.

    Raises:
        ValueError: names the template and what is wrong with it.
    """
    if not templates:
        raise ValueError("class text templates: give at least one (e.g. 'a photo of a {class_name}')")
    for t in templates:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
        except ValueError as e:
            raise ValueError(
                f"class text template {t!r} is not a valid template ({e}); write braces as {{{{ }}}}"
            ) from e
        unknown = sorted(fields - set(TEMPLATE_FIELDS))
        if unknown or not fields:
            raise ValueError(
                f"class text template {t!r} uses {unknown or 'no field'}: a template fills "
                f"{{class_name}} and/or {{description}}, e.g. 'a photo of a {{class_name}}'"
            )


def render_class_texts(
    classes: Sequence[str],
    descriptions: Mapping[str, Sequence[str]],
    templates: Sequence[str],
    allow_extra: bool = False,
    source: str = "class texts",
) -> list[list[str]]:
    """Each class's texts, in ``classes`` order: every template filled with every description of the class.

    A class without descriptions fills ``{description}`` with its name (so a template of only
    ``{description}`` gives the class name).

    Args:
        allow_extra: a description for a class not in ``classes`` is a warning instead of an error.
        source: where ``descriptions`` came from (for messages).

    Raises:
        ValueError: a description names a class the data does not have (unless ``allow_extra``); a bad template.
    """
    check_templates(templates)
    extra = sorted(set(descriptions) - set(classes))
    if extra:
        msg = f"{source} describes {len(extra)} class(es) the data does not have: {extra[:10]}"
        if not allow_extra:
            raise ValueError(f"{msg}; fix the names, or set data.allow_extra_class_texts=true to ignore them")
        log.warning("%s (ignored: data.allow_extra_class_texts)", msg)
    missing = [c for c in classes if not descriptions.get(c)]
    if missing and descriptions:
        log.info("%s: %d class(es) without a description use their name: %s", source, len(missing), missing[:10])
    rendered = []
    for c in classes:
        descs = list(descriptions.get(c) or [c])
        rendered.append(list(dict.fromkeys(t.format(class_name=c, description=d) for t in templates for d in descs)))
    return rendered


def class_texts_for(
    classes: Sequence[str], path: str | Path | None, templates: Sequence[str], allow_extra: bool = False
) -> list[list[str]]:
    """:func:`render_class_texts` over the file at ``path`` (None: class names only)."""
    descriptions = read_class_texts(path) if path else {}
    return render_class_texts(classes, descriptions, templates, allow_extra, str(path or "class texts"))

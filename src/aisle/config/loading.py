"""Loading the config: defaults < YAML file < ``--set a.b=c`` overrides, with error messages that name the key,
the bad value and the valid choices or keys."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from aisle.config.data_schema import ConfigError
from aisle.config.schema import _TEXT_TAGS, AisleConfig

__all__ = ["apply_overrides", "config_to_dict", "load_config", "save_config", "validate_config"]

# A config is a page of settings. The budgets stop hostile or broken files before they cost minutes: nested YAML
# aliases ("billion laughs") expand to billions of values that validation walks one by one (fewer than 100 aliases
# suffice, so the expanded size is counted too), and deep nesting makes PyYAML's scanner quadratic.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_YAML_VALUES = 1_000_000  # values (scalars and collections) with every alias expanded
MAX_YAML_DEPTH = 64


def _check_yaml_budget(text: str, source: str) -> None:
    """Count aliases, nesting and the expanded size on YAML's event stream, before any value is built.

    Raises:
        ConfigError: over a budget (the message names ``source``).
        yaml.YAMLError: not valid YAML.
    """
    expanded: dict[str, int] = {}  # anchor -> values under it, aliases expanded
    open_: list[list[Any]] = []  # collections being read: [anchor, values so far]
    aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, 1])
            if len(open_) > MAX_YAML_DEPTH:
                raise ConfigError(f"{source} nests deeper than {MAX_YAML_DEPTH} levels; a config is flatter")
            continue
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            n = expanded.get(event.anchor or "", 1)  # an alias inside its own anchor counts once
        elif isinstance(event, yaml.CollectionEndEvent | yaml.ScalarEvent):
            anchor, n = open_.pop() if isinstance(event, yaml.CollectionEndEvent) else (event.anchor, 1)
            if anchor:
                expanded[anchor] = n
        else:
            continue
        if aliases > MAX_YAML_ALIASES or n > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source} uses too many YAML aliases (*name): {aliases} so far, {n:,} values in one place once "
                f"expanded; the budget is {MAX_YAML_ALIASES} aliases and {MAX_YAML_VALUES:,} expanded values: "
                f"write the values out instead"
            )
        if open_:
            open_[-1][1] += n


def _parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` within the budgets above (:func:`_check_yaml_budget`)."""
    _check_yaml_budget(text, source)
    return yaml.safe_load(text)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config classes an annotation can hold (through Optional, unions, Annotated and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_tag(parts: list[Any], i: int) -> bool:
    """``parts[i]`` is the tag pydantic puts in an error location after the text section's tagged union."""
    return i > 0 and parts[i - 1] == "text" and parts[i] in _TEXT_TAGS


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config class of the section at ``loc`` (list positions skipped; union tags pick their class)."""
    current: type[BaseModel] = AisleConfig
    parts = [p for p in loc if not isinstance(p, int)]
    for i, part in enumerate(parts):
        if _is_tag(parts, i):
            current = _TEXT_TAGS[part]
            continue
        field = current.model_fields.get(part)
        models = _models_in(field.annotation) if field is not None else []
        if not models:
            return None
        current = models[0]
    return current


def _literal_choices(loc: tuple[Any, ...]) -> list[Any] | None:
    """The valid choices of a ``Literal`` field at ``loc``, if that field is a Literal."""
    section = _section_at(loc[:-1]) if loc else None
    field = section.model_fields.get(loc[-1]) if section is not None and isinstance(loc[-1], str) else None
    annotation = field.annotation if field is not None else None
    choices: list[Any] = []
    for arg in [annotation, *typing.get_args(annotation)]:
        if typing.get_origin(arg) is Literal:
            choices.extend(typing.get_args(arg))
    return choices or None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section at ``loc``."""
    section = _section_at(loc)
    return sorted(section.model_fields) if section is not None else []


def _key(loc: tuple[Any, ...]) -> str:
    """A dotted key from an error location, without union tags or validator names."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(str(p) for i, p in enumerate(parts) if not _is_tag(parts, i)) or "<root>"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = _key(loc)
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}'; valid keys here: {', '.join(_fields_at(loc[:-1]))}")
            continue
        if e["type"] == "value_error":
            where = "" if key == "<root>" else f"key '{key}': "
            lines.append(f"  - {where}{e['msg'].removeprefix('Value error, ')}")
            continue
        msg = f"  - key '{key}': got {e.get('input')!r}: {e['msg']}"
        choices = _literal_choices(loc)
        if choices:
            msg += f"; valid choices: {', '.join(map(str, choices))}"
        lines.append(msg)
    return "\n".join(lines)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value (e.g. train.lr.default=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = _parse_yaml(raw, f"override {item!r}") if raw.strip() else ""
    except yaml.YAMLError as e:
        problem = typing.cast(yaml.MarkedYAMLError, e).problem  # safe_load's errors carry the problem text
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({problem}); quote it: {key}='\"...\"'"
        ) from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a nested dict (values parsed as YAML scalars/lists)."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = raw
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: '{part}' holds a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AisleConfig:
    """Build the resolved config: defaults, then the YAML file, then dotted overrides.

    Args:
        path: a YAML file, or None for defaults only.
        overrides: ``key.path=value`` strings, applied in order.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: unknown keys, wrong types or bad choices (the message names each).
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        loaded = _read_yaml_file(p) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(loaded).__name__}")
        raw, source = loaded, str(p)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " + --set overrides"
    return validate_config(raw, source)


def _read_yaml_file(p: Path) -> Any:
    """The parsed YAML of a config file, with a message naming the file for every way it can be unreadable."""
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist (see configs/ for examples)")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is {size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {p} is not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); save it as UTF-8"
        ) from None
    try:
        return _parse_yaml(text, f"config file {p}")
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e


def validate_config(raw: dict[str, Any], source: str = "config") -> AisleConfig:
    """Validate a nested dict into an :class:`AisleConfig`, with :class:`ConfigError` messages."""
    try:
        return AisleConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def config_to_dict(cfg: AisleConfig) -> dict[str, Any]:
    return json.loads(cfg.model_dump_json())


def save_config(cfg: AisleConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (every default spelled out)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return p

"""Typed configuration: one tree (data / model / train / infer), every default in one place.

Load order: defaults < YAML file < ``--set a.b=c`` overrides. Unknown keys, wrong types and bad
choices fail at load time with :class:`ConfigError`, naming the key, the bad value and the valid choices.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "AisleConfig",
    "ConfigError",
    "DataConfig",
    "InferConfig",
    "LearningRates",
    "ModelConfig",
    "StageConfig",
    "TowerConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "save_config",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or not one of the valid choices."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class DataConfig(_Section):
    """Where the products are and how to read them.

    Columns left as ``None`` are inferred: id = ``id``; label = ``categories``, else ``label``;
    text = ``title`` + ``description``, else ``text``; image column = ``image``/``image_path``/``images``.
    """

    train_csv: str | None = None
    test_csv: str | None = None
    image_dir: str | None = None  # default: an ``images/`` folder beside the CSV, if there is one
    data_root: str | None = None  # relative image-column paths start here; nothing outside it (or image_dir) is read. Default: the table's folder
    class_folder: str | None = None  # folder-per-class layout root: <root>/<class>/*.jpg
    class_descriptions: str | None = None  # JSON {class: description}
    id_col: str | None = None
    label_col: str | None = None
    text_cols: list[str] | None = None
    text_prefixes: dict[str, str] = Field(default_factory=dict)
    text_sep: str = ". "
    image_col: str | None = None
    image_sep: str = ";"
    multi_image: Literal["first", "random", "mean_pool"] = "first"
    max_images: int = Field(4, ge=1)
    decoded_cache: bool = False  # decode + resize each image once into a uint8 memory map (large photos)
    decoded_size: int | None = Field(None, ge=8)  # its side; default 1.15 x the model's image size
    max_image_pixels: int = Field(89_478_485, ge=1)  # PIL's default decompression-bomb limit
    folds: int = Field(5, ge=2)
    fold_col: str = "fold"
    seed: int = 42
    rare_classes: Literal["error", "drop", "merge"] = "error"
    rare_class_name: str = "__other__"


class TowerConfig(_Section):
    """One encoder tower: ``timm:``, ``hf:``, ``ngram:``, ``open_clip:``, ``hf-clip:``, ``hf-siglip:`` or ``local-dir:`` name."""

    name: str | None = None
    pretrained: bool = True
    trainable: bool = True
    train_last_n_blocks: int | None = Field(None, ge=0)
    pooler: Literal["cls", "mean"] = "mean"
    max_length: int = Field(128, ge=1)
    embed_dim: int = Field(128, ge=1)  # towers trained from scratch (ngram:): their embedding size


class ModelConfig(_Section):
    type: Literal["image", "text", "fusion", "dual"] = "fusion"
    image: TowerConfig = Field(default_factory=TowerConfig)
    text: TowerConfig = Field(default_factory=TowerConfig)
    dual: TowerConfig = Field(default_factory=TowerConfig)
    fusion: Literal["concat", "sum", "gated", "late"] = "concat"
    fusion_dim: int = Field(256, ge=1)
    head_hidden: int = Field(512, ge=0)  # 0: linear head
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    missing_image_embedding: bool = True
    aux_loss_weight: float = Field(0.0, ge=0.0)  # per-tower auxiliary loss for ``late`` fusion
    image_size: int | None = Field(None, ge=8)  # None: the tower's own preprocessing
    contrastive: bool = False  # CLIP-style training against class texts (dual encoders)


class LearningRates(_Section):
    image_encoder: float | None = Field(None, gt=0)
    text_encoder: float | None = Field(None, gt=0)
    head: float | None = Field(None, gt=0)
    other: float | None = Field(None, gt=0)
    default: float = Field(1e-4, gt=0)


class StageConfig(_Section):
    """One stage of multi-stage fine-tuning; unset fields fall back to the ``train`` section."""

    name: str
    epochs: int | None = Field(None, ge=1)
    freeze_encoders: bool = False
    lr: LearningRates | None = None
    init_from: str | None = None  # name of an earlier stage: each fold starts from its best checkpoint


class TrainConfig(_Section):
    folds: list[int] | None = None  # None: every fold
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: LearningRates = Field(default_factory=LearningRates)
    weight_decay: float = Field(0.01, ge=0.0)
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: Literal["none", "inverse_freq", "inverse_sqrt", "balanced"] = "none"
    class_weight_smoothing: float = Field(0.0, ge=0.0, le=1.0)
    weighted_sampling: bool = False
    early_stopping_metric: Literal["val_loss", "val_acc", "val_top3", "val_macro_f1"] = "val_macro_f1"
    early_stopping_patience: int | None = Field(None, ge=1)
    stages: list[StageConfig] = Field(default_factory=list)
    seed: int = 42
    feature_cache: bool = True  # frozen towers: encode once, train the head on cached features
    cache_dir: str = ".aisle_cache"
    cache_views: list[Literal["orig", "hflip"]] = Field(default_factory=lambda: ["orig"])
    num_workers: int = Field(2, ge=0)
    channels_last: bool = True  # channels-last memory format for CNN image towers (faster convolutions, GPU and CPU)
    compile: bool = False  # torch.compile the towers (first steps slower, later ones faster)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = "auto"
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    num_nodes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _stages_refer_backwards(self) -> TrainConfig:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name {stage.name!r} is used twice")
            if stage.init_from is not None and stage.init_from not in seen:
                raise ValueError(
                    f"stage {stage.name!r} has init_from={stage.init_from!r}, which is not an earlier stage "
                    f"(earlier stages: {sorted(seen) or 'none'})"
                )
            seen.add(stage.name)
        return self


class InferConfig(_Section):
    batch_size: int = Field(64, ge=1)
    folds: list[int] | None = None  # None: every fold checkpoint in the run
    tta: list[str] = Field(default_factory=list)  # names from the TTA registry, e.g. ["hflip"]
    scales: list[int] = Field(default_factory=list)  # extra image sizes for multi-scale inference


class AisleConfig(_Section):
    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)


def _literal_choices(model: type[BaseModel], loc: tuple[Any, ...]) -> list[Any] | None:
    """The valid choices of a ``Literal`` field at ``loc``, if that field is a Literal."""
    current: Any = model
    annotation: Any = None
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = annotation if isinstance(annotation, type) else (inner[0] if inner else None)
    choices: list[Any] = []
    for arg in [annotation, *typing.get_args(annotation)]:
        if typing.get_origin(arg) is Literal:
            choices.extend(typing.get_args(arg))
    return choices or None


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            parent = loc[:-1]
            valid = _fields_at(parent)
            lines.append(f"  - unknown key '{key}'; valid keys here: {', '.join(valid)}")
            continue
        if e["type"] == "value_error":
            lines.append(f"  - key '{key}': {e['msg'].removeprefix('Value error, ')}")
            continue
        value = e.get("input")
        choices = _literal_choices(AisleConfig, loc)
        msg = f"  - key '{key}': got {value!r}: {e['msg']}"
        if choices:
            msg += f"; valid choices: {', '.join(map(str, choices))}"
        lines.append(msg)
    return "\n".join(lines)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    current: Any = AisleConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        ann = field.annotation
        models = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            # list[StageConfig] and friends
            for a in typing.get_args(ann):
                models += [b for b in typing.get_args(a) if isinstance(b, type) and issubclass(b, BaseModel)]
        if not models:
            return []
        current = models[0]
    return sorted(current.model_fields)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value (e.g. train.lr.default=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({e.problem}); quote it: {key}='\"...\"'") from None
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
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist (see configs/ for examples)")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(loaded).__name__}")
        raw, source = loaded, str(p)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " + --set overrides"
    return validate_config(raw, source)


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

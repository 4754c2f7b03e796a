"""Typed configuration: one tree (data / model / train / infer / runtime), every default in one place.

Load order: defaults < YAML file < ``--set a.b=c`` overrides. Unknown keys, wrong types and bad
choices fail at load time with :class:`ConfigError`, naming the key, the bad value and the valid choices.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

__all__ = [
    "AisleConfig",
    "ConfigError",
    "DataConfig",
    "DualTowerConfig",
    "ImageTowerConfig",
    "InferConfig",
    "LearningRates",
    "ModelConfig",
    "NgramTowerConfig",
    "RuntimeConfig",
    "StageConfig",
    "TextTowerConfig",
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
    # relative image-column paths start here; nothing outside it (or image_dir) is read. Default: the table's folder
    data_root: str | None = None
    class_folder: str | None = None  # folder-per-class layout root: <root>/<class>/*.jpg
    id_col: str | None = None
    label_col: str | None = None
    text_cols: list[str] | None = None
    text_prefixes: dict[str, str] = Field(default_factory=dict)
    text_sep: str = ". "
    image_col: str | None = None
    image_sep: str = ";"
    multi_image: Literal["first", "random", "mean_pool"] = "first"
    max_images: int = Field(default=4, ge=1)
    decoded_cache: bool = False  # decode + resize each image once into a uint8 memory map (large photos)
    decoded_size: int | None = Field(default=None, ge=8)  # its side; default 1.15 x the model's image size
    max_image_pixels: int = Field(default=89_478_485, ge=1)  # PIL's default decompression-bomb limit
    folds: int = Field(default=5, ge=2)
    fold_col: str = "fold"
    seed: int = 42
    rare_classes: Literal["error", "drop", "merge"] = "error"
    rare_class_name: str = "__other__"


class ImageTowerConfig(_Section):
    """An image tower: a ``timm:`` name (or ``timm:local-dir:<folder>``)."""

    name: str | None = None
    pretrained: bool = True
    trainable: bool = True
    train_last_n_blocks: int | None = Field(default=None, ge=0)


class TextTowerConfig(ImageTowerConfig):
    """A pretrained-style text tower: ``hf:`` (a Hugging Face model name or local folder) or ``tiny:bert``."""

    pooler: Literal["cls", "mean"] = "mean"  # how token states become one vector
    max_length: int = Field(default=128, ge=1)  # tokens kept per text


class NgramTowerConfig(_Section):
    """``ngram:<spec>``: TF-IDF n-grams into an embedding trained from scratch (no pretrained weights)."""

    name: str
    trainable: bool = True
    max_length: int = Field(default=128, ge=1)  # words kept per text before n-grams are taken
    embed_dim: int = Field(default=128, ge=1)  # the embedding (and tower output) size


class DualTowerConfig(ImageTowerConfig):
    """A dual encoder (image + text views of one model): ``open_clip:``, ``hf-clip:`` or ``hf-siglip:``."""

    max_length: int = Field(default=128, ge=1)  # tokens per text (capped at the model's context length)


def _text_tower_kind(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return "ngram" if isinstance(name, str) and name.startswith("ngram:") else "hf"


# the text section's class follows its tower name: keys of another kind of tower are unknown keys
AnyTextTowerConfig = Annotated[
    Annotated[TextTowerConfig, Tag("hf")] | Annotated[NgramTowerConfig, Tag("ngram")],
    Discriminator(_text_tower_kind),
]
_TEXT_TAGS: dict[str, type[BaseModel]] = {"hf": TextTowerConfig, "ngram": NgramTowerConfig}
TowerConfig = ImageTowerConfig | TextTowerConfig | NgramTowerConfig | DualTowerConfig

# which towers each model type has: the config section of each, and the model attribute it builds
MODEL_TOWERS: dict[str, dict[str, str]] = {
    "image": {"image_encoder": "image"},
    "text": {"text_encoder": "text"},
    "fusion": {"image_encoder": "image", "text_encoder": "text"},
    "dual": {"image_encoder": "dual", "text_encoder": "dual"},
}
# the tower-name prefixes each section takes: checked against the model registries by
# ``aisle.models.check_tower_names`` (a test keeps the two in step)
TOWER_SECTIONS = ("image", "text", "dual")


class ModelConfig(_Section):
    """The model: which towers (``type``), their settings, and the head that combines them.

    Only the tower sections of ``type`` may be set (``image``; ``text``; ``image`` + ``text`` for fusion;
    ``dual``), and ``fusion`` only for models with two towers (fusion, dual).
    """

    type: Literal["image", "text", "fusion", "dual"] = "fusion"
    image: ImageTowerConfig | None = None
    text: AnyTextTowerConfig | None = None
    dual: DualTowerConfig | None = None
    fusion: Literal["concat", "sum", "gated", "late"] | None = None  # two-tower models only (they default to concat)
    fusion_dim: int = Field(default=256, ge=1)
    head_hidden: int = Field(default=512, ge=0)  # 0: linear head
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    missing_image_embedding: bool = True
    aux_loss_weight: float = Field(default=0.0, ge=0.0)  # per-tower auxiliary loss for ``late`` fusion
    image_size: int | None = Field(default=None, ge=8)  # None: the tower's own preprocessing

    @model_validator(mode="after")
    def _towers_of_type(self) -> ModelConfig:
        wanted = set(MODEL_TOWERS[self.type].values())
        for section in TOWER_SECTIONS:
            if section not in wanted and getattr(self, section) is not None:
                raise ValueError(
                    f"model.{section} is set but a model of type {self.type!r} has no {section} tower "
                    f"(its tower sections: {', '.join(sorted(wanted))}); remove it or change model.type"
                )
        for section in wanted:
            if getattr(self, section) is None:
                setattr(
                    self,
                    section,
                    {"image": ImageTowerConfig, "text": TextTowerConfig, "dual": DualTowerConfig}[section](),
                )
        if len(MODEL_TOWERS[self.type]) < 2:
            if self.fusion is not None:
                raise ValueError(
                    f"model.fusion={self.fusion!r} applies to two-tower models (fusion, dual); a "
                    f"{self.type!r} model has one tower: remove model.fusion"
                )
        elif self.fusion is None:
            self.fusion = "concat"
        return self

    @property
    def fusion_kind(self) -> str:
        """The fusion head in use: ``model.fusion``, or ``concat`` when unset."""
        return self.fusion or "concat"

    def towers(self) -> dict[str, TowerConfig]:
        """Model attribute (``image_encoder`` / ``text_encoder``) -> the config of the tower it builds."""
        return {attr: getattr(self, section) for attr, section in MODEL_TOWERS[self.type].items()}

    def tower_names(self) -> dict[str, str | None]:
        """Config section -> tower name, for the sections this model type has."""
        return {section: getattr(self, section).name for section in dict.fromkeys(MODEL_TOWERS[self.type].values())}


class LearningRates(_Section):
    image_encoder: float | None = Field(default=None, gt=0)
    text_encoder: float | None = Field(default=None, gt=0)
    head: float | None = Field(default=None, gt=0)
    other: float | None = Field(default=None, gt=0)
    default: float = Field(default=1e-4, gt=0)


class StageConfig(_Section):
    """One stage of multi-stage fine-tuning; unset fields fall back to the ``train`` section."""

    name: str
    epochs: int | None = Field(default=None, ge=1)
    freeze_encoders: bool = False
    lr: LearningRates | None = None
    init_from: str | None = None  # name of an earlier stage: each fold starts from its best checkpoint


def _default_cache_views() -> list[Literal["orig", "hflip"]]:
    return ["orig"]


class TrainConfig(_Section):
    folds: list[int] | None = None  # None: every fold
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: LearningRates = Field(default_factory=LearningRates)
    weight_decay: float = Field(default=0.01, ge=0.0)
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    accumulate_grad_batches: int = Field(default=1, ge=1)
    gradient_clip_val: float | None = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    class_weights: Literal["none", "inverse_freq", "inverse_sqrt", "balanced"] = "none"
    class_weight_smoothing: float = Field(default=0.0, ge=0.0, le=1.0)
    weighted_sampling: bool = False
    early_stopping_metric: Literal["val_loss", "val_acc", "val_top3", "val_macro_f1"] = "val_macro_f1"
    early_stopping_patience: int | None = Field(default=None, ge=1)
    stages: list[StageConfig] = Field(default_factory=list)
    seed: int = 42
    cache_views: list[Literal["orig", "hflip"]] = Field(default_factory=_default_cache_views)  # frozen image towers
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    num_nodes: int = Field(default=1, ge=1)

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
    """What ``aisle predict`` does by default (its options override each key)."""

    folds: list[int] | None = None  # None: every fold checkpoint in the run
    tta: list[str] = Field(default_factory=list)  # names from the TTA registry, e.g. ["hflip"]
    scales: list[int] = Field(default_factory=list)  # extra image sizes for multi-scale inference


class RuntimeConfig(_Section):
    """Where and how the work runs, for training and inference alike (results do not depend on it)."""

    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = "auto"
    num_workers: int = Field(default=2, ge=0)  # DataLoader workers that decode images / tokenize
    batch_size_infer: int = Field(default=64, ge=1)  # rows per batch when predicting and encoding frozen towers
    feature_cache: bool = True  # frozen towers: encode once into the cache, train/predict from cached features
    cache_dir: str = ".aisle_cache"
    channels_last: bool = True  # channels-last memory format for CNN image towers (faster convolutions, GPU and CPU)
    compile: bool = False  # torch.compile the towers (first steps slower, later ones faster)


# keys that moved (or went): an old YAML gets an error naming the new key
MOVED_KEYS: dict[str, str] = {
    "train.num_workers": "runtime.num_workers",
    "train.cache_dir": "runtime.cache_dir",
    "train.feature_cache": "runtime.feature_cache",
    "train.channels_last": "runtime.channels_last",
    "train.compile": "runtime.compile",
    "train.accelerator": "runtime.accelerator",
    "train.devices": "runtime.devices",
    "infer.batch_size": "runtime.batch_size_infer",
}
REMOVED_KEYS: dict[str, str] = {
    "model.contrastive": "it did nothing; training against class texts is not built yet",
    "data.class_descriptions": "it did nothing; class texts for training are not built yet",
}


class AisleConfig(_Section):
    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_old_keys(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        found = []
        for old, note in [*((k, f"it is now {v}") for k, v in MOVED_KEYS.items()), *REMOVED_KEYS.items()]:
            section, key = old.split(".")
            if isinstance(raw.get(section), dict) and key in raw[section]:
                found.append(f"'{old}' is no longer a key: {note}")
        if found:
            raise ValueError("; ".join(found))
        return raw


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
        value = yaml.safe_load(raw) if raw.strip() else ""
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

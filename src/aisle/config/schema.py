"""The config tree's schema: one typed section per concern, every default in one place."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator

from aisle.config.data_schema import DataConfig, _Section

# the public names are re-exported (with __all__) by aisle.config


class ImageTowerConfig(_Section):
    """An image tower: a ``timm:`` name (or ``timm:local-dir:<folder>``)."""

    name: str | None = None
    pretrained: bool = True
    trainable: bool = True
    train_last_n_blocks: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _blocks_of_a_frozen_tower(self) -> ImageTowerConfig:
        if not self.trainable and self.train_last_n_blocks is not None:
            raise ValueError(
                "train_last_n_blocks chooses the blocks that train, but trainable: false freezes the whole tower: "
                "set trainable: true (the last N blocks train) or remove train_last_n_blocks"
            )
        return self


class TextTowerConfig(ImageTowerConfig):
    """A pretrained-style text tower: ``hf:`` (a Hugging Face model name or local folder) or ``tiny:bert``."""

    pooler: Literal["cls", "mean", "eos"] = "mean"  # how token states become one vector (eos: the last real token)
    max_length: int = Field(default=128, ge=1)  # tokens kept per text (per segment)
    # long texts: up to this many consecutive max_length windows, each encoded, features averaged; 1: the first only
    segments: int = Field(default=1, ge=1, le=16)


class NgramTowerConfig(_Section):
    """``ngram:<spec>``: TF-IDF n-grams into an embedding trained from scratch (no pretrained weights)."""

    name: str
    trainable: bool = True
    max_length: int = Field(default=128, ge=1)  # words kept per text before n-grams are taken
    embed_dim: int = Field(default=128, ge=1)  # the embedding (and tower output) size


class DualTowerConfig(ImageTowerConfig):
    """A dual encoder (image + text views of one model): ``open_clip:``, ``hf-clip:``, ``hf-siglip:``, ``hf-blip:``."""

    max_length: int = Field(default=128, ge=1)  # tokens per text (capped at the model's context length)


class LinearModelConfig(_Section):
    """``model.type: linear``: TF-IDF n-grams and a linear classifier fitted per fold by scikit-learn."""

    name: str = "tfidf:word1-2,char2-5"  # tfidf:<spec>: word / char_wb n-gram ranges, one vectorizer each
    classifier: Literal["svm", "logreg"] = "svm"  # LinearSVC (softmax of its scores, temperature fitted) or LR
    C: float = Field(default=1.0, gt=0)  # inverse regularisation strength
    sublinear_tf: bool = True  # 1 + log(tf)
    min_df: int = Field(default=1, ge=1)  # an n-gram counts when this many training texts hold it
    # with model.image: the weight of the frozen image features (L2-normalised) beside the TF-IDF rows; None: chosen
    # per fold by an inner CV on its training rows (0, i.e. text only, is one of the choices)
    image_weight: float | None = Field(default=None, ge=0)


def _text_tower_kind(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return "ngram" if isinstance(name, str) and name.startswith("ngram:") else "hf"


# the text section's class follows its tower name: keys of another kind of tower are unknown keys
AnyTextTowerConfig = Annotated[
    Annotated[TextTowerConfig, Tag("hf")] | Annotated[NgramTowerConfig, Tag("ngram")],
    Discriminator(_text_tower_kind),
]
_TEXT_TAGS: dict[str, type[BaseModel]] = {"hf": TextTowerConfig, "ngram": NgramTowerConfig}
TowerConfig = ImageTowerConfig | TextTowerConfig | NgramTowerConfig | DualTowerConfig | LinearModelConfig

# which towers each model type has: the config section of each, and the model attribute it builds
MODEL_TOWERS: dict[str, dict[str, str]] = {
    "image": {"image_encoder": "image"},
    "text": {"text_encoder": "text"},
    "fusion": {"image_encoder": "image", "text_encoder": "text"},
    "dual": {"image_encoder": "dual", "text_encoder": "dual"},
    "linear": {"text_encoder": "linear"},
}
# towers a model type may have besides those: a linear model reads a frozen image tower's features when given one
OPTIONAL_TOWERS: dict[str, dict[str, str]] = {"linear": {"image_encoder": "image"}}
# every tower section; the tower-name prefixes each takes are checked by ``aisle.models.check_tower_names``
TOWER_SECTIONS = ("image", "text", "dual", "linear")
_SECTION_CLASSES: dict[str, type[_Section]] = {
    "image": ImageTowerConfig,
    "text": TextTowerConfig,
    "dual": DualTowerConfig,
    "linear": LinearModelConfig,
}


_T = TypeVar("_T")


def _present(section: _T | None, name: str, model_type: str) -> _T:
    if section is None:  # the validator fills in every tower section of the model type
        raise ValueError(f"model.{name} does not apply to a model of type {model_type!r}")
    return section


class ModelConfig(_Section):
    """The model: which towers (``type``), their settings, and the head that combines them.

    Only the tower sections of ``type`` may be set (``image``; ``text``; ``image`` + ``text`` for fusion;
    ``dual``), and ``fusion`` only for models with two towers (fusion, dual). ``head: class_text`` scores products
    against their classes' texts (``data.class_texts``), encoded by the model's text tower, or by
    ``class_text_tower`` for an image model.
    """

    type: Literal["image", "text", "fusion", "dual", "linear"] = "fusion"
    image: ImageTowerConfig | None = None
    text: AnyTextTowerConfig | None = None
    dual: DualTowerConfig | None = None
    linear: LinearModelConfig | None = None
    fusion: Literal["concat", "sum", "gated", "late"] | None = None  # two-tower models only (they default to concat)
    fusion_dim: int = Field(default=256, ge=1)
    head_hidden: int = Field(default=512, ge=0)  # 0: linear head
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    missing_image_embedding: bool = True
    aux_loss_weight: float = Field(default=0.0, ge=0.0)  # per-tower auxiliary loss for ``late`` fusion
    image_size: int | None = Field(default=None, ge=8)  # None: the tower's own preprocessing
    head: Literal["mlp", "class_text"] = "mlp"  # mlp: the fusion's MLP (head_hidden 0: linear); class_text: cos/T
    embed_dim: int = Field(default=512, ge=1)  # class_text head: the joint space products and class texts meet in
    temperature: float = Field(default=0.07, gt=0.0)  # class_text head: logits = cos / temperature (scale <= 100)
    learn_temperature: bool = False  # class_text head: the temperature trains (CLIP's learned logit scale)
    class_text_tower: TextTowerConfig | None = None  # class_text head of an image model: encodes the class texts

    @model_validator(mode="after")
    def _class_text_head(self) -> ModelConfig:
        if self.class_text_tower is not None and (self.type != "image" or self.head != "class_text"):
            raise ValueError(
                "model.class_text_tower encodes class texts for model.head class_text of an image model (type image); "
                f"this model (type {self.type!r}, head {self.head!r}) has no use for it: remove it"
            )
        if self.head == "class_text" and self.type == "linear":
            raise ValueError("model.head class_text needs a neural model: model.type linear has no head to change")
        if self.head == "class_text" and self.type == "image" and self.class_text_tower is None:
            raise ValueError(
                "model.head class_text of an image model needs model.class_text_tower.name (e.g. tiny:bert)"
            )
        return self

    @model_validator(mode="after")
    def _towers_of_type(self) -> ModelConfig:
        wanted = set(MODEL_TOWERS[self.type].values())
        allowed = wanted | set(OPTIONAL_TOWERS.get(self.type, {}).values())
        for section in TOWER_SECTIONS:
            if section not in allowed and getattr(self, section) is not None:
                raise ValueError(
                    f"model.{section} is set but a model of type {self.type!r} has no {section} tower "
                    f"(its tower sections: {', '.join(sorted(wanted))}); remove it or change model.type"
                )
        for section in wanted:
            if getattr(self, section) is None:
                setattr(self, section, _SECTION_CLASSES[section]())
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
    def image_tower(self) -> ImageTowerConfig:
        """``model.image`` of a model type that has an image tower."""
        return _present(self.image, "image", self.type)

    @property
    def text_tower(self) -> TextTowerConfig | NgramTowerConfig:
        """``model.text`` of a model type that has a text tower."""
        if self.text is None:  # the validator fills in every tower section of the model type
            raise ValueError(f"model.text does not apply to a model of type {self.type!r}")
        return self.text

    @property
    def dual_tower(self) -> DualTowerConfig:
        """``model.dual`` of a dual-encoder model."""
        return _present(self.dual, "dual", self.type)

    @property
    def linear_model(self) -> LinearModelConfig:
        """``model.linear`` of a linear model."""
        return _present(self.linear, "linear", self.type)

    @property
    def fusion_kind(self) -> str:
        """The fusion head in use: ``model.fusion``, or ``concat`` when unset."""
        return self.fusion or "concat"

    @model_validator(mode="after")
    def _linear_image(self) -> ModelConfig:
        if self.type != "linear":
            return self
        if self.image is None:
            if self.linear_model.image_weight is not None:
                raise ValueError(
                    "model.linear.image_weight weighs the features of model.image: set model.image.name (a frozen "
                    "image tower, e.g. timm:tf_efficientnet_lite0) or remove image_weight"
                )
            return self
        set_keys = self.image.model_fields_set
        if ("trainable" in set_keys and self.image.trainable) or self.image.train_last_n_blocks is not None:
            raise ValueError(
                "model.image of a linear model is frozen (its features are fitted beside the TF-IDF rows, not "
                "trained): remove model.image.trainable / train_last_n_blocks, or use model.type fusion"
            )
        self.image.trainable = False
        return self

    def tower_sections(self) -> dict[str, str]:
        """Model attribute -> config section, for the towers this model has (optional ones when set)."""
        optional = {a: s for a, s in OPTIONAL_TOWERS.get(self.type, {}).items() if getattr(self, s) is not None}
        return {**MODEL_TOWERS[self.type], **optional}

    def towers(self) -> dict[str, TowerConfig]:
        """Model attribute (``image_encoder`` / ``text_encoder`` / ``class_text_encoder``) -> its tower's config."""
        found = {attr: getattr(self, section) for attr, section in self.tower_sections().items()}
        if self.class_text_tower is not None:
            found["class_text_encoder"] = self.class_text_tower
        return found

    def tower_names(self) -> dict[str, str | None]:
        """Config section -> tower name, for the sections this model has (``class_text_tower`` included)."""
        names = {section: getattr(self, section).name for section in dict.fromkeys(self.tower_sections().values())}
        if self.class_text_tower is not None:
            names["class_text_tower"] = self.class_text_tower.name
        return names


class LearningRates(_Section):
    """Each module group's learning rate; an unset one is ``default``, except the head's while a tower trains:
    ``head_scale`` x ``default`` (the head starts from random weights, the towers do not: a tiny SigLIP trained 2
    epochs at 5e-4 scored 0.558 test macro-F1 with the head at 5e-4 and 0.705 with it at 5e-3)."""

    image_encoder: float | None = Field(default=None, gt=0)
    text_encoder: float | None = Field(default=None, gt=0)
    head: float | None = Field(default=None, gt=0)
    other: float | None = Field(default=None, gt=0)
    default: float = Field(default=1e-4, gt=0)
    head_scale: float = Field(default=10.0, gt=0)  # an unset ``head`` while some tower trains: head_scale x default


class StageConfig(_Section):
    """One stage of multi-stage fine-tuning; unset fields fall back to the ``train`` section."""

    name: str
    epochs: int | None = Field(default=None, ge=1)
    freeze_encoders: bool = False
    lr: LearningRates | None = None
    init_from: str | None = None  # name of an earlier stage: each fold starts from its best checkpoint
    loss: Literal["ce", "clip"] | None = None  # default: train.loss


def _default_cache_views() -> list[Literal["orig", "hflip"]]:
    return ["orig"]


LoggerName = Literal["tensorboard", "csv", "wandb", "mlflow"]


def _default_loggers() -> list[LoggerName]:
    return ["tensorboard"]


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
    # ce: cross-entropy on the logits; clip: symmetric product<->class-text InfoNCE over the batch (head class_text)
    loss: Literal["ce", "clip"] = "ce"
    # auto: inverse_sqrt for the models trained by gradient (their heads weigh rare classes up), none for linear
    class_weights: Literal["auto", "none", "inverse_freq", "inverse_sqrt", "balanced"] = "auto"
    class_weight_smoothing: float = Field(default=0.0, ge=0.0, le=1.0)
    weighted_sampling: bool = False
    early_stopping_metric: Literal["val_loss", "val_acc", "val_top3", "val_macro_f1"] = "val_macro_f1"
    early_stopping_patience: int | None = Field(default=None, ge=1)
    stages: list[StageConfig] = Field(default_factory=list)
    seed: int = 42
    cache_views: list[Literal["orig", "hflip"]] = Field(default_factory=_default_cache_views)  # frozen image towers
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    num_nodes: int = Field(default=1, ge=1)
    # experiment tracking through Lightning's loggers; wandb and mlflow need their extras (aisle[wandb], aisle[mlflow])
    loggers: list[LoggerName] = Field(default_factory=_default_loggers)
    pseudo_weight: float = Field(default=1.0, gt=0.0)  # loss weight of each data.pseudo_labels row (real rows: 1)

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

    @model_validator(mode="after")
    def _loggers_once(self) -> TrainConfig:
        twice = sorted({name for name in self.loggers if self.loggers.count(name) > 1})
        if twice:
            raise ValueError(f"train.loggers lists {', '.join(twice)} more than once")
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
    "model.contrastive": "it did nothing; train against class texts with model.head class_text (and train.loss clip)",
    "data.class_descriptions": "it did nothing; class texts are now data.class_texts (model.head class_text)",
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

    @model_validator(mode="after")
    def _class_texts_used(self) -> AisleConfig:
        losses = {self.train.loss, *(s.loss for s in self.train.stages if s.loss)}
        if "clip" in losses and self.model.head != "class_text":
            raise ValueError("train.loss clip trains against class texts: it needs model.head class_text")
        if self.model.head != "class_text" and self.data.class_texts:
            raise ValueError("data.class_texts is read by model.head class_text: set that head or remove the key")
        return self

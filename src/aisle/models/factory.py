"""Build a classifier from the model config (fresh) or from a run's saved assets (rebuild, no download)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from aisle.config import ModelConfig, NgramTowerConfig, TextTowerConfig, TowerConfig
from aisle.models.base import ImagePreprocess, Tower, parse_tower_name
from aisle.models.blip import hf_blip  # noqa: F401  (registers hf-blip:)
from aisle.models.class_text import ClassTextHead
from aisle.models.classifier import ProductClassifier
from aisle.models.dual import DUAL_ENCODERS, untagged_open_clip
from aisle.models.hub import hub_source, require_hub_weights
from aisle.models.image_towers import IMAGE_TOWERS, check_timm_name
from aisle.models.ngram import NgramTextTower  # noqa: F401  (registers ngram:)
from aisle.models.text_towers import TEXT_TOWERS, check_hf_name
from aisle.models.tfidf import TfidfLinearTower  # noqa: F401  (registers tfidf:)

__all__ = [
    "check_tower_names",
    "check_tower_weights",
    "create_classifier",
    "has_model_assets",
    "image_preprocess",
    "loader_inputs",
    "save_model_assets",
    "set_trainable",
    "use_channels_last",
]


_EXAMPLES = {
    "image": "timm:resnet18",
    "text": "hf:bert-base-uncased",
    "dual": "open_clip:ViT-B-32/openai",
    "linear": "tfidf:word1-2,char2-5",
    "class_text_tower": "tiny:bert",
}


def _prefixes(section: str) -> list[str]:
    """The tower-name prefixes a config section takes (a linear model is a ``tfidf:`` tower)."""
    if section == "linear":
        return ["tfidf"]
    registry = {"image": IMAGE_TOWERS, "dual": DUAL_ENCODERS}.get(section, TEXT_TOWERS)  # text, class_text_tower
    return [p for p in registry.list() if p != "tfidf"]  # tfidf: is fitted, not trained: model.type linear


def _need(tc: TowerConfig, what: str) -> str:
    if not tc.name:
        raise ValueError(f"model.{what}.name is not set (e.g. {_EXAMPLES[what]})")
    return tc.name


# what can be checked of a tower's name without building it (timm's model list, a folder on disk)
_NAME_CHECKS: dict[str, Callable[[str], None]] = {"timm": check_timm_name, "hf": check_hf_name}


def check_tower_names(mcfg: ModelConfig) -> None:
    """Every tower the model type has is named, with a prefix its registry knows and a model its library or folder
    has (call before reading data or writing a run folder).

    Raises:
        ValueError: names the key (``model.<section>.name``), the bad value and the valid prefixes.
    """
    for section, name in mcfg.tower_names().items():
        if not name:
            raise ValueError(f"model.{section}.name is not set (e.g. {_EXAMPLES[section]})")
        try:
            prefix, model = parse_tower_name(name, _prefixes(section))
            check = _NAME_CHECKS.get(prefix)
            if check is not None:
                check(model)
        except ValueError as e:
            raise ValueError(f"model.{section}.name: {e}") from None


def check_tower_weights(mcfg: ModelConfig) -> None:
    """Every tower's weights (and tokenizer) can be had: from a folder, the local cache, or a hub this machine
    reaches (probed once). Call after :func:`check_tower_names`, before reading data or writing a run folder.

    Raises:
        ValueError: names the key, the hub repository and the local-folder form.
    """
    for section, name in mcfg.tower_names().items():
        prefix, model = parse_tower_name(name or "", _prefixes(section))
        pretrained = bool(getattr(getattr(mcfg, section), "pretrained", False))
        if prefix == "open_clip" and (problem := untagged_open_clip(model, pretrained)):
            raise ValueError(f"model.{section}.name: {problem}")
        require_hub_weights(f"model.{section}.name", name or "", hub_source(prefix, model, pretrained))


def create_towers(
    mcfg: ModelConfig, texts: Sequence[str] | np.ndarray = (), assets: str | Path | None = None
) -> tuple[Tower | None, Tower | None]:
    """The image and text towers the model type asks for.

    Args:
        mcfg: model settings.
        texts: training texts (tokenizers / vocabularies fitted on the fly by ``tiny:`` and ``ngram:``).
        assets: a run's ``assets/`` folder: rebuild architectures and tokenizers from it (weights come later).
    """
    a = Path(assets) if assets is not None else None
    settings: dict[str, Any] = json.loads((a / "towers.json").read_text()) if a is not None else {}
    image = text = None
    if mcfg.type == "dual":
        dc = mcfg.dual_tower
        prefix, name = parse_tower_name(_need(dc, "dual"), DUAL_ENCODERS.list())
        dual = DUAL_ENCODERS.create(
            prefix,
            name,
            pretrained=dc.pretrained,
            max_length=dc.max_length,
            texts=texts,
            assets_dir=None if a is None else a / "dual",
            image_size=mcfg.image_size,
        )
        dual.image.dual_saver = dual.save_assets  # a plain attribute (not a submodule): saves both views' assets
        return dual.image, dual.text
    if mcfg.type in ("image", "fusion"):
        image = _image_tower(mcfg, settings, a)
    if mcfg.type in ("text", "fusion"):
        text = _text_tower(mcfg.text_tower, "text", texts, None if a is None else a / "text", settings.get("text"))
    return image, text


def _image_tower(mcfg: ModelConfig, settings: dict[str, Any], assets: Path | None) -> Tower:
    """``model.image``'s tower (``settings``: a saved run's ``towers.json``, whose architecture it rebuilds)."""
    ic = mcfg.image_tower
    prefix, name = parse_tower_name(_need(ic, "image"), IMAGE_TOWERS.list())
    extra = settings.get("image", {})
    return IMAGE_TOWERS.create(
        prefix,
        name,
        pretrained=ic.pretrained and assets is None,
        image_size=mcfg.image_size,
        architecture=extra.get("architecture"),
        pretrained_cfg=extra.get("pretrained_cfg"),
    )


def _text_tower(
    tc: TextTowerConfig | NgramTowerConfig,
    section: str,
    texts: Sequence[str] | np.ndarray,
    assets: Path | None,
    saved: dict[str, Any] | None = None,
) -> Tower:
    """A text tower from its config section (``model.text`` or ``model.class_text_tower``); ``saved``: the
    settings a run's ``towers.json`` recorded for it, which win (the windows a saved tower was trained with)."""
    prefix, name = parse_tower_name(_need(tc, section), _prefixes(section))
    kwargs: dict[str, Any] = {"max_length": tc.max_length}
    if isinstance(tc, NgramTowerConfig):
        kwargs["embed_dim"] = tc.embed_dim
    else:
        segments = (saved or {}).get("segments", tc.segments)  # what a saved tower was trained with wins
        kwargs.update(pooler=tc.pooler, pretrained=tc.pretrained, segments=segments)
    if assets is not None:
        kwargs["assets_dir"] = assets
    if prefix in ("tiny", "ngram") and assets is None:
        kwargs["texts"] = texts  # vocabularies fitted on the training texts
    return TEXT_TOWERS.create(prefix, name, **kwargs)


def _linear_tower(
    mcfg: ModelConfig, num_classes: int, texts: Sequence[str] | np.ndarray, assets: str | Path | None
) -> Tower:
    lc = mcfg.linear_model
    prefix, name = parse_tower_name(lc.name, _prefixes("linear"))
    kwargs: dict[str, Any] = {"num_outputs": num_classes, "sublinear_tf": lc.sublinear_tf, "min_df": lc.min_df}
    if assets is not None:
        kwargs["assets_dir"] = Path(assets) / "text"
    else:
        kwargs["texts"] = texts
    return TEXT_TOWERS.create(prefix, name, **kwargs)


def create_classifier(
    mcfg: ModelConfig,
    num_classes: int,
    texts: Sequence[str] | np.ndarray = (),
    assets: str | Path | None = None,
    class_texts: Sequence[Sequence[str]] | None = None,
) -> ProductClassifier:
    """Towers + fusion head for ``num_classes`` classes (see :class:`ProductClassifier`).

    A linear model (``model.type: linear``) is one ``tfidf:`` tower whose output already is the class logits, plus,
    with ``model.image``, a frozen image tower whose features a linear layer adds to them.

    Args:
        class_texts: per class its texts (:func:`aisle.data.class_texts.class_texts_for`), for ``head: class_text``
            (default: the ones saved in ``assets``).
    """
    settings = json.loads((Path(assets) / "towers.json").read_text()) if assets is not None else {}
    if mcfg.type == "linear":
        a = Path(assets) if assets is not None else None
        frozen = _image_tower(mcfg, settings, a) if mcfg.image is not None else None
        set_trainable(frozen, False)  # its features are fitted beside the TF-IDF rows, never trained
        return ProductClassifier(frozen, _linear_tower(mcfg, num_classes, texts, assets), num_classes, fusion="logits")
    if class_texts is None:
        class_texts = settings.get("class_texts")
    flat = [t for ts in class_texts or [] for t in ts]
    vocab = [*texts, *flat]  # tiny: / ngram: tokenizers also learn the class texts' words
    image, text = create_towers(mcfg, vocab, assets)
    head, own = None, None
    if mcfg.head == "class_text":
        if mcfg.class_text_tower is not None:
            folder = Path(assets) / "class_text" if assets is not None else None
            own = _text_tower(mcfg.class_text_tower, "class_text_tower", flat, folder, settings.get("class_text"))
        dims = [t.output_dim for t in (image, text) if t is not None]
        encoder = own or text
        if encoder is None:  # unreachable: the config's validator asks an image model for class_text_tower
            raise ValueError("model.head class_text needs a text tower for the class texts (model.class_text_tower)")
        text_dim = encoder.output_dim
        head = ClassTextHead(dims, text_dim, num_classes, mcfg.embed_dim, mcfg.temperature, mcfg.learn_temperature)
    model = ProductClassifier(
        image,
        text,
        num_classes,
        fusion=mcfg.fusion_kind,
        fusion_dim=mcfg.fusion_dim,
        head_hidden=mcfg.head_hidden,
        dropout=mcfg.dropout,
        modality_dropout=mcfg.modality_dropout,
        missing_image_embedding=mcfg.missing_image_embedding,
        class_head=head,
        class_text_encoder=own,
    )
    if head is not None and class_texts:
        model.set_class_texts(class_texts)
    return model


def has_model_assets(folder: str | Path) -> bool:
    """``folder`` holds what :func:`save_model_assets` writes (a model can be rebuilt from it)."""
    return (Path(folder) / "towers.json").is_file()


def save_model_assets(model: ProductClassifier, mcfg: ModelConfig, folder: str | Path) -> Path:
    """Write configs and tokenizers so :func:`create_classifier` can rebuild the model with ``assets=folder``."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    if mcfg.type == "dual":
        image = model.image_encoder
        if image is None:
            raise ValueError("a dual model has no image view to save the dual encoder's assets from")
        settings["dual"] = image.dual_saver(f / "dual")
    else:
        if model.image_encoder is not None:
            settings["image"] = model.image_encoder.save_assets(f / "image")
        if model.text_encoder is not None:
            settings["text"] = model.text_encoder.save_assets(f / "text")
    if model.class_text_encoder is not None:
        settings["class_text"] = model.class_text_encoder.save_assets(f / "class_text")
    if model.class_texts:
        settings["class_texts"] = model.class_texts
    (f / "towers.json").write_text(json.dumps(settings, indent=2))
    pre = image_preprocess(model)
    (f / "image_preprocess.json").write_text(json.dumps(pre.to_dict() if pre else None))
    return f


def image_preprocess(model: ProductClassifier) -> ImagePreprocess | None:
    return getattr(model.image_encoder, "preprocess", None) if model.image_encoder is not None else None


def loader_inputs(model: ProductClassifier) -> dict[str, Any]:
    """What ``aisle.data.loaders.build_loader`` needs from a model: image preprocessing and the text tokenizer."""
    text = model.text_encoder
    return {
        "preprocess": image_preprocess(model),
        "tokenize": text.tokenize if text is not None else None,
        "fixed_length": bool(text is not None and text.fixed_length),
    }


def set_trainable(tower: nn.Module | None, trainable: bool, last_n_blocks: int | None = None) -> None:
    """Freeze a tower, or train all of it, or only its last ``last_n_blocks`` blocks."""
    if tower is None:
        return
    for p in tower.parameters():
        p.requires_grad = trainable and last_n_blocks is None
    if trainable and last_n_blocks is not None:
        blocks = tower.blocks() if isinstance(tower, Tower) else []
        if not blocks:
            raise ValueError(f"{type(tower).__name__} does not expose blocks; use trainable true/false")
        for block in blocks[len(blocks) - last_n_blocks :] if last_n_blocks else []:
            for p in block.parameters():
                p.requires_grad = True


def use_channels_last(model: ProductClassifier) -> None:
    """Switch a model's CNN image tower (timm) to channels-last memory; other towers are left as they are."""
    switch = getattr(model.image_encoder, "use_channels_last", None)
    if switch is not None:
        switch()

"""Text towers: any Hugging Face encoder (hub id or local folder) with a CLS, mean or EOS pooler.

A CLIP checkpoint (a full ``CLIPModel``, e.g. ``hf:openai/clip-vit-base-patch32``, or a CLIP text model) is read
as its text side alone: ``CLIPTextModelWithProjection``, the pooled state projected into CLIP's joint space as
CLIP's own text features are. Which class loads a checkpoint follows its config's ``model_type``
(:data:`TEXT_MODEL_CLASSES`), never its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.utils import validate_repo_id
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    PretrainedConfig,
)

from aisle.models.base import Tower, masked_mean
from aisle.models.tokenizer import train_word_tokenizer
from aisle.registry import Registry

__all__ = ["TEXT_MODEL_CLASSES", "TEXT_TOWERS", "HFTextTower", "check_hf_name", "text_model_class", "tiny_bert_tower"]

TEXT_TOWERS: Registry = Registry("text tower")

_HF_FIX = "for weights on this machine name their folder: hf:/path/to/folder (what save_pretrained wrote)"


def check_hf_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` (after ``hf:``) is a model folder, or a hub id that is cached or may
    still be downloaded (whether the hub has it is only known when it is downloaded).
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValueError(f"hf:{name}: the folder has no config.json; {_HF_FIX}")
        return
    if folder.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise ValueError(f"hf:{name}: no such folder; {_HF_FIX}")
    try:
        validate_repo_id(name)
    except ValueError:
        raise ValueError(f"hf:{name} is neither a folder nor a Hugging Face hub id; {_HF_FIX}") from None
    if is_offline_mode() and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ValueError(
            f"hf:{name} is not a folder and not in the Hugging Face cache, and the hub is off (HF_HUB_OFFLINE); "
            f"{_HF_FIX}"
        )


def _clip_text_config(config: PretrainedConfig) -> PretrainedConfig:
    """A full CLIP config's text side, with the joint-space width (kept in the outer config) carried over."""
    return CLIPTextConfig(**{**config.text_config.to_dict(), "projection_dim": config.projection_dim})


# config model_type -> (the class that reads it as a text encoder, the config that class takes); others: AutoModel
TEXT_MODEL_CLASSES: dict[str, tuple[type, Any]] = {
    "clip": (CLIPTextModelWithProjection, _clip_text_config),  # a whole CLIPModel checkpoint: its text side
    "clip_text_model": (CLIPTextModelWithProjection, lambda c: c),  # a CLIP text model (a run's saved assets)
}


def text_model_class(config: PretrainedConfig) -> tuple[Any, PretrainedConfig]:
    """The model class that reads ``config``'s checkpoint as a text encoder, and the config to build it from."""
    cls, text_config = TEXT_MODEL_CLASSES.get(config.model_type, (AutoModel, lambda c: c))
    return cls, text_config(config)


def _random_text_model(config: PretrainedConfig) -> Any:
    """The text encoder ``config`` describes, with random weights."""
    cls, text_config = text_model_class(config)
    return AutoModel.from_config(text_config) if cls is AutoModel else cls(text_config)


def _load_text_model(name: str, pretrained: bool) -> Any:
    config = AutoConfig.from_pretrained(name)
    if not pretrained:
        return _random_text_model(config)
    cls, text_config = text_model_class(config)
    # the config is passed: a whole CLIP checkpoint keeps the projection width in its outer config
    return cls.from_pretrained(name, config=text_config)


@TEXT_TOWERS.register("hf")
class HFTextTower(Tower):
    """``transformers.AutoModel`` (CLIP: its text side, :data:`TEXT_MODEL_CLASSES`) + a pooler over the last hidden
    states, then the model's text projection where it has one (CLIP).

    Args:
        name: a hub id (``bert-base-multilingual-cased``) or a local folder (``../shared/models/all-MiniLM-L6-v2``).
        pretrained: load the weights (else random init from the model's config).
        pooler: ``cls`` (first token), ``mean`` (attention-masked mean) or ``eos`` (each row's last real token:
            CLIP's EOS, which CLIP's text features read; BERT's ``[SEP]``).
        max_length: tokens per text (per segment with ``segments`` > 1).
        segments: read long texts as up to this many consecutive ``max_length`` windows, each encoded and pooled on
            its own, their features averaged (AutoGluon's ``text_segment_num``); 1: the first window only.
        config: build from this config instead of ``name`` (offline tests); needs ``tokenizer``.
        tokenizer: a tokenizer to use instead of loading one by ``name``.
        assets_dir: rebuild from a saved run's folder (config + tokenizer), weights loaded afterwards.
    """

    modality = "text"

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        pooler: Literal["cls", "mean", "eos"] = "mean",
        max_length: int = 128,
        config: PretrainedConfig | None = None,
        tokenizer: Any = None,
        assets_dir: str | Path | None = None,
        segments: int = 1,
    ) -> None:
        super().__init__()
        self.name, self.pooler, self.max_length, self.segments = name, pooler, max_length, segments
        self.fixed_length = segments > 1  # segments sit at fixed offsets: batches are never trimmed
        if assets_dir is not None:
            self.model = _random_text_model(AutoConfig.from_pretrained(assets_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(assets_dir)
        elif config is not None:
            if tokenizer is None:
                raise ValueError("HFTextTower(config=...) also needs tokenizer=...")
            self.model = _random_text_model(config)
            self.tokenizer = tokenizer
        else:
            try:
                self.model = _load_text_model(name, pretrained)
                self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
            except OSError as e:  # not on the hub, or the hub cannot be reached
                raise ValueError(f"text tower hf:{name} could not be loaded ({e}); {_HF_FIX}") from e
        # right padding for every pooler: a row's last real token sits at its mask's sum - 1 (eos), its first at 0
        # (cls), and batches and windows are trimmed at their end
        self.tokenizer.padding_side = "right"
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused (we pool ourselves); would get no gradient
        # CLIP's projection into its joint space (its text features); None: the pooled hidden state
        self.projection: nn.Module | None = getattr(self.model, "text_projection", None)
        width = self.model.config.projection_dim if self.projection is not None else self.model.config.hidden_size
        self.output_dim = int(width)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.segments > 1:
            return self._tokenize_segments(texts)
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _tokenize_segments(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """(B, segments * max_length): each text's consecutive windows (each with the model's special tokens),
        padded to full windows; a text with fewer windows has all-padding ones (attention mask 0)."""
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_overflowing_tokens=True,
            return_tensors="pt",
        )
        b, s, t = len(texts), self.segments, self.max_length
        ids = torch.full((b, s, t), int(self.pad_id), dtype=enc["input_ids"].dtype)
        mask = torch.zeros((b, s, t), dtype=enc["attention_mask"].dtype)
        seen = [0] * b
        for row, text in enumerate(enc["overflow_to_sample_mapping"].tolist()):
            if seen[text] < s:
                ids[text, seen[text]], mask[text, seen[text]] = enc["input_ids"][row], enc["attention_mask"][row]
                seen[text] += 1
        return {"input_ids": ids.view(b, s * t), "attention_mask": mask.view(b, s * t)}

    def _pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        if self.pooler == "cls":
            pooled = hidden[:, 0]
        elif self.pooler == "eos":  # right padding: the last real token sits at (real tokens - 1)
            last = (mask.long().sum(1) - 1).clamp(min=0)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            pooled = masked_mean(hidden, mask.bool())
        return pooled if self.projection is None else self.projection(pooled)  # (B, D)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.segments == 1:
            return self._pool(batch["input_ids"], batch["attention_mask"])
        b = batch["input_ids"].shape[0]
        ids = batch["input_ids"].reshape(b * self.segments, self.max_length)
        mask = batch["attention_mask"].reshape(b * self.segments, self.max_length)
        live = mask.any(1)  # windows with text (every text has its first)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            pooled = self._pool(ids, mask)  # a traced graph has no data-dependent shapes: every window runs
        else:
            pooled = ids.new_zeros((b * self.segments, self.output_dim), dtype=torch.float32)
            width = int(mask.sum(1).max())  # windows are right-padded: run them at the longest one's width
            part = self._pool(ids[live, :width], mask[live, :width])
            pooled = pooled.to(part.dtype).index_put((live.nonzero().squeeze(1),), part)
        return masked_mean(pooled.view(b, self.segments, -1), live.view(b, self.segments))  # (B, D)

    def blocks(self) -> list[nn.Module]:
        encoder = getattr(getattr(self.model, "text_model", self.model), "encoder", None)  # CLIP: under text_model
        layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        return list(layers) if layers is not None else []

    def save_assets(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return {"pooler": self.pooler, "max_length": self.max_length, "segments": self.segments}


@TEXT_TOWERS.register("tiny")
def tiny_bert_tower(
    name: str = "bert",
    pretrained: bool = False,
    pooler: Literal["cls", "mean", "eos"] = "mean",
    max_length: int = 32,
    texts: Sequence[str] = (),
    hidden_size: int = 32,
    assets_dir: str | Path | None = None,
    segments: int = 1,
) -> HFTextTower:
    """``tiny:bert``: a 2-layer BERT (hidden 32, 4 heads, intermediate 37) with a tokenizer trained on ``texts``.

    For tests and the demo; nothing is downloaded. ``pretrained`` is ignored (random weights).
    """
    if name != "bert":
        raise ValueError(f"unknown tiny text preset {name!r}; valid choices: bert")
    if assets_dir is not None:
        return HFTextTower(
            f"tiny:{name}", pooler=pooler, max_length=max_length, assets_dir=assets_dir, segments=segments
        )
    tokenizer = train_word_tokenizer(list(texts) or ["empty"], vocab_size=2000)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=max(64, max_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    return HFTextTower(
        f"tiny:{name}", pooler=pooler, max_length=max_length, config=config, tokenizer=tokenizer, segments=segments
    )

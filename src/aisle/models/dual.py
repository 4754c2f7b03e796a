"""Dual encoders: one pretrained image+text model (OpenCLIP, HF CLIP, SigLIP, BLIP) split into two towers.

Each dual encoder is built into an image tower and a text tower that own disjoint parameters, so the
classifier, the per-module learning rates and freezing treat them like any other pair of towers.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    BlipConfig,
    CLIPConfig,
    SiglipConfig,
)

from aisle.models.base import ImagePreprocess, Tower, masked_mean
from aisle.models.tokenizer import train_word_tokenizer
from aisle.registry import Registry

__all__ = ["DUAL_ENCODERS", "TINY_PRESET", "untagged_open_clip"]

DUAL_ENCODERS: Registry = Registry("dual encoder")
TINY_PRESET = "tiny"  # reserved model name: a tiny random config built offline (tests, demo)


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns ModelOutputs where 4.x returned tensors."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _ImageView(Tower):
    modality = "image"

    def __init__(
        self, encoder: nn.Module, projection: nn.Module | None, output_dim: int, preprocess: ImagePreprocess, call="hf"
    ) -> None:
        super().__init__()
        self.encoder, self.projection, self.output_dim = encoder, projection, output_dim
        self.preprocess, self.call = preprocess, call

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images = self.pixels(batch["image"])  # (B, K, 3, H, W), uint8 or float -> normalised float
        b, k = images.shape[:2]
        flat = images.flatten(0, 1)
        # at another size than the model was trained at (infer.scales, model.image_size), a ViT's position
        # embeddings are resized to the patch grid
        if self.call == "open_clip":
            feats = _open_clip_at_size(self.encoder, flat)
        else:
            native = getattr(getattr(self.encoder, "config", None), "image_size", None)
            other = native is not None and tuple(flat.shape[-2:]) != (native, native)
            feats = _pooled(self.encoder(pixel_values=flat, **({"interpolate_pos_encoding": True} if other else {})))
        if self.projection is not None:
            feats = self.projection(feats)
        return masked_mean(feats.view(b, k, -1), batch["image_mask"])  # (B, D)


def _open_clip_at_size(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """An OpenCLIP ViT on images of another size than its own: its position embeddings resized (bicubic, the class
    token's kept) to the new patch grid for this call, as Hugging Face's ``interpolate_pos_encoding`` does. Other
    visual towers (ResNets, timm models) run as they are."""
    pos = getattr(visual, "positional_embedding", None)
    stride = getattr(getattr(visual, "conv1", None), "stride", None)
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or stride is None:
        return visual(images)
    side = round((pos.shape[0] - 1) ** 0.5)  # the square grid it was trained on
    grid = (images.shape[-2] // stride[0], images.shape[-1] // stride[1])
    if grid == (side, side):
        return visual(images)
    table = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, W, side, side)
    table = nn.functional.interpolate(table.float(), size=grid, mode="bicubic", align_corners=False).to(pos.dtype)
    resized = torch.cat([pos[:1], table.permute(0, 2, 3, 1).flatten(0, 2)])  # (grid_h * grid_w + 1, W)
    return torch.func.functional_call(visual, {"positional_embedding": resized}, (images,))


# How a Hugging Face dual encoder's text view feeds its texts and pools a row (see _HFTextView; BLIP's
# "causal_mean" is read by aisle.models.blip's view)
TextReading = Literal["eos", "last_token", "as_trained", "causal_mean"]


class _HFTextView(Tower):
    """The text half of a Hugging Face CLIP / SigLIP; ``reading`` says how texts go in and become one vector.

    - ``"eos"`` (CLIP): masked batches trimmed to their longest row; the model's own pooler (the EOS token, which
      CLIP finds by its id).
    - ``"last_token"`` (a SigLIP trained here): masked batches trimmed to their longest row; the last real token of
      each row (its EOS) through the model's head, so a row gives the same features in any batch.
    - ``"as_trained"`` (a pretrained SigLIP checkpoint): no mask, every text padded to ``max_length`` and pooled at
      the last position, as the checkpoint was trained.
    """

    modality = "text"

    def __init__(
        self,
        encoder: nn.Module,
        projection: nn.Module | None,
        output_dim: int,
        tokenizer: Any,
        max_length: int,
        reading: TextReading = "eos",
    ) -> None:
        super().__init__()
        self.encoder, self.projection, self.output_dim = encoder, projection, output_dim
        self.tokenizer, self.max_length, self.reading = tokenizer, max_length, reading
        self.fixed_length = reading == "as_trained"
        if reading == "last_token":
            tokenizer.padding_side = "right"  # a row's last real token sits at its mask's sum - 1

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts),
            padding="max_length" if self.fixed_length else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = enc["input_ids"]
        mask = enc["attention_mask"] if "attention_mask" in enc else (ids != (self.tokenizer.pad_token_id or 0)).long()
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]  # (B, T)
        if self.reading == "as_trained":
            feats = _pooled(self.encoder(input_ids=ids))
        else:
            mask = batch["attention_mask"]  # (B, T)
            out = self.encoder(input_ids=ids, attention_mask=mask)
            feats = _pooled(out) if self.reading == "eos" else self._last_token(out.last_hidden_state, mask)
        return self.projection(feats) if self.projection is not None else feats

    def _last_token(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SigLIP's pooler (final states -> ``head``), taken at each row's last real token instead of position -1."""
        last = (mask.sum(1) - 1).clamp(min=0)  # (B,): rows are right-padded
        index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])  # (B, 1, H)
        head = cast(nn.Module, self.encoder.head)  # SiglipTextModel / SiglipTextTransformer's final linear layer
        return head(hidden.gather(1, index).squeeze(1))  # (B, D)


class DualEncoder(nn.Module):
    """Holds the two towers and how to rebuild them."""

    def __init__(self, image: Tower, text: Tower, settings: dict[str, Any], assets: Any = None) -> None:
        super().__init__()
        self.image, self.text, self.settings, self._assets = image, text, settings, assets

    def save_assets(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        if self._assets is not None:
            self._assets(folder)
        return dict(self.settings)


def _tiny_hf_dual(kind: str, texts: Sequence[str], max_length: int, image_size: int | None) -> tuple[Any, Any]:
    """``hf-clip:tiny`` / ``hf-siglip:tiny`` / ``hf-blip:tiny``: a 2-layer random model and a word tokenizer fitted
    on ``texts``."""
    tokenizer = train_word_tokenizer(list(texts) or ["empty"], vocab_size=1000)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    tcfg = dict(
        common,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(64, max_length),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vcfg = dict(common, image_size=image_size or 32, patch_size=8)
    config: Any
    if kind == "clip":
        config = CLIPConfig(text_config=tcfg, vision_config=vcfg, projection_dim=24)
    elif kind == "blip":  # the captioner's decoder: its cross-attention reads the 32-wide image states
        blip_text = dict(tcfg, encoder_hidden_size=32, sep_token_id=tokenizer.sep_token_id)
        # BlipVisionConfig's own initializer_range is 1e-10 (real checkpoints overwrite it): every random weight
        # would be ~0 and every image's features the same
        config = BlipConfig(text_config=blip_text, vision_config=dict(vcfg, initializer_range=0.02))
    else:
        config = SiglipConfig(text_config=tcfg, vision_config=vcfg)
    return _auto_class(kind).from_config(config), tokenizer


def _auto_class(kind: str) -> Any:
    """The transformers Auto class of a family: BLIP's captioning checkpoint is an image-text-to-text model
    (``BlipForConditionalGeneration``: vision model + text decoder); CLIP and SigLIP are ``AutoModel``."""
    return AutoModelForImageTextToText if kind == "blip" else AutoModel


def _load_hf_dual(
    kind: str,
    name: str,
    pretrained: bool,
    max_length: int,
    texts: Sequence[str],
    assets_dir: str | Path | None,
    image_size: int | None,
) -> tuple[Any, Any, ImagePreprocess]:
    """The model, its tokenizer and its image preprocessing: from a run's assets, the tiny preset or the hub."""
    auto = _auto_class(kind)
    if assets_dir is not None:
        config = AutoConfig.from_pretrained(assets_dir)
        model, tokenizer = auto.from_config(config), AutoTokenizer.from_pretrained(assets_dir)
        meta = json.loads((Path(assets_dir) / "aisle_image_preprocess.json").read_text())
        return (
            model,
            tokenizer,
            ImagePreprocess(meta["size"], tuple(meta["mean"]), tuple(meta["std"]), meta["interpolation"]),
        )
    if name == TINY_PRESET:
        model, tokenizer = _tiny_hf_dual(kind, texts, max_length, image_size)
        return model, tokenizer, ImagePreprocess(image_size or 32, (0.5,) * 3, (0.5,) * 3, "bicubic")
    model = auto.from_pretrained(name) if pretrained else auto.from_config(AutoConfig.from_pretrained(name))
    processor = AutoProcessor.from_pretrained(name)
    ip = processor.image_processor
    size = ip.size.get("shortest_edge") or ip.size.get("height")
    preprocess = ImagePreprocess(image_size or int(size), tuple(ip.image_mean), tuple(ip.image_std), "bicubic")
    return model, processor.tokenizer, preprocess


def _hf_dual(
    model: Any, tokenizer: Any, preprocess: ImagePreprocess, max_length: int, reading: TextReading
) -> DualEncoder:
    """A Hugging Face CLIP / SigLIP model as two towers (each view projected into the joint space)."""
    cfg = model.config
    vision_proj = getattr(model, "visual_projection", None)
    text_proj = getattr(model, "text_projection", None)
    proj_dim: Any = getattr(cfg, "projection_dim", None)
    image = _ImageView(
        model.vision_model,
        vision_proj,
        int(proj_dim if vision_proj is not None else cfg.vision_config.hidden_size),
        preprocess,
    )
    text = _HFTextView(
        model.text_model,
        text_proj,
        int(proj_dim if text_proj is not None else cfg.text_config.hidden_size),
        tokenizer,
        max_length,
        reading,
    )

    return DualEncoder(image, text, {"max_length": max_length}, _hf_assets(cfg, tokenizer, preprocess))


def _hf_assets(cfg: Any, tokenizer: Any, preprocess: ImagePreprocess) -> Callable[[Path], None]:
    """What rebuilds a Hugging Face dual encoder offline (:func:`_load_hf_dual` with ``assets_dir``)."""

    def assets(folder: Path) -> None:
        cfg.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "aisle_image_preprocess.json").write_text(json.dumps(preprocess.to_dict()))

    return assets


def _text_reading(kind: str, name: str, pretrained: bool) -> TextReading:
    """CLIP pools its EOS token; a pretrained SigLIP keeps its training-time input (no mask, padded to max length);
    a SigLIP trained here (random weights, the tiny preset) masks its padding and reads trimmed batches."""
    if kind == "clip":
        return "eos"
    return "as_trained" if pretrained and name != TINY_PRESET else "last_token"


# builds the two towers of a loaded Hugging Face model: (model, tokenizer, preprocess, max_length, name, pretrained)
HFDualBuild = Callable[[Any, Any, ImagePreprocess, int, str, bool], DualEncoder]


def _hf_dual_entry(
    kind: str, default_length: int, max_context: int | None, doc: str, build: HFDualBuild | None = None
) -> Callable[..., DualEncoder]:
    """The registry entry of one Hugging Face dual-encoder family (``max_context`` caps ``max_length``; ``build``
    splits the loaded model into towers, default: CLIP / SigLIP's vision and text models and projections)."""

    def create(
        name: str,
        pretrained: bool = True,
        max_length: int = default_length,
        texts: Sequence[str] = (),
        assets_dir: str | Path | None = None,
        image_size: int | None = None,
    ) -> DualEncoder:
        length = min(max_length, max_context) if max_context else max_length
        model, tokenizer, preprocess = _load_hf_dual(kind, name, pretrained, length, texts, assets_dir, image_size)
        if build is not None:
            return build(model, tokenizer, preprocess, length, name, pretrained)
        return _hf_dual(model, tokenizer, preprocess, length, _text_reading(kind, name, pretrained))

    create.__doc__ = doc
    return create


hf_clip = DUAL_ENCODERS.register("hf-clip")(
    _hf_dual_entry("clip", 77, 77, "``hf-clip:openai/clip-vit-base-patch32`` (or ``hf-clip:tiny``): Hugging Face CLIP.")
)
hf_siglip = DUAL_ENCODERS.register("hf-siglip")(
    _hf_dual_entry(
        "siglip", 64, None, "``hf-siglip:google/siglip-so400m-patch14-384`` (or ``hf-siglip:tiny``): SigLIP / SigLIP2."
    )
)


class _OpenClipTextView(Tower):
    modality = "text"
    fixed_length = True  # encode_text pools at the EOT position of a fixed context
    clip: Any  # an OpenCLIP model (without its visual tower): encode_text

    def __init__(self, clip: nn.Module, tokenizer: Any, output_dim: int) -> None:
        super().__init__()
        self.clip, self.tokenizer, self.output_dim = clip, tokenizer, output_dim

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))  # (B, context_length)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.clip.encode_text(batch["input_ids"])


_TINY_OPEN_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def untagged_open_clip(name: str, pretrained: bool) -> str | None:
    """Why ``open_clip:<name>`` cannot load pretrained weights (no ``/tag``: open_clip builds random ones), or None."""
    arch, _, tag = name.partition("/")
    if not pretrained or tag or arch == TINY_PRESET:
        return None
    tags = f"open_clip.list_pretrained_tags_by_model({arch!r})"
    msg = f"open_clip:{arch} names no pretrained weights (random ones, then): name them as open_clip:{arch}/<tag> "
    return msg + f"(the tags: {tags}), or set model.dual.pretrained: false to start from random weights on purpose"


@DUAL_ENCODERS.register("open_clip")
def open_clip_dual(
    name: str,
    pretrained: bool = True,
    max_length: int = 77,
    texts: Sequence[str] = (),
    assets_dir: str | Path | None = None,
    image_size: int | None = None,
) -> DualEncoder:
    """``open_clip:ViT-L-14/openai`` (architecture/pretrained tag), ``open_clip:tiny`` for tests."""
    import open_clip

    arch, _, tag = name.partition("/")
    if arch == TINY_PRESET:
        arch = "aisle-tiny-clip"
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{arch}.json").write_text(json.dumps(_TINY_OPEN_CLIP))
            open_clip.add_model_config(tmp)
        tag = ""
    if assets_dir is not None:
        meta = json.loads((Path(assets_dir) / "open_clip.json").read_text())
        if meta["arch"] == "aisle-tiny-clip":
            return open_clip_dual(TINY_PRESET, False, max_length)
        arch, tag = meta["arch"], ""
    elif problem := untagged_open_clip(name, pretrained):
        raise ValueError(problem)
    model = open_clip.create_model(arch, pretrained=(tag or None) if pretrained else None)
    tokenizer = open_clip.get_tokenizer(arch)
    pp = open_clip.get_model_preprocess_cfg(model)
    preprocess = ImagePreprocess(
        image_size or int(pp["size"][0] if isinstance(pp["size"], tuple | list) else pp["size"]),
        tuple(pp["mean"]),
        tuple(pp["std"]),
        str(pp.get("interpolation", "bicubic")),
    )
    embed_dim = int(
        model.text_projection.shape[1]
        if isinstance(model.text_projection, torch.Tensor)
        else model.text_projection.out_features
    )
    for name in ("logit_scale", "logit_bias"):  # contrastive temperature: unused by a classifier head
        param = getattr(model, name, None)
        if isinstance(param, nn.Parameter):
            param.requires_grad_(False)
    visual = model.visual
    del model.visual  # the text view owns everything but the visual tower: disjoint parameters
    image = _ImageView(visual, None, embed_dim, preprocess, call="open_clip")
    text = _OpenClipTextView(model, tokenizer, embed_dim)

    def assets(folder: Path) -> None:
        (folder / "open_clip.json").write_text(json.dumps({"arch": arch, "tag": tag}))

    return DualEncoder(image, text, {"max_length": max_length}, assets)

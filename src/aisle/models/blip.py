"""BLIP as a dual encoder: ``hf-blip:Salesforce/blip-image-captioning-base`` (a hub name or a local folder).

The captioning checkpoint is a ``BlipForConditionalGeneration``: a ViT vision model and a BERT-style text *decoder*
whose layers also cross-attend to the image. It carries no unimodal text encoder (``BlipModel``'s ``text_model``
and projections are not in it: loading ``BlipModel`` from it would leave the text side random), so the text view
is the captioner's own decoder read on the text alone:

- image view: the vision model's pooled output (its final-layer-normed ``[CLS]`` state), hidden size wide;
- text view: the decoder's BERT on the text alone, causal attention as it was trained, the first token set to the
  decoder's ``bos_token_id`` (``[DEC]``, as BLIP's captioner starts every caption), the final hidden states
  averaged over the real tokens. Its cross-attention layers read image states only in the image-grounded
  (captioning) pass, which would fuse the two views into one; they are removed, so the two towers stay
  independent like every other dual encoder's and every parameter left trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aisle.models.base import ImagePreprocess, masked_mean
from aisle.models.dual import DUAL_ENCODERS, DualEncoder, _hf_assets, _hf_dual_entry, _HFTextView, _ImageView

__all__ = ["hf_blip"]

CAPTIONER = "BlipForConditionalGeneration"


class _BlipTextView(_HFTextView):
    """The captioner's text decoder read as a text encoder (see the module docstring)."""

    def __init__(self, decoder: nn.Module, width: int, tokenizer: Any, max_length: int, bos_token_id: int) -> None:
        super().__init__(decoder, None, width, tokenizer, max_length, "causal_mean")
        self.bos_token_id = bos_token_id

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = super().tokenize(texts)
        enc["input_ids"][:, 0] = self.bos_token_id  # the tokenizer's [CLS] -> the decoder's [DEC]
        return enc

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]  # (B, T)
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=mask, is_decoder=True, use_cache=False)
        return masked_mean(out.last_hidden_state, mask)  # (B, H)


def _blip_dual(
    model: Any, tokenizer: Any, preprocess: ImagePreprocess, max_length: int, name: str, pretrained: bool
) -> DualEncoder:
    """A ``BlipForConditionalGeneration`` as two towers: its vision model and its text decoder's BERT."""
    architectures = list(getattr(model.config, "architectures", None) or [])
    if pretrained and architectures and CAPTIONER not in architectures:
        raise ValueError(
            f"hf-blip:{name} is a {', '.join(architectures)} checkpoint; hf-blip reads BLIP captioning checkpoints "
            f"({CAPTIONER}, e.g. Salesforce/blip-image-captioning-base), whose text decoder is its text side"
        )
    decoder = model.text_decoder.bert
    for layer in decoder.encoder.layer:
        del layer.crossattention  # read only with image states (the captioning pass): unused by a text-only view
    cfg = model.config
    image = _ImageView(model.vision_model, None, int(cfg.vision_config.hidden_size), preprocess)
    text = _BlipTextView(
        decoder, int(cfg.text_config.hidden_size), tokenizer, max_length, int(cfg.text_config.bos_token_id)
    )
    return DualEncoder(image, text, {"max_length": max_length}, _hf_assets(cfg, tokenizer, preprocess))


hf_blip = DUAL_ENCODERS.register("hf-blip")(
    _hf_dual_entry(
        "blip",
        64,
        512,
        "``hf-blip:Salesforce/blip-image-captioning-base`` (or a folder, or ``hf-blip:tiny``): BLIP's vision model "
        "and its captioning text decoder read on the text alone.",
        build=_blip_dual,
    )
)

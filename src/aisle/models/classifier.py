"""The product classifier: towers -> (placeholder for missing images, modality dropout) -> fusion head."""

from __future__ import annotations

import torch
from torch import nn

from aisle.models.base import Tower
from aisle.models.fusion import FUSIONS

__all__ = ["ProductClassifier"]


class ProductClassifier(nn.Module):
    """Image-only, text-only or image+text classifier.

    ``forward(batch)`` returns one dict: ``logits`` (B, C); ``image_features`` (B, Di) or None;
    ``text_features`` (B, Dt) or None; ``aux_logits`` (list of per-tower logits, ``late`` fusion only, else []).

    Args:
        image: image tower (None for text-only).
        text: text tower (None for image-only).
        num_classes: output classes.
        fusion: a FUSIONS name (single-tower models use ``concat``, i.e. just the head).
        fusion_dim, head_hidden, dropout: head sizes.
        modality_dropout: in training, probability of zeroing one modality's features per sample.
        missing_image_embedding: replace features of products without any image with a learned vector.
    """

    def __init__(
        self,
        image: Tower | None,
        text: Tower | None,
        num_classes: int,
        fusion: str = "concat",
        fusion_dim: int = 256,
        head_hidden: int = 512,
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
        missing_image_embedding: bool = True,
    ) -> None:
        super().__init__()
        if image is None and text is None:
            raise ValueError("a classifier needs an image tower, a text tower or both")
        self.image_encoder, self.text_encoder = image, text
        dims = [t.output_dim for t in (image, text) if t is not None]
        # one tower: the MLP head (concat of one), unless the tower's output already is the logits
        head = fusion if len(dims) > 1 or fusion == "logits" else "concat"
        self.head = FUSIONS.create(head, dims, num_classes, fusion_dim, head_hidden, dropout)
        self.modality_dropout = modality_dropout
        self.missing_image = (
            nn.Parameter(torch.zeros(image.output_dim)) if image is not None and missing_image_embedding else None
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, object]:
        feats, img, txt = [], None, None
        if self.image_encoder is not None:
            # cached features of a frozen tower (see aisle.cache) stand in for running it
            img = batch["image_features"] if "image_features" in batch else self.image_encoder(batch)  # (B, Di)
            if self.missing_image is not None:
                has = batch["image_mask"].any(1, keepdim=True)  # (B, 1)
                img = torch.where(has, img, self.missing_image.to(img.dtype).expand_as(img))
            feats.append(img)
        if self.text_encoder is not None:
            txt = batch["text_features"] if "text_features" in batch else self.text_encoder(batch)  # (B, Dt)
            feats.append(txt)
        if self.training and self.modality_dropout > 0 and len(feats) == 2:
            b = feats[0].shape[0]
            drop = torch.rand(b, device=feats[0].device) < self.modality_dropout
            which = torch.randint(0, 2, (b,), device=feats[0].device)
            for m in range(2):
                keep = ~(drop & (which == m))
                feats[m] = feats[m] * keep.unsqueeze(1).to(feats[m].dtype)
        logits, aux = self.head(feats)
        return {"logits": logits, "image_features": img, "text_features": txt, "aux_logits": aux}

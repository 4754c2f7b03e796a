"""The product classifier: towers -> (placeholder for missing images, modality dropout) -> head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aisle.models.base import Tower
from aisle.models.class_text import ClassTextHead, encode_class_texts
from aisle.models.fusion import FUSIONS

__all__ = ["ProductClassifier"]


class ProductClassifier(nn.Module):
    """Image-only, text-only or image+text classifier.

    ``forward(batch)`` returns one dict: ``logits`` (B, C); ``image_features`` (B, Di) or None;
    ``text_features`` (B, Dt) or None; ``aux_logits`` (list of per-tower logits, ``late`` fusion only, else []);
    ``embeddings`` (B, E) and ``class_embeddings`` (C, E), unit length, and ``logit_scale`` (a scalar) for the
    class-text head, else None.

    Args:
        image: image tower (None for text-only).
        text: text tower (None for image-only).
        num_classes: output classes.
        fusion: a FUSIONS name (single-tower models use ``concat``, i.e. just the head).
        fusion_dim, head_hidden, dropout: head sizes.
        modality_dropout: in training, probability of zeroing one modality's features per sample.
        missing_image_embedding: replace features of products without any image with a learned vector.
        class_head: a :class:`ClassTextHead` instead of the fusion head (``model.head: class_text``).
        class_text_encoder: the tower that encodes class texts when the model has no text tower.
    """

    class_input_ids: torch.Tensor  # non-persistent buffers of the class texts' tokens (set_class_texts)
    class_attention_mask: torch.Tensor
    class_owner: torch.Tensor  # (T,): each class text's class

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
        class_head: ClassTextHead | None = None,
        class_text_encoder: Tower | None = None,
    ) -> None:
        super().__init__()
        if image is None and text is None:
            raise ValueError("a classifier needs an image tower, a text tower or both")
        self.image_encoder, self.text_encoder = image, text
        dims = [t.output_dim for t in (image, text) if t is not None]
        # one tower: the MLP head (concat of one), unless the tower's output already is the logits
        head = fusion if len(dims) > 1 or fusion == "logits" else "concat"
        self.head = class_head or FUSIONS.create(head, dims, num_classes, fusion_dim, head_hidden, dropout)
        self.class_text_encoder = class_text_encoder
        self.class_texts: list[list[str]] = []  # per class its texts (set_class_texts)
        self.modality_dropout = modality_dropout
        self.missing_image = (
            nn.Parameter(torch.zeros(image.output_dim)) if image is not None and missing_image_embedding else None
        )

    @property
    def class_text_tower(self) -> Tower | None:
        """The tower that encodes class texts (class-text head only): its own, else the model's text tower."""
        if not isinstance(self.head, ClassTextHead):
            return None
        return self.class_text_encoder or self.text_encoder

    def set_class_texts(self, texts: Sequence[Sequence[str]]) -> None:
        """Tokenize each class's texts for the class-text head (kept as non-persistent buffers) and encode them."""
        tower = self.class_text_tower
        if tower is None:
            raise ValueError("class texts are read by the class-text head (model.head class_text) only")
        self.class_texts = [list(t) for t in texts]
        flat = [t for ts in self.class_texts for t in ts]
        tokens = tower.tokenize(flat)
        self.register_buffer("class_input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("class_attention_mask", tokens["attention_mask"], persistent=False)
        owner = torch.repeat_interleave(torch.arange(len(texts)), torch.tensor([len(t) for t in self.class_texts]))
        self.register_buffer("class_owner", owner, persistent=False)
        self.refresh_class_texts()

    def _encode_class_texts(self) -> torch.Tensor:
        tower = self.class_text_tower
        head = self.head
        if tower is None or not isinstance(head, ClassTextHead) or not self.class_texts:
            raise ValueError("no class texts to encode: call set_class_texts first")
        tokens = {"input_ids": self.class_input_ids, "attention_mask": self.class_attention_mask}
        feats = encode_class_texts(tower, tokens, self.class_owner, head.class_features.shape[0])  # (C, Dt)
        head.class_features.copy_(feats.detach())  # what eval, checkpoints and exports use: no text tower call
        return feats

    def refresh_class_texts(self) -> None:
        """Re-encode the class texts into the head's buffer (eval mode, no gradient); a no-op without them."""
        tower = self.class_text_tower
        if tower is None or not self.class_texts:
            return
        was = tower.training
        tower.eval()
        with torch.no_grad():
            self._encode_class_texts()
        tower.train(was)

    def class_tower_trains(self) -> bool:
        """The class texts' tower has trainable weights (its class texts are re-encoded as it trains)."""
        tower = self.class_text_tower
        return bool(self.class_texts) and tower is not None and any(p.requires_grad for p in tower.parameters())

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
        out: dict[str, object] = {"image_features": img, "text_features": txt, "aux_logits": []}
        if isinstance(self.head, ClassTextHead):
            # a training text tower re-encodes the class texts every step; a frozen one's are the buffer
            fresh = self._encode_class_texts() if self.training and self.class_tower_trains() else None
            logits, emb, classes = self.head(feats, fresh)
            return {
                **out,
                "logits": logits,
                "embeddings": emb,
                "class_embeddings": classes,
                "logit_scale": self.head.scale(),
            }
        logits, aux = self.head(feats)
        return {
            **out,
            "logits": logits,
            "aux_logits": aux,
            "embeddings": None,
            "class_embeddings": None,
            "logit_scale": None,
        }

"""``ngram:`` text tower: word and character n-grams, TF-IDF weighted, into a trainable embedding bag.

The fastText-style tower practitioners reach for on product titles: no pretrained weights, a vocabulary of the
n-grams that occur in at least two training texts (fitted when the run starts, label-free), and one embedding per
n-gram. A text's feature is the sum of its n-grams' embeddings weighted by their L2-normalised IDF, which is exactly
a linear projection of the binary TF-IDF vector, learnt end to end with the head. It trains in every stage (a
random embedding has nothing to freeze) and is fast on a CPU; beside a pretrained encoder it adds the exact lexical
matches (model numbers, brand names, "sandal" vs "sandals") that TF-IDF models are good at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from torch import nn

from aisle.models.base import Tower
from aisle.models.text_towers import TEXT_TOWERS

__all__ = ["NgramTextTower", "parse_ngram_spec"]

_PART = re.compile(r"^(word|char)(\d+)-(\d+)$")


def parse_ngram_spec(spec: str) -> list[tuple[str, int, int]]:
    """``word1-2,char2-5`` -> ``[("word", 1, 2), ("char", 2, 5)]``; anything else is a clear error."""
    parts = []
    for part in spec.split(","):
        m = _PART.match(part.strip())
        if not m or not 1 <= int(m.group(2)) <= int(m.group(3)):
            raise ValueError(
                f"ngram tower spec {spec!r}: each part must be word<a>-<b> or char<a>-<b> with "
                f"1 <= a <= b (e.g. ngram:word1-2,char2-5)"
            )
        parts.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return parts


def _analyzers(parts: list[tuple[str, int, int]]) -> list[tuple[str, Callable[[str], list[str]]]]:
    """scikit-learn's own analyzers (lower-cased words of 2+ letters; ``char_wb`` n-grams inside word bounds)."""
    return [
        (
            kind[0],
            TfidfVectorizer(analyzer="word" if kind == "word" else "char_wb", ngram_range=(lo, hi)).build_analyzer(),
        )
        for kind, lo, hi in parts
    ]


@TEXT_TOWERS.register("ngram")
class NgramTextTower(Tower):
    """Binary TF-IDF over word/char n-grams -> ``nn.EmbeddingBag`` (sum of IDF-weighted n-gram embeddings).

    Args:
        name: the n-gram spec, ``word1-2,char2-5`` (word uni+bigrams and character 2- to 5-grams).
        texts: the training texts the vocabulary and IDF are fitted on (a fresh tower needs them).
        max_length: words kept per text before n-grams are taken.
        embed_dim: embedding size (the tower's output size).
        min_df: an n-gram enters the vocabulary when at least this many texts hold it.
        max_features: the vocabulary keeps the most frequent n-grams up to this many.
        assets_dir: rebuild from a saved run's folder (vocabulary); IDF and embeddings come with the weights.
    """

    modality = "text"
    idf: torch.Tensor  # a buffer
    from_scratch = True  # trained in every stage, also when a stage freezes the (pretrained) encoders

    def __init__(
        self,
        name: str = "word1-2,char2-5",
        texts: Sequence[str] = (),
        max_length: int = 128,
        embed_dim: int = 128,
        min_df: int = 2,
        max_features: int = 2**18,
        assets_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.name, self.max_length = name, max_length
        self.analyzers = _analyzers(parse_ngram_spec(name))
        if assets_dir is not None:
            saved = json.loads((Path(assets_dir) / "ngram_vocab.json").read_text())
            vocab, embed_dim = saved["vocab"], saved["embed_dim"]
            idf = torch.zeros(len(vocab) + 1)  # the saved weights bring the fitted values
        else:
            if len(texts) == 0:
                raise ValueError("the ngram tower fits its vocabulary on the training texts: none were given")
            vocab, idf = self._fit(texts, min_df, max_features)
        self.vocab = vocab
        self.index = {g: i + 1 for i, g in enumerate(vocab)}  # 0 = padding
        self.register_buffer("idf", idf)  # (V + 1,), idf[0] = 0
        self.embedding = nn.EmbeddingBag(len(vocab) + 1, embed_dim, mode="sum", padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=embed_dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.output_dim = embed_dim

    def grams(self, text: str) -> set[str]:
        """The distinct n-grams of one text (``w:``/``c:`` prefixed: word and char n-grams never collide)."""
        text = " ".join(text.split()[: self.max_length])
        return {f"{p}:{g}" for p, analyze in self.analyzers for g in analyze(text)}

    def _fit(self, texts: Sequence[str], min_df: int, max_features: int) -> tuple[list[str], torch.Tensor]:
        """scikit-learn's TF-IDF fit over :meth:`grams` (binary tf, smooth IDF, ``min_df``, ``max_features``)."""
        fitted = TfidfVectorizer(analyzer=self.grams, binary=True, min_df=min_df, max_features=max_features)
        try:
            fitted.fit(list(texts))
        except ValueError as e:  # "After pruning, no terms remain" / "empty vocabulary"
            raise ValueError(
                f"no n-gram occurs in {min_df}+ of the {len(texts)} training texts; lower min_df "
                f"or check the text columns ({e})"
            ) from e
        vocab = [str(g) for g in fitted.get_feature_names_out()]
        return vocab, torch.cat([torch.zeros(1), torch.as_tensor(fitted.idf_, dtype=torch.float32)])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = [sorted(self.index[g] for g in self.grams(t) if g in self.index) for t in texts]
        width = max(1, max(len(r) for r in rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        w = self.idf[ids] * batch["attention_mask"].to(self.idf.dtype)  # (B, T)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)  # L2-normalised binary TF-IDF
        w = w.to(self.embedding.weight.dtype)
        if torch.onnx.is_in_onnx_export():  # ONNX has no EmbeddingBag with padding_idx: the same sum, spelled out
            keep = ids.ne(int(self.embedding.padding_idx or 0)).to(w.dtype)
            return (self.embedding.weight[ids] * (w * keep).unsqueeze(-1)).sum(1)  # (B, D)
        return self.embedding(ids, per_sample_weights=w)  # (B, D)

    def save_assets(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ngram_vocab.json").write_text(json.dumps({"vocab": self.vocab, "embed_dim": self.output_dim}))
        return {"max_length": self.max_length}

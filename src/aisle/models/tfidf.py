"""``tfidf:`` text tower: the TF-IDF + linear classifier practitioners try first, as an aisle tower.

The features are scikit-learn's own: one ``TfidfVectorizer`` per part of the spec (``word1-2,char2-5``: word uni- and
bigrams, ``char_wb`` 2- to 5-grams; sublinear tf, each part L2-normalised on its own, as a ``FeatureUnion`` of
two vectorizers gives), fitted label-free on the run's texts and saved as JSON (vocabulary + IDF, no pickles).
The classifier is fitted per fold by scikit-learn (:mod:`aisle.training.linear`) and stored in the tower as an
``nn.EmbeddingBag`` (one row of class weights per n-gram) plus a bias: the tower's output *is* the linear model's
logits, ``x @ coef.T + intercept`` for the sparse TF-IDF row ``x``, so predict, ensembles and reports run it like
any other model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from torch import nn

from aisle.models.base import Tower
from aisle.models.ngram import parse_ngram_spec
from aisle.models.text_towers import TEXT_TOWERS

__all__ = ["TfidfLinearTower"]

_ASSETS = "tfidf_vocab.json"


def _vectorizer(kind: str, lo: int, hi: int, sublinear_tf: bool, min_df: int, vocab: list[str] | None = None):
    return TfidfVectorizer(
        analyzer="word" if kind == "word" else "char_wb",
        ngram_range=(lo, hi),
        sublinear_tf=sublinear_tf,
        min_df=1 if vocab is not None else min_df,
        vocabulary=None if vocab is None else {g: i for i, g in enumerate(vocab)},
    )


@TEXT_TOWERS.register("tfidf")
class TfidfLinearTower(Tower):
    """Sparse TF-IDF features times a linear classifier's weights: (B, num_outputs) logits.

    Args:
        name: the n-gram spec, ``word1-2,char2-5``.
        texts: the texts the vocabularies and IDF are fitted on (a fresh tower needs them).
        num_outputs: classes (the tower's output size).
        sublinear_tf: ``1 + log(tf)`` instead of raw counts.
        min_df: an n-gram enters a vocabulary when at least this many texts hold it.
        assets_dir: rebuild from a saved run's folder (vocabularies + IDF); the weights come with the checkpoint.
    """

    modality = "text"
    fitted = True  # fitted by scikit-learn per fold, not trained by gradient steps

    def __init__(
        self,
        name: str = "word1-2,char2-5",
        texts: Sequence[str] = (),
        num_outputs: int = 2,
        sublinear_tf: bool = True,
        min_df: int = 1,
        assets_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.name, self.sublinear_tf = name, sublinear_tf
        parts = parse_ngram_spec(name)
        if assets_dir is not None:
            saved = json.loads((Path(assets_dir) / _ASSETS).read_text())
            self.vectorizers = [
                _vectorizer(kind, lo, hi, sublinear_tf, 1, p["vocab"]) for (kind, lo, hi), p in zip(parts, saved)
            ]
            for v, p in zip(self.vectorizers, saved):
                v.idf_ = np.asarray(p["idf"], dtype=np.float64)
        else:
            if len(texts) == 0:
                raise ValueError("the tfidf tower fits its vocabulary on the training texts: none were given")
            self.vectorizers = [_vectorizer(kind, lo, hi, sublinear_tf, min_df) for kind, lo, hi in parts]
            for v in self.vectorizers:
                v.fit([str(t) for t in texts])
        size = sum(len(v.vocabulary_) for v in self.vectorizers)
        self.embedding = nn.EmbeddingBag(size + 1, num_outputs, mode="sum", padding_idx=0)  # row 0: padding
        self.bias = nn.Parameter(torch.zeros(num_outputs))
        with torch.no_grad():
            self.embedding.weight.zero_()
        self.output_dim = num_outputs

    @property
    def n_features(self) -> int:
        return self.embedding.num_embeddings - 1

    def transform(self, texts: Sequence[str] | np.ndarray) -> sp.csr_matrix:
        """The TF-IDF rows (N, n_features): each part L2-normalised, parts side by side."""
        docs = [str(t) for t in texts]
        return sp.hstack([v.transform(docs) for v in self.vectorizers], format="csr")

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        x = self.transform(texts)
        counts = np.diff(x.indptr)
        width = max(1, int(counts.max()) if len(counts) else 1)
        ids = torch.zeros(len(counts), width, dtype=torch.long)
        weights = torch.zeros(len(counts), width, dtype=torch.float32)
        for i in range(len(counts)):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            ids[i, : hi - lo] = torch.from_numpy(x.indices[lo:hi].astype(np.int64) + 1)
            weights[i, : hi - lo] = torch.from_numpy(x.data[lo:hi].astype(np.float32))
        return {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_weights": weights}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        w = batch["token_weights"].to(self.embedding.weight.dtype)  # (B, T): 0 at padding
        if torch.onnx.is_in_onnx_export():  # ONNX has no embedding_bag with a padding index: gather, weigh, sum
            rows = self.embedding.weight[batch["input_ids"]]  # (B, T, C)
            w = w * batch["attention_mask"].to(w.dtype)  # 0 at padding already; the graph keeps the mask input
            return (rows * w.unsqueeze(-1)).sum(1) + self.bias
        return self.embedding(batch["input_ids"], per_sample_weights=w) + self.bias  # (B, C)

    def set_linear(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Take a fitted linear model: ``coef`` (C, n_features), ``intercept`` (C,)."""
        if coef.shape != (self.output_dim, self.n_features):
            raise ValueError(f"coef has shape {coef.shape}; the tower needs {(self.output_dim, self.n_features)}")
        with torch.no_grad():
            self.embedding.weight[1:] = torch.as_tensor(coef.T, dtype=torch.float32)
            self.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))

    def save_assets(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        parts = [
            {"vocab": [str(g) for g in v.get_feature_names_out()], "idf": [float(x) for x in v.idf_]}
            for v in self.vectorizers
        ]
        (folder / _ASSETS).write_text(json.dumps(parts))
        return {"sublinear_tf": self.sublinear_tf}

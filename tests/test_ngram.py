"""The ngram: text tower: a projection of binary TF-IDF, trained in frozen-encoder stages, rebuilt by predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.feature_extraction.text import TfidfVectorizer

from aisle.config import validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.inference import predict
from aisle.models.ngram import NgramTextTower, parse_ngram_spec
from aisle.training import run_cv

TEXTS = [
    "Red running shoes",
    "Blue running shorts",
    "red leather heels",
    "Leather shoes, brown",
    "blue denim shorts",
    "running shoes for men",
]


def test_features_are_the_binary_tfidf_vector_projected_by_the_embedding() -> None:
    tower = NgramTextTower("word1-2,char2-4", texts=TEXTS, min_df=2)
    # scikit-learn's own TF-IDF over the same n-grams: binary tf, smooth IDF, L2 norm, min_df 2
    ref = TfidfVectorizer(analyzer=tower.grams, binary=True, min_df=2)
    x = ref.fit_transform(TEXTS).toarray()
    assert set(ref.vocabulary_) == set(tower.vocab)
    order = [tower.index[g] for g in ref.get_feature_names_out()]
    expected = torch.from_numpy(x).float() @ tower.embedding.weight[order]
    with torch.no_grad():
        got = tower(tower.tokenize(TEXTS))
    assert got.shape == (len(TEXTS), tower.output_dim)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_repeated_ngrams_count_once_and_unknown_text_gives_zeros() -> None:
    tower = NgramTextTower("word1-1", texts=TEXTS, min_df=2)
    with torch.no_grad():
        once, twice, unknown = tower(tower.tokenize(["running shoes", "running running shoes shoes", "zzz qqq"]))
    torch.testing.assert_close(once, twice)
    assert torch.equal(unknown, torch.zeros_like(unknown))


def test_max_length_keeps_the_first_words() -> None:
    tower = NgramTextTower("word1-1", texts=TEXTS, min_df=1, max_length=2)
    assert tower.grams("red running shoes") == {"w:red", "w:running"}


@pytest.mark.parametrize("spec", ["word", "char2", "word2-1", "chars1-2", "word0-1"])
def test_bad_spec_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match="word<a>-<b> or char<a>-<b>"):
        parse_ngram_spec(spec)


def test_no_training_texts_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="training texts"):
        NgramTextTower("word1-2")
    with pytest.raises(ValueError, match="lower min_df"):
        NgramTextTower("word1-1", texts=["a b c"], min_df=2)


def test_trains_in_a_frozen_encoder_stage_and_predict_rebuilds_it(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    write_demo_catalogue(cat, n_train=60, n_test=12, seed=3, image_size=32)
    cfg = validate_config(
        {
            "name": "ng",
            "data": {"train_csv": str(cat / "train.csv"), "folds": 2},
            "model": {
                "type": "fusion",
                "image": {"name": "timm:test_resnet", "pretrained": False},
                "text": {"name": "ngram:word1-2,char2-4", "embed_dim": 16},
                "image_size": 32,
                "fusion_dim": 16,
                "head_hidden": 16,
            },
            "train": {
                "epochs": 2,
                "batch_size": 16,
                "lr": {"default": 1e-2},
                "stages": [{"name": "stage1", "freeze_encoders": True}],
            },
            "runtime": {"num_workers": 0, "feature_cache": True, "cache_dir": str(tmp_path / "cache")},
        }
    )
    run = tmp_path / "run"
    run_cv(cfg, run, overwrite=True)
    saved = json.loads((run / "assets/text/ngram_vocab.json").read_text())
    assert saved["embed_dim"] == 16 and len(saved["vocab"]) > 10
    weights = load_file(run / "stage1/fold_0/best.safetensors")
    # the frozen image tower still equals the template and is left out of the checkpoint; the ngram tower trained
    assert not any(k.startswith("image_encoder.") for k in weights)
    assert weights["text_encoder.embedding.weight"].shape == (len(saved["vocab"]) + 1, 16)
    assert float(weights["text_encoder.idf"][1:].min()) >= 1.0 and float(weights["text_encoder.idf"][0]) == 0.0
    first = predict(run, cat / "test.csv", image_dir=cat / "images")
    again = predict(run, cat / "test.csv", image_dir=cat / "images", feature_cache=False)
    assert len(first.probs) == len(pd.read_csv(cat / "test.csv")) and np.isfinite(first.probs).all()
    np.testing.assert_allclose(first.probs, again.probs, rtol=1e-4, atol=1e-5)


def test_freeze_encoders_leaves_a_from_scratch_tower_trainable() -> None:
    from aisle.config import StageConfig
    from aisle.models import create_classifier
    from aisle.training.fold import apply_freezing as _apply_freezing

    cfg = validate_config(
        {
            "data": {"train_csv": "x.csv"},
            "model": {
                "type": "fusion",
                "image": {"name": "timm:test_resnet", "pretrained": False},
                "text": {"name": "ngram:word1-1"},
                "image_size": 32,
            },
        }
    )
    model = create_classifier(cfg.model, 3, TEXTS)
    frozen = _apply_freezing(model, cfg, StageConfig(name="s1", freeze_encoders=True))
    assert frozen == ("image_encoder",)
    assert all(p.requires_grad for p in model.text_encoder.parameters())

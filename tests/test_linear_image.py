"""A linear model with ``model.image``: frozen image features beside the TF-IDF rows in one scikit-learn fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from aisle.cache.encode import encode_products
from aisle.config import ConfigError, validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.data.prepare import load_training_data
from aisle.data.products import load_products
from aisle.evaluation.metrics import macro_f1
from aisle.inference import predict
from aisle.inference.predict import load_fold_models
from aisle.training import run_cv
from aisle.training.linear import IMAGE_WEIGHTS, INNER_FOLDS, _select_rows, fit_linear

IMAGE = {"name": "timm:test_resnet", "pretrained": False}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("linimg")
    write_demo_catalogue(out, n_train=150, n_test=30, seed=4, image_size=32)
    return out


def _raw(catalogue: Path, tmp: Path, linear: dict) -> dict:
    return {
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 3},
        "model": {"type": "linear", "linear": linear, "image": IMAGE, "image_size": 32},
        "runtime": {"num_workers": 0, "cache_dir": str(tmp / "cache")},
    }


def _tfidf(train_texts, other_texts):
    vecs = [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    ]
    x = sp.hstack([v.fit_transform(train_texts) for v in vecs], format="csr")
    return x, sp.hstack([v.transform(other_texts) for v in vecs], format="csr")


def _unit(feats: np.ndarray, has: np.ndarray) -> np.ndarray:
    return np.where(has[:, None], feats / np.linalg.norm(feats, axis=1, keepdims=True), 0.0)


def test_oof_and_test_probabilities_equal_a_scikit_learn_fit_on_tfidf_and_image_features(catalogue, tmp_path):
    raw = _raw(catalogue, tmp_path, {"image_weight": 0.5})
    run = tmp_path / "run"
    run_cv(validate_config(raw), run)
    cfg = validate_config(raw)
    td = load_training_data(cfg.data)
    test = load_products(catalogue / "test.csv", cfg.data)
    _, _, models = load_fold_models(run)
    tower = models[0].image_encoder
    params = json.loads((run / "cv_summary.json").read_text())["params"]
    frozen = sum(p.numel() for p in tower.parameters())
    assert params["trainable"] <= params["total"] - frozen, "the frozen image tower is not counted as trained"
    # the run fits on the feature cache's float16 features, predict encodes the pixels: both alike here
    img = _unit(*encode_products(tower, td.products))
    img_test = _unit(*encode_products(tower, test))
    x, x_test = _tfidf(list(td.products.texts), list(test.texts))
    oof = pd.read_csv(run / "main" / "oof.csv", dtype={"id": str})
    classes = list(td.label_map.classes)
    pred = predict(run, catalogue / "test.csv")
    for k in range(3):
        tr, va = td.folds != k, td.folds == k
        info = json.loads((run / "main" / f"fold_{k}" / "best.json").read_text())
        assert info["image_weight"] == 0.5
        joined = sp.hstack([x, sp.csr_matrix(0.5 * img)], format="csr")
        clf = LinearSVC(random_state=42 + k).fit(joined[tr], td.y[tr])
        t = info["temperature"]
        ref = softmax(t * clf.decision_function(joined[va]), 1)
        ref_test = softmax(t * clf.decision_function(sp.hstack([x_test, sp.csr_matrix(0.5 * img_test)])), 1)
        got = oof[oof["fold"] == k].set_index("id").loc[td.products.ids[va], classes].to_numpy()
        assert np.allclose(got, ref, atol=2e-4), np.abs(got - ref).max()
        assert np.allclose(pred.fold_probs[k], ref_test, atol=2e-4), np.abs(pred.fold_probs[k] - ref_test).max()


def test_the_image_weight_is_chosen_where_images_carry_the_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 40)
    words = np.array(["alpha", "beta", "gamma", "delta", "omega", "sigma"])
    texts = [" ".join(rng.choice(words, 4)) for _ in y]  # text that says nothing of the class
    x, _ = _tfidf(texts, texts[:1])
    image = np.eye(4)[y] + 0.3 * rng.normal(size=(len(y), 4))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    tr, va = np.arange(len(y)) % 5 != 0, np.arange(len(y)) % 5 == 0
    cfg = validate_config({"model": {"type": "linear", "image": IMAGE}}).model.linear_model
    fit = fit_linear(x[tr], y[tr], 4, cfg, 0, image=image[tr])
    assert fit.image_weight in IMAGE_WEIGHTS and fit.image_weight > 0
    assert macro_f1(y[va], fit.logits(x[va], image[va]).argmax(1)) > 0.9
    text_only = fit_linear(x[tr], y[tr], 4, cfg, 0)
    assert macro_f1(y[va], text_only.logits(x[va]).argmax(1)) < 0.6


def test_noise_images_leave_the_text_model_as_it_was():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    names = ["red shirt", "blue scarf", "wool cushion"]
    texts = [f"{names[c]} {w}" for c, w in zip(y, rng.choice(["a", "b", "c"], len(y)))]
    x, _ = _tfidf(texts, texts[:1])
    noise = rng.normal(size=(len(y), 8))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cfg = validate_config({"model": {"type": "linear", "image": IMAGE}}).model.linear_model
    fit = fit_linear(x, y, 3, cfg, 0, image=noise)
    assert fit.image_weight == 0.0, "ties go to the smaller weight: text alone"
    assert not fit.image_coef.any()


def test_the_linear_models_image_tower_is_frozen_and_its_weight_needs_it():
    model = validate_config({"model": {"type": "linear", "image": IMAGE}}).model
    assert model.image is not None and model.image.trainable is False
    assert model.tower_sections() == {"text_encoder": "linear", "image_encoder": "image"}
    assert validate_config({"model": {"type": "linear"}}).model.tower_sections() == {"text_encoder": "linear"}
    with pytest.raises(ConfigError, match="image_weight"):
        validate_config({"model": {"type": "linear", "linear": {"image_weight": 1.0}}})
    with pytest.raises(ConfigError, match="frozen"):
        validate_config({"model": {"type": "linear", "image": {**IMAGE, "trainable": True}}})
    with pytest.raises(ConfigError, match="model.text"):
        validate_config({"model": {"type": "linear", "text": {"name": "tiny:bert"}}})


def _unit_noise(rng, n: int) -> np.ndarray:
    noise = rng.normal(size=(n, 8))
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def test_too_few_rows_to_choose_give_the_text_model_with_its_temperature():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(5), 3)  # 3 rows a class: fewer than the inner folds
    texts = [f"item{c} {w}" for c, w in zip(y, rng.choice(["a", "b", "c"], len(y)))]
    x, _ = _tfidf(texts, texts[:1])
    cfg = validate_config({"model": {"type": "linear", "image": IMAGE}}).model.linear_model
    fit = fit_linear(x, y, 5, cfg, 0, image=_unit_noise(rng, len(y)))
    text_only = fit_linear(x, y, 5, cfg, 0)
    assert fit.image_weight == 0.0 and fit.temperature == text_only.temperature != 1.0


def test_a_class_with_one_row_does_not_stop_the_choice():
    rng = np.random.default_rng(3)
    y = np.array([0] * 60 + [1])
    texts = [f"thing {w}" for w in rng.choice(["a", "b", "c"], len(y))]
    x, _ = _tfidf(texts, texts[:1])
    cfg = validate_config({"model": {"type": "linear", "image": IMAGE}}).model.linear_model
    fit = fit_linear(x, y, 2, cfg, 0, image=_unit_noise(rng, len(y)))  # no inner split trains on one class
    assert fit.image_weight == 0.0


def test_the_rows_the_weight_is_chosen_on_keep_every_small_class():
    y = np.array([0] * 10_000 + [1] * 3 + [2] * 30)
    counts = np.bincount(y[_select_rows(y, 0)])
    assert counts[1] == 3 and counts[2] >= INNER_FOLDS and counts[0] < 10_000

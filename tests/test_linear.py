"""The linear model (``model.type: linear``): scikit-learn's own TF-IDF + classifier, fold by fold, run as a tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from aisle.config import ConfigError, load_config, validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.data.prepare import load_training_data
from aisle.data.products import load_products
from aisle.inference import predict
from aisle.training import run_cv


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lin")
    write_demo_catalogue(out, n_train=150, n_test=30, seed=4, image_size=32)
    return out


def _train(catalogue: Path, tmp: Path, classifier: str) -> tuple[Path, dict]:
    raw = {
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 3},
        "model": {"type": "linear", "linear": {"classifier": classifier, "C": 2.0}},
        "runtime": {"num_workers": 0},
    }
    run = tmp / classifier
    run_cv(validate_config(raw), run)
    return run, raw


def _reference_features(train_texts, other_texts=None):
    """The baseline's features: word 1-2 and char_wb 2-5 TF-IDF (sublinear tf), side by side."""
    vecs = [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    ]
    x = sp.hstack([v.fit_transform(train_texts) for v in vecs], format="csr")
    if other_texts is None:
        return x, None
    return x, sp.hstack([v.transform(other_texts) for v in vecs], format="csr")


@pytest.mark.parametrize("classifier", ["logreg", "svm"])
def test_oof_and_test_probabilities_equal_a_scikit_learn_fit_on_the_same_folds(catalogue, tmp_path, classifier):
    run, raw = _train(catalogue, tmp_path, classifier)
    td = load_training_data(validate_config(raw).data)
    test = load_products(catalogue / "test.csv", validate_config(raw).data)
    x, x_test = _reference_features(list(td.products.texts), list(test.texts))
    oof = pd.read_csv(run / "main" / "oof.csv", dtype={"id": str})
    classes = list(td.label_map.classes)
    pred = predict(run, catalogue / "test.csv")
    for k in range(3):
        tr, va = td.folds != k, td.folds == k
        if classifier == "logreg":
            clf = LogisticRegression(C=2.0, max_iter=3000).fit(x[tr], td.y[tr])
            ref, ref_test = clf.predict_proba(x[va]), clf.predict_proba(x_test)
        else:
            t = json.loads((run / "main" / f"fold_{k}" / "best.json").read_text())["temperature"]
            clf = LinearSVC(C=2.0, random_state=42 + k).fit(x[tr], td.y[tr])
            ref, ref_test = softmax(t * clf.decision_function(x[va]), 1), softmax(t * clf.decision_function(x_test), 1)
        got = oof[oof["fold"] == k].set_index("id").loc[td.products.ids[va], classes].to_numpy()
        assert np.allclose(got, ref, atol=2e-5), np.abs(got - ref).max()
        assert np.allclose(pred.fold_probs[k], ref_test, atol=2e-5), np.abs(pred.fold_probs[k] - ref_test).max()


def test_svm_temperature_is_fitted_away_from_the_identity(catalogue, tmp_path):
    run, _ = _train(catalogue, tmp_path, "svm")
    temps = [json.loads((run / "main" / f"fold_{k}" / "best.json").read_text())["temperature"] for k in range(3)]
    assert all(t > 0 for t in temps) and not np.allclose(temps, 1.0)


def test_linear_model_config_takes_only_its_keys() -> None:
    with pytest.raises(ConfigError, match="model.fusion"):
        load_config(overrides=["model.type=linear", "model.fusion=gated"])
    with pytest.raises(ConfigError, match="unknown key 'model.linear.pooler'"):
        load_config(overrides=["model.type=linear", "model.linear.pooler=cls"])
    with pytest.raises(ConfigError, match="valid choices: svm, logreg"):
        load_config(overrides=["model.type=linear", "model.linear.classifier=rf"])


def test_tfidf_towers_belong_to_linear_models(catalogue, tmp_path) -> None:
    cfg = load_config(overrides=["model.type=text", "model.text.name=tfidf:word1-2", f"data.train_csv={catalogue}"])
    with pytest.raises(ValueError, match="model.text.name"):
        run_cv(cfg, tmp_path / "run")
    cfg = load_config(overrides=["model.type=linear", "model.linear.name=ngram:word1-2"])
    with pytest.raises(ValueError, match="model.linear.name.*tfidf"):
        run_cv(cfg, tmp_path / "run2")


def test_class_weights_weigh_every_row_of_a_class_as_a_scikit_learn_fit_does(catalogue, tmp_path):
    """``train.class_weights`` acts on the linear model: 1/count per class as sample weights, mean 1 over rows."""
    train = pd.read_csv(catalogue / "train.csv", dtype=str)
    first = train["categories"].iloc[0]
    keep = (train["categories"] != first) | (train.groupby("categories").cumcount() < 12)  # one rare class
    train[keep].to_csv(tmp_path / "train.csv", index=False)
    raw = {
        "data": {"train_csv": str(tmp_path / "train.csv"), "folds": 3},
        "model": {"type": "linear", "linear": {"classifier": "logreg", "C": 2.0}},
        "train": {"class_weights": "inverse_freq"},
        "runtime": {"num_workers": 0},
    }
    run_cv(validate_config(raw), tmp_path / "run")
    td = load_training_data(validate_config(raw).data)
    x, _ = _reference_features(list(td.products.texts))
    oof = pd.read_csv(tmp_path / "run" / "main" / "oof.csv", dtype={"id": str}).set_index("id")
    for k in range(3):
        tr, va = td.folds != k, td.folds == k
        rows = (1.0 / np.bincount(td.y[tr]))[td.y[tr]]
        rows *= len(rows) / rows.sum()  # mean 1 over the rows, so C keeps its meaning
        weighted = LogisticRegression(C=2.0, max_iter=3000).fit(x[tr], td.y[tr], sample_weight=rows)
        plain = LogisticRegression(C=2.0, max_iter=3000).fit(x[tr], td.y[tr])
        got = oof.loc[td.products.ids[va], list(td.label_map.classes)].to_numpy()
        assert np.allclose(got, weighted.predict_proba(x[va]), atol=2e-5)
        assert not np.allclose(got, plain.predict_proba(x[va]), atol=1e-3)  # the weights changed the model

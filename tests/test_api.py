"""The Python API on DataFrames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aisle import Classifier
from aisle.data.demo import write_demo_catalogue


def test_classifier_fit_predict_evaluate_save_load(tmp_path):
    write_demo_catalogue(tmp_path / "cat", n_train=48, n_test=12, seed=4, image_size=32)
    train = pd.read_csv(tmp_path / "cat" / "train.csv", dtype=str)
    test = pd.read_csv(tmp_path / "cat" / "test.csv", dtype=str).merge(
        pd.read_csv(tmp_path / "cat" / "test_labels.csv", dtype=str), on="id"
    )
    test.index = test.index + 100  # outputs must follow the caller's index
    clf = Classifier(
        overrides=[
            "model.type=fusion",
            "model.image.name=timm:test_resnet",
            "model.image.pretrained=false",
            "model.text.name=tiny:bert",
            "model.text.max_length=16",
            "model.image_size=32",
            "model.fusion_dim=16",
            "model.head_hidden=16",
            "data.folds=2",
            "train.epochs=1",
            "train.batch_size=16",
            "runtime.num_workers=0",
        ],
        run_dir=tmp_path / "run",
    )
    with pytest.raises(ValueError, match="not fitted"):
        clf.predict(test)
    clf.fit(train, data_root=tmp_path / "cat")
    assert set(clf.summary_["folds"]) == {"0", "1"}
    proba = clf.predict_proba(test, image_dir=tmp_path / "cat" / "images")
    assert list(proba.index) == list(test.index) and proba.shape[1] == 6
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    labels = clf.predict(test, image_dir=tmp_path / "cat" / "images")
    assert (labels == proba.idxmax(axis=1)).all()
    metrics = clf.evaluate(test, image_dir=tmp_path / "cat" / "images")
    assert metrics["acc"] == pytest.approx((labels == test["categories"]).mean())

    clf.save(tmp_path / "saved")
    again = Classifier.load(tmp_path / "saved")
    assert np.allclose(again.predict_proba(test, image_dir=tmp_path / "cat" / "images"), proba, atol=1e-6)

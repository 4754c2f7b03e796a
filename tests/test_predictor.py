"""One product at a time: the in-memory predictor gives ``aisle predict``'s probabilities with no set-up per call."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from aisle.api import Classifier
from aisle.cli import main
from aisle.data.demo import write_demo_catalogue
from aisle.inference import predict
from aisle.inference.predictor import Predictor
from conftest import TINY_FUSION


def _train(root: Path, name: str, train: dict, infer: dict | None = None) -> Path:
    cfg = {
        "data": {"train_csv": str(root / "cat" / "train.csv"), "folds": 2},
        "model": TINY_FUSION,
        "train": {"epochs": 1, "batch_size": 8, **train},
        "infer": infer or {},
        "runtime": {"num_workers": 0, "cache_dir": str(root / "cache")},
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(root / f"{name}.yaml"), "--run-dir", str(root / name)]) == 0
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("pred")
    write_demo_catalogue(root / "cat", n_train=40, n_test=10, seed=5, image_size=32)
    return root / "cat", {
        "frozen": _train(root, "frozen", {"stages": [{"name": "head", "freeze_encoders": True}]}),
        "trained_tta": _train(root, "trained_tta", {}, {"tta": ["hflip"]}),
    }


def _pil(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError):
        return None  # a broken file: the placeholder, as predict uses


def _items(cat: Path, how: str) -> list[dict]:
    test = pd.read_csv(cat / "test.csv", dtype=str, keep_default_na=False)
    items = []
    for row in test.to_dict("records"):
        path = cat / "images" / f"{row['id']}.jpg"
        image = {"path": str(path), "bytes": path.read_bytes() if path.exists() else None, "pil": _pil(path)}[how]
        items.append({**row, "image": image if path.exists() else None})
    return items


@pytest.mark.parametrize("how", ["path", "bytes", "pil"])
@pytest.mark.parametrize("run_name", ["frozen", "trained_tta"])
def test_predictor_matches_aisle_predict(runs, run_name: str, how: str) -> None:
    cat, run_dirs = runs
    expected = predict(run_dirs[run_name], cat / "test.csv").probs
    got = Predictor(run_dirs[run_name]).predict_proba(_items(cat, how))
    assert np.allclose(got, expected, atol=1e-5), np.abs(got - expected).max()


def test_one_item_matches_its_row_in_a_batch(runs) -> None:
    cat, run_dirs = runs
    p = Predictor(run_dirs["trained_tta"])
    items = _items(cat, "bytes")
    batch = p.predict_proba(items)
    for i in (0, 3):
        assert np.allclose(p.predict_proba([items[i]])[0], batch[i], atol=1e-5)


def test_a_call_does_no_set_up_and_logs_nothing(runs, monkeypatch, caplog) -> None:
    import importlib

    products = importlib.import_module("aisle.data.products")
    predictor = importlib.import_module("aisle.inference.predictor")

    cat, run_dirs = runs
    clf = Classifier.load(run_dirs["frozen"])
    items = _items(cat, "bytes")[:1]
    clf.predict_proba(items)  # loads the models once
    for name, module in (("load_fold_models", predictor), ("build_image_index", products), ("image_files", predictor)):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("per-call set-up"))
    with caplog.at_level(logging.DEBUG, logger="aisle"):
        out = clf.predict_proba(items)
    assert list(out.columns) == clf._predictor().classes and len(out) == 1
    assert caplog.text == ""


def test_classifier_takes_a_small_dataframe_with_an_image_folder(runs) -> None:
    cat, run_dirs = runs
    clf = Classifier.load(run_dirs["trained_tta"])
    test = pd.read_csv(cat / "test.csv", dtype=str, keep_default_na=False)
    got = clf.predict_proba(test.iloc[:4], image_dir=cat / "images")
    expected = predict(run_dirs["trained_tta"], cat / "test.csv").probs[:4]
    assert np.allclose(got.to_numpy(), expected, atol=1e-5)
    assert list(got.index) == list(test.index[:4])

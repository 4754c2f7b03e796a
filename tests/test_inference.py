"""Predict, ensemble and evaluate on a tiny trained run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from aisle.cli import main
from aisle.data.demo import write_demo_catalogue
from aisle.evaluation.evaluate import evaluate_files
from aisle.inference import predict, write_outputs
from aisle.inference.ensemble import ensemble_probabilities


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inf")
    cat = root / "cat"
    write_demo_catalogue(cat, n_train=60, n_test=24, seed=2, image_size=32)
    cfg = {
        "name": "r",
        "output_dir": str(root / "runs"),
        "data": {"train_csv": str(cat / "train.csv"), "test_csv": str(cat / "test.csv"), "folds": 2},
        "model": {
            "type": "fusion",
            "image": {"name": "timm:test_resnet", "pretrained": False},
            "text": {"name": "tiny:bert", "max_length": 16},
            "image_size": 32,
            "fusion_dim": 16,
            "head_hidden": 16,
        },
        "train": {"epochs": 2, "batch_size": 16, "lr": {"default": 3e-3}},
        "runtime": {"num_workers": 0},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(root / "cfg.yaml"), "--run-dir", str(root / "run")]) == 0
    return root / "run", cat


def test_predict_without_data_reads_the_runs_test_csv(trained, tmp_path):
    run, cat = trained
    assert main(["-q", "predict", str(run), "--out", str(tmp_path / "default")]) == 0
    assert main(["-q", "predict", str(run), "--data", str(cat / "test.csv"), "--out", str(tmp_path / "given")]) == 0
    default = pd.read_csv(tmp_path / "default" / "probabilities.csv", dtype={"id": str})
    given = pd.read_csv(tmp_path / "given" / "probabilities.csv", dtype={"id": str})
    assert list(default["id"]) == list(pd.read_csv(cat / "test.csv", dtype=str)["id"])
    pd.testing.assert_frame_equal(default, given)


def test_predict_without_data_or_test_csv_says_what_to_do(trained, tmp_path, capsys):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["data"]["test_csv"] = None
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["predict", str(copy)]) == 2
    assert "--data" in capsys.readouterr().err


def test_infer_folds_of_the_run_choose_the_fold_models(trained, tmp_path):
    run, cat = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["infer"]["folds"] = [1]
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    pred = predict(copy, cat / "test.csv")
    assert set(pred.fold_probs) == {1}
    assert set(predict(copy, cat / "test.csv", folds=[0, 1]).fold_probs) == {0, 1}  # the caller's choice wins


def test_predict_rows_in_input_order_and_fold_average(trained, tmp_path):
    run, cat = trained
    pred = predict(run, cat / "test.csv")
    test = pd.read_csv(cat / "test.csv", dtype=str)
    assert list(pred.ids) == list(test["id"])
    assert pred.probs.shape == (len(test), 6)
    assert np.allclose(pred.probs.sum(1), 1, atol=1e-5)
    assert set(pred.fold_probs) == {0, 1}
    assert np.allclose(pred.probs, (pred.fold_probs[0] + pred.fold_probs[1]) / 2)
    assert not np.allclose(pred.fold_probs[0], pred.fold_probs[1]), "two folds gave identical models"
    single = predict(run, cat / "test.csv", folds=[1])
    assert np.allclose(single.probs, pred.fold_probs[1], atol=1e-6)
    files = write_outputs(pred, tmp_path)
    sub = pd.read_csv(files["submission"], dtype=str)
    assert list(sub.columns) == ["id", "categories"] and list(sub["id"]) == list(test["id"])
    assert set(sub["categories"]) <= set(pred.label_map.classes)


def test_tta_changes_probabilities(trained):
    run, cat = trained
    plain = predict(run, cat / "test.csv", tta=[])
    flipped = predict(run, cat / "test.csv", tta=["hflip"])
    assert not np.allclose(plain.probs, flipped.probs)
    with pytest.raises(ValueError, match="unknown TTA policy"):
        predict(run, cat / "test.csv", tta=["spin"])


def test_messy_test_file_gives_complete_submission(trained, tmp_path, caplog):
    run, cat = trained
    test = pd.read_csv(cat / "test.csv", dtype=str)
    labels = pd.read_csv(cat / "test_labels.csv", dtype=str)
    messy = test.merge(labels, on="id")
    messy.loc[0, "categories"] = "Cotton Lamp"  # a class training never saw
    messy = pd.concat([messy, messy.iloc[[1]]], ignore_index=True)  # a duplicate id
    messy.loc[len(messy)] = {"id": "no-such-image", "title": "wool", "description": "", "categories": "Wool Box"}
    shutil.copytree(cat / "images", tmp_path / "images")
    messy.to_csv(tmp_path / "messy.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="aisle"):
        pred = predict(run, tmp_path / "messy.csv")
    assert list(pred.ids) == list(messy["id"]), "every input row gets exactly one output row, in order"
    assert pred.unseen_labels == {"Cotton Lamp": 1}
    text = caplog.text
    assert "never saw" in text and "Cotton Lamp" in text and "duplicate id" in text
    assert "no-such-image" in text  # the missing image is named
    assert main(["predict", str(run), "--data", str(tmp_path / "messy.csv"), "--out", str(tmp_path / "o")]) == 0
    assert len(pd.read_csv(tmp_path / "o" / "submission.csv")) == len(messy)


def test_ensemble_weights(trained, tmp_path):
    run, cat = trained
    a = write_outputs(predict(run, cat / "test.csv", folds=[0]), tmp_path / "a")["probabilities"]
    b = write_outputs(predict(run, cat / "test.csv", folds=[1]), tmp_path / "b")["probabilities"]
    first = pd.read_csv(a, dtype={"id": str})
    assert np.allclose(ensemble_probabilities([a, b], [1, 0]).drop(columns="id"), first.drop(columns="id"))
    both = ensemble_probabilities([a, b], [1, 1]).drop(columns="id").to_numpy()
    second = pd.read_csv(b).drop(columns="id").to_numpy()
    assert np.allclose(both, (first.drop(columns="id").to_numpy() + second) / 2)
    assert main(["ensemble", str(a), str(b), "--weight", "1", "--weight", "0", "--out", str(tmp_path / "e")]) == 0
    sub = pd.read_csv(tmp_path / "e" / "submission.csv")
    assert list(sub["categories"]) == list(first.drop(columns="id").idxmax(axis=1))
    shuffled = first.sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ValueError, match="ids differ"):
        ensemble_probabilities([a, tmp_path / "s.csv"])
    first.drop(columns=first.columns[1]).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="classes differ"):
        ensemble_probabilities([a, tmp_path / "c.csv"])


def test_evaluate_agrees_with_sklearn(trained, tmp_path):
    run, cat = trained
    probs = write_outputs(predict(run, cat / "test.csv"), tmp_path)["probabilities"]
    ev = evaluate_files(probs, cat / "test_labels.csv", tmp_path / "ev")
    p = pd.read_csv(probs, dtype={"id": str})
    truth = p[["id"]].merge(pd.read_csv(cat / "test_labels.csv", dtype=str), on="id")["categories"]
    pred = p.drop(columns="id").idxmax(axis=1)
    assert ev.metrics["acc"] == pytest.approx(accuracy_score(truth, pred))
    assert ev.metrics["macro_f1"] == pytest.approx(
        f1_score(truth, pred, average="macro", labels=sorted(set(truth)), zero_division=0)
    )
    assert ev.metrics["weighted_f1"] == pytest.approx(f1_score(truth, pred, average="weighted", zero_division=0))
    assert ev.metrics["macro_precision"] == pytest.approx(
        precision_score(truth, pred, average="macro", labels=sorted(set(truth)), zero_division=0)
    )
    assert ev.metrics["macro_recall"] == pytest.approx(
        recall_score(truth, pred, average="macro", labels=sorted(set(truth)), zero_division=0)
    )
    assert int(ev.confusion.to_numpy().sum()) == len(truth)
    assert np.trace(ev.confusion.to_numpy()) == int((truth.to_numpy() == pred.to_numpy()).sum())
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png"):
        assert (tmp_path / "ev" / name).exists()


def test_predict_without_data_reads_the_runs_own_image_folder(tmp_path):
    """The run's test table is read with the run's ``data.image_dir``, even where no images/ sits beside it."""
    write_demo_catalogue(tmp_path / "cat", n_train=24, n_test=8, seed=3, image_size=32)
    shutil.move(tmp_path / "cat" / "images", tmp_path / "photos")
    cfg = {
        "data": {
            "train_csv": str(tmp_path / "cat" / "train.csv"),
            "test_csv": str(tmp_path / "cat" / "test.csv"),
            "image_dir": str(tmp_path / "photos"),
            "folds": 2,
        },
        "model": {"type": "image", "image": {"name": "timm:test_resnet", "pretrained": False}, "image_size": 32},
        "train": {"epochs": 1, "batch_size": 8, "loggers": []},
        "runtime": {"num_workers": 0},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(tmp_path / "cfg.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    own = predict(tmp_path / "run")
    given = predict(tmp_path / "run", tmp_path / "cat" / "test.csv", image_dir=tmp_path / "photos")
    np.testing.assert_allclose(own.probs, given.probs, atol=1e-6)
    overridden = predict(
        tmp_path / "run", tmp_path / "cat" / "test.csv", overrides=[f"data.image_dir={tmp_path}/photos"]
    )
    np.testing.assert_allclose(overridden.probs, given.probs, atol=1e-6)
    with pytest.raises(ValueError, match="image"):  # another table: images beside it, and there are none
        predict(tmp_path / "run", tmp_path / "cat" / "test.csv")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a CUDA device")
def test_predict_runs_where_runtime_accelerator_says(trained):
    """Predict reads runtime.accelerator (it ran on the CPU whatever the key said): gpu without one is an error."""
    run, _ = trained
    with pytest.raises(ValueError, match="runtime.accelerator is gpu"):
        predict(run, overrides=["runtime.accelerator=gpu"])
    assert predict(run, overrides=["runtime.accelerator=cpu"]).probs.shape[0] == 24

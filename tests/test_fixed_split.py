"""``data.val_csv``: a fixed train/validation split trained as one fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from aisle.cli import main
from aisle.config import ConfigError, DataConfig, load_config
from aisle.data import load_training_data
from aisle.data.demo import write_demo_catalogue
from aisle.data.folds import TRAIN_ONLY, fold_numbers
from conftest import TINY_FUSION, labelled_rows, write_csv


def _tables(tmp_path: Path, val_ids=None) -> tuple[Path, Path]:
    rows = labelled_rows({"a": 6, "b": 5, "c": 1})  # "c": one row, fine without K-fold's minimum class size
    train, val = rows[:8], rows[8:]
    if val_ids is not None:
        val = [dict(r, id=i) for r, i in zip(val, val_ids)]
    return write_csv(tmp_path / "train.csv", train), write_csv(tmp_path / "val.csv", val)


def test_the_val_rows_are_exactly_the_val_tables_and_form_the_one_fold(tmp_path: Path) -> None:
    train, val = _tables(tmp_path)
    cfg = DataConfig(train_csv=str(train), val_csv=str(val))
    td = load_training_data(cfg)
    val_ids = pd.read_csv(val, dtype=str)["id"].tolist()
    assert cfg.folds == 1
    assert td.products.ids[td.folds == 0].tolist() == val_ids
    assert set(td.folds[~np.isin(td.products.ids, val_ids)]) == {TRAIN_ONLY}
    assert fold_numbers(td.folds) == [0]
    assert len(td.products) == 12 and len(td.label_map) == 3


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"val_ids": ["p0", "p3", "v1", "v2"]}, r"val\.csv: 2 id\(s\) are also in the training table .*'p0', 'p3'"),
        ({"fold": True}, r"has a 'fold' column and data\.val_csv is set"),
        ({"no_label": True}, r"val\.csv: .*label"),
    ],
)
def test_a_val_table_that_cannot_make_a_split_is_an_error(tmp_path: Path, change: dict, error: str) -> None:
    train, val = _tables(tmp_path, change.get("val_ids"))
    df = pd.read_csv(val, dtype=str)
    if change.get("fold"):
        df.assign(fold=0).to_csv(val, index=False)
    if change.get("no_label"):
        df.drop(columns="categories").to_csv(val, index=False)
    with pytest.raises(ValueError, match=error):
        load_training_data(DataConfig(train_csv=str(train), val_csv=str(val)))


def test_data_folds_is_one_with_a_fixed_split_and_only_then() -> None:
    assert load_config(overrides=["data.val_csv=v.csv"]).data.folds == 1
    assert load_config(overrides=["data.val_csv=v.csv", "data.folds=1"]).data.folds == 1
    with pytest.raises(ConfigError, match=r"data\.folds=3 and data\.val_csv: a fixed split is one fold"):
        load_config(overrides=["data.val_csv=v.csv", "data.folds=3"])
    with pytest.raises(ConfigError, match=r"data\.folds=1: K-fold needs at least 2 folds.*data\.val_csv"):
        load_config(overrides=["data.folds=1"])
    with pytest.raises(ConfigError, match=r"data\.val_csv .* use it with data\.train_csv"):
        load_config(overrides=["data.val_csv=v.csv", "data.class_folder=tree"])


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """The demo catalogue's training table cut into train.csv and val.csv (same folder, same images)."""
    root = tmp_path_factory.mktemp("split")
    write_demo_catalogue(root, n_train=60, n_test=12, seed=3, image_size=32)
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df.iloc[:45].to_csv(root / "train.csv", index=False)
    df.iloc[45:].to_csv(root / "val.csv", index=False)
    return root


def _train(root: Path, tmp_path: Path, name: str, model: dict) -> Path:
    cfg = {
        "data": {"train_csv": str(root / "train.csv"), "val_csv": str(root / "val.csv")},
        "model": model,
        "train": {"epochs": 1, "batch_size": 16},
        "runtime": {"num_workers": 0},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    rd = tmp_path / name
    assert main(["-q", "train", "-c", str(tmp_path / f"{name}.yaml"), "--run-dir", str(rd)]) == 0
    return rd


@pytest.mark.parametrize("model", ["linear", "fusion"])
def test_a_fixed_split_run_trains_one_fold_whose_oof_is_the_val_table(split: Path, tmp_path: Path, model: str) -> None:
    rd = _train(split, tmp_path, "run", {"type": "linear"} if model == "linear" else TINY_FUSION)
    summary = json.loads((rd / "cv_summary.json").read_text())
    assert list(summary["folds"]) == ["0"]
    val_ids = pd.read_csv(split / "val.csv", dtype=str)["id"].tolist()
    oof = pd.read_csv(rd / "main" / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(val_ids) and set(oof["fold"]) == {0}
    folds = pd.read_csv(rd / "folds.csv", dtype={"id": str})
    assert sorted(folds.loc[folds["fold"] == 0, "id"]) == sorted(val_ids)
    assert (folds["fold"] == TRAIN_ONLY).sum() == 45, "the training table: trained on, never validated"
    out = tmp_path / "pred"
    assert main(["-q", "predict", str(rd), "--data", str(split / "test.csv"), "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "submission.csv")) == 12


def test_ensemble_and_report_take_fixed_split_runs(split: Path, tmp_path: Path) -> None:
    svm = _train(split, tmp_path, "svm", {"type": "linear"})
    lr = _train(split, tmp_path, "lr", {"type": "linear", "linear": {"classifier": "logreg"}})
    ens = tmp_path / "ens"
    assert main(["-q", "ensemble", "--fit", str(svm), str(lr), "--out", str(ens)]) == 0
    oof = pd.read_csv(ens / "ensemble" / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(pd.read_csv(split / "val.csv", dtype=str)["id"])
    assert main(["-q", "report", str(svm)]) == 0
    assert "over 15 " in (svm / "report.html").read_text()

"""Keys given a value that this config never reads are named in one warning before training."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aisle.config import load_config, save_config, validate_config
from aisle.config.inert import inert_keys
from aisle.data.demo import write_demo_catalogue
from aisle.training.cv import run_cv

ROOT = Path(__file__).resolve().parents[1]
TEXT = ["model.type=text", "model.image=null", "model.fusion=null"]
LINEAR = ["model.type=linear", "model.image=null", "model.text=null", "model.fusion=null"]

# (overrides, a key they give that does nothing, overrides under which the same key acts)
CASES = [
    (["model.fusion_dim=64"], "model.fusion_dim", ["model.fusion_dim=64", "model.fusion=gated"]),
    (["model.embed_dim=64"], "model.embed_dim", None),
    (["model.aux_loss_weight=0.5"], "model.aux_loss_weight", ["model.aux_loss_weight=0.5", "model.fusion=late"]),
    ([*TEXT, "model.modality_dropout=0.2"], "model.modality_dropout", ["model.modality_dropout=0.2"]),
    ([*TEXT, "model.image_size=128"], "model.image_size", ["model.image_size=128"]),
    ([*TEXT, "model.missing_image_embedding=false"], "model.missing_image_embedding", None),
    ([*LINEAR, "train.epochs=30"], "train.epochs", ["train.epochs=30"]),
    ([*LINEAR, "train.lr.default=0.01"], "train.lr", ["train.lr.default=0.01"]),
    ([*LINEAR, "model.dropout=0.3"], "model.dropout", ["model.dropout=0.3"]),
    ([*LINEAR, "train.label_smoothing=0.1"], "train.label_smoothing", ["train.label_smoothing=0.1"]),
    ([*LINEAR, "train.class_weights=inverse_sqrt"], None, None),  # the linear model weighs its rows with them
    (["data.decoded_size=96"], "data.decoded_size", ["data.decoded_size=96", "data.decoded_cache=true"]),
    (["runtime.feature_cache=false", "train.cache_views=[orig,hflip]"], "train.cache_views", None),
]


@pytest.mark.parametrize(("given", "key", "acting"), CASES)
def test_a_key_that_does_nothing_is_named_and_the_same_key_where_it_acts_is_not(given, key, acting):
    found = [f.split(" ")[0] for f in inert_keys(load_config(None, given))]
    assert found == ([key] if key else [])
    if acting is not None:
        assert inert_keys(load_config(None, acting)) == []


def test_keys_at_their_defaults_and_a_run_folders_full_config_name_nothing_new(tmp_path):
    assert inert_keys(load_config(None, LINEAR)) == []  # every gradient key at its default
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert inert_keys(cfg) == [], path.name  # the shipped configs set nothing that does nothing
        again = load_config(save_config(cfg, tmp_path / path.name))  # every key written out, as a run folder does
        assert inert_keys(again) == []


def test_train_warns_once_naming_the_keys(tmp_path, caplog):
    write_demo_catalogue(tmp_path / "cat", n_train=40, n_test=8, seed=1, image_size=32)
    raw = {
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "model": {"type": "linear"},
        "train": {"epochs": 30, "lr": {"default": 0.01}},
        "runtime": {"num_workers": 0},
    }
    with caplog.at_level(logging.WARNING):
        run_cv(validate_config(raw), tmp_path / "run")
    said = [r.getMessage() for r in caplog.records if "do nothing" in r.getMessage()]
    assert len(said) == 1 and "train.epochs (" in said[0] and "train.lr (" in said[0] and "remove them" in said[0]

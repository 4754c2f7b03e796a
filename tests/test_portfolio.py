"""``aisle train --preset cpu``: every member on one set of folds, blended, predicted with one call (tiny towers
saved offline under the preset's folder names stand in for the pretrained ones)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import timm
import yaml
from timm.models._hub import save_for_hf
from transformers import BertConfig, BertModel

from aisle.cli import main
from aisle.data.demo import write_demo_catalogue
from aisle.models.tokenizer import train_word_tokenizer
from aisle.training.portfolio import PRESETS


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_for_hf(timm.create_model("test_resnet", num_classes=10), root / "tf_efficientnet_lite0")
    tok = train_word_tokenizer(["red cotton shirt", "blue silk scarf", "wool cushion"], vocab_size=99)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=300,
    )
    BertModel(cfg).save_pretrained(root / "all-MiniLM-L6-v2")
    tok.save_pretrained(root / "all-MiniLM-L6-v2")
    return root


def test_presets_name_their_members():
    assert PRESETS.list() == ["cpu", "gpu"]
    assert [m.name for m in PRESETS.create("cpu")] == ["linear", "text", "image", "fusion"]
    hub = PRESETS.create("cpu")[1].model["text"]["name"]
    local = PRESETS.create("cpu", "/m")[1].model["text"]["name"]
    assert hub == "hf:sentence-transformers/all-MiniLM-L6-v2" and local == "hf:/m/all-MiniLM-L6-v2"


def test_the_heads_weigh_rare_classes_up_unless_the_user_says_otherwise(tmp_path):
    from aisle.config import validate_config
    from aisle.rundir import RunDir

    def weights(train: dict) -> dict[str, str]:
        base = validate_config({"data": {"train_csv": "t.csv"}, "train": train})
        return {m.name: m.config(base, RunDir(tmp_path)).train.class_weights for m in PRESETS.create("cpu")}

    assert weights({}) == {"linear": "auto", "text": "inverse_sqrt", "image": "inverse_sqrt", "fusion": "inverse_sqrt"}
    assert set(weights({"class_weights": "none"}).values()) == {"none"}


@pytest.mark.slow
def test_cpu_preset_trains_blends_and_predicts_with_one_call(tmp_path, models_dir):
    write_demo_catalogue(tmp_path / "cat", n_train=60, n_test=12, seed=9, image_size=32)
    cfg = {
        "name": "pf",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "train_csv": str(tmp_path / "cat" / "train.csv"),
            "test_csv": str(tmp_path / "cat" / "test.csv"),
            "folds": 2,
        },
        "runtime": {"num_workers": 0, "cache_dir": str(tmp_path / "cache")},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = [
        "-q",
        "train",
        "-c",
        str(tmp_path / "cfg.yaml"),
        "--preset",
        "cpu",
        "--models-dir",
        str(models_dir),
        "--set",
        "train.epochs=1",
    ]
    assert main(args) == 0
    run = tmp_path / "runs" / "pf"
    spec = json.loads((run / "ensemble.json").read_text())
    assert [m["name"] for m in spec["members"]] == ["linear", "text", "image", "fusion"]
    assert spec["method"] == "peers", "the preset weighs its members alike (README: How the preset weighs...)"
    folds = [pd.read_csv(run / "members" / m / "folds.csv", dtype=str) for m in ("linear", "text", "image", "fusion")]
    assert all(f.equals(folds[0]) for f in folds), "every member trains on the same folds"
    linear = yaml.safe_load((run / "members" / "linear" / "config.yaml").read_text())["model"]
    assert linear["image"]["name"].endswith("tf_efficientnet_lite0") and linear["image"]["trainable"] is False
    info = json.loads((run / "members" / "linear" / "main" / "fold_0" / "best.json").read_text())
    assert "image_weight" in info, "the linear member's folds chose a weight for the image features"
    assert main(["-q", "predict", str(run)]) == 0
    sub = pd.read_csv(run / "predictions" / "submission.csv", dtype=str)
    assert list(sub["id"]) == list(pd.read_csv(tmp_path / "cat" / "test.csv", dtype=str)["id"])
    assert main(args) == 2, "a finished portfolio is not overwritten silently"


def test_without_images_the_linear_member_reads_text_alone(tmp_path, models_dir):
    write_demo_catalogue(tmp_path / "cat", n_train=60, n_test=0, seed=9, image_size=32)
    shutil.rmtree(tmp_path / "cat" / "images")
    cfg = {
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "runtime": {"num_workers": 0, "cache_dir": str(tmp_path / "cache")},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "pf"
    args = ["-q", "train", "-c", str(tmp_path / "cfg.yaml"), "--preset", "cpu", "--models-dir", str(models_dir)]
    assert main([*args, "--run-dir", str(run), "--set", "train.epochs=1"]) == 0
    spec = json.loads((run / "ensemble.json").read_text())
    assert [m["name"] for m in spec["members"]] == ["linear", "text"]
    linear = yaml.safe_load((run / "members" / "linear" / "config.yaml").read_text())["model"]
    assert linear["type"] == "linear" and linear.get("image") is None


def test_a_preset_says_which_config_keys_it_does_not_use(tmp_path, caplog):
    from aisle.config import validate_config
    from aisle.training.portfolio import run_portfolio

    cfg = validate_config({"data": {"train_csv": str(tmp_path / "absent.csv")}, "model": {"type": "text"}})
    with pytest.raises(FileNotFoundError):
        run_portfolio(cfg, "cpu", tmp_path / "run")
    assert "settings of the config are not used: the model section (model.type: text)" in caplog.text
    caplog.clear()
    with pytest.raises(FileNotFoundError):
        run_portfolio(validate_config({"data": {"train_csv": str(tmp_path / "absent.csv")}}), "cpu", tmp_path / "r")
    assert "not used" not in caplog.text

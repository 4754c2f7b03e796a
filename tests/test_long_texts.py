"""Long texts: ``model.text.segments`` reads up to S consecutive windows of ``max_length`` tokens per text, encodes
each on its own and averages their pooled features (tiny BERT towers, built offline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from aisle.cache.keys import tower_key
from aisle.config import validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.inference.predict import load_fold_models, predict
from aisle.models.factory import create_classifier
from aisle.models.text_towers import tiny_bert_tower
from aisle.training.cv import run_cv

LONG = " ".join(f"word{i}" for i in range(40))
TEXTS = [LONG, "blue silk scarf", "red cotton shirt with long sleeves"]


@pytest.fixture(params=["mean", "cls"])
def towers(request):
    torch.manual_seed(0)
    seg = tiny_bert_tower(texts=[*TEXTS, LONG], max_length=12, segments=3, pooler=request.param).eval()
    one = tiny_bert_tower(texts=[*TEXTS, LONG], max_length=12, pooler=request.param).eval()
    one.load_state_dict(seg.state_dict())
    one.tokenizer = seg.tokenizer
    return seg, one


def test_a_long_text_is_the_mean_of_its_windows(towers):
    seg, _ = towers
    enc = seg.tokenize(TEXTS)
    assert enc["input_ids"].shape == (3, 36)
    with torch.no_grad():
        feats = seg(enc)
        windows = enc["input_ids"][0].view(3, 12), enc["attention_mask"][0].view(3, 12)
        assert windows[1][2].sum() > 0, "the long text fills three windows"
        by_hand = torch.stack([seg._pool(windows[0][i : i + 1], windows[1][i : i + 1])[0] for i in range(3)]).mean(0)
    assert torch.allclose(feats[0], by_hand, atol=1e-5)


def test_short_texts_read_as_one_window_alone_or_batched(towers):
    seg, one = towers
    with torch.no_grad():
        alone = seg(seg.tokenize(TEXTS[1:2]))
        batched = seg(seg.tokenize(TEXTS))[1:2]
        plain = one(one.tokenize(TEXTS[1:2]))
    assert torch.allclose(alone, batched, atol=1e-5) and torch.allclose(alone, plain, atol=1e-5)
    assert seg.fixed_length and not one.fixed_length, "windows sit at fixed offsets: batches are never trimmed"


def test_segments_change_the_feature_cache_key_only_when_used(towers):
    seg, one = towers
    assert tower_key(seg) != tower_key(one)
    one.segments = 1  # what a tower built before the key existed reads as: its cached features keep their key
    key = tower_key(one)
    del one.segments
    assert tower_key(one) == key


def test_a_text_run_with_segments_trains_and_predicts(tmp_path):
    write_demo_catalogue(tmp_path / "cat", n_train=40, n_test=10, seed=2, image_size=32)
    train = pd.read_csv(tmp_path / "cat" / "train.csv", dtype=str)
    train["description"] = [f"{t} " + " ".join(["filler"] * 30) + f" {t}" for t in train["title"]]
    train.to_csv(tmp_path / "cat" / "train.csv", index=False)
    cfg = {
        "name": "seg",
        "output_dir": str(tmp_path),
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "model": {"type": "text", "text": {"name": "tiny:bert", "max_length": 16, "segments": 3}, "head_hidden": 8},
        "train": {"epochs": 1, "batch_size": 8, "loggers": []},
        "runtime": {"num_workers": 0},
    }
    run_cv(validate_config(cfg), tmp_path / "run")
    pred = predict(tmp_path / "run", tmp_path / "cat" / "train.csv")
    oof = pd.read_csv(tmp_path / "run" / "main" / "oof.csv", dtype={"id": str}).set_index("id")
    assert list(pred.ids) == list(train["id"]) and np.isfinite(pred.probs).all()
    assert len(oof) == len(train)
    _, _, models = load_fold_models(tmp_path / "run", [0])  # the saved run reads its texts in three windows
    assert models[0].text_encoder.segments == 3
    built = create_classifier(validate_config(cfg).model, 3, list(train["description"]))
    assert built.text_encoder.segments == 3 and built.text_encoder.fixed_length
    towers = tmp_path / "run" / "assets" / "towers.json"  # a run from before the key acted: built with one window
    towers.write_text(towers.read_text().replace('"segments": 3', '"segments": 1'))
    _, _, models = load_fold_models(tmp_path / "run", [0])
    assert models[0].text_encoder.segments == 1, "a saved run reads its texts as its tower was trained to"


def test_an_image_model_predicts_a_table_without_the_text_columns_it_saw(tmp_path, caplog):
    """An image model reads no product text: the text columns its training table had are not asked of the input."""
    write_demo_catalogue(tmp_path / "cat", n_train=24, n_test=6, seed=4, image_size=32)
    cfg = {
        "name": "img",
        "output_dir": str(tmp_path),
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "model": {"type": "image", "image": {"name": "timm:test_resnet", "pretrained": False}, "image_size": 32},
        "train": {"epochs": 1, "batch_size": 8, "loggers": []},
        "runtime": {"num_workers": 0},
    }
    run_cv(validate_config(cfg), tmp_path / "run")
    test = pd.read_csv(tmp_path / "cat" / "test.csv", dtype=str)
    test.drop(columns=["title", "description"], errors="ignore").to_csv(tmp_path / "cat" / "bare.csv", index=False)
    pred = predict(tmp_path / "run", tmp_path / "cat" / "bare.csv")
    assert list(pred.ids) == list(test["id"]) and "predicting without them" not in caplog.text


def test_windows_run_at_the_longest_windows_width(towers, monkeypatch):
    """Short texts cost what they cost without segments: padding past the longest window is never encoded."""
    seg, _ = towers
    widths = []
    pool = seg._pool
    monkeypatch.setattr(seg, "_pool", lambda ids, mask: widths.append(ids.shape) or pool(ids, mask))
    enc = seg.tokenize(TEXTS[1:])
    with torch.no_grad():
        seg(enc)
    assert widths == [(2, int(enc["attention_mask"].sum(1).max()))] and widths[0][1] < 12

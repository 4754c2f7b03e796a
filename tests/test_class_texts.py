"""Class texts: reading and rendering, the class-text head, the clip loss, zero-shot and few-shot."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from aisle.cli import main
from aisle.config import ModelConfig, load_config
from aisle.data.class_texts import class_texts_for, read_class_texts, render_class_texts
from aisle.data.folds import few_shot_rows
from aisle.inference.zero_shot import create_zero_shot_model, zero_shot
from aisle.models.class_text import MAX_LOGIT_SCALE, ClassTextHead
from aisle.models.factory import create_classifier
from aisle.training.losses import LOSSES
from conftest import write_csv

# ---------------------------------------------------------------- reading and rendering


def test_class_texts_render_every_template_with_every_description_and_fall_back_to_the_name(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"猫": "一只猫", "dog": ["a dog", "a puppy"]}, ensure_ascii=False), encoding="utf-8")
    assert read_class_texts(path) == {"猫": ["一只猫"], "dog": ["a dog", "a puppy"]}
    texts = class_texts_for(["dog", "fish", "猫"], path, ["a photo of {description}", "{class_name}: {description}"])
    assert texts == [
        ["a photo of a dog", "a photo of a puppy", "dog: a dog", "dog: a puppy"],
        ["a photo of fish", "fish: fish"],  # no description: {description} is the class name
        ["a photo of 一只猫", "猫: 一只猫"],
    ]
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["a", "b"]))
    assert class_texts_for(["a", "b"], names, ["这是一张{class_name}的图片"]) == [
        ["这是一张a的图片"],
        ["这是一张b的图片"],
    ]


def test_a_description_of_a_class_the_data_lacks_is_an_error_or_with_allow_extra_a_warning(caplog):
    with pytest.raises(ValueError, match=r"does not have: \['cow'\].*allow_extra_class_texts"):
        render_class_texts(["cat", "dog"], {"cow": ["a cow"]}, ["{description}"])
    with caplog.at_level(logging.WARNING, logger="aisle"):
        assert render_class_texts(["cat", "dog"], {"cow": ["a cow"]}, ["{description}"], allow_extra=True) == [
            ["cat"],
            ["dog"],
        ]
    assert "cow" in caplog.text


@pytest.mark.parametrize(
    "template,match", [("a photo", "no field"), ("a {colour} {class_name}", "colour"), ("a {class_name", "not a valid")]
)
def test_bad_templates_are_named(template, match):
    with pytest.raises(ValueError, match=match):
        render_class_texts(["cat"], {}, [template])


@pytest.mark.parametrize("content,match", [('{"cats": 3}', "class 'cats'"), ("[1, 2]", "must be"), ("{", "JSON")])
def test_bad_class_text_files_are_named(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_class_texts(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_class_texts(tmp_path / "nope.json")


def test_config_keys_that_need_the_class_text_head():
    with pytest.raises(ValueError, match="train.loss clip .* model.head class_text"):
        load_config(None, ["train.loss=clip"])
    with pytest.raises(ValueError, match="data.class_texts is read by model.head class_text"):
        load_config(None, ["data.class_texts=x.json"])
    with pytest.raises(ValueError, match="class_text_tower"):
        load_config(None, ["model.type=image", "model.head=class_text"])
    with pytest.raises(ValueError, match="has no use for it"):
        load_config(None, ["model.class_text_tower.name=tiny:bert"])


# ---------------------------------------------------------------- the head


def test_class_text_head_logits_are_cosine_over_temperature_by_hand():
    torch.manual_seed(0)
    head = ClassTextHead([12, 7], text_dim=9, num_classes=4, embed_dim=5, temperature=0.07)  # random projections
    feats, classes = [torch.randn(3, 12), torch.randn(3, 7)], torch.randn(4, 9)
    logits, emb, cemb = head(feats, classes)
    p = sum(F.normalize(f @ proj.weight.T, dim=-1) for f, proj in zip(feats, head.product_proj))
    c = classes @ head.class_proj.weight.T
    cos = (p / p.norm(dim=-1, keepdim=True)) @ (c / c.norm(dim=-1, keepdim=True)).T
    assert torch.allclose(logits, cos / 0.07, atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3)) and torch.allclose(cemb.norm(dim=-1), torch.ones(4))


def test_projections_start_as_the_identity_so_step_zero_is_the_towers_cosine():
    head = ClassTextHead([6], text_dim=6, num_classes=3, embed_dim=10, temperature=0.5)
    x, t = torch.randn(2, 6), torch.randn(3, 6)
    cos = F.normalize(x, dim=-1) @ F.normalize(t, dim=-1).T
    assert torch.allclose(head([x], t)[0], cos / 0.5, atol=1e-5)


def test_temperature_fixed_has_no_gradient_learnable_has_one_and_is_clamped():
    fixed = ClassTextHead([4], 4, 3, 4, temperature=0.07)
    assert "logit_scale" not in dict(fixed.named_parameters()) and not fixed.logit_scale.requires_grad
    learned = ClassTextHead([4], 4, 3, 4, temperature=0.07, learn_temperature=True)
    learned([torch.randn(2, 4)], torch.randn(3, 4))[0].square().sum().backward()
    assert learned.logit_scale.grad is not None and learned.logit_scale.grad.abs() > 0
    assert math.isclose(float(learned.scale().detach()), 1 / 0.07, rel_tol=1e-5)
    hot = ClassTextHead([4], 4, 3, 4, temperature=0.001, learn_temperature=True)  # 1000 > CLIP's cap of 100
    assert float(hot.scale().detach()) == pytest.approx(MAX_LOGIT_SCALE)
    x, t = torch.randn(2, 4), torch.randn(3, 4)
    cos = F.normalize(x, dim=-1) @ F.normalize(t, dim=-1).T
    assert torch.allclose(hot([x], t)[0], cos * MAX_LOGIT_SCALE, atol=1e-4)


# ---------------------------------------------------------------- the clip loss


def _clip_out(products: torch.Tensor, classes: torch.Tensor, scale: float) -> dict:
    return {"embeddings": products, "class_embeddings": classes, "logit_scale": torch.tensor(scale)}


def test_clip_loss_equals_open_clip_with_one_item_per_class():
    from open_clip.loss import ClipLoss

    torch.manual_seed(1)
    products, classes = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(10, 8), dim=-1)
    y = torch.tensor([3, 0, 9, 4, 1, 7])
    ours = LOSSES.create("clip")(_clip_out(products, classes, 14.3), y)
    ref = ClipLoss()(products, classes[y], torch.tensor(14.3))
    assert torch.allclose(ours, ref, atol=1e-6)
    # repeated classes: multi-positive targets give the loss ClipLoss gives the (product, its class text) pairs
    y = torch.tensor([3, 0, 3, 4, 0, 3])
    ref = ClipLoss()(products, classes[y], torch.tensor(14.3))
    assert torch.allclose(LOSSES.create("clip")(_clip_out(products, classes, 14.3), y), ref, atol=1e-6)


def test_clip_loss_treats_same_class_pairs_as_positives():
    torch.manual_seed(2)
    products, classes = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    y = torch.tensor([0, 1, 0, 2, 0])
    s = 10.0
    logits = s * products @ classes[y].T
    by_hand = 0.0
    for m in (logits, logits.T):  # product -> text, text -> product
        logp = m.log_softmax(1)
        for i in range(5):
            positives = [j for j in range(5) if y[j] == y[i]]
            by_hand -= sum(logp[i, j] for j in positives) / len(positives) / 5
    assert torch.allclose(LOSSES.create("clip")(_clip_out(products, classes, s), y), by_hand / 2, atol=1e-6)


# ---------------------------------------------------------------- zero-shot and continuity


def test_zero_shot_puts_a_product_with_a_class_texts_own_words_first_every_row_once(tmp_path):
    classes = {"boots": "leather hiking boots", "mugs": "ceramic coffee mug", "lamps": "brass desk lamp"}
    ids = ["007", "7", "a,b", "x", "x", " spaced "]  # odd and duplicate-looking ids stay as they are
    titles = ["ceramic coffee mug", "brass desk lamp", "leather hiking boots", "brass desk lamp", "", "x"]
    table = write_csv(tmp_path / "t.csv", [{"id": i, "title": t} for i, t in zip(ids, titles)])
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    pred = zero_shot("tiny:bert", tmp_path / "classes.json", table)
    assert pred.ids.tolist() == ids and pred.probs.shape == (6, 3)
    assert pred.labels[:4] == ["mugs", "lamps", "boots", "lamps"]
    assert np.allclose(pred.probs.sum(1), 1)
    out = tmp_path / "out"
    args = ["--classes", str(tmp_path / "classes.json"), "--data", str(table), "--template", "{description}"]
    code = main(["zero-shot", "--model", "tiny:bert", *args, "--out", str(out)])
    assert code == 0
    sub = pd.read_csv(out / "submission.csv", dtype=str, keep_default_na=False)
    probs = pd.read_csv(out / "probabilities.csv", dtype={"id": str}, keep_default_na=False)
    assert sub["id"].tolist() == ids and probs["id"].tolist() == ids
    assert list(probs.columns) == ["id", *sorted(classes)]
    assert sub["label"].tolist()[:4] == ["mugs", "lamps", "boots", "lamps"]


def test_zero_shot_a_folder_of_images_with_a_dual_encoder_one_row_per_file(tmp_path):
    """A folder of images (one folder down too) is classified as the same images named by an id table."""
    from tests.conftest import write_image

    colours = {"a": (200, 30, 30), "b": (30, 200, 30), "sub/c": (30, 30, 200)}
    for name, colour in colours.items():
        write_image(tmp_path / "photos" / f"{name}.png", colour, size=32)
        write_image(tmp_path / "flat" / "images" / f"{name.replace('/', '_')}.png", colour, size=32)
    (tmp_path / "photos" / "a.txt").write_text("a red thing")  # a text beside an image is its text
    classes = ["red", "green", "blue"]
    torch.manual_seed(0)  # the tiny model's random weights
    pred = zero_shot("hf-clip:tiny", classes, tmp_path / "photos", ["a photo of {class_name}"], modality="both")
    assert pred.ids.tolist() == ["a.png", "b.png", "sub/c.png"] and np.allclose(pred.probs.sum(1), 1)
    rows = [{"id": n.replace("/", "_"), "text": "a red thing" if n == "a" else ""} for n in colours]
    torch.manual_seed(0)
    by_table = zero_shot(
        "hf-clip:tiny",
        classes,
        write_csv(tmp_path / "flat" / "t.csv", rows),
        ["a photo of {class_name}"],
        modality="both",
    )
    np.testing.assert_allclose(pred.probs, by_table.probs, atol=1e-5)


def test_zero_shot_python_api_and_a_text_tower_refuses_images(tmp_path):
    from aisle import zero_shot as api_zero_shot

    df = pd.DataFrame({"id": ["a", "b"], "title": ["red wool", "blue silk"]}, index=[10, 20])
    proba = api_zero_shot(df, "tiny:bert", {"wool": "red wool", "silk": "blue silk"}, progress=False)
    assert list(proba.index) == [10, 20] and proba.idxmax(axis=1).tolist() == ["wool", "silk"]
    with pytest.raises(ValueError, match="text tower"):
        api_zero_shot(df, "tiny:bert", ["wool", "silk"], modality="image", progress=False)


def test_a_class_text_model_at_step_zero_predicts_what_zero_shot_predicts():
    texts = [["red wool"], ["blue silk", "silky"], ["green tent"]]
    vocab = ["a red wool knit", "blue silk", "silky", "green tent", "red wool"]
    mcfg = ModelConfig.model_validate(
        {"type": "dual", "dual": {"name": "hf-clip:tiny"}, "head": "class_text", "embed_dim": 24, "image_size": 32}
    )
    trained = create_classifier(mcfg, 3, vocab[:1], class_texts=texts).eval()
    zs, modality = create_zero_shot_model("hf-clip:tiny", texts, "both", 0.07, 77, vocab)
    assert modality == "both"
    towers = {k: v for k, v in trained.state_dict().items() if k.startswith(("image_encoder", "text_encoder"))}
    zs.load_state_dict(towers, strict=False)  # the same towers; class texts, head and projections its own
    zs.refresh_class_texts()
    tokens = trained.text_encoder.tokenize(["a red wool knit", "silky", "green tent"])
    batch = {"image": torch.rand(3, 1, 3, 32, 32), "image_mask": torch.ones(3, 1, dtype=torch.bool), **tokens}
    with torch.no_grad():
        logits = trained(batch)["logits"]
        assert logits.std() > 0.1  # the class texts are encoded (a zero buffer would score every class alike)
        assert torch.allclose(logits, zs(batch)["logits"], atol=1e-4)


@pytest.mark.parametrize("trainable", [False, True])
def test_a_frozen_text_tower_encodes_class_texts_once_a_training_one_every_step(trainable, monkeypatch):
    from aisle.models.factory import set_trainable

    mcfg = ModelConfig.model_validate(
        {"type": "text", "text": {"name": "tiny:bert", "max_length": 16}, "head": "class_text", "embed_dim": 40}
    )
    model = create_classifier(mcfg, 2, ["red wool", "blue silk"], class_texts=[["red wool"], ["blue silk"]])
    set_trainable(model.text_encoder, trainable)
    calls = []
    encode = model.text_encoder.forward
    monkeypatch.setattr(model.text_encoder, "forward", lambda b: calls.append(len(b["input_ids"])) or encode(b))
    batch = model.text_encoder.tokenize(["red wool", "blue silk", "wool"])
    model.train()
    model(batch)["logits"].sum().backward()
    # products are always encoded (3 rows); the 2 class texts only while the tower trains
    assert calls == ([3, 2] if trainable else [3])
    emb = model.text_encoder.model.embeddings.word_embeddings.weight
    assert (emb.grad is not None) == trainable
    before = model.head.class_features.clone()
    model.eval()
    with torch.no_grad():
        model(batch)
    assert torch.equal(model.head.class_features, before)  # eval reads the buffer


# ---------------------------------------------------------------- few-shot


def test_few_shot_rows_keep_k_per_class_with_a_fixed_seed():
    y = np.array([0] * 10 + [1] * 3 + [2] * 6)
    rows = np.arange(2, 19)  # rows 0 and 1 are another fold's validation rows
    kept = few_shot_rows(y, rows, 4, seed=5)
    assert np.bincount(y[kept]).tolist() == [4, 3, 4] and set(kept) <= set(rows)
    assert (kept == few_shot_rows(y, rows, 4, seed=5)).all() and (np.diff(kept) > 0).all()
    assert not (kept == few_shot_rows(y, rows, 4, seed=6)).all()


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory) -> Path:
    """A folder-per-class tree of the demo catalogue's images, and a folder of test images with their ids."""
    from aisle.data.demo import write_demo_catalogue

    cat = tmp_path_factory.mktemp("demo")
    write_demo_catalogue(cat, n_train=36, n_test=8, seed=3, image_size=32, n_broken=0)
    tree = cat / "tree"
    for row in pd.read_csv(cat / "train.csv", dtype=str).itertuples():
        (tree / row.categories).mkdir(parents=True, exist_ok=True)
        (tree / row.categories / f"{row.id}.jpg").write_bytes((cat / "images" / f"{row.id}.jpg").read_bytes())
    return cat


def test_shots_per_class_cut_each_folds_training_rows_not_its_validation_rows(class_tree):
    from aisle.config import DataConfig
    from aisle.data.prepare import load_training_data

    td = load_training_data(DataConfig(class_folder=str(class_tree / "tree"), folds=2, shots_per_class=2))
    for fold in (0, 1):
        rows = td.train_rows(fold)
        assert set(rows).isdisjoint(np.flatnonzero(td.folds == fold))
        assert np.bincount(td.y[rows]).max() == 2 and len(set(td.y[rows])) == len(td.label_map)
    assert (td.train_rows(0) == td.train_rows(0)).all()


def test_train_class_text_head_on_a_class_tree_with_chinese_texts_then_predict(class_tree, tmp_path, capsys):
    classes = sorted(p.name for p in (class_tree / "tree").iterdir())
    desc = {c: f"{c} 的商品" for c in classes[:4]}  # two classes without a description use their name
    (tmp_path / "classes.json").write_text(json.dumps(desc, ensure_ascii=False), encoding="utf-8")
    stages = '[{"name":"clip","loss":"clip"},{"name":"ce","init_from":"clip"}]'
    common = [
        f"data.class_folder={class_tree / 'tree'}",
        "data.folds=2",
        f"data.class_texts={tmp_path / 'classes.json'}",
        'data.class_text_templates=["这是一张{class_name}的图片", "{description}"]',
        "model.type=image",
        "model.image.name=timm:test_resnet",
        "model.image.pretrained=false",
        "model.image_size=32",
        "model.head=class_text",
        "model.class_text_tower.name=tiny:bert",
        "model.class_text_tower.max_length=16",
        "model.temperature=0.07",
        "model.embed_dim=16",
        "train.epochs=1",
        "train.batch_size=8",
        "train.weighted_sampling=true",
        f"train.stages={stages}",
        "runtime.num_workers=0",
    ]
    sets = [a for s in common for a in ("--set", s)]
    rd = tmp_path / "run"
    assert main(["train", *sets, "--run-dir", str(rd)]) == 0
    summary = json.loads((rd / "cv_summary.json").read_text())
    assert set(summary["stages"]) == {"clip", "ce"} and 0 <= summary["mean"]["acc"] <= 1
    towers = json.loads((rd / "assets" / "towers.json").read_text())
    assert towers["class_texts"][0] == [f"这是一张{classes[0]}的图片", f"{classes[0]} 的商品"]
    test = pd.read_csv(class_tree / "test.csv", dtype=str)[["id"]].assign(text="")  # the tree's text column
    write_csv(tmp_path / "test.csv", test.to_dict("records"))
    out = tmp_path / "pred"
    args = ["predict", str(rd), "--data", str(tmp_path / "test.csv"), "--image-dir", str(class_tree / "images")]
    assert main([*args, "--out", str(out), "--tta", "hflip"]) == 0
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert sub["id"].tolist() == test["id"].tolist() and set(sub["label"]) <= set(classes)
    _predict_a_folder_of_images(rd, class_tree, test["id"].tolist(), out, tmp_path / "photos")
    # the class texts are a buffer: the exported graph has no text tower in it and matches torch
    sample = ["--data", str(tmp_path / "test.csv"), "--image-dir", str(class_tree / "images"), "--rows", "4"]
    assert main(["export", str(rd), *sample]) == 0
    bad = tmp_path / "extra.json"
    bad.write_text(json.dumps({"unicorns": "not in the data"}))
    extra = [a for s in [*common[:2], f"data.class_texts={bad}", *common[4:]] for a in ("--set", s)]
    capsys.readouterr()
    assert main(["train", *extra, "--run-dir", str(tmp_path / "run2")]) == 2
    assert "['unicorns']" in capsys.readouterr().err


def _predict_a_folder_of_images(rd: Path, class_tree: Path, ids: list[str], by_table: Path, folder: Path) -> None:
    """``aisle predict RUN --data FOLDER``: one row per image file (one folder down too), its id the file's path
    in the folder, and the same probabilities as the id table + image folder gave for that image."""
    names = [f"{pid}.jpg" if i % 2 else f"sub/{pid}.jpg" for i, pid in enumerate(ids)]
    for pid, name in zip(ids, names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(class_tree / "images" / f"{pid}.jpg", folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = folder.parent / "pred-folder"
    assert main(["predict", str(rd), "--data", str(folder), "--out", str(out), "--tta", "hflip"]) == 0
    got = pd.read_csv(out / "probabilities.csv", dtype={"id": str}).set_index("id")
    assert sorted(got.index) == sorted(names) and len(got) == len(ids)
    want = pd.read_csv(by_table / "probabilities.csv", dtype={"id": str}).set_index("id")
    want.index = [dict(zip(ids, names))[i] for i in want.index]
    np.testing.assert_allclose(got.loc[want.index].to_numpy(float), want.to_numpy(float), atol=1e-5)

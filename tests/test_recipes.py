"""Every shipped recipe (``configs/recipes/**/*.yaml``) loads and trains one short fold with tiny towers swapped in.

The recipes name hub models (ViT-L, SigLIP so400m, ConvNeXt + BERT) that tests cannot download; each tower is
replaced by the offline preset of its family, the images shrink to 32 px and the data to a few demo rows. Every
other key (fusion, head sizes, stages and their learning rates, augmentation, early stopping, TTA) stays as
written. A recipe added later is picked up by the glob. The five-way fusion comparison (``fusion_comparison/``, one
fixed split) trains once and ``aisle compare`` draws its five runs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from aisle.config import validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.models import DUAL_ENCODERS
from conftest import REPO_ROOT, save_tiny_clip

RECIPE_DIR = REPO_ROOT / "configs" / "recipes"
RECIPES = sorted(RECIPE_DIR.rglob("*.yaml"))
COMPARISON = sorted((RECIPE_DIR / "fusion_comparison").glob("*.yaml"))  # concat / gated / late / CLIP / BLIP

# tower family (the name's prefix) -> its tiny offline preset; a dual encoder family uses its own ``:tiny``
TINY_IMAGE = {"timm": "timm:test_resnet"}
TINY_TEXT = {"hf": "tiny:bert", "tiny": "tiny:bert"}
# model.class_text_tower: an hf: checkpoint becomes a whole tiny CLIPModel saved by the fixture (read as its text side)
TINY_CLASS_TEXT = {"hf": "hf:{catalogue}/tiny-clip", "tiny": "tiny:bert"}


def _tiny(name: str, presets: dict[str, str], section: str) -> str:
    prefix = name.partition(":")[0]
    if section == "dual" and prefix in DUAL_ENCODERS:
        return f"{prefix}:tiny"
    if prefix not in presets:
        raise AssertionError(f"model.{section}.name {name!r}: no tiny preset for {prefix!r} in {__name__}; add one")
    return presets[prefix]


def tiny_version(raw: dict, catalogue: Path, tmp_path: Path) -> dict:
    """The recipe with offline towers, 32 px images, the demo rows, fold 0 of 2 and one epoch per stage."""
    model = raw["model"]
    for section, presets in (("image", TINY_IMAGE), ("text", TINY_TEXT), ("dual", {})):
        tower = model.get(section)
        if tower is not None and not str(tower.get("name", "")).startswith("ngram:"):
            tower.update(name=_tiny(tower["name"], presets, section), pretrained=False)
            if "max_length" in tower:
                tower["max_length"] = min(tower["max_length"], 32)
    texts = model.get("class_text_tower")
    if texts is not None:  # pretrained as written: the tiny CLIP's saved weights load
        texts.update(name=_tiny(texts["name"], TINY_CLASS_TEXT, "class_text_tower").format(catalogue=catalogue))
        texts["max_length"] = min(texts.get("max_length", 32), 32)
    model["image_size"] = 32
    if raw.get("infer", {}).get("scales"):  # its own size and one 8 px patch more, as 224 and 256 are for a ViT-L/14
        raw["infer"]["scales"] = [32, 40]
    if "val_csv" in raw["data"]:  # a fixed split: the catalogue's, written by the fixture
        raw["data"].update(train_csv=str(catalogue / "fit.csv"), val_csv=str(catalogue / "val.csv"), test_csv=None)
    elif "class_folder" in raw["data"]:  # folder-per-class: the catalogue's images as a class tree
        raw["data"].update(
            class_folder=str(catalogue / "tree"), class_texts=str(catalogue / "class_texts.json"), folds=2
        )
    else:
        raw["data"].update(train_csv=str(catalogue / "train.csv"), test_csv=None, folds=2)
    train = raw.setdefault("train", {})
    train.update(folds=[0], epochs=1, precision="32-true")
    for stage in train.get("stages", []):
        stage["epochs"] = 1
    raw["runtime"] = {"accelerator": "cpu", "num_workers": 0, "cache_dir": str(tmp_path / "cache")}
    return raw


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recipes") / "cat"
    write_demo_catalogue(out, n_train=24, n_test=4, seed=3, image_size=32)
    table = pd.read_csv(out / "train.csv", dtype=str)
    val = table.groupby("categories", sort=False).head(1)  # one validation row per class, the rest train
    val.to_csv(out / "val.csv", index=False)
    table.drop(index=val.index).to_csv(out / "fit.csv", index=False)
    for row in table.itertuples():  # the images PIL can read (the demo breaks a few), as <class>/<id>.jpg
        folder = out / "tree" / str(row.categories)
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError), Image.open(out / "images" / f"{row.id}.jpg") as im:
            im.convert("RGB").save(folder / f"{row.id}.jpg")
    test = pd.read_csv(out / "test.csv", dtype=str)  # a class tree's text column is "text" (<stem>.txt files)
    test.assign(text=test["title"])[["id", "text"]].to_csv(out / "test_text.csv", index=False)
    descriptions = {"Wool Tent": "一顶羊毛帐篷", "Silk Box": "a small box covered in silk"}  # the rest: names only
    (out / "class_texts.json").write_text(json.dumps(descriptions, ensure_ascii=False), encoding="utf-8")
    save_tiny_clip(out / "tiny-clip", [*table["categories"].unique(), *descriptions.values(), "a photo of a"])
    return out


def _recipe_id(path: Path) -> str:
    return path.relative_to(RECIPE_DIR).with_suffix("").as_posix()


def _train(path: Path, catalogue: Path, tmp_path: Path) -> Path:
    from aisle.training import run_cv

    raw = yaml.safe_load(path.read_text())
    run_cv(validate_config(tiny_version(raw, catalogue, tmp_path)), tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def comparison_runs(catalogue: Path, tmp_path_factory) -> dict[Path, Path]:
    """The five models of the fusion comparison, each trained once (one epoch) on the catalogue's fixed split;
    their run folders are named after the files, as ``aisle train`` names them (``name`` in each file)."""
    runs = {}
    for path in COMPARISON:
        tmp = tmp_path_factory.mktemp(path.stem)
        runs[path] = _train(path, catalogue, tmp).rename(tmp / yaml.safe_load(path.read_text())["name"])
    return runs


def test_recipes_are_shipped() -> None:
    assert {_recipe_id(p) for p in RECIPES} >= {
        "goods_fusion",
        "clip_report_vitl14",
        "goods_clas_siglip",
        "clip_guide",
        *(f"fusion_comparison/{m}" for m in ("concat", "gated", "late", "clip", "blip")),
    }


@pytest.mark.parametrize("path", RECIPES, ids=_recipe_id)
def test_each_recipe_trains_a_fold_with_tiny_towers(
    path: Path, catalogue: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Train, then predict the test rows with the recipe's inference settings (TTA, scales, fold averaging)."""
    from aisle.inference import predict
    from aisle.rundir import DEFAULT_STAGE, RunDir

    raw = yaml.safe_load(path.read_text())
    test = catalogue / ("test_text.csv" if "class_folder" in raw["data"] else "test.csv")
    cfg = validate_config(tiny_version(raw, catalogue, tmp_path))
    # the comparison's models train once, for this test and the comparison's
    run = request.getfixturevalue("comparison_runs")[path] if path in COMPARISON else _train(path, catalogue, tmp_path)
    rd = RunDir(run)
    for stage in [s.name for s in cfg.train.stages] or [DEFAULT_STAGE]:
        oof = pd.read_csv(rd.stage_oof(stage), dtype={"id": str})
        assert len(oof) > 0 and oof["fold"].eq(0).all(), stage
    assert rd.summary.is_file()
    pred = predict(run, test)
    assert len(pred.ids) == 4 and np.isfinite(pred.probs).all() and np.allclose(pred.probs.sum(1), 1, atol=1e-4)


def test_the_fusion_comparison_is_five_models_on_one_fixed_split() -> None:
    raws = {p.stem: yaml.safe_load(p.read_text()) for p in COMPARISON}
    assert sorted(raws) == ["blip", "clip", "concat", "gated", "late"]
    assert all(r["data"] == raws["concat"]["data"] and r["data"].get("val_csv") for r in raws.values())
    assert all(r["train"]["epochs"] == raws["concat"]["train"]["epochs"] for r in raws.values())
    models = {k: validate_config(r).model for k, r in raws.items()}
    assert {k: models[k].fusion_kind for k in ("concat", "gated", "late")} == {
        m: m for m in ("concat", "gated", "late")
    }
    assert models["clip"].dual_tower.name.partition(":")[0] in ("hf-clip", "open_clip")
    assert models["blip"].dual_tower.name.partition(":")[0] == "hf-blip"


def test_aisle_compare_draws_the_fusion_comparison(comparison_runs: dict[Path, Path], catalogue: Path, tmp_path: Path):
    """The five runs (tiny towers, one epoch, the catalogue's fixed split) -> ``aisle compare``: five rows, every
    one validated on the same rows, and its pictures."""
    from aisle.cli import main
    from aisle.rundir import DEFAULT_STAGE, RunDir

    runs = list(comparison_runs.values())
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert sorted(table["run"]) == ["blip", "clip", "concat", "gated", "late"] and table["folds"].eq(1).all()
    assert sorted(table["fusion"]) == ["concat", "concat", "concat", "gated", "late"]
    assert np.isfinite(table["macro_f1"]).all()
    for picture in ("table.png", "radar.png", "params_vs_time.png", "curves.png"):
        assert (tmp_path / "cmp" / picture).stat().st_size > 0, picture
    val_ids = sorted(pd.read_csv(catalogue / "val.csv", dtype=str)["id"])
    for run in runs:
        assert sorted(pd.read_csv(RunDir(run).stage_oof(DEFAULT_STAGE), dtype={"id": str})["id"]) == val_ids, run

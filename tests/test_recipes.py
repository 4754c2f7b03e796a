"""Every shipped recipe (``configs/recipes/*.yaml``) loads and trains one short fold with tiny towers swapped in.

The recipes name hub models (ViT-L, SigLIP so400m, ConvNeXt + BERT) that tests cannot download; each tower is
replaced by the offline preset of its family, the images shrink to 32 px and the data to a few demo rows. Every
other key (fusion, head sizes, stages and their learning rates, augmentation, early stopping, TTA) stays as
written. A recipe added later is picked up by the glob.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from aisle.config import validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.models import DUAL_ENCODERS
from conftest import REPO_ROOT

RECIPES = sorted((REPO_ROOT / "configs" / "recipes").glob("*.yaml"))

# tower family (the name's prefix) -> its tiny offline preset; a dual encoder family uses its own ``:tiny``
TINY_IMAGE = {"timm": "timm:test_resnet"}
TINY_TEXT = {"hf": "tiny:bert", "tiny": "tiny:bert"}


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
    model["image_size"] = 32
    if raw.get("infer", {}).get("scales"):  # its own size and one 8 px patch more, as 224 and 256 are for a ViT-L/14
        raw["infer"]["scales"] = [32, 40]
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
    return out


def test_recipes_are_shipped() -> None:
    assert {p.stem for p in RECIPES} >= {"goods_fusion", "clip_report_vitl14", "goods_clas_siglip"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_trains_a_fold_with_tiny_towers(path: Path, catalogue: Path, tmp_path: Path) -> None:
    """Train, then predict the test rows with the recipe's inference settings (TTA, scales, fold averaging)."""
    from aisle.inference import predict
    from aisle.rundir import DEFAULT_STAGE, RunDir
    from aisle.training import run_cv

    raw = yaml.safe_load(path.read_text())
    cfg = validate_config(tiny_version(raw, catalogue, tmp_path))
    run_cv(cfg, tmp_path / "run")
    rd = RunDir(tmp_path / "run")
    for stage in [s.name for s in cfg.train.stages] or [DEFAULT_STAGE]:
        oof = pd.read_csv(rd.stage_oof(stage), dtype={"id": str})
        assert len(oof) > 0 and oof["fold"].eq(0).all(), stage
    assert rd.summary.is_file()
    pred = predict(tmp_path / "run", catalogue / "test.csv")
    assert len(pred.ids) == 4 and np.isfinite(pred.probs).all() and np.allclose(pred.probs.sum(1), 1, atol=1e-4)

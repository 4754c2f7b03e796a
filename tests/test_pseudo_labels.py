"""Pseudo-labels: ``aisle pseudo-label`` writes confident test rows; ``data.pseudo_labels`` trains on them in every
fold's training part and nowhere else (validation rows, out-of-fold predictions, CV scores, ensemble fits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import aisle.training.fold as fold_mod
from aisle.cli import main
from aisle.config import validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.inference.predict import predict
from aisle.inference.pseudo_label import pseudo_label, select_confident
from aisle.pseudo_rounds import pseudo_rounds
from aisle.training.blend import fit_ensemble
from aisle.training.cv import run_cv
from aisle.training.losses import CrossEntropyCriterion


def _cfg(cat: Path, out: Path, model: dict | None = None, **data) -> dict:
    return {
        "name": "pl",
        "output_dir": str(out),
        "data": {"train_csv": str(cat / "train.csv"), "folds": 2, **data},
        "model": model
        or {
            "type": "fusion",
            "image": {"name": "timm:test_resnet", "pretrained": False},
            "text": {"name": "ngram:word1-2,char2-4", "embed_dim": 16},
            "image_size": 32,
            "fusion_dim": 16,
            "head_hidden": 16,
        },
        "train": {"epochs": 2, "batch_size": 16, "lr": {"default": 3e-3}, "loggers": []},
        "runtime": {"num_workers": 0, "cache_dir": str(out / "cache")},
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """A demo catalogue and a finished 2-fold fusion run on it."""
    root = tmp_path_factory.mktemp("pl")
    write_demo_catalogue(root / "cat", n_train=48, n_test=24, seed=3, image_size=32)
    run_cv(validate_config(_cfg(root / "cat", root)), root / "base")
    return root / "cat", root / "base"


def test_select_confident_by_threshold_and_per_class_cap():
    probs = np.array([[0.97, 0.03], [0.5, 0.5], [0.99, 0.01], [0.02, 0.98], [0.96, 0.04]])
    assert select_confident(probs, 0.95).tolist() == [0, 2, 3, 4]
    assert select_confident(probs, 0.95, max_per_class=1).tolist() == [2, 3]  # the most confident per class
    assert select_confident(probs, 0.999).tolist() == []


def test_the_table_holds_the_runs_confident_predictions(base, tmp_path):
    cat, run = base
    pred = predict(run, cat / "test.csv")
    threshold = float(np.median(pred.probs.max(1)))
    out = tmp_path / "pl.csv"
    assert main(["pseudo-label", str(run), "--data", str(cat / "test.csv"), "--threshold", str(threshold),
                 "--soft", "--out", str(out)]) == 0  # fmt: skip
    table = pd.read_csv(out, dtype={"id": str})
    keep = pred.probs.max(1) >= threshold
    assert table["id"].tolist() == list(pred.ids[keep]), "the confident rows, in input order"
    assert table["categories"].tolist() == list(np.asarray(pred.labels, dtype=object)[keep])
    assert np.allclose(table["confidence"], pred.probs.max(1)[keep], atol=1e-6)
    soft = table[[f"soft:{c}" for c in pred.label_map.classes]].to_numpy()
    assert np.allclose(soft, pred.probs[keep], atol=1e-6)
    test = pd.read_csv(cat / "test.csv", dtype=str).set_index("id")
    assert table["title"].tolist() == test.loc[table["id"], "title"].tolist()
    paths = [p for ps in table["image_paths"].dropna() for p in ps.split(";")]  # several images: ";"-joined
    assert paths and all(Path(p).is_file() for p in paths), [p for p in paths if not Path(p).is_file()]
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["rows"] == int(keep.sum()) and settings["threshold"] == threshold


def _spy_loaders(monkeypatch) -> list[tuple[bool, list[str]]]:
    """Every loader a fold builds: (train?, its ids)."""
    seen: list[tuple[bool, list[str]]] = []
    real = fold_mod.build_loader

    def spy(products, y, opts, train, **kw):
        seen.append((train, list(products.ids)))
        return real(products, y, opts, train, **kw)

    monkeypatch.setattr(fold_mod, "build_loader", spy)
    return seen


def test_pseudo_rows_train_in_every_fold_and_are_never_scored(base, tmp_path, monkeypatch):
    cat, run = base
    table = pseudo_label(run, cat / "test.csv", threshold=1e-6, soft=True, out=tmp_path / "pl.csv")
    pseudo_ids = set(pd.read_csv(table.path, dtype={"id": str})["id"])
    assert len(pseudo_ids) == 24
    seen = _spy_loaders(monkeypatch)
    modules = []
    real_module = fold_mod.ClassifierModule
    monkeypatch.setattr(fold_mod, "ClassifierModule", lambda *a: modules.append(real_module(*a)) or modules[-1])
    cfg = _cfg(cat, tmp_path, pseudo_labels=str(table.path))
    cfg["train"]["pseudo_weight"] = 0.5
    run_cv(validate_config(cfg), tmp_path / "with")
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str})
    assert pd.read_csv(tmp_path / "with" / "folds.csv", dtype={"id": str}).equals(folds), "same folds, real rows"
    for k in (0, 1):  # fold by fold: train = the other fold's real rows + every pseudo row; val = the fold's own
        (tr, train_ids), (va, val_ids) = seen[2 * k], seen[2 * k + 1]
        assert tr and not va
        assert set(train_ids) == set(folds.loc[folds["fold"] != k, "id"]) | pseudo_ids
        assert val_ids == folds.loc[folds["fold"] == k, "id"].tolist()
        oof = pd.read_csv(tmp_path / "with" / "main" / f"fold_{k}" / "oof.csv", dtype={"id": str})
        base_oof = pd.read_csv(run / "main" / f"fold_{k}" / "oof.csv", dtype={"id": str})
        assert oof["id"].tolist() == base_oof["id"].tolist(), "the validation rows of a run without them"
        targets = modules[k].row_targets
        pseudo = np.isin(train_ids, list(pseudo_ids))
        assert torch.equal(targets.weights, torch.tensor(np.where(pseudo, 0.5, 1.0), dtype=torch.float32))
        soft = pd.read_csv(table.path, dtype={"id": str}).set_index("id").filter(like="soft:")
        first = int(np.flatnonzero(pseudo)[0])
        assert np.allclose(targets.targets[first].numpy(), soft.loc[train_ids[first]].to_numpy(), atol=1e-6)
    stage_oof = pd.read_csv(tmp_path / "with" / "main" / "oof.csv", dtype={"id": str})
    assert not pseudo_ids & set(stage_oof["id"]) and len(stage_oof) == len(folds)
    summary = json.loads((tmp_path / "with" / "cv_summary.json").read_text())
    first_fold = stage_oof[stage_oof["fold"] == 0]
    acc = (first_fold["label"] == first_fold["pred"]).mean()
    assert summary["folds"]["0"]["acc"] == pytest.approx(acc), "CV scores are the real rows' out-of-fold ones"
    rows = pd.read_csv(tmp_path / "with" / "pseudo_rows.csv", dtype={"id": str})
    assert set(rows["id"]) == pseudo_ids
    ens = fit_ensemble([tmp_path / "with", run], tmp_path / "ens")
    ens_oof = pd.read_csv(tmp_path / "ens" / "ensemble" / "oof.csv", dtype={"id": str})
    assert sorted(ens_oof["id"]) == sorted(folds["id"]) and ens["ensemble"]["members"][0]["name"]


def test_soft_target_loss_matches_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    target = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    weight = torch.tensor([0.5, 1.0])
    logp = torch.log_softmax(logits, 1)
    hand = (weight * -(target * logp).sum(1)).sum() / weight.sum()
    loss = CrossEntropyCriterion().soft({"logits": logits}, target, weight)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
    # one-hot targets with weight 1 are exactly the hard-label loss, class weights and smoothing included
    crit = CrossEntropyCriterion(np.array([2.0, 0.5, 1.0]), label_smoothing=0.1)
    y = torch.tensor([0, 1])
    onehot = F.one_hot(y, 3).float()
    assert crit.soft({"logits": logits}, onehot, torch.ones(2)).item() == pytest.approx(
        crit({"logits": logits}, y).item(), rel=1e-6
    )


def _table(base, tmp_path) -> pd.DataFrame:
    cat, run = base
    return pd.read_csv(pseudo_label(run, cat / "test.csv", 1e-6, out=tmp_path / "t.csv").path, dtype=str)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, train: t.assign(id=[train["id"].iloc[0], *t["id"].iloc[1:]]), "also in the training table"),
        (lambda t, train: t.assign(categories="no such class"), "not classes of the run"),
        (lambda t, train: t.assign(**{"soft:x": "0.5"}), "not (or not all) the run's classes"),
        (lambda t, train: t.iloc[:0], "has no rows"),
        (lambda t, train: t.drop(columns=["title"]), "missing ['title']"),
    ],
    ids=["training-id", "unknown-label", "soft-columns", "empty", "text-column"],
)
def test_bad_pseudo_tables_are_refused_by_name(base, tmp_path, change, message):
    cat, _ = base
    train = pd.read_csv(cat / "train.csv", dtype=str)
    change(_table(base, tmp_path), train).to_csv(tmp_path / "bad.csv", index=False)
    cfg = validate_config(_cfg(cat, tmp_path, pseudo_labels=str(tmp_path / "bad.csv")))
    with pytest.raises(ValueError, match="data.pseudo_labels") as e:
        run_cv(cfg, tmp_path / "run")
    assert message in str(e.value)


def test_pseudo_label_refuses_rows_the_run_trained_on(base, tmp_path):
    cat, run = base
    with pytest.raises(ValueError, match="rows the run trained on"):
        pseudo_label(run, cat / "train.csv", out=tmp_path / "x.csv")


def test_rounds_retrain_an_ensemble_member_by_member(base, tmp_path):
    cat, run = base
    linear = _cfg(cat, tmp_path, model={"type": "linear"})
    run_cv(validate_config(linear), tmp_path / "linear")
    fit_ensemble([run, tmp_path / "linear"], tmp_path / "ens", names=["fusion", "linear"])
    (r1,) = pseudo_rounds(tmp_path / "ens", cat / "test.csv", rounds=1, threshold=1e-6, pseudo_weight=0.3)
    assert r1.run_dir == tmp_path / "ens-pl1" and r1.table.rows == 24
    for name in ("fusion", "linear"):
        member = r1.run_dir / "members" / name
        cfg = validate_config(__import__("yaml").safe_load((member / "config.yaml").read_text()))
        assert cfg.data.pseudo_labels == str(r1.table.path.resolve()) and cfg.train.pseudo_weight == 0.3
        assert len(pd.read_csv(member / "pseudo_rows.csv")) == 24
    pred = predict(r1.run_dir, cat / "test.csv")
    assert list(pred.ids) == pd.read_csv(cat / "test.csv", dtype=str)["id"].tolist()
    before = (r1.run_dir / "cv_summary.json").read_text()
    args = ["pseudo-label", str(tmp_path / "ens"), "--data", str(cat / "test.csv"), "--threshold", "1e-6"]
    assert main([*args, "--rounds", "1", "--out", str(tmp_path / "x.csv")]) == 2, "--out names one table"
    assert main([*args, "--rounds", "1"]) == 0
    assert (r1.run_dir / "cv_summary.json").read_text() == before, "a finished round is kept, not trained again"

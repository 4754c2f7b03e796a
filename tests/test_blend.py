"""Ensembles fitted on out-of-fold predictions: weights, guarantees, refusals, and the ensemble as a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisle.cli import main
from aisle.config import validate_config
from aisle.data.demo import write_demo_catalogue
from aisle.evaluation.calibration import rescale_probs
from aisle.evaluation.compare import run_row
from aisle.evaluation.metrics import classification_metrics, macro_f1
from aisle.evaluation.report import write_report
from aisle.inference import predict
from aisle.training import run_cv
from aisle.training.blend import (
    ensemble_weights,
    fit_ensemble,
    greedy_selection,
    guarded_weights,
    held_peer_weights,
    peer_weights,
    read_member,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("blend")
    write_demo_catalogue(root / "cat", n_train=150, n_test=30, seed=6, image_size=32)
    out = {}
    for name, linear in (("svm", {"classifier": "svm"}), ("lr", {"classifier": "logreg", "C": 0.3})):
        raw = {
            "data": {
                "train_csv": str(root / "cat" / "train.csv"),
                "test_csv": str(root / "cat" / "test.csv"),
                "folds": 3,
            },
            "model": {"type": "linear", "linear": linear},
            "runtime": {"num_workers": 0},
        }
        run_cv(validate_config(raw), root / name)
        out[name] = root / name
    noise = root / "noise"
    shutil.copytree(out["svm"], noise)
    oof = pd.read_csv(noise / "main" / "oof.csv", dtype={"id": str})
    classes = [c for c in oof.columns if c not in ("id", "fold", "label", "pred")]
    oof[classes] = np.random.default_rng(0).dirichlet(np.ones(len(classes)), len(oof))
    oof.to_csv(noise / "main" / "oof.csv", index=False)
    out["noise"] = noise
    return root, out


def _y(member) -> np.ndarray:
    from aisle.data.labels import LabelMap

    oof = pd.read_csv(member.rd.root / "main" / "oof.csv", dtype=str).set_index("id").loc[member.ids]
    return LabelMap.load(member.rd.label_map).encode(oof["label"])[0]


@pytest.mark.parametrize("metric", ["log_loss", "macro_f1"])
def test_noise_gets_weight_zero_and_the_blend_beats_its_best_member(runs, tmp_path, metric):
    _, r = runs
    summary = fit_ensemble([r["svm"], r["lr"], r["noise"]], tmp_path / "ens", metric=metric)
    weights = {m["name"]: m["weight"] for m in summary["ensemble"]["members"]}
    uniform = summary["ensemble"]["uniform_weight"]
    if metric == "log_loss":
        assert weights["noise"] == 0.0
    assert sum(weights.values()) + uniform == pytest.approx(1.0)
    scales = {m["name"]: m["scale"] for m in summary["ensemble"]["members"]}
    members = [read_member(r[n]) for n in ("svm", "lr", "noise")]
    y = _y(members[0])
    calibrated = {m.name: rescale_probs(m.probs, scales[m.name]) for m in members}
    blend = sum(weights[n] * p for n, p in calibrated.items()) + uniform / members[0].probs.shape[1]
    if metric == "macro_f1":
        best = max(m["oof"]["macro_f1"] for m in summary["ensemble"]["members"])
        assert summary["ensemble"]["blend"]["macro_f1"] >= best
    else:
        best = max(np.log(p[np.arange(len(y)), y]).mean() for p in calibrated.values())
        assert np.log(blend[np.arange(len(y)), y]).mean() >= best - 1e-12
    oof = pd.read_csv(tmp_path / "ens" / "ensemble" / "oof.csv", dtype={"id": str}).set_index("id").loc[members[0].ids]
    blended = oof[[c for c in oof.columns if c not in ("fold", "label", "pred")]].to_numpy()
    assert np.allclose(blended, blend), "the ensemble's OOF file is this blend"


def test_greedy_selection_picks_the_best_member_first_and_keeps_the_best_prefix():
    y = np.array([0, 1, 0, 1])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    bad = good[:, ::-1]
    weights, picks, _ = greedy_selection([bad, good], y, "macro_f1", rounds=5)
    assert picks[0] == 1 and weights.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("metric", ["log_loss", "macro_f1"])
def test_a_member_of_random_probabilities_gets_no_weight_beside_decent_members(metric):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)

    def decent(hit_rate: float) -> np.ndarray:
        guess = np.where(rng.random(400) < hit_rate, y, rng.integers(0, 5, 400))
        return 0.6 * np.eye(5)[guess] + 0.4 * rng.dirichlet(np.ones(5), 400)

    noise = rng.dirichlet(np.ones(5), 400)
    weights = ensemble_weights([decent(0.8), decent(0.75), noise], y, metric)
    assert weights[2] == 0.0 and weights[:2].sum() > 0 and weights.sum() == pytest.approx(1.0)


def _rare_classes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rare classes: member A is right on every row but barely confident; member B is sharp on the common class
    and wrong on every rare row."""
    y = np.array([0] * 400 + [1, 2, 3, 4] * 10)
    a = np.full((len(y), 5), 0.1875)
    a[np.arange(len(y)), y] = 0.25
    b = np.full((len(y), 5), 0.0125)
    b[y == 0] = [0.99, 0.0025, 0.0025, 0.0025, 0.0025]
    b[y > 0, 0], b[np.flatnonzero(y > 0), y[y > 0]] = 0.9, 0.05
    return y, a, b


def test_a_log_loss_blend_that_classifies_worse_than_its_best_member_is_fitted_on_macro_f1(caplog):
    """Log-loss weights favour B (see _rare_classes) and lose the rare classes; the guard refits on macro-F1."""
    y, a, b = _rare_classes()
    f1 = lambda w: classification_metrics(y, a * w[0] + b * w[1] + w[2] / 5)["macro_f1"]  # noqa: E731
    assert f1(ensemble_weights([a, b], y, "log_loss")) < 0.5  # the scenario: log-loss alone loses the rare classes
    weights, fitted_on = guarded_weights([a, b], y, "log_loss", 25)
    assert fitted_on == "macro_f1" and f1(weights) == 1.0 and "below its best member's" in caplog.text
    kept, fitted_on = guarded_weights([a, a], y, "log_loss", 25)  # nothing to guard: the log-loss fit stays
    assert fitted_on == "log_loss" and (kept == ensemble_weights([a, a], y, "log_loss")).all()


def test_peers_weigh_the_members_the_rows_cannot_tell_apart_alike_and_drop_the_clearly_worse_and_noise():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 600)

    def member(hit_rate: float) -> np.ndarray:
        guess = np.where(rng.random(600) < hit_rate, y, rng.integers(0, 5, 600))
        return 0.6 * np.eye(5)[guess] + 0.4 * rng.dirichlet(np.ones(5), 600)

    good, peer, weak, noise = member(0.9), member(0.89), member(0.5), rng.dirichlet(np.ones(5), 600)
    weights = peer_weights([good, peer, weak, noise], y)
    assert weights.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    assert peer_weights([noise, noise], y).sum() == pytest.approx(1.0)  # no member with signal: the best alone


def test_peers_that_classify_worse_than_their_best_member_give_way_to_selection_on_macro_f1(caplog):
    """B is the best by log-likelihood and A is clearly worse, so B alone is the peers' blend: it loses the rare
    classes (see _rare_classes), and the guarded selection takes over."""
    y, a, b = _rare_classes()
    assert peer_weights([a, b], y).tolist() == [0.0, 1.0, 0.0]
    weights, fitted_on = held_peer_weights([a, b], y, "log_loss", 25)
    assert fitted_on == "macro_f1" and classification_metrics(y, a * weights[0] + b * weights[1])["macro_f1"] == 1.0
    assert "peers' equal blend" in caplog.text
    kept, fitted_on = held_peer_weights([a, a], y, "log_loss", 25)
    assert fitted_on == "peers" and kept.tolist() == [0.5, 0.5, 0.0]


def test_the_peers_method_is_saved_with_its_weights_and_a_bad_method_refused(runs, tmp_path, capsys):
    _, r = runs
    out = tmp_path / "ens"
    assert (
        main(
            ["ensemble", "--fit", "--method", "peers", str(r["svm"]), str(r["lr"]), str(r["noise"]), "--out", str(out)]
        )
        == 0
    )
    assert "peers, equal weights" in capsys.readouterr().out
    spec = json.loads((out / "ensemble.json").read_text())
    members = [read_member(r[n]) for n in ("svm", "lr", "noise")]
    y = _y(members[0])
    scaled = [rescale_probs(m.probs, s["scale"]) for m, s in zip(members, spec["members"])]
    weights, fitted_on = held_peer_weights(scaled, y, "log_loss", 25)
    assert spec["method"] == "peers" and spec["fitted_on"] == fitted_on
    assert [m["weight"] for m in spec["members"]] == weights[:-1].tolist()
    assert spec["members"][2]["weight"] == 0.0
    assert main(["ensemble", "--fit", "--method", "mean", str(r["svm"]), "--out", str(tmp_path / "x")]) != 0


def test_runs_with_other_folds_or_ids_are_refused(runs, tmp_path):
    _, r = runs
    moved = tmp_path / "moved"
    shutil.copytree(r["lr"], moved)
    folds = pd.read_csv(moved / "folds.csv", dtype={"id": str})
    folds.loc[0, "fold"] = (folds.loc[0, "fold"] + 1) % 3
    folds.to_csv(moved / "folds.csv", index=False)
    with pytest.raises(ValueError, match="folds differ.*same folds"):
        fit_ensemble([r["svm"], moved], tmp_path / "e1")
    other = tmp_path / "other"
    shutil.copytree(r["lr"], other)
    gone = pd.read_csv(other / "folds.csv", dtype={"id": str})["id"].iloc[0]
    for name in ("folds.csv", "main/oof.csv"):
        df = pd.read_csv(other / name, dtype={"id": str})
        df.loc[df["id"] == gone, "id"] = "someone-else"
        df.to_csv(other / name, index=False)
    with pytest.raises(ValueError, match="training ids differ"):
        fit_ensemble([r["svm"], other], tmp_path / "e2")


def test_a_run_with_some_folds_only_is_refused(runs, tmp_path):
    _, r = runs
    part = tmp_path / "part"
    shutil.copytree(r["lr"], part)
    oof = pd.read_csv(part / "main" / "oof.csv", dtype={"id": str})
    oof[oof["fold"] != 2].to_csv(part / "main" / "oof.csv", index=False)
    with pytest.raises(ValueError, match="train every fold"):
        fit_ensemble([r["svm"], part], tmp_path / "e")


def test_the_ensemble_predicts_and_reports_like_a_run(runs, tmp_path, capsys):
    root, r = runs
    ens = tmp_path / "ens"
    assert main(["ensemble", "--fit", str(r["svm"]), str(r["lr"]), "--out", str(ens), "--metric", "macro_f1"]) == 0
    assert "blend" in capsys.readouterr().out
    summary = pd.read_json(ens / "ensemble.json", typ="series")
    weights = {m["name"]: m["weight"] for m in summary["members"]}
    scales = {m["name"]: m["scale"] for m in summary["members"]}
    got = predict(ens, root / "cat" / "test.csv")
    parts = {n: rescale_probs(predict(r[n], root / "cat" / "test.csv").probs, scales[n]) for n in ("svm", "lr")}
    assert np.allclose(got.probs, sum(weights[n] * parts[n] for n in parts), atol=1e-6)
    assert np.allclose(got.probs.sum(1), 1.0)
    assert main(["-q", "predict", str(ens)]) == 0  # the members' data.test_csv
    assert (ens / "predictions" / "submission.csv").is_file()
    assert write_report(ens).is_file()
    row = run_row(ens)
    assert row["model"] == "ensemble" and row["towers"].startswith(("svm", "lr"))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 60), st.integers(0, 10_000))
def test_macro_f1_from_counts_equals_scikit_learns(n_classes, n_rows, seed):
    """The blend's fast macro-F1 is the one the reports show: scikit-learn's, over the classes present in y."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    y, pred = rng.integers(-1, n_classes, n_rows), rng.integers(0, n_classes, n_rows)
    keep = y >= 0
    want = (
        f1_score(y[keep], pred[keep], average="macro", labels=np.unique(y[keep]), zero_division=0)
        if keep.any()
        else 0.0
    )
    assert macro_f1(y, pred) == pytest.approx(want, abs=1e-12)

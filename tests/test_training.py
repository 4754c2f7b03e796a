"""End-to-end training on a tiny generated catalogue: run folder, two stages, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from aisle.cli import main
from aisle.data.demo import write_demo_catalogue
from aisle.serialization import excluded_prefixes

FOLD_FILES = ["best.safetensors", "best.json", "history.csv", "oof.csv", "done.json"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cat")
    write_demo_catalogue(out, n_train=60, n_test=20, seed=1, image_size=32)
    return out


def _config(tmp_path: Path, catalogue: Path, runtime: dict | None = None, **train) -> Path:
    cfg = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": {
            "type": "fusion",
            "image": {"name": "timm:test_resnet", "pretrained": False},
            "text": {"name": "tiny:bert", "max_length": 16},
            "image_size": 32,
            "fusion_dim": 16,
            "head_hidden": 16,
        },
        "train": {"epochs": 1, "batch_size": 16, "lr": {"default": 3e-3}, **train},
        "runtime": {"num_workers": 0, **(runtime or {})},
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_cli_train_writes_complete_run_folder(tmp_path, catalogue):
    rd = tmp_path / "run"
    assert main(["train", "-c", str(_config(tmp_path, catalogue)), "--run-dir", str(rd)]) == 0
    for name in (
        "config.yaml",
        "label_map.json",
        "folds.csv",
        "cv_summary.json",
        "main/oof.csv",
        "assets/towers.json",
        "assets/text/tokenizer.json",
    ):
        assert (rd / name).exists(), name
    for k in (0, 1):
        for name in FOLD_FILES:
            assert (rd / "main" / f"fold_{k}" / name).exists(), (k, name)
        assert list((rd / "main" / f"fold_{k}" / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
        assert not (rd / "main" / f"fold_{k}" / "last.safetensors").exists(), "finished folds drop resume state"
    summary = json.loads((rd / "cv_summary.json").read_text())
    assert set(summary["folds"]) == {"0", "1"}
    oof = pd.read_csv(rd / "main" / "oof.csv", dtype={"id": str, "label": str, "pred": str})
    train = pd.read_csv(catalogue / "train.csv", dtype=str)
    assert sorted(oof["id"]) == sorted(train["id"]), "every training row gets one out-of-fold prediction"
    # the summary's figures are the out-of-fold predictions' own: per fold, and their mean
    for k in (0, 1):
        rows = oof[oof["fold"] == k]
        assert summary["folds"][str(k)]["acc"] == pytest.approx((rows["label"] == rows["pred"]).mean())
    assert summary["mean"]["acc"] == pytest.approx(np.mean([summary["folds"][k]["acc"] for k in ("0", "1")]))
    hist = pd.read_csv(rd / "main" / "fold_0" / "history.csv")
    assert list(hist.columns[:6]) == ["epoch", "train_loss", "val_loss", "val_acc", "val_top3", "val_macro_f1"]
    # no pickles anywhere: weights are safetensors, metadata JSON/YAML/CSV
    suffixes = {p.suffix for p in rd.rglob("*") if p.is_file()}
    assert not suffixes & {".ckpt", ".pt", ".pth", ".pkl", ".bin"}, suffixes
    load_file(str(rd / "main" / "fold_0" / "best.safetensors"))


def test_existing_run_folder_is_not_overwritten_silently(tmp_path, catalogue):
    cfg = _config(tmp_path, catalogue)
    rd = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd), "--fold", "0"]) == 0
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd), "--fold", "0"]) == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [("model.image.name=timmm:resnet18", "model.image.name"), ("model.text.name=bert-base", "model.text.name")],
)
def test_a_bad_tower_name_fails_before_any_data_is_read(tmp_path, override, key, capsys):
    cfg = _config(tmp_path, tmp_path / "no-such-folder")  # its train.csv does not exist either
    rd = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--set", override, "--run-dir", str(rd)]) == 2
    err = capsys.readouterr().err
    assert key in err and "prefix one of" in err and "train.csv" not in err
    assert not rd.exists(), "nothing is written for a config that cannot train"


def test_two_stage_initialises_from_stage_one(tmp_path, catalogue, monkeypatch):
    import aisle.training.fold as fold

    loaded = []
    real = fold.load_weights
    monkeypatch.setattr(fold, "load_weights", lambda m, p, **k: (loaded.append(Path(p)), real(m, p, **k))[1])
    stages = [{"name": "head", "freeze_encoders": True}, {"name": "full", "init_from": "head"}]
    rd = tmp_path / "run"
    assert (
        main(["train", "-c", str(_config(tmp_path, catalogue, stages=stages)), "--run-dir", str(rd), "--fold", "0"])
        == 0
    )
    assert rd / "head" / "fold_0" / "best.safetensors" in loaded
    template = load_file(str(rd / "template.safetensors"))
    head = load_file(str(rd / "head" / "fold_0" / "best.safetensors"))
    full = load_file(str(rd / "full" / "fold_0" / "best.safetensors"))
    enc = [
        k for k in template if k.startswith("image_encoder.") and template[k].is_floating_point() and "running" not in k
    ]
    # stage 1 leaves its frozen towers out of the checkpoint: they are the template's, taken from there
    assert enc and not any(k.startswith(("image_encoder.", "text_encoder.")) for k in head)
    assert excluded_prefixes(rd / "head" / "fold_0" / "best.safetensors") == ["image_encoder.", "text_encoder."]
    assert any(not torch.equal(template[k], full[k]) for k in enc), "stage 2 trains the towers"
    assert any(not torch.equal(template[k], head[k]) for k in head if k.startswith("head."))
    assert json.loads((rd / "cv_summary.json").read_text())["stage"] == "full"


def test_stages_count_what_trains_and_predict_picks_a_stage(tmp_path, catalogue, capsys, monkeypatch):
    stages = [{"name": "head", "freeze_encoders": True}, {"name": "full", "init_from": "head"}]
    rd = tmp_path / "run"
    cfg = _config(tmp_path, catalogue, stages=stages)
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd), "--fold", "0"]) == 0
    summary = json.loads((rd / "cv_summary.json").read_text())
    head, full = summary["stages"]["head"]["params"], summary["stages"]["full"]["params"]
    assert head["total"] == full["total"] == full["trainable"]
    assert 0 < head["trainable"] < full["trainable"], "a frozen stage counts only what it trains"
    assert summary["train_seconds"] >= summary["fitting_seconds"] > 0, "the run's wall time includes encoding"
    printed = " ".join(capsys.readouterr().out.split())
    assert f"{head['trainable']:,} trained in stage head" in printed
    assert f"{full['trainable']:,} trained in stage full" in printed

    test = str(catalogue / "test.csv")
    assert main(["predict", str(rd), "--data", test, "--out", str(tmp_path / "p_full")]) == 0
    assert "of stage 'full'" in capsys.readouterr().out
    predict_module = sys.modules["aisle.inference.predict"]  # the package's `predict` is the function
    loaded: list[Path] = []
    real = predict_module.load_checkpoint
    monkeypatch.setattr(predict_module, "load_checkpoint", lambda m, p, t: (loaded.append(Path(p)), real(m, p, t))[1])
    assert main(["predict", str(rd), "--data", test, "--out", str(tmp_path / "p_head"), "--stage", "head"]) == 0
    assert "of stage 'head'" in capsys.readouterr().out
    assert loaded == [rd / "head" / "fold_0" / "best.safetensors"]
    p_full = pd.read_csv(tmp_path / "p_full" / "probabilities.csv")
    p_head = pd.read_csv(tmp_path / "p_head" / "probabilities.csv")
    assert not np.allclose(p_full.iloc[:, 1:].to_numpy(), p_head.iloc[:, 1:].to_numpy())
    assert main(["predict", str(rd), "--data", test, "--stage", "nope"]) == 2
    assert "no stage 'nope'; its stages: head, full" in " ".join(capsys.readouterr().err.split())

    # --set changes how the input is read, never what the model learned
    out = tmp_path / "p_small"
    args = ["predict", str(rd), "--data", test, "--out", str(out), "--set", "data.max_image_pixels=100"]
    assert main(args) == 0
    issues = pd.read_csv(out / "image_issues.csv", dtype=str)
    assert (issues["reason"] == "decompression_bomb").sum() >= 15, "every 32x32 image is over a 100-pixel limit"
    assert main(["predict", str(rd), "--data", test, "--set", "model.image_size=64"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "'model.image_size'" in err and "data.max_image_pixels" in err


def test_train_seconds_counts_folds_an_earlier_command_fitted(tmp_path, catalogue):
    rd = tmp_path / "run"
    assert main(["train", "-c", str(_config(tmp_path, catalogue)), "--run-dir", str(rd), "--fold", "0"]) == 0
    first = json.loads((rd / "cv_summary.json").read_text())
    assert main(["train", "--resume", str(rd)]) == 0  # fold 0 is kept, fold 1 is fitted now
    summary = json.loads((rd / "cv_summary.json").read_text())
    assert set(summary["folds"]) == {"0", "1"}
    assert summary["folds"]["0"]["seconds"] == first["folds"]["0"]["seconds"]
    assert summary["train_seconds"] >= summary["fitting_seconds"], "the earlier command's fitting is counted"


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, catalogue):
    cfg = _config(tmp_path, catalogue, epochs=4)
    ref = tmp_path / "ref"
    assert main(["train", "-c", str(cfg), "--run-dir", str(ref), "--fold", "0"]) == 0

    cut = tmp_path / "cut"
    env = {**os.environ, "AISLE_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aisle", "-q", "train", "-c", str(cfg), "--run-dir", str(cut), "--fold", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = cut / "main" / "fold_0" / "last.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and json.loads(last.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed; make the epochs longer"
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of epoch 3
    proc.wait()
    assert not (cut / "main" / "fold_0" / "done.json").exists()

    assert main(["train", "--resume", str(cut), "--fold", "0"]) == 0
    a = json.loads((ref / "cv_summary.json").read_text())["folds"]["0"]
    b = json.loads((cut / "cv_summary.json").read_text())["folds"]["0"]
    for key in ("acc", "macro_f1", "best_epoch"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    wa = load_file(str(ref / "main" / "fold_0" / "best.safetensors"))
    wb = load_file(str(cut / "main" / "fold_0" / "best.safetensors"))
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    hist = pd.read_csv(cut / "main" / "fold_0" / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3, 4]


@pytest.mark.slow
def test_ddp_two_cpu_processes_smoke(tmp_path, catalogue):
    """Lightning's DDP on CPU (gloo, loopback): the second rank re-runs the command, trains, writes nothing."""
    cfg = _config(
        tmp_path,
        catalogue,
        epochs=1,
        strategy="ddp",
        runtime={"accelerator": "cpu", "devices": 2, "feature_cache": False},
    )
    rd = tmp_path / "ddp"
    env = {**os.environ, "AISLE_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "aisle", "-q", "train", "-c", str(cfg), "--run-dir", str(rd)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((rd / "cv_summary.json").read_text())
    assert set(summary["folds"]) == {"0", "1"}
    oof = pd.read_csv(rd / "main" / "oof.csv")
    assert len(oof) == len(pd.read_csv(catalogue / "train.csv"))


def test_no_loader_workers_left_after_a_run(tmp_path):
    """Persistent DataLoader workers of finished folds are shut down, not left for a later garbage collection."""
    import multiprocessing

    from aisle.config import validate_config
    from aisle.data.demo import write_demo_catalogue
    from aisle.training import run_cv

    write_demo_catalogue(tmp_path / "cat", n_train=24, n_test=4, seed=3, image_size=32)
    cfg = {
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "model": {
            "type": "image",
            "image_size": 32,
            "head_hidden": 16,
            "image": {"name": "timm:test_resnet", "pretrained": False},
        },
        "train": {"epochs": 1, "batch_size": 8},
        "runtime": {"num_workers": 1, "feature_cache": False},
    }
    before = len(multiprocessing.active_children())
    run_cv(validate_config(cfg), tmp_path / "run")
    assert len(multiprocessing.active_children()) == before

"""train.loggers: Lightning's TensorBoard, CSV, W&B (offline) and MLflow (file store) loggers, under the run folder."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import pandas as pd
import pytest
import yaml

from aisle.cli import main
from aisle.config import ConfigError, load_config
from aisle.config.schema import LoggerName
from aisle.data.demo import write_demo_catalogue
from aisle.rundir import RunDir

IMAGE_MODEL = {"type": "image", "image": {"name": "timm:test_resnet", "pretrained": False}, "image_size": 32}
FOLD_RUNS = ["run/main/fold_0", "run/main/fold_1"]  # <run>/<stage>/fold_<k>, then the run's end: <run>
# the tracked run logs to CSV and to whichever of W&B and MLflow are installed (each test skips without its own)
LOGGERS = ["csv", *(name for name in ("wandb", "mlflow") if importlib.util.find_spec(name) is not None)]


def _config(tmp_path: Path, catalogue: Path, loggers: list[str]) -> Path:
    cfg = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": IMAGE_MODEL,
        "train": {"epochs": 1, "batch_size": 16, "lr": {"default": 3e-3}, "loggers": loggers},
        "runtime": {"num_workers": 0},
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> RunDir:
    """One tiny 2-fold, 1-epoch run logging to :data:`LOGGERS`."""
    tmp = tmp_path_factory.mktemp("loggers")
    write_demo_catalogue(tmp / "cat", n_train=60, n_test=10, seed=1, image_size=32)
    rd = RunDir(tmp / "run")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_DISABLE_TELEMETRY"):
            mp.delenv(var, raising=False)  # offline and local without the user's help; restored afterwards
        for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(tmp / var.lower()))  # W&B's own files outside the run folder stay in tmp
        assert main(["train", "-c", str(_config(tmp, tmp / "cat", LOGGERS)), "--run-dir", str(rd.root)]) == 0
    return rd


# ---------------------------------------------------------------- config


def test_loggers_default_to_tensorboard_and_every_choice_has_a_logger() -> None:
    from aisle.training.tracking import _FOLD_LOGGERS

    assert load_config().train.loggers == ["tensorboard"]
    assert set(_FOLD_LOGGERS) == set(get_args(LoggerName))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.loggers=[neptune]", "'train.loggers.0': got 'neptune': .*'tensorboard', 'csv', 'wandb' or 'mlflow'"),
        ("train.loggers=[csv, wandb, csv]", "train.loggers lists csv more than once"),
    ],
)
def test_bad_loggers_fail_at_load_time(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[override])


# ---------------------------------------------------------------- a missing extra


def test_a_missing_logger_package_names_the_extra_before_any_run_folder(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed: find_spec and import fail
    cfg = _config(tmp_path, tmp_path / "no-such-folder", ["tensorboard", "wandb"])  # no data either
    rd = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert 'train.loggers lists wandb, whose package is not installed: pip install "aisle[wandb]"' in err, err
    assert "a package this needs is missing" not in err, "a message that names the command is shown as it is"
    assert "train.csv" not in err and "Traceback" not in err
    assert not rd.exists(), "nothing is written for a config that cannot train"


def test_every_missing_logger_package_is_named_at_once(monkeypatch) -> None:
    from aisle.training.tracking import check_loggers

    check_loggers(["tensorboard", "csv"])  # Lightning's own: nothing to install
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r'pip install "aisle\[mlflow,wandb\]"'):
        check_loggers(["mlflow", "csv", "wandb"])


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_the_epoch_bars_leave_out_the_loggers_run_ids(kind: str) -> None:
    from aisle.training.callbacks import epoch_bar

    loggers = [SimpleNamespace(version=""), SimpleNamespace(version="offline-run-x7k2")]  # TensorBoard's, W&B's
    trainer = SimpleNamespace(loggers=loggers, progress_bar_metrics={"val_loss": 1.5})
    bar = epoch_bar(kind)
    assert bar is not None and bar.get_metrics(trainer, None) == {"val_loss": 1.5}  # Lightning adds v_num: x7k2


# ---------------------------------------------------------------- what each logger writes


def test_csv_logger_writes_each_folds_metrics_and_config(tracked_run: RunDir) -> None:
    for k in (0, 1):
        fd = tracked_run.fold("main", k)
        metrics = pd.read_csv(fd.csv_logs / "metrics.csv")
        assert {"val_macro_f1", "val_loss", "train_loss"} <= set(metrics.columns)
        assert yaml.safe_load((fd.csv_logs / "hparams.yaml").read_text())["train"]["epochs"] == 1
        assert fd.history.is_file(), "aisle's own history.csv stays"
        assert not fd.tensorboard.exists(), "only the chosen loggers write"


def _wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (LevelDB-log framing: 32 KiB blocks of CRC, length, type, data)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_run(path: Path) -> dict:
    """name, group, config keys and every logged key of one offline W&B run."""
    out: dict = {"name": None, "config": {}, "keys": set()}  # an unfinished run may not have its run record yet
    for r in _wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out |= {"name": r.run.display_name, "group": r.run.run_group, "job_type": r.run.job_type}
        elif kind == "config":
            out["config"] |= {u.key: json.loads(u.value_json) for u in r.config.update}
        elif kind == "history":
            out["keys"] |= {i.nested_key[0] if i.nested_key else i.key for i in r.history.item}
        elif kind == "files":
            out["keys"] |= {f.path for f in r.files.files}
    return out


def test_wandb_writes_an_offline_run_per_fold_and_one_for_the_run(tracked_run: RunDir) -> None:
    pytest.importorskip("wandb", reason='W&B logging needs its extra: pip install "aisle[wandb]"')
    runs = {r["name"]: r for r in map(_wandb_run, sorted(tracked_run.wandb.glob("offline-run-*/run-*.wandb")))}
    assert sorted(runs) == sorted([*FOLD_RUNS, "run"]), "one run per fold of each stage, closed after each"
    for name in FOLD_RUNS:
        assert runs[name]["group"] == "run" and runs[name]["job_type"] == "main"
        assert "val_macro_f1" in runs[name]["keys"] and "train_loss" in runs[name]["keys"]
        assert runs[name]["config"]["train"]["loggers"] == LOGGERS
    end = runs["run"]
    assert {"main/macro_f1_mean", "oof_confusion_matrix", "oof_per_class.csv", "cv_summary.json"} <= end["keys"]
    assert end["config"]["model"]["image"]["name"] == "timm:test_resnet"


def test_mlflow_writes_a_file_store_run_per_fold_and_one_for_the_run(tracked_run: RunDir, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason='MLflow logging needs its extra: pip install "aisle[mlflow]"')
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading it back (training sets it for itself)
    client = MlflowClient(tracking_uri=tracked_run.mlruns.resolve().as_uri())
    experiment = client.get_experiment_by_name("run")
    assert experiment is not None, "one experiment per run, named after the run folder"
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted([*FOLD_RUNS, "run"])
    for name in FOLD_RUNS:
        data = runs[name].data
        assert "val_macro_f1" in data.metrics and "train_loss" in data.metrics
        assert data.params["train/epochs"] == "1" and data.params["model/image/name"] == "timm:test_resnet"
        assert data.tags["aisle.stage"] == "main" and runs[name].info.status == "FINISHED"
    end = runs["run"]
    assert "main/macro_f1_mean" in end.data.metrics and end.data.params["data/folds"] == "2"
    artifacts = {a.path for a in client.list_artifacts(end.info.run_id)}
    assert {"oof_confusion_matrix.png", "oof_per_class.csv", "cv_summary.json"} <= artifacts

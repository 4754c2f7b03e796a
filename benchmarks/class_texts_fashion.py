"""Class texts on fashion-products with the shared towers: zero-shot, few-shot and full-data class-text heads.

- Zero-shot: all-MiniLM-L6-v2 (mean pooling), test titles vs the 84 class names, and vs a template; no training.
- Few-shot K = 1, 5, 20 per class and all rows: a fusion of frozen EfficientNet-Lite0 (224 px) + MiniLM features
  (cached), ``model.head: class_text`` vs ``mlp`` (the preset's head settings), trained on a stratified subset of
  train.csv (``--train-rows``, default 6,000: the rows whose features benchmarks/pseudo_labels_fashion.py cached),
  5 folds with ``data.shots_per_class: K`` (each fold trains on K rows per class; its validation rows stay whole).
Every model is scored on the 8,686-row test split.

Usage:
  .venv/bin/python benchmarks/class_texts_fashion.py [--work /tmp/aisle-plb] [--train-rows 6000]
Writes benchmarks/results/class_texts_fashion.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from aisle.config import DataConfig, validate_config
from aisle.inference import predict
from aisle.inference.zero_shot import zero_shot
from aisle.rundir import RunDir
from aisle.training.cv import run_cv
from bench_lib import DATA, SHARED, write_train_subset

MODELS = (SHARED / "models").resolve()
TEXT = {"name": f"hf:{MODELS / 'all-MiniLM-L6-v2'}", "pretrained": True, "trainable": False}
TEXT.update(pooler="mean", max_length=256)  # the cpu preset's text tower: its cached features are reused
IMAGE = {"name": f"timm:local-dir:{MODELS / 'tf_efficientnet_lite0'}", "pretrained": True, "trainable": False}
HEAD = {"epochs": 20, "batch_size": 64, "lr": {"default": 1e-3}, "label_smoothing": 0.1, "early_stopping_patience": 5}


def _scores(truth: pd.Series, ids, labels) -> dict:
    t = truth.loc[list(ids)]
    return {
        "test_acc": round(accuracy_score(t, labels), 4),
        "test_macro_f1": round(f1_score(t, labels, average="macro"), 4),
    }


def _zero_shot(truth: pd.Series, classes: list[str]) -> list[dict]:
    rows = []
    for template in (None, ["a photo of {class_name}"]):
        t0 = time.perf_counter()
        pred = zero_shot(
            TEXT["name"], classes, DATA / "test.csv", templates=template, data_cfg=DataConfig(text_cols=["title"])
        )
        rows.append(
            {
                "model": "zero-shot MiniLM, titles vs " + ("class names" if template is None else repr(template[0])),
                **_scores(truth, pred.ids, pred.labels),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _config(train_csv: Path, work: Path, head: str, shots: int | None) -> dict:
    return {
        "name": f"{head}-{shots or 'all'}",
        "output_dir": str(work / "class_texts"),
        "data": {
            "train_csv": str(train_csv),
            "image_dir": str(DATA / "images"),
            "text_cols": ["title"],
            "attribute_cols": ["gender", "baseColour", "season", "usage"],
            "folds": 5,
            "shots_per_class": shots,
        },
        "model": {
            "type": "fusion",
            "image": IMAGE,
            "text": TEXT,
            "image_size": 224,
            "fusion": "concat",
            "head": head,
            "head_hidden": 512,
            "dropout": 0.2,
        },
        "train": {**HEAD, "loggers": []},
        "runtime": {"num_workers": 2, "cache_dir": str(work / "cache")},
    }


def _trained(train_csv: Path, work: Path, truth: pd.Series) -> list[dict]:
    rows = []
    for shots in (1, 5, 20, None):
        for head in ("class_text", "mlp"):
            cfg = validate_config(_config(train_csv, work, head, shots))
            run = Path(cfg.output_dir) / cfg.name
            t0 = time.perf_counter()
            summary = run_cv(cfg, run, overwrite=True) if not RunDir(run).is_finished() else None
            pred = predict(run, DATA / "test.csv")
            rows.append(
                {
                    "model": f"{head} head, {'all rows' if shots is None else f'{shots} per class'}",
                    "shots_per_class": shots,
                    "head": head,
                    "cv_macro_f1": round(
                        (summary or json.loads(RunDir(run).summary.read_text()))["mean"]["macro_f1"], 4
                    ),
                    **_scores(truth, pred.ids, pred.labels),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/aisle-plb"))
    ap.add_argument("--train-rows", type=int, default=6000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    truth = pd.read_csv(DATA / "test_labels.csv", dtype=str).set_index("id")["categories"]
    classes = sorted(pd.read_csv(DATA / "train.csv", dtype=str)["categories"].unique())
    rows = _zero_shot(truth, classes)
    rows += _trained(write_train_subset(args.work, args.train_rows), args.work, truth)
    by = {(r.get("head"), r.get("shots_per_class")): r["test_macro_f1"] for r in rows if "head" in r}
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": f"python benchmarks/class_texts_fashion.py --train-rows {args.train_rows}",
        "setup": f"test: the 8,686-row test split; trained models: {args.train_rows} stratified train.csv rows, "
        "title + attributes, frozen Lite0 224 px + MiniLM (mean, 256 tokens) concat fusion, 5 folds, "
        "shots_per_class cuts each fold's training part (validation rows whole), class texts = class names",
        "table": rows,
        "targets": {
            "class_text beats mlp at K=1": bool(by[("class_text", 1)] > by[("mlp", 1)]),
            "class_text beats mlp at K=5": bool(by[("class_text", 5)] > by[("mlp", 5)]),
            "full data: class_text >= mlp - 0.5 points": bool(by[("class_text", None)] >= by[("mlp", None)] - 0.005),
        },
    }
    (ROOT / "benchmarks" / "results" / "class_texts_fashion.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

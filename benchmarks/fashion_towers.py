"""Image-only vs text-only vs fusion on fashion-products with the real pretrained towers in ../shared/models.

EfficientNet-Lite0 (timm, `local-dir:`) and all-MiniLM-L6-v2 (transformers, local folder) are loaded through
the same code path a hub name takes. Each model trains two stages on one fold of a stratified subset of
train.csv (stage 1: towers frozen, head only; stage 2: everything, initialised from stage 1's best), then the
fold model is scored on the test split (test_labels.csv is used for scoring only).

Usage: .venv/bin/python benchmarks/fashion_towers.py [--rows 4000] [--image-size 128] [--test-rows 0]
Writes benchmarks/results/fashion_towers.json and prints a table. Skips when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _subset(train: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A stratified subset keeping at least 10 rows of every class (so 5-fold splitting works)."""
    frac = rows / len(train)
    parts = [
        g.sample(n=min(len(g), max(10, round(len(g) * frac))), random_state=seed)
        for _, g in train.groupby("categories")
    ]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def _config(kind: str, csv: Path, out: Path, image_size: int, epochs1: int, epochs2: int) -> dict:
    model = {"type": kind, "head_hidden": 512, "dropout": 0.2}
    if kind in ("image", "fusion"):
        model.update(
            image_size=image_size,
            image={"name": f"timm:local-dir:{SHARED / 'models/tf_efficientnet_lite0'}", "pretrained": True},
        )
    if kind in ("text", "fusion"):
        model["text"] = {
            "name": f"hf:{SHARED / 'models/all-MiniLM-L6-v2'}",
            "pretrained": True,
            "pooler": "mean",
            "max_length": 32,
        }
    if kind == "fusion":
        model["fusion"] = "concat"
    return {
        "name": kind,
        "output_dir": str(out),
        "data": {
            "train_csv": str(csv),
            "image_dir": str(SHARED / "data/fashion-products/images"),
            "text_cols": ["title"],
            "folds": 5,
        },
        "model": model,
        "runtime": {"num_workers": 2},
        "train": {
            "folds": [0],
            "batch_size": 64,
            "label_smoothing": 0.1,
            "lr": {"head": 2e-3, "image_encoder": 2e-4, "text_encoder": 5e-5, "default": 1e-3},
            "stages": [
                {"name": "stage1", "epochs": epochs1, "freeze_encoders": True},
                {"name": "stage2", "epochs": epochs2, "init_from": "stage1"},
            ],
        },
    }


def _run_one(kind: str, args, csv: Path, work: Path, test_csv: Path, labels: pd.DataFrame) -> dict:
    """Train and score one model in a child process, so its peak RSS is its own."""
    import yaml

    cfg_path = work / f"{kind}.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(kind, csv, work / "runs", args.image_size, args.epochs1, args.epochs2)))
    env = {**os.environ, "AISLE_PROGRESS": "0"}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aisle", "-q", "train", "-c", str(cfg_path), "--overwrite"], check=True, env=env
    )
    train_s = time.perf_counter() - t0
    rss_train = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    run = work / "runs" / kind
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aisle",
            "-q",
            "predict",
            str(run),
            "--data",
            str(test_csv),
            "--image-dir",
            str(SHARED / "data/fashion-products/images"),
            "--out",
            str(run / "test"),
        ],
        check=True,
        env=env,
    )
    predict_s = time.perf_counter() - t0
    from aisle.data.labels import LabelMap
    from aisle.evaluation.metrics import classification_metrics

    probs = pd.read_csv(run / "test" / "probabilities.csv", dtype={"id": str})
    lm = LabelMap.load(run / "label_map.json")
    truth = probs[["id"]].merge(labels, on="id", how="left")
    y, _ = lm.encode(truth["categories"])
    metrics = classification_metrics(y, probs[list(lm.classes)].to_numpy())
    epochs = {}
    for stage in ("stage1", "stage2"):
        h = pd.read_csv(run / stage / "fold_0" / "history.csv")
        epochs[stage] = {
            "epochs": len(h),
            "seconds_per_epoch": round(float(h["seconds"].mean()), 1),
            "val_macro_f1": round(float(h["val_macro_f1"].max()), 4),
        }
    return {
        "model": kind,
        "test_acc": round(metrics["acc"], 4),
        "test_macro_f1": round(metrics["macro_f1"], 4),
        "test_rows": len(probs),
        "train_seconds": round(train_s, 1),
        "predict_seconds": round(predict_s, 1),
        "stages": epochs,
        "peak_rss_mib_so_far": round(rss_train),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000, help="stratified training subset size")
    ap.add_argument("--test-rows", type=int, default=0, help="score on this many test rows (0: all 8,686)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs1", type=int, default=2)
    ap.add_argument("--epochs2", type=int, default=1)
    ap.add_argument("--models", default="text,image,fusion")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = SHARED / "data/fashion-products"
    if not (data / "train.csv").is_file() or not (SHARED / "models/tf_efficientnet_lite0").is_dir():
        print(f"SKIP: {data} or {SHARED / 'models'} not found")
        return 0
    work = ROOT / "benchmarks" / "work" / "fashion_towers"
    work.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(data / "train.csv", dtype=str)
    csv = work / "train_subset.csv"
    _subset(train, args.rows, args.seed).to_csv(csv, index=False)
    test = pd.read_csv(data / "test.csv", dtype=str)
    if args.test_rows:
        test = test.sample(n=args.test_rows, random_state=args.seed)
    test_csv = work / "test.csv"
    test.to_csv(test_csv, index=False)
    labels = pd.read_csv(data / "test_labels.csv", dtype=str)

    results = []
    for kind in args.models.split(","):
        print(f"== {kind}", flush=True)
        results.append(_run_one(kind, args, csv, work, test_csv, labels))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'model':8} {'test acc':>9} {'macro-F1':>9} {'s/epoch st1':>12} {'s/epoch st2':>12} {'train s':>8}")
    for r in results:
        print(
            f"{r['model']:8} {r['test_acc']:9.4f} {r['test_macro_f1']:9.4f} "
            f"{r['stages']['stage1']['seconds_per_epoch']:12.1f} {r['stages']['stage2']['seconds_per_epoch']:12.1f} "
            f"{r['train_seconds']:8.1f}"
        )
    out = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, no GPU",
        "command": "python benchmarks/fashion_towers.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "train_rows": int(pd.read_csv(csv).shape[0]),
        "results": results,
        "peak_rss_mib_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }
    path = ROOT / "benchmarks" / "results" / "fashion_towers.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmarks behind benchmarks/run.py. Each returns {"table": [rows], "targets": {...}, ...}."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.cache.store import FeatureStore
from aisle.config import validate_config
from aisle.training import run_cv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data/fashion-products"
LITE0 = SHARED / "models/tf_efficientnet_lite0"
MINILM = SHARED / "models/all-MiniLM-L6-v2"


def stratified_subset(rows: int, seed: int = 0, min_per_class: int = 5) -> pd.DataFrame:
    """A fixed stratified subset of train.csv (every class keeps ``min_per_class`` rows)."""
    train = pd.read_csv(DATA / "train.csv", dtype=str)
    if rows >= len(train):
        return train
    frac = rows / len(train)
    parts = [
        g.sample(n=min(len(g), max(min_per_class, round(len(g) * frac))), random_state=seed)
        for _, g in train.groupby("categories")
    ]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_train_subset(work: Path, rows: int) -> Path:
    """``work/train.csv``: the stratified subset (see :func:`stratified_subset`)."""
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "train.csv"
    stratified_subset(rows).to_csv(csv, index=False)
    return csv


def write_test_subset(work: Path, rows: int) -> tuple[Path, pd.DataFrame]:
    """``work/test.csv``: all of test.csv, or a fixed random sample of ``rows``."""
    test = pd.read_csv(DATA / "test.csv", dtype=str)
    if rows < len(test):
        test = test.sample(n=rows, random_state=0)
    test.to_csv(work / "test.csv", index=False)
    return work / "test.csv", test


def fusion_config(
    train_csv: Path,
    cache_dir: Path,
    kind: str = "fusion",
    image_size: int = 128,
    folds: int = 2,
    epochs: int = 5,
    cache: bool = True,
    train_folds: list[int] | None = None,
    fusion: str = "concat",
    text: str | None = None,
) -> dict:
    return {
        "name": kind,
        "data": {
            "train_csv": str(train_csv),
            "image_dir": str(DATA / "images"),
            "text_cols": ["title"],
            "folds": folds,
        },
        "model": _model(kind, image_size, fusion, text),
        "train": {
            "epochs": epochs,
            "batch_size": 64,
            "lr": {"default": 2e-3},
            "label_smoothing": 0.1,
            "folds": train_folds,
            "stages": [{"name": "stage1", "freeze_encoders": True}],
        },
        "runtime": {"num_workers": 2, "feature_cache": cache, "cache_dir": str(cache_dir), "batch_size_infer": 128},
    }


def _model(kind: str, image_size: int, fusion: str, text: str | None) -> dict:
    """The model section of ``kind``: only the towers that kind has."""
    model: dict = {"type": kind, "head_hidden": 512, "dropout": 0.2}
    if kind in ("image", "fusion"):
        model.update(image_size=image_size, image={"name": f"timm:local-dir:{LITE0}"})
    if kind in ("text", "fusion"):
        name = text or f"hf:{MINILM}"
        model["text"] = {"name": name, "max_length": 32, **({} if name.startswith("ngram:") else {"pooler": "mean"})}
    if kind == "fusion":
        model["fusion"] = fusion
    return model


def _timed_cv(raw: dict, run_dir: Path) -> tuple[float, dict]:
    cfg = validate_config(raw)
    t0 = time.perf_counter()
    summary = run_cv(cfg, run_dir, overwrite=True)
    return time.perf_counter() - t0, summary


def bench_stage1(work: Path, quick: bool) -> dict:
    rows, size, epochs = (1000, 96, 2) if quick else (4000, 128, 5)
    csv = write_train_subset(work, rows)
    cache = work / "cache"
    results = {}
    for label, use_cache in (("uncached", False), ("cached, cold cache", True), ("cached, warm cache", True)):
        secs, summary = _timed_cv(
            fusion_config(csv, cache, image_size=size, epochs=epochs, cache=use_cache),
            work / label.replace(" ", "_").replace(",", ""),
        )
        results[label] = (secs, summary["mean"]["macro_f1"], summary["mean"]["acc"])
    base = results["uncached"][0]
    table = [
        {
            "way": k,
            "seconds": round(s, 1),
            "speed-up": f"{base / s:.1f}x",
            "macro_f1": round(f1, 4),
            "acc": round(acc, 4),
        }
        for k, (s, f1, acc) in results.items()
    ]
    cold, warm = base / results["cached, cold cache"][0], base / results["cached, warm cache"][0]
    f1_gap = 100 * max(abs(results[k][1] - results["uncached"][1]) for k in results)
    return {
        "table": table,
        "setup": {
            "rows": len(pd.read_csv(csv)),
            "image_size": size,
            "folds": 2,
            "epochs": epochs,
            "towers": "EfficientNet-Lite0 + all-MiniLM-L6-v2 frozen, concat fusion",
        },
        "cache_bytes": FeatureStore(cache).size_bytes(),
        "targets": {"cold >= 7x": cold >= 7, "warm >= 50x": warm >= 50, "macro-F1 within 0.5 points": f1_gap <= 0.5},
        "macro_f1_gap_points": round(f1_gap, 2),
    }


def bench_predict(work: Path, quick: bool) -> dict:
    from aisle.inference import predict

    rows, size, test_rows = (1000, 96, 1000) if quick else (4000, 128, 8686)
    csv = write_train_subset(work, rows)
    run = work / "run5"
    _timed_cv(fusion_config(csv, work / "cache", image_size=size, folds=5, epochs=2), run)
    test_csv, test = write_test_subset(work, test_rows)
    times, probs = {}, {}
    for label, shared in (("per-fold re-encoding", False), ("shared encoder pass", True)):
        t0 = time.perf_counter()
        pred = predict(run, test_csv, image_dir=DATA / "images", feature_cache=shared)
        times[label], probs[label] = time.perf_counter() - t0, pred.probs
    diff = float(np.abs(probs["per-fold re-encoding"] - probs["shared encoder pass"]).max())
    agree = float((probs["per-fold re-encoding"].argmax(1) == probs["shared encoder pass"].argmax(1)).mean())
    base = times["per-fold re-encoding"]
    table = [{"way": k, "seconds": round(s, 1), "speed-up": f"{base / s:.1f}x"} for k, s in times.items()]
    return {
        "table": table,
        "setup": {"test_rows": len(test), "folds": 5, "image_size": size},
        "max_prob_difference": diff,
        "argmax_agreement": agree,
        "targets": {"shared >= 4x": base / times["shared encoder pass"] >= 4},
    }


def bench_datapath(work: Path, quick: bool) -> dict:
    from datapath import run_datapath

    return run_datapath(work, quick)


def bench_accuracy(work: Path, quick: bool) -> dict:
    from accuracy import run_accuracy

    return run_accuracy(work, quick)

"""The cpu preset on all of fashion-products: train.csv (5 folds) -> the 8,686-row test split, title + attributes.

Every member is scored on the test split beside the blend, and TF-IDF + LinearSVC on the same text is the baseline.

Usage:
  .venv/bin/python benchmarks/portfolio_fashion.py [--keep /tmp/pf-fashion]      (~30 min on 2 CPU cores)
Writes benchmarks/results/portfolio_fashion.json.
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
from aisle.config import validate_config
from aisle.evaluation.calibration import rescale_probs
from aisle.inference import predict
from aisle.training.portfolio import run_portfolio
from bench_lib import DATA, SHARED
from portfolio_subsets import ATTRIBUTES, _texts, baseline_predict


def _scores(truth: pd.Series, labels) -> dict:
    return {
        "acc": round(accuracy_score(truth, labels), 4),
        "macro_f1": round(f1_score(truth, labels, average="macro"), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=Path, default=Path("/tmp/aisle-portfolio-fashion"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.keep
    raw = {
        "name": "preset",
        "output_dir": str(work),
        "data": {
            "train_csv": str(DATA / "train.csv"),
            "test_csv": str(DATA / "test.csv"),
            "image_dir": str(DATA / "images"),
            "text_cols": ["title"],
            "attribute_cols": ATTRIBUTES,
            "folds": 5,
        },
        "runtime": {"num_workers": 2, "cache_dir": str(work / "cache")},
    }
    t0 = time.perf_counter()
    summary = run_portfolio(validate_config(raw), "cpu", work / "preset", SHARED / "models")
    train_s = time.perf_counter() - t0
    truth = pd.read_csv(DATA / "test_labels.csv", dtype=str).set_index("id")["categories"]
    rows, blend, t1 = [], None, time.perf_counter()
    for m in summary["ensemble"]["members"]:
        pred = predict(work / "preset" / m["run"], DATA / "test.csv")
        probs = rescale_probs(pred.probs, m["scale"])
        blend = m["weight"] * probs if blend is None else blend + m["weight"] * probs
        rows.append(
            {
                "model": m["name"],
                "weight": round(m["weight"], 3),
                "oof_macro_f1": round(m["oof"]["macro_f1"], 4),
                **_scores(truth.loc[pred.ids], pred.labels),
            }
        )
    classes = list(pred.label_map.classes)
    rows.append(
        {
            "model": "preset (blend)",
            "oof_macro_f1": round(summary["ensemble"]["blend"]["macro_f1"], 4),
            **_scores(truth.loc[pred.ids], [classes[i] for i in blend.argmax(1)]),
        }
    )
    predict_s = time.perf_counter() - t1
    train, test = pd.read_csv(DATA / "train.csv", dtype=str), pd.read_csv(DATA / "test.csv", dtype=str)
    svc = baseline_predict(_texts(train, True), train["categories"], _texts(test, True))
    rows.append({"model": "TF-IDF + LinearSVC (title + attributes)", **_scores(truth.loc[test["id"]], svc)})
    best = rows[-2]["macro_f1"]
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": "python benchmarks/portfolio_fashion.py",
        "train_seconds": round(train_s, 1),
        "predict_seconds": round(predict_s, 1),
        "table": rows,
        "targets": {
            "preset macro-F1 >= 0.970": bool(best >= 0.970),
            "preset beats TF-IDF + LinearSVC": bool(best > rows[-1]["macro_f1"]),
        },
    }
    (ROOT / "benchmarks" / "results" / "portfolio_fashion.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

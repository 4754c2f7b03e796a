"""Pseudo-label rounds with the cpu preset on fashion-products: round 0 (no pseudo-labels), then one and two rounds
of `aisle pseudo-label --threshold 0.95` on test.csv -> retrain; each scored on the 8,686-row test split (test
accuracy, macro-F1) and by its cross-validation on the real training rows (out-of-fold blend of the preset).

The training rows are a stratified subset of train.csv (``--train-rows``, default 6,000: the whole train.csv takes
~1 h per round on 2 CPU cores); title + attributes text; 5 folds; the shared Lite0 / MiniLM towers.

Usage:
  .venv/bin/python benchmarks/pseudo_labels_fashion.py [--train-rows 6000] [--rounds 2] [--work /tmp/aisle-plb]
Writes benchmarks/results/pseudo_labels_fashion.json (a finished round's folder is reused when run again).
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
from aisle.inference import predict
from aisle.inference.pseudo_label import pseudo_label
from aisle.pseudo_rounds import round_dir
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.training.blend import fit_ensemble
from aisle.training.portfolio import run_portfolio
from aisle.training.retrain import retrain
from bench_lib import DATA, SHARED, write_train_subset
from portfolio_subsets import ATTRIBUTES, _texts, baseline_oof, baseline_predict

THRESHOLD = 0.95


def _config(train_csv: Path, work: Path) -> dict:
    return {
        "name": "preset",
        "output_dir": str(work),
        "data": {
            "train_csv": str(train_csv),
            "image_dir": str(DATA / "images"),
            "text_cols": ["title"],
            "attribute_cols": ATTRIBUTES,
            "folds": 5,
        },
        "runtime": {"num_workers": 2, "cache_dir": str(work / "cache")},
    }


def _seconds(fresh: bool, t0: float) -> float | None:
    """Training seconds of a round trained start to end by this invocation; None for one found (part) done."""
    return round(time.perf_counter() - t0, 1) if fresh else None


def _score(run: Path, truth: pd.Series) -> dict:
    t0 = time.perf_counter()
    pred = predict(run, DATA / "test.csv")
    labels = pred.labels
    summary = read_json(RunDir(run).summary)
    members = {m["name"]: round(m["oof"]["macro_f1"], 4) for m in summary["ensemble"]["members"]}
    return {
        "cv_macro_f1": round(summary["ensemble"]["blend"]["macro_f1"], 4),
        "cv_acc": round(summary["ensemble"]["blend"]["acc"], 4),
        "cv_members_macro_f1": members,
        "test_acc": round(accuracy_score(truth.loc[pred.ids], labels), 4),
        "test_macro_f1": round(f1_score(truth.loc[pred.ids], labels, average="macro"), 4),
        "predict_seconds": round(time.perf_counter() - t0, 1),
    }


def guarded_row(run: Path, label, truth: pd.Series) -> dict:
    """A round's members blended again as the code now fits a preset's blend (log-loss held to the best member's
    macro-F1), into ``<run>-blend``: a round trained before that guard keeps its own blend, and this row shows both."""
    spec = read_json(RunDir(run).ensemble)
    names = [m["name"] for m in spec["members"]]
    summary = fit_ensemble([run / "members" / n for n in names], Path(f"{run}-blend"), names=names)
    return {
        "round": f"{label}, blend refitted",
        "fitted_on": summary["ensemble"]["fitted_on"],
        **_score(Path(f"{run}-blend"), truth),
    }


def baseline_row(train_csv: Path, truth: pd.Series) -> dict:
    """TF-IDF + LinearSVC on the same rows and text: its test scores and its 5-fold CV on the preset's folds."""
    train, test = pd.read_csv(train_csv, dtype=str), pd.read_csv(DATA / "test.csv", dtype=str)
    labels = baseline_predict(_texts(train, True), train["categories"], _texts(test, True))
    folds = pd.read_csv(Path(train_csv).parent / "preset" / "folds.csv", dtype={"id": str}).set_index("id")["fold"]
    oof = baseline_oof(train, folds.loc[train["id"]].reset_index(drop=True), True)
    return {
        "round": "TF-IDF + LinearSVC (title + attributes)",
        "cv_macro_f1": round(f1_score(train["categories"], oof, average="macro"), 4),
        "test_acc": round(accuracy_score(truth.loc[test["id"]], labels), 4),
        "test_macro_f1": round(f1_score(truth.loc[test["id"]], labels, average="macro"), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-rows", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/aisle-plb"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("aisle.training.cv", "aisle.training.fold", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    work = args.work
    train_csv = write_train_subset(work, args.train_rows)
    truth = pd.read_csv(DATA / "test_labels.csv", dtype=str).set_index("id")["categories"]
    r0 = work / "preset"
    rows, t0, fresh = [], time.perf_counter(), not r0.exists()
    if not RunDir(r0).is_finished():
        run_portfolio(validate_config(_config(train_csv, work)), "cpu", r0, SHARED / "models")
    rows.append({"round": 0, "pseudo_rows": 0, "train_seconds": _seconds(fresh, t0), **_score(r0, truth)})
    print(json.dumps(rows[-1]), flush=True)
    current = r0
    for r in range(1, args.rounds + 1):
        t0, target = time.perf_counter(), round_dir(r0, r)
        fresh = not target.exists()
        table = pseudo_label(current, DATA / "test.csv", THRESHOLD)
        retrain(r0, target, [f"data.pseudo_labels={table.path.resolve()}"])
        row = {"round": r, "pseudo_rows": table.rows, "train_seconds": _seconds(fresh, t0)}
        rows.append({**row, **_score(target, truth)})
        print(json.dumps(rows[-1]), flush=True)
        current = target
    for r in range(args.rounds + 1):
        rows.append(guarded_row(r0 if r == 0 else round_dir(r0, r), r, truth))
        print(json.dumps(rows[-1]), flush=True)
    rows.append(baseline_row(train_csv, truth))
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": f"python benchmarks/pseudo_labels_fashion.py --train-rows {args.train_rows} --rounds {args.rounds}",
        "setup": f"cpu preset (linear, MiniLM text, Lite0 image, fusion; --models-dir ../shared/models), "
        f"{args.train_rows} stratified train.csv rows, title + attributes, 5 folds; pseudo-labels: test.csv rows "
        f"with top probability >= {THRESHOLD}, hard labels, weight 1; test: the 8,686-row test split",
        "table": rows,
    }
    out = ROOT / "benchmarks" / "results" / "pseudo_labels_fashion.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

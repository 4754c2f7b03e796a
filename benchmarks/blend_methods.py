"""How to weigh the preset's members: bagged ensemble selection (``select``, the preset's before 2026-12-01) against
equal weights over the best member's peers, held to its macro-F1 (``peers``, the preset's now), without that guard,
and equal weights over all members, on members other benchmarks trained (it trains nothing but the baseline).

Every subset is scored honestly: for each fold, the members' calibration and the weights are fitted on the other
four folds' out-of-fold rows only, then that fold's rows are blended (``portfolio_subsets.cross_fitted_blend``).
TF-IDF + LinearSVC is scored on the same folds. On all of fashion-products, weights are fitted on the 34,926
out-of-fold rows (as ``aisle train --preset`` does) and applied to the members' test-split probabilities.

Reads (skipping what is not there):
  --subsets   portfolio_subsets.py's folders (subset0-4, and subset10-19 from its --wide run)
  --study     fusion_study.py's look-alike subsets (members linear, text_cw, image_cw, concat_cw)
  --rare      a preset run on fusion_study's rare6k subset (--train-rare trains it first: ~20 min here)
  --fashion   portfolio_fashion.py's preset folder; test probabilities are predicted once into --probs

Usage:
  .venv/bin/python benchmarks/blend_methods.py [--train-rare]
Writes benchmarks/results/blend_methods.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fusion_study
from aisle.config import validate_config
from aisle.evaluation.calibration import fit_logit_scale, rescale_probs
from aisle.training.blend import Member, peer_weights, read_member
from aisle.training.portfolio import run_portfolio
from bench_lib import DATA, SHARED
from portfolio_subsets import (
    SUBSETS,
    WIDE,
    baseline_oof,
    cross_fitted_blend,
    data_section,
    make_subset,
    preset_weights,
    select_weights,
)

NAMES = ["linear", "text", "image", "fusion"]
STUDY_RUNS = {"linear": "linear", "text": "text_cw", "image": "image_cw", "fusion": "concat_cw"}
METHODS = {
    "select": select_weights,
    "peers": preset_weights,
    "peers, unguarded": lambda p, y: peer_weights(p, y),
    "equal": lambda p, y: np.append(np.full(len(p), 1 / len(p)), 0.0),
}


def _f1(y, pred) -> float:
    return round(float(f1_score(y, pred, average="macro")), 4)


def score(name: str, df: pd.DataFrame, attrs: bool, members: list[Member], folds_csv: Path) -> dict:
    """Cross-fitted macro-F1 of every method, each member's and the baseline's, on the same folds."""
    classes = sorted(df["categories"].unique())
    y = np.array([classes.index(c) for c in df.set_index("id").loc[members[0].ids, "categories"]])
    folds = pd.read_csv(folds_csv, dtype={"id": str}).set_index("id").loc[df["id"].astype(str), "fold"]
    row = {
        "subset": name,
        "classes": len(classes),
        "products": len(df),
        "input": "title + attributes" if attrs else "title",
    }
    row["tfidf_linearsvc"] = _f1(df["categories"], baseline_oof(df, folds.reset_index(drop=True), attrs))
    for method, fit in METHODS.items():
        row[method] = _f1(y, cross_fitted_blend(members, y, members[0].folds, fit).argmax(1))
    row.update({m.name: _f1(y, m.probs.argmax(1)) for m in members})
    print(json.dumps(row), flush=True)
    return row


def random_subsets(root: Path) -> list[dict]:
    rows = []
    for i, (seed, n, per, attrs) in {**dict(enumerate(SUBSETS)), **{w[0]: w for w in WIDE}}.items():
        run = root / f"subset{i}" / "preset"
        if (run / "cv_summary.json").is_file():
            members = [read_member(run / "members" / m, m) for m in NAMES]
            rows.append(score(f"random{i}", make_subset(seed, n, per), attrs, members, run / "folds.csv"))
    return rows


def study_subsets(root: Path) -> list[dict]:
    rows = []
    for name in fusion_study.LOOK_ALIKE:
        if all((root / name / r / "cv_summary.json").is_file() for r in STUDY_RUNS.values()):
            df, attrs = fusion_study.subset(name)
            members = [read_member(root / name / STUDY_RUNS[m], m) for m in NAMES]
            rows.append(score(name, df, attrs, members, root / name / "linear" / "folds.csv"))
    return rows


def rare_subset(work: Path, train: bool) -> list[dict]:
    df, attrs = fusion_study.subset("rare6k")
    if train and not (work / "preset" / "cv_summary.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        df.to_csv(work / "train.csv", index=False)
        raw = {"name": "preset", "output_dir": str(work), "data": data_section(work / "train.csv", attrs, 7)}
        raw["runtime"] = {"num_workers": 2, "cache_dir": str(work / "cache")}
        run_portfolio(validate_config(raw), "cpu", work / "preset", SHARED / "models")
    if not (work / "preset" / "cv_summary.json").is_file():
        return []
    members = [read_member(work / "preset" / "members" / m, m) for m in NAMES]
    return [score("rare6k", df, attrs, members, work / "preset" / "folds.csv")]


def _test_probs(run: Path, probs: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Each member's test-split probabilities, predicted once and kept in ``probs``."""
    from aisle.inference import predict

    probs.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        if not (probs / f"{name}_test.npy").is_file():
            pred = predict(run / "members" / name, DATA / "test.csv")
            np.save(probs / f"{name}_test.npy", pred.probs)
            (probs / "test_ids.json").write_text(json.dumps([str(i) for i in pred.ids]))
            (probs / "classes.json").write_text(json.dumps(list(pred.label_map.classes)))
    ids, classes = (json.loads((probs / f).read_text()) for f in ("test_ids.json", "classes.json"))
    return [np.load(probs / f"{n}_test.npy") for n in NAMES], ids, classes


def fashion(run: Path, probs: Path) -> dict | None:
    """Weights fitted on all out-of-fold rows (as the preset fits them), scored on the test split."""
    if not (run / "cv_summary.json").is_file():
        return None
    members = [read_member(run / "members" / m, m) for m in NAMES]
    test, ids, classes = _test_probs(run, probs)
    oof = pd.read_csv(run / "members" / "linear" / "main" / "oof.csv", dtype={"id": str}).set_index("id")
    y = np.array([classes.index(c) for c in oof.loc[members[0].ids, "label"]])
    labels = pd.read_csv(DATA / "test_labels.csv", dtype={"id": str}).set_index("id").loc[ids, "categories"]
    yt = np.array([classes.index(c) for c in labels])
    scales = [fit_logit_scale(np.log(np.clip(m.probs, 1e-15, None)), y, 0.05, 20.0) for m in members]
    calibrated = [rescale_probs(m.probs, s) for m, s in zip(members, scales)]
    row: dict = {"subset": "fashion-products (train.csv -> test split)", "products": len(y)}
    for method, fit in METHODS.items():
        w = fit(calibrated, y)
        blend = sum(wi * rescale_probs(t, s) for wi, t, s in zip(w, test, scales)) + w[-1] / len(classes)
        row[method] = {"weights": [round(float(v), 3) for v in w[:-1]], "test_macro_f1": _f1(yt, blend.argmax(1))}
        oof_blend = sum(wi * c for wi, c in zip(w, calibrated)) + w[-1] / len(classes)
        row[method]["oof_macro_f1"] = _f1(y, oof_blend.argmax(1))
    row.update({n: _f1(yt, t.argmax(1)) for n, t in zip(NAMES, test)})
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    gaps = {k: np.array([r[k] - r["tfidf_linearsvc"] for r in rows]) for k in [*METHODS, *NAMES]}
    return {
        k: {
            "mean_gain_points": round(float(g.mean() * 100), 2),
            "se_points": round(float(g.std(ddof=1) / np.sqrt(len(g)) * 100), 2) if len(g) > 1 else 0.0,
            "worst_points": round(float(g.min() * 100), 2),
            "subsets_below_baseline": int((g < -1e-9).sum()),
        }
        for k, g in gaps.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subsets", type=Path, default=Path("/tmp/aisle-portfolio-subsets"))
    ap.add_argument("--study", type=Path, default=Path("/tmp/aisle-fusion-study"))
    ap.add_argument("--rare", type=Path, default=Path("/tmp/aisle-rare6k-preset"))
    ap.add_argument("--train-rare", action="store_true")
    ap.add_argument("--fashion", type=Path, default=Path("/tmp/aisle-portfolio-fashion/preset"))
    ap.add_argument("--probs", type=Path, default=Path("/tmp/pfprobs"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = random_subsets(args.subsets) + study_subsets(args.study) + rare_subset(args.rare, args.train_rare)
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": "python benchmarks/blend_methods.py",
        "rows": rows,
        "gain_over_tfidf_linearsvc": summary(rows),
        "fashion": fashion(args.fashion, args.probs),
    }
    (ROOT / "benchmarks" / "results" / "blend_methods.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["gain_over_tfidf_linearsvc"], indent=2))


if __name__ == "__main__":
    main()

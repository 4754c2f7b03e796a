"""The cpu preset against TF-IDF + LinearSVC on small catalogues cut from fashion-products.

Each subset: 7-12 classes drawn at random (classes with enough products), ~N products per class, a fixed seed;
titles only or titles + attributes (gender, baseColour, season, usage as ``name: value``). Every system is scored by
5-fold cross-validation over the whole subset on the same folds (the run's ``folds.csv``), so every product is
scored once. The preset's own out-of-fold score has its blend weights fitted on those same predictions; the
"cross-fitted" figure fits the weights on the other four folds for each fold, which is the honest one.

Usage:
  .venv/bin/python benchmarks/portfolio_subsets.py                # all five subsets (~25 min on 2 CPU cores)
  .venv/bin/python benchmarks/portfolio_subsets.py --only 0 --keep /tmp/pf
Writes benchmarks/results/portfolio_subsets.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from aisle.config import validate_config
from aisle.evaluation.calibration import fit_logit_scale, rescale_probs
from aisle.training.blend import guarded_weights, held_peer_weights, read_member
from aisle.training.portfolio import blend_members, run_portfolio
from bench_lib import DATA, SHARED

ATTRIBUTES = ["gender", "baseColour", "season", "usage"]
# (seed, classes, products per class, attributes in the text)
SUBSETS = [(0, 7, 120, False), (1, 9, 120, True), (2, 12, 120, False), (3, 8, 60, True), (4, 10, 120, False)]
# --wide: ten more catalogue shapes (few rows, few or many classes), chosen before any was run; subset number = seed
WIDE = [
    (10, 5, 40, False),
    (11, 7, 40, True),
    (12, 10, 60, False),
    (13, 12, 30, True),
    (14, 15, 80, False),
    (15, 6, 120, True),
    (16, 20, 50, False),
    (17, 8, 200, True),
    (18, 9, 30, False),
    (19, 11, 100, True),
]


def make_subset(seed: int, n_classes: int, per_class: int) -> pd.DataFrame:
    train = pd.read_csv(DATA / "train.csv", dtype=str)
    counts = train["categories"].value_counts()
    rng = np.random.default_rng(seed)
    classes = rng.choice(sorted(counts[counts >= per_class].index), n_classes, replace=False)
    parts = [train[train["categories"] == c].sample(per_class, random_state=seed) for c in classes]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _texts(df: pd.DataFrame, attrs: bool) -> list[str]:
    if not attrs:
        return df["title"].fillna("").tolist()
    return [
        ". ".join([t, *(f"{a}: {r[a]}" for a in ATTRIBUTES if isinstance(r[a], str) and r[a])])
        for t, (_, r) in zip(df["title"].fillna(""), df.iterrows())
    ]


def baseline_predict(train_texts, train_labels, other_texts) -> np.ndarray:
    """The baseline: TF-IDF (word 1-2 + char_wb 2-5, sublinear tf) + LinearSVC fitted on ``train_texts``."""
    vecs = [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    ]
    x_tr = sp.hstack([v.fit_transform(train_texts) for v in vecs]).tocsr()
    x_other = sp.hstack([v.transform(other_texts) for v in vecs]).tocsr()
    return LinearSVC().fit(x_tr, train_labels).predict(x_other)


def baseline_oof(df: pd.DataFrame, folds: pd.Series, attrs: bool) -> np.ndarray:
    """The baseline fitted per fold: out-of-fold predictions."""
    texts = np.asarray(_texts(df, attrs), dtype=object)
    pred = np.empty(len(df), dtype=object)
    for k in sorted(folds.unique()):
        tr, va = (folds != k).to_numpy(), (folds == k).to_numpy()
        pred[va] = baseline_predict(texts[tr], df["categories"][tr], texts[va])
    return pred


def data_section(train_csv: Path, attrs: bool, seed: int) -> dict:
    """A subset's data section: its table, fashion-products' images, title (+ attributes) text, 5 folds."""
    return {
        "train_csv": str(train_csv),
        "image_dir": str(DATA / "images"),
        "text_cols": ["title"],
        "attribute_cols": ATTRIBUTES if attrs else None,
        "folds": 5,
        "seed": seed,
    }


def preset_weights(probs, y: np.ndarray) -> np.ndarray:
    """The preset's blend weights: equal over the best member and its peers, held to macro-F1 (``blend_members``)."""
    return held_peer_weights(probs, y, "log_loss", 25)[0]


def select_weights(probs, y: np.ndarray) -> np.ndarray:
    """The preset's blend weights before 2026-12-01: bagged selection on log-loss, held to macro-F1."""
    return guarded_weights(probs, y, "log_loss", 25)[0]


def calibration_scales(members, y: np.ndarray, fit: np.ndarray) -> list[float]:
    """Each member's calibration (as the preset fits it) on the ``fit`` rows."""
    return [fit_logit_scale(np.log(np.clip(m.probs[fit], 1e-15, None)), y[fit], 0.05, 20.0) for m in members]


def fitted_blend(members, y: np.ndarray, fit: np.ndarray, rows: np.ndarray, fit_weights=preset_weights) -> np.ndarray:
    """The blend of ``rows``, its calibration and weights (``fit_weights(probs, y)``) fitted on the ``fit`` rows."""
    scales = calibration_scales(members, y, fit)
    w = fit_weights([rescale_probs(m.probs[fit], s) for m, s in zip(members, scales)], y[fit])
    blend = sum(wi * rescale_probs(m.probs[rows], s) for wi, m, s in zip(w, members, scales))
    return np.asarray(blend) + w[-1] / members[0].probs.shape[1]


def cross_fitted_blend(members, y: np.ndarray, folds: np.ndarray, fit_weights=preset_weights) -> np.ndarray:
    """Each fold's blend with calibration and weights (``fit_weights(probs, y)``, default the preset's) fitted on
    the other folds' out-of-fold rows only."""
    out = np.zeros_like(members[0].probs)
    for k in np.unique(folds):
        out[folds == k] = fitted_blend(members, y, folds != k, folds == k, fit_weights)
    return out


def _train_or_reblend(raw: dict, run: Path, reuse: bool, previous: dict) -> tuple[dict, float | None]:
    """Train the preset (timed), or with ``reuse`` fit only the blend again on members already trained."""
    names = ["linear", "text", "image", "fusion"]
    if reuse and all((run / "members" / n / "cv_summary.json").is_file() for n in names):
        summary = blend_members([run / "members" / n for n in names], run, names)
        return summary, previous.get("preset_seconds")
    t0 = time.perf_counter()
    summary = run_portfolio(validate_config(raw), "cpu", run, SHARED / "models", overwrite=True)
    return summary, time.perf_counter() - t0


def run_subset(i: int, work: Path, reuse: bool = False, previous: dict | None = None) -> dict:
    seed, n_classes, per_class, attrs = {**dict(enumerate(SUBSETS)), **{w[0]: w for w in WIDE}}[i]
    df = make_subset(seed, n_classes, per_class)
    sub = work / f"subset{i}"
    sub.mkdir(parents=True, exist_ok=True)
    df.to_csv(sub / "train.csv", index=False)
    raw = {
        "name": "preset",
        "output_dir": str(sub),
        "data": data_section(sub / "train.csv", attrs, seed),
        "runtime": {"num_workers": 2, "cache_dir": str(work / "cache")},
    }
    summary, seconds = _train_or_reblend(raw, sub / "preset", reuse, previous or {})
    folds = pd.read_csv(sub / "preset" / "folds.csv", dtype={"id": str}).set_index("id").loc[df["id"], "fold"]
    t1 = time.perf_counter()
    base = baseline_oof(df, folds.reset_index(drop=True), attrs)
    base_s = time.perf_counter() - t1
    members = [read_member(sub / "preset" / "members" / m["name"], m["name"]) for m in summary["ensemble"]["members"]]
    classes = sorted(df["categories"].unique())
    y = np.array([classes.index(c) for c in df.set_index("id").loc[members[0].ids, "categories"]])
    crossed = cross_fitted_blend(members, y, members[0].folds)
    selected = cross_fitted_blend(members, y, members[0].folds, select_weights)
    base_f1 = f1_score(df["categories"], base, average="macro")
    row = {
        "subset": i,
        "seed": seed,
        "classes": n_classes,
        "products": len(df),
        "input": "title + attributes" if attrs else "title",
        "tfidf_linearsvc": round(base_f1, 4),
        "preset_cross_fitted": round(f1_score(y, crossed.argmax(1), average="macro"), 4),
        "select_cross_fitted": round(f1_score(y, selected.argmax(1), average="macro"), 4),
        "preset_oof": round(summary["ensemble"]["blend"]["macro_f1"], 4),
        **{m["name"]: round(m["oof"]["macro_f1"], 4) for m in summary["ensemble"]["members"]},
        "weights": {m["name"]: round(m["weight"], 3) for m in summary["ensemble"]["members"]},
        "weights_fitted_on": summary["ensemble"].get("fitted_on", "log_loss"),
        "preset_seconds": None if seconds is None else round(seconds, 1),
        "baseline_seconds": round(base_s, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def _summary(rows: list[dict]) -> dict:
    def mean_se(key: str) -> tuple[float, float]:
        v = np.array([r[key] for r in rows])
        return round(float(v.mean()), 4), round(float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0, 4)

    keys = ("tfidf_linearsvc", "preset_cross_fitted", "select_cross_fitted", "preset_oof", "linear", "text")
    out = {k: mean_se(k) for k in keys if all(k in r for r in rows)}
    if all("fusion" in r for r in rows):
        out["fusion"] = mean_se("fusion")
    gaps = [r["preset_cross_fitted"] - r["tfidf_linearsvc"] for r in rows]
    out["targets"] = {
        "mean gain >= 1 point": bool(np.mean(gaps) >= 0.01),
        "no subset more than 1 point below": bool(min(gaps) >= -0.01),
        "fusion >= text on the mean": bool("fusion" in out and out["fusion"][0] >= out["text"][0]),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", type=int, nargs="*", default=None)
    ap.add_argument("--keep", type=Path, default=Path("/tmp/aisle-portfolio-subsets"))
    ap.add_argument("--reuse", action="store_true", help="members already trained under --keep: fit the blend only")
    ap.add_argument("--wide", action="store_true", help="the ten WIDE subsets, into portfolio_subsets_wide.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = ROOT / "benchmarks" / "results" / f"portfolio_subsets{'_wide' if args.wide else ''}.json"
    before = {r["subset"]: r for r in json.loads(out.read_text())["rows"]} if out.is_file() else {}
    chosen = args.only if args.only is not None else [s[0] for s in WIDE] if args.wide else range(len(SUBSETS))
    rows = [run_subset(i, args.keep, args.reuse, before.get(i)) for i in chosen]
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": f"python benchmarks/portfolio_subsets.py{' --wide' if args.wide else ''}",
        "rows": rows,
        "mean_and_se": _summary(rows),
    }
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["mean_and_se"], indent=2))


if __name__ == "__main__":
    main()

"""Should the linear model weigh rare classes up by default? TF-IDF + LinearSVC (aisle's linear model's features
and classifier, fitted here with scikit-learn directly) unweighted against 1/sqrt(class count) sample weights.

Scored by 5-fold cross-validation (the same folds for both) on five samples of fashion-products' train.csv drawn
uniformly (so with its natural class imbalance; classes with under 10 rows dropped; titles only or titles +
attributes) and on all of train.csv, then train.csv -> the 8,686-row test split. Each weighting is normalised to
mean 1 over the rows (as the linear model does), so ``C`` means the same in both.

Usage:
  .venv/bin/python benchmarks/linear_class_weights.py      (~8 min on 2 CPU cores)
Writes benchmarks/results/linear_class_weights.json.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_lib import DATA
from portfolio_subsets import _texts

SCHEMES = ("none", "inverse_sqrt")
SAMPLES = [(3000, False), (3000, True), (6000, False), (6000, True), (12000, True)]  # (rows, attributes); seed = i


def _features(fit_texts: list[str], other: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    vecs = [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    ]
    x = sp.hstack([v.fit_transform(fit_texts) for v in vecs], format="csr")
    return x, sp.hstack([v.transform(other) for v in vecs], format="csr")


def _predict(x, y: np.ndarray, x_other, n_classes: int) -> dict[str, np.ndarray]:
    counts = np.maximum(np.bincount(y, minlength=n_classes), 1)
    out = {}
    for scheme in SCHEMES:
        rows = (np.ones(n_classes) if scheme == "none" else 1.0 / np.sqrt(counts))[y]
        rows = rows * len(rows) / rows.sum()  # mean 1 over the rows, as aisle's linear model: C keeps its meaning
        out[scheme] = LinearSVC(random_state=0).fit(x, y, sample_weight=rows).predict(x_other)
    return out


def _cv(df: pd.DataFrame, attrs: bool) -> dict[str, float]:
    classes, y = np.unique(df["categories"], return_inverse=True)
    texts = _texts(df, attrs)
    pred = {s: np.zeros(len(y), dtype=int) for s in SCHEMES}
    for tr, va in StratifiedKFold(5, shuffle=True, random_state=0).split(texts, y):
        x, xv = _features([texts[i] for i in tr], [texts[i] for i in va])
        for s, p in _predict(x, y[tr], xv, len(classes)).items():
            pred[s][va] = p
    return {s: round(f1_score(y, p, average="macro"), 4) for s, p in pred.items()}


def main() -> None:
    full = pd.read_csv(DATA / "train.csv", dtype=str)
    rows = []
    for seed, (n, attrs) in enumerate(SAMPLES):
        df = full.sample(n, random_state=seed)
        counts = df["categories"].value_counts()
        df = df[df["categories"].isin(counts[counts >= 10].index)].reset_index(drop=True)
        rows.append(
            {
                "sample": f"{n} rows, seed {seed}",
                "rows": len(df),
                "classes": int(df["categories"].nunique()),
                "attributes": attrs,
                "cv_macro_f1": _cv(df, attrs),
            }
        )
        print(rows[-1], flush=True)
    rows.append(
        {
            "sample": "all of train.csv",
            "rows": len(full),
            "classes": int(full["categories"].nunique()),
            "attributes": True,
            "cv_macro_f1": _cv(full, True),
        }
    )
    print(rows[-1], flush=True)
    test = pd.read_csv(DATA / "test.csv", dtype=str)
    truth = pd.read_csv(DATA / "test_labels.csv", dtype=str).set_index("id").loc[test["id"], "categories"]
    classes, y = np.unique(full["categories"], return_inverse=True)
    x, xt = _features(_texts(full, True), _texts(test, True))
    split = {
        s: round(f1_score(truth, classes[p], average="macro"), 4) for s, p in _predict(x, y, xt, len(classes)).items()
    }
    gains = [r["cv_macro_f1"]["inverse_sqrt"] - r["cv_macro_f1"]["none"] for r in rows]
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": "python benchmarks/linear_class_weights.py",
        "rows": rows,
        "test_split_macro_f1": split,
        "mean_cv_gain_points": round(100 * float(np.mean(gains)), 2),
    }
    (ROOT / "benchmarks" / "results" / "linear_class_weights.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

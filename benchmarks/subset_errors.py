"""Where the cpu preset still errs on the five small fashion subsets, and how the titles there are labelled.

Reads the run folders `portfolio_subsets.py` left under --keep (it trains nothing): each subset's blend out-of-fold
predictions (``preset/ensemble/oof.csv``, weights fitted on those same rows) and its table. For every subset it
counts the errors by (true, predicted) class pair. For the most frequent pairs it then asks, on all of train.csv,
how products whose title names one class of the pair (the class name as a word, e.g. "Flats") are labelled: a
title that names a class yet is labelled as the other one is a label no text model can get right.

Usage:
  .venv/bin/python benchmarks/subset_errors.py [--keep /tmp/aisle-portfolio-subsets]     (seconds)
Writes benchmarks/results/subset_errors.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_lib import DATA

TOP_PAIRS = 3


def subset_errors(folder: Path) -> dict:
    oof = pd.read_csv(folder / "preset" / "ensemble" / "oof.csv", dtype={"id": str})
    wrong = oof[oof["label"] != oof["pred"]]
    pairs = Counter(zip(wrong["label"], wrong["pred"]))
    return {
        "subset": folder.name,
        "products": len(oof),
        "errors": len(wrong),
        "by_pair": [{"true": a, "predicted": b, "errors": n} for (a, b), n in pairs.most_common()],
    }


def title_labels(train: pd.DataFrame, a: str, b: str) -> dict:
    """How products of classes a and b whose title names a (or b) as a word are labelled."""
    both = train[train["categories"].isin([a, b])]
    out = {}
    for word in (a, b):
        named = both[both["title"].fillna("").str.contains(rf"\b{re.escape(word)}\b", case=False)]
        out[f"title names {word!r}"] = named["categories"].value_counts().to_dict()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=Path("/tmp/aisle-portfolio-subsets"))
    args = ap.parse_args()
    folders = sorted(p for p in args.keep.glob("subset*") if (p / "preset" / "ensemble" / "oof.csv").is_file())
    if not folders:
        print(f"skipped: no finished subsets under {args.keep}: run benchmarks/portfolio_subsets.py first")
        return
    train = pd.read_csv(DATA / "train.csv", dtype=str)
    subsets = [subset_errors(f) for f in folders]
    pairs: Counter = Counter()
    for s in subsets:
        for p in s["by_pair"]:
            pairs[tuple(sorted((p["true"], p["predicted"])))] += p["errors"]
    top = [
        {"classes": list(pair), "errors_in_subsets": n, "train_csv": title_labels(train, *pair)}
        for pair, n in pairs.most_common(TOP_PAIRS)
    ]
    result = {
        "date": date.today().isoformat(),
        "command": "python benchmarks/subset_errors.py",
        "note": "blend out-of-fold predictions with weights fitted on the same rows (portfolio_subsets' preset_oof)",
        "errors": sum(s["errors"] for s in subsets),
        "products": sum(s["products"] for s in subsets),
        "subsets": subsets,
        "top_pairs": top,
    }
    (ROOT / "benchmarks" / "results" / "subset_errors.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "subsets"}, indent=2))
    for s in subsets:
        print(s["subset"], s["errors"], "of", s["products"], s["by_pair"][:3])


if __name__ == "__main__":
    main()

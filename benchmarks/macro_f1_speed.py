"""CPU time of one macro-F1 score as the blend's weight fit takes it: ``classification_metrics`` (scikit-learn, every
metric) against ``macro_f1`` (counts), side by side on random probabilities of 6,000 rows x 84 classes.

Usage: .venv/bin/python benchmarks/macro_f1_speed.py [--calls 50]
Writes benchmarks/results/macro_f1_speed.json.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np

from aisle.evaluation.metrics import classification_metrics, macro_f1

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 84, 6000), rng.dirichlet(np.ones(84), 6000)
    ways = {
        "classification_metrics": lambda: classification_metrics(y, p)["macro_f1"],
        "macro_f1 from counts": lambda: macro_f1(y, p.argmax(1)),
    }
    row = {}
    for name, fn in ways.items():
        t0 = time.process_time()
        values = [fn() for _ in range(args.calls)]
        row[name] = {"cpu_ms_per_call": round((time.process_time() - t0) / args.calls * 1000, 3), "value": values[0]}
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": f"python benchmarks/macro_f1_speed.py --calls {args.calls}",
        "setup": "6,000 rows x 84 classes of Dirichlet(1) probabilities, seed 0; argmax included in the counts way",
        "results": row,
        "ratio": round(
            row["classification_metrics"]["cpu_ms_per_call"] / row["macro_f1 from counts"]["cpu_ms_per_call"], 1
        ),
    }
    (ROOT / "benchmarks" / "results" / "macro_f1_speed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

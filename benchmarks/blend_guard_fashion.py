"""The preset's blend with and without the macro-F1 guard, scored honestly (cross-fitted) on the members that
``pseudo_labels_fashion.py`` trained: for each fold, calibration and weights are fitted on the other four folds'
out-of-fold rows only, then that fold's rows are blended and scored (macro-F1 and accuracy over all rows).

"log_loss only" is the blend before the guard; "guarded" is what ``fit_ensemble`` now fits (log-loss, refitted on
macro-F1 when that scores below the best member's).

Usage (after benchmarks/pseudo_labels_fashion.py, whose runs it reads):
  .venv/bin/python benchmarks/blend_guard_fashion.py [--work /tmp/aisle-plb] [--rounds 2]
Writes benchmarks/results/blend_guard_fashion.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from sklearn.metrics import accuracy_score, f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from aisle.data.labels import LabelMap
from aisle.pseudo_rounds import round_dir
from aisle.serialization import read_json
from aisle.tables import read_numeric_table
from aisle.training.blend import ensemble_weights, guarded_weights, read_member
from portfolio_subsets import cross_fitted_blend

WAYS = {
    "log_loss only": lambda p, y: ensemble_weights(p, y, "log_loss"),
    "guarded": lambda p, y: guarded_weights(p, y, "log_loss", 25)[0],
}


def score_round(run: Path) -> dict:
    names = [m["name"] for m in read_json(run / "ensemble.json")["members"]]
    members = [read_member(run / "members" / n, n) for n in names]
    oof = read_numeric_table(members[0].rd.stage_oof(read_json(members[0].rd.summary)["stage"])).set_index("id")
    y, _ = LabelMap.load(members[0].rd.label_map).encode(oof.loc[members[0].ids, "label"])
    row: dict = {
        "members_oof_macro_f1": {m.name: round(f1_score(y, m.probs.argmax(1), average="macro"), 4) for m in members}
    }
    for way, fit_weights in WAYS.items():
        pred = cross_fitted_blend(members, y, members[0].folds, fit_weights).argmax(1)
        row[way] = {
            "cross_fitted_macro_f1": round(f1_score(y, pred, average="macro"), 4),
            "cross_fitted_acc": round(accuracy_score(y, pred), 4),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/aisle-plb"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    r0 = args.work / "preset"
    rows = {}
    for r in range(args.rounds + 1):
        rows[f"round {r}"] = score_round(r0 if r == 0 else round_dir(r0, r))
        print(r, json.dumps(rows[f"round {r}"]), flush=True)
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": f"python benchmarks/blend_guard_fashion.py --rounds {args.rounds}",
        "setup": "the cpu preset's members trained by pseudo_labels_fashion.py (6,000 stratified train.csv rows, "
        "title + attributes, 5 folds; round r = r pseudo-label rounds); cross-fitted blends over the 6,000 rows",
        "rounds": rows,
    }
    (ROOT / "benchmarks" / "results" / "blend_guard_fashion.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

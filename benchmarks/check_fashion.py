"""Acceptance check for `aisle check` on the real fashion-products catalogue.

1. `check` on train.csv (34,926 rows): wall time, class count, image problems (expected: 84 classes, none).
2. A linked copy of the catalogue with 20 images deleted and 5 truncated: `check` must report exactly
   those 25 ids (20 `missing`, 5 `truncated`).

Usage: .venv/bin/python benchmarks/check_fashion.py [--data ../shared/data/fashion-products]
Writes benchmarks/results/check_fashion.json. Skips with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.evaluation.check import run_check


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/fashion-products"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train = args.data / "train.csv"
    if not train.is_file():
        print(f"SKIP: {train} not found (the shared fashion-products data is not beside this checkout)")
        return 0

    cfg = DataConfig()
    t0 = time.perf_counter()
    clean = run_check(cfg, train)
    clean_s = time.perf_counter() - t0
    print(
        f"clean: {clean.n_rows} rows, {clean.n_classes} classes, {len(clean.issue_ids)} products with image "
        f"problems, {clean_s:.1f} s"
    )

    df = pd.read_csv(train, dtype=str)
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(df["id"].to_numpy(), size=25, replace=False)
    deleted, truncated = set(picked[:20]), set(picked[20:])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        shutil.copyfile(train, root / "train.csv")
        for pid in df["id"]:
            if pid in deleted:
                continue
            src = args.data / "images" / f"{pid}.jpg"
            dst = root / "images" / f"{pid}.jpg"
            if pid in truncated:  # a new file: never write through a link into the shared data
                data = src.read_bytes()
                dst.write_bytes(data[: len(data) // 2])
            else:
                _link_or_copy(src, dst)
        t0 = time.perf_counter()
        broken = run_check(cfg, root / "train.csv")
        broken_s = time.perf_counter() - t0
    reported = {i.id: i.reason for i in broken.image_issues}
    expected = {**{i: "missing" for i in deleted}, **{i: "truncated" for i in truncated}}
    exact = reported == expected
    print(
        f"broken copy: reported {len(reported)} ids ({broken.issue_counts}); exactly the 25 damaged: {exact}; "
        f"{broken_s:.1f} s"
    )

    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} cpus",
        "command": "python benchmarks/check_fashion.py",
        "clean": {
            "rows": clean.n_rows,
            "classes": clean.n_classes,
            "image_problem_ids": len(clean.issue_ids),
            "seconds": round(clean_s, 2),
        },
        "broken": {
            "deleted": sorted(deleted),
            "truncated": sorted(truncated),
            "reported": reported,
            "exact_match": exact,
            "seconds": round(broken_s, 2),
        },
    }
    out = Path(__file__).parent / "results" / "check_fashion.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    ok = exact and clean.n_classes == 84 and not clean.issue_ids and clean_s < 60
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

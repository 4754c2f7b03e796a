"""aisle benchmark suite: each benchmark runs both ways in this one process and reports ratios.

Benchmarks (data: ../shared/data/fashion-products, towers: ../shared/models):
  stage1    frozen EfficientNet-Lite0 + MiniLM-L6, concat fusion, 2 folds x N epochs: feature cache off vs cold vs warm
  predict   5-fold frozen-tower run on the test rows: per-fold re-encoding vs one shared encoder pass
  datapath  generated 1000x1000 JPEG photos: DataLoader samples/s decoding every epoch vs the decoded image cache
  accuracy  train.csv -> test split: image / text / fusion heads on cached frozen features, a short stage 2 (text
            tower fine-tuned, one fold), a logistic regression on the same features, TF-IDF + LinearSVC on the title

Usage:
  .venv/bin/python benchmarks/run.py --quick          # a few minutes: small subsets
  .venv/bin/python benchmarks/run.py                  # the full run (~50 min on a 2-core CPU)
  .venv/bin/python benchmarks/run.py --only stage1,predict
Writes benchmarks/results/<name>.json and prints one table per benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch

from bench_lib import (
    SHARED,
    bench_accuracy,
    bench_datapath,
    bench_predict,
    bench_stage1,
)

BENCHES = {"stage1": bench_stage1, "predict": bench_predict, "datapath": bench_datapath, "accuracy": bench_accuracy}


def _table(name: str, rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols}
    lines = [f"== {name}", "  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(f"{r.get(c, '')}".ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subsets: a few minutes in all")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated benchmarks to run")
    ap.add_argument("--keep-work", action="store_true", help="keep benchmarks/work/ (caches, runs) afterwards")
    args = ap.parse_args()
    if not (SHARED / "data/fashion-products/train.csv").is_file() or not (SHARED / "models").is_dir():
        print(f"SKIP: the shared data and models are not at {SHARED}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    os.environ["AISLE_PROGRESS"] = "0"
    work = ROOT / "benchmarks" / "work" / ("quick" if args.quick else "full")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in args.only.split(","):
        t0 = time.perf_counter()
        result = BENCHES[name](work / name, quick=args.quick)
        result.update(
            {
                "benchmark": name,
                "date": date.today().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
                "command": "python benchmarks/run.py" + (" --quick" if args.quick else "") + f" --only {name}",
                "wall_seconds": round(time.perf_counter() - t0, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
        suffix = "_quick" if args.quick else ""
        (out_dir / f"{name}{suffix}.json").write_text(json.dumps(result, indent=2))
        print(_table(name, result["table"]), flush=True)
        for check, ok in result.get("targets", {}).items():
            print(f"   target {check}: {'met' if ok else 'NOT met'}")
        print(f"   peak RSS so far {result['peak_rss_mib']} MiB, {result['wall_seconds']} s\n", flush=True)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""On the built-in demo catalogue: image-only vs text-only vs fusion, same folds, same seed.

The demo data is built so that the image tells the item and the text tells the material; fusion should beat both.
Usage: .venv/bin/python benchmarks/demo_modalities.py [--n-train 600] [--epochs 12]
Prints the `aisle compare` table and writes benchmarks/results/demo_modalities.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from aisle.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()
    work = ROOT / "benchmarks" / "work" / "demo_modalities"
    data = work / "data"
    assert cli(["-q", "demo-data", str(data), "--n-train", str(args.n_train), "--n-test", "200"]) == 0
    runs = []
    for kind in ("image", "text", "fusion"):
        rd = work / "runs" / f"demo-{kind}"
        code = cli(
            [
                "-q",
                "train",
                "-c",
                str(ROOT / "configs/demo.yaml"),
                "--run-dir",
                str(rd),
                "--overwrite",
                "--set",
                f"model.type={kind}",
                "--set",
                f"data.train_csv={data / 'train.csv'}",
                "--set",
                f"train.epochs={args.epochs}",
                "--set",
                f"name=demo-{kind}",
            ]
        )
        assert code == 0, kind
        runs.append(rd)
    assert cli(["compare", *map(str, runs), "--out", str(work / "comparison")]) == 0
    rows = {r.name: json.loads((r / "cv_summary.json").read_text())["mean"] for r in runs}
    f1 = {k: v["macro_f1"] for k, v in rows.items()}
    ok = f1["demo-fusion"] > max(f1["demo-image"], f1["demo-text"])
    out = {
        "date": date.today().isoformat(),
        "command": "python benchmarks/demo_modalities.py " + " ".join(sys.argv[1:]),
        "cv_mean": rows,
        "fusion_beats_both": ok,
    }
    (ROOT / "benchmarks" / "results" / "demo_modalities.json").write_text(json.dumps(out, indent=2))
    print(
        f"fusion macro-F1 {f1['demo-fusion']:.4f} vs image {f1['demo-image']:.4f}, text {f1['demo-text']:.4f}: "
        f"fusion beats both = {ok}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Long descriptions: does a transformer text tower that reads several windows (``model.text.segments``) find what
one window (``max_length`` tokens) cuts off?

fashion-products has titles only, so long descriptions are made: each product's description is a preamble of 0-12
store sentences (shipping, returns, care, sizing: the same pool for every class, drawn at random, so they carry no
label signal), then its title, then two more such sentences. The title sits anywhere from the first token to past
token 300, the way real catalogues bury the product name under boilerplate. One stratified subset (12 classes x 120
products, seed 20), 5 folds (the same for every system, so every product is scored once):

- TF-IDF + LinearSVC on the description (it reads every word);
- aisle text, frozen all-MiniLM-L6-v2 (mean pooling) + head as in the presets, ``max_length`` 128: one window
  (``segments: 1``) and four (``segments: 4``, 512 tokens);
- the same on the title alone (what the description hides);
- the cpu preset (``aisle train --preset cpu``, the photos too) on the description, as shipped (its text and fusion
  members read one window of 256 tokens) and with two windows, its blend cross-fitted as in
  ``portfolio_subsets.py``.

Usage:
  .venv/bin/python benchmarks/long_texts.py [--keep /tmp/aisle-long-texts] [--cache DIR]   (~30 min on 2 CPU cores
  from an empty feature cache; minutes with a warm one)
Writes benchmarks/results/long_texts.json.
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
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import aisle.training.portfolio as portfolio
from aisle.config import validate_config
from aisle.training import run_cv
from aisle.training.blend import read_member
from bench_lib import DATA, SHARED
from portfolio_subsets import baseline_oof, cross_fitted_blend, make_subset

MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
STORE = [
    "Free standard shipping on every order over fifty dollars, delivered within five to seven working days.",
    "Returns are easy: send the item back unused within thirty days of delivery for a full refund to your card.",
    "Colours may look slightly different on your screen than in real life because of lighting and display settings.",
    "Please check the size chart before you order, as measurements can vary between brands and collections.",
    "Our customer care team answers every message within one working day, seven days a week, all year round.",
    "Every order is packed by hand in recycled packaging at our warehouse and shipped with a tracking number.",
    "Cash on delivery is available in most cities; card, wallet and net-banking payments are accepted as well.",
    "Gift wrapping and a personal message can be added at checkout for a small extra charge per parcel.",
    "Prices include all taxes; duties for international orders are calculated and shown before payment.",
    "Join our loyalty programme to earn points on this purchase and get early access to seasonal sales.",
    "Store away from direct sunlight and moisture when not in use to keep it looking new for longer.",
    "Images are for illustration only; the product you receive may differ in small details of its finish.",
    "Exchanges for a different size are free within fifteen days, subject to the item being unused and tagged.",
    "This product is sold by a verified seller and fulfilled from our own warehouse for faster delivery.",
    "Sign up to our newsletter for styling tips, new arrivals and members-only offers every week.",
    "We are committed to fair labour practices and audit every supplier in our network each year.",
]


def with_descriptions(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = []
    for title in df["title"].fillna(""):
        before, after = rng.integers(0, 13), 2
        pick = rng.choice(len(STORE), before + after)
        out.append(" ".join([*(STORE[i] for i in pick[:before]), f"{title}.", *(STORE[i] for i in pick[before:])]))
    return df.assign(description=out)


def _text_run(train_csv: Path, column: str, segments: int, run: Path, cache: Path) -> tuple[dict, float]:
    raw = {
        "name": run.name,
        "output_dir": str(run.parent),
        "data": {"train_csv": str(train_csv), "text_cols": [column], "folds": 5, "seed": 20},
        "model": {
            "type": "text",
            "text": {
                "name": f"hf:{MINILM}",
                "pretrained": True,
                "trainable": False,
                "pooler": "mean",
                "max_length": 128,
                "segments": segments,
            },
            "head_hidden": 512,
            "dropout": 0.2,
        },
        "train": {
            "epochs": 20,
            "batch_size": 64,
            "lr": {"default": 1e-3},
            "label_smoothing": 0.1,
            "early_stopping_patience": 5,
        },
        "runtime": {"num_workers": 0, "cache_dir": str(cache)},
    }
    t0 = time.perf_counter()
    summary = run_cv(validate_config(raw), run, overwrite=True)
    return summary, time.perf_counter() - t0


def _preset_row(work: Path, cache: Path, segments: int) -> dict:
    """The cpu preset on the description (and the photos); its text and fusion members read ``segments`` windows
    of 256 tokens (the preset ships 1: a variant patched in here, not an option)."""
    shipped = portfolio._frozen_members

    def members(*args):
        out = shipped(*args)
        for m in out:
            if "text" in m.model:
                m.model["text"]["segments"] = segments
        return out

    raw = {
        "name": "preset",
        "output_dir": str(work),
        "data": {
            "train_csv": str(work / "train.csv"),
            "image_dir": str(DATA / "images"),
            "text_cols": ["description"],
            "folds": 5,
            "seed": 20,
        },
        "runtime": {"num_workers": 2, "cache_dir": str(cache)},
    }
    portfolio._frozen_members = members
    try:
        summary = portfolio.run_portfolio(
            validate_config(raw), "cpu", work / f"preset_seg{segments}", SHARED / "models", overwrite=True
        )
    finally:
        portfolio._frozen_members = shipped
    ms = [read_member(work / f"preset_seg{segments}" / m["run"], m["name"]) for m in summary["ensemble"]["members"]]
    labels = pd.read_csv(work / "train.csv", dtype=str).set_index("id").loc[ms[0].ids, "categories"]
    classes = sorted(labels.unique())
    y = np.array([classes.index(c) for c in labels])
    blend = cross_fitted_blend(ms, y, ms[0].folds)
    return {
        "system": f"cpu preset, text and fusion members {segments} x 256 tokens"
        + (" (as shipped)" if segments == 1 else ""),
        "oof_macro_f1": round(float(f1_score(y, blend.argmax(1), average="macro")), 4),
        "members": {m.name: round(float(f1_score(y, m.probs.argmax(1), average="macro")), 4) for m in ms},
    }


def _oof_f1(run: Path) -> float:
    oof = pd.read_csv(run / "main" / "oof.csv", dtype=str)
    return float(f1_score(oof["label"], oof["pred"], average="macro"))


def _title_past_window(df: pd.DataFrame) -> float:
    """Share of products whose title starts past the first window's 126 text tokens (128 with [CLS] and [SEP])."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINILM)
    starts = [len(tok.tokenize(d[: d.index(t)])) for d, t in zip(df["description"], df["title"].fillna(""))]
    return float(np.mean(np.asarray(starts) >= 126))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=Path, default=Path("/tmp/aisle-long-texts"))
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default: KEEP/cache)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.keep
    work.mkdir(parents=True, exist_ok=True)
    cache = args.cache or work / "cache"
    df = with_descriptions(make_subset(20, 12, 120), 20)
    df.to_csv(work / "train.csv", index=False)
    rows = []
    for name, column, segments in [
        ("title alone", "title", 1),
        ("description, 1 window", "description", 1),
        ("description, 4 windows", "description", 4),
    ]:
        run = work / name.split(" (")[0].replace(", ", "-").replace(" ", "_")
        _, seconds = _text_run(work / "train.csv", column, segments, run, cache)
        rows.append(
            {
                "system": f"aisle text, frozen MiniLM: {name}",
                "oof_macro_f1": round(_oof_f1(run), 4),
                "seconds": round(seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str}).set_index("id").loc[df["id"], "fold"]
    base = baseline_oof(df.assign(title=df["description"]), folds.reset_index(drop=True), False)
    rows.append(
        {
            "system": "TF-IDF + LinearSVC: description",
            "oof_macro_f1": round(f1_score(df["categories"], base, average="macro"), 4),
        }
    )
    for segments in (1, 2):
        rows.append(_preset_row(work, cache, segments))
        print(rows[-1], flush=True)
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": "python benchmarks/long_texts.py",
        "products": len(df),
        "classes": 12,
        "title_past_first_window": round(_title_past_window(df), 3),
        "rows": rows,
    }
    (ROOT / "benchmarks" / "results" / "long_texts.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Why fusion loses to text-only on small catalogues (issue 13, item 7): fusion variants on fashion subsets.

Each subset is scored by 5-fold cross-validation over the whole subset (every product once), on the same folds
for every system. The towers are the cpu preset's (EfficientNet-Lite0 224 px and all-MiniLM-L6-v2, frozen, from
``../shared/models``); their features are encoded once into the feature cache, so each variant trains heads only.
Subsets: the five random ones of ``portfolio_subsets.py`` and subsets of look-alike classes (shoes, tops, bottoms,
bags), titles only or titles + attributes; and ``rare6k``, a 6,000-row stratified subset of all 84 classes.

Variants: the preset's members (linear: TF-IDF + frozen image features, ``linear_text``: TF-IDF alone, as the
preset's linear member was before; text, image, fusion = concat with the towers scaled alike), the concat head
as it was before that scaling (``concat_unscaled``: the same model with every tower's scale 1), other fusions (late,
late + per-tower losses, gated) and smaller or more regularised heads. Then, per subset, the preset's honest blend
(weights cross-fitted, see ``portfolio_subsets.cross_fitted_blend``) of linear + text + image + each fusion, and
stacking (a logistic regression on the members' log-probabilities, also cross-fitted) against it.

Usage:
  .venv/bin/python benchmarks/fusion_study.py        # the nine subsets, every variant (~35 min on 2 CPU cores)
  .venv/bin/python benchmarks/fusion_study.py --subsets rare6k --variants linear text image concat concat_unscaled \
      --no-stack --out benchmarks/results/fusion_study_rare.json   # 6,000 rows, 84 classes (~12 min)
  .venv/bin/python benchmarks/fusion_study.py --variants linear linear_text text_cw image_cw concat_cw --no-stack \
      --out benchmarks/results/fusion_study_linear_image.json   # the linear member with image features (~20 min)
Writes benchmarks/results/fusion_study.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from aisle.config import validate_config
from aisle.data.labels import LabelMap
from aisle.evaluation.calibration import rescale_probs
from aisle.models.fusion import ConcatFusion
from aisle.rundir import RunDir
from aisle.training.blend import read_member
from aisle.training.cv import run_cv
from aisle.training.portfolio import cpu_preset
from bench_lib import DATA, SHARED, stratified_subset
from portfolio_subsets import (
    SUBSETS,
    baseline_oof,
    calibration_scales,
    cross_fitted_blend,
    data_section,
    fitted_blend,
    make_subset,
)

LOOK_ALIKE = {
    "shoes": (["Casual Shoes", "Sports Shoes", "Formal Shoes", "Heels", "Flats", "Sandals", "Flip Flops"], False),
    "tops": (["Tshirts", "Shirts", "Tops", "Kurtas", "Kurtis", "Tunics", "Sweatshirts", "Sweaters", "Jackets"], True),
    "bottoms": (["Jeans", "Trousers", "Shorts", "Track Pants", "Capris", "Leggings", "Skirts"], False),
    "bags": (["Handbags", "Clutches", "Backpacks", "Wallets", "Laptop Bag", "Duffel Bag"], True),
}
PER_CLASS = 120
SEED = 7


def subset(name: str) -> tuple[pd.DataFrame, bool]:
    """The subset's rows and whether its text carries the attributes."""
    if name == "rare6k":  # many rare classes: all 84, stratified, at least 5 rows each (pseudo_labels_fashion's)
        return stratified_subset(6000), True
    if name.startswith("random"):
        seed, n, per, attrs = SUBSETS[int(name[len("random") :])]
        return make_subset(seed, n, per), attrs
    classes, attrs = LOOK_ALIKE[name]
    train = pd.read_csv(DATA / "train.csv", dtype=str)
    parts = [train[train["categories"] == c] for c in classes]
    parts = [p.sample(min(PER_CLASS, len(p)), random_state=SEED) for p in parts]
    return pd.concat(parts).sample(frac=1.0, random_state=SEED).reset_index(drop=True), attrs


def _members() -> dict[str, dict[str, Any]]:
    return {m.name: {"model": m.model, "train": m.train} for m in cpu_preset(SHARED / "models")}


def variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (preset member it starts from, model keys changed). Each trains without class weights;
    ``<name>_cw``: the same with ``train.class_weights: inverse_sqrt`` (the preset's heads' now)."""
    return {
        "linear": ("linear", {}),  # the preset's: TF-IDF + the frozen image features, their weight chosen per fold
        "linear_text": ("linear", {"image": None, "image_size": None}),  # the preset's before: TF-IDF alone
        "text": ("text", {}),
        "image": ("image", {}),
        "concat": ("fusion", {}),
        "concat_unscaled": ("fusion", {}),
        "late": ("fusion", {"fusion": "late"}),
        "late_aux": ("fusion", {"fusion": "late", "aux_loss_weight": 1.0}),
        "gated": ("fusion", {"fusion": "gated"}),
        "modality_dropout": ("fusion", {"modality_dropout": 0.3}),
        "linear_head": ("fusion", {"head_hidden": 0}),
        "small_head": ("fusion", {"head_hidden": 128, "dropout": 0.5}),
    }


@contextmanager
def unscaled(on: bool):
    """The concat head as it was before its towers were scaled alike: every tower's scale 1."""
    init = ConcatFusion.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.tower_scale.fill_(1.0)

    ConcatFusion.__init__ = patched if on else init  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConcatFusion.__init__ = init  # type: ignore[method-assign]


def run_variant(name: str, df: pd.DataFrame, attrs: bool, work: Path, seed: int) -> dict:
    weighted = name.endswith("_cw")
    member, changes = variants()[name.removesuffix("_cw")]
    base = _members()[member]
    raw = {
        "name": name,
        "output_dir": str(work),
        "data": data_section(work / "train.csv", attrs, seed),
        "model": {**base["model"], **changes},
        "train": {**base["train"], "stages": [], "class_weights": "inverse_sqrt" if weighted else "none"},
        "runtime": {"num_workers": 0, "cache_dir": str(work.parent / "cache")},
    }
    t0 = time.perf_counter()
    with unscaled(name.startswith("concat_unscaled")):
        run_cv(validate_config(raw), work / name, overwrite=True)
    return {"oof": _oof_f1(work / name), "s": time.perf_counter() - t0}


def _oof_f1(run: Path) -> float:
    from sklearn.metrics import f1_score

    oof = pd.read_csv(RunDir(run).stage_oof("main"), dtype={"id": str})
    cls = [c for c in oof.columns if c not in ("id", "fold", "label", "pred")]
    pred = np.array(cls)[oof[cls].to_numpy().argmax(1)]
    return round(float(f1_score(oof["label"], pred, average="macro")), 4)


def run_subset(name: str, chosen: list[str], work: Path, stack: bool = True) -> dict:
    df, attrs = subset(name)
    sub = work / name
    sub.mkdir(parents=True, exist_ok=True)
    df.to_csv(sub / "train.csv", index=False)
    row: dict[str, Any] = {"subset": name, "classes": df["categories"].nunique(), "products": len(df)}
    row["input"] = "title + attributes" if attrs else "title"
    for v in chosen:
        r = run_variant(v, df, attrs, sub, SEED)
        row[v] = r["oof"]
        print(f"{name} {v}: OOF macro-F1 {r['oof']} ({r['s']:.0f} s)", flush=True)
    folds = pd.read_csv(sub / chosen[0] / "folds.csv", dtype={"id": str}).set_index("id").loc[df["id"], "fold"]
    from sklearn.metrics import f1_score

    base = baseline_oof(df, folds.reset_index(drop=True), attrs)
    row["tfidf_linearsvc"] = round(float(f1_score(df["categories"], base, average="macro")), 4)
    row.update(blends(sub, chosen, stack))
    print(json.dumps(row), flush=True)
    return row


def stacked(members, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Stacking, cross-fitted: per fold, each member's calibration and a multinomial logistic regression on the
    members' concatenated log-probabilities (its C chosen by an inner 4-fold CV) are fitted on the other folds."""
    from sklearn.linear_model import LogisticRegressionCV

    out = np.zeros_like(members[0].probs)
    for k in np.unique(folds):
        fit = folds != k
        scales = calibration_scales(members, y, fit)

        def x(rows, scales=scales):
            return np.hstack(
                [np.log(np.clip(rescale_probs(m.probs[rows], s), 1e-4, None)) for m, s in zip(members, scales)]
            )

        lr = LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=4, max_iter=2000).fit(x(fit), y[fit])
        out[~fit] = lr.predict_proba(x(~fit))
    return out


PRIOR_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def prior_adjusted(members, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The preset's blend with logit adjustment (Menon et al., 2021), cross-fitted: per fold, the blend is divided
    by the class priors to a power chosen among ``PRIOR_POWERS`` for macro-F1 on the other folds' rows."""
    from aisle.evaluation.metrics import macro_f1

    out = np.zeros_like(members[0].probs)
    for k in np.unique(folds):
        fit = folds != k
        inner = fitted_blend(members, y, fit, fit)
        prior = np.clip(np.bincount(y[fit], minlength=out.shape[1]) / fit.sum(), 1e-6, None)
        best = max(PRIOR_POWERS, key=lambda a: (macro_f1(y[fit], (inner / prior**a).argmax(1)), -a))
        print(f"  fold {k}: prior power {best}", flush=True)
        out[~fit] = fitted_blend(members, y, fit, ~fit) / prior**best
    return out


BLENDS = {  # name -> (members, combiner)
    "blend_no_fusion": (["linear", "text", "image"], "weights"),
    "blend_concat": (["linear", "text", "image", "concat"], "weights"),
    "blend_concat_unscaled": (["linear", "text", "image", "concat_unscaled"], "weights"),
    "blend_concat_prior": (["linear", "text", "image", "concat"], "prior"),
    "stack_concat": (["linear", "text", "image", "concat"], "stack"),
    "blend_cw": (["linear", "text_cw", "image_cw", "concat_cw"], "weights"),  # the preset now
    "blend_cw_linear_text": (["linear_text", "text_cw", "image_cw", "concat_cw"], "weights"),  # the preset before
}


def blends(sub: Path, chosen: list[str], stack: bool = True) -> dict:
    """Cross-fitted weighted blends (the preset's) and stacking of the members trained under ``sub`` (those of
    ``BLENDS`` whose members are all ``chosen``)."""
    from sklearn.metrics import f1_score

    out = {}
    for key, (names, how) in BLENDS.items():
        if (how == "stack" and not stack) or not set(names) <= set(chosen):
            continue
        members = [read_member(sub / n, n) for n in names]
        lm = LabelMap.load(members[0].rd.label_map)
        oof = pd.read_csv(members[0].rd.stage_oof("main"), dtype={"id": str}).set_index("id")
        y, _ = lm.encode(oof.loc[members[0].ids, "label"])
        fit = {"weights": cross_fitted_blend, "prior": prior_adjusted, "stack": stacked}[how]
        out[key] = round(float(f1_score(y, fit(members, y, members[0].folds).argmax(1), average="macro")), 4)
    return out


def main() -> None:
    names = [f"random{i}" for i in range(len(SUBSETS))] + list(LOOK_ALIKE)
    ap = argparse.ArgumentParser()
    ap.add_argument("--subsets", nargs="*", default=names)
    ap.add_argument("--variants", nargs="*", default=list(variants()), help="and <variant>_cw (class weights)")
    ap.add_argument("--keep", type=Path, default=Path("/tmp/aisle-fusion-study"))
    ap.add_argument("--no-stack", action="store_true", help="leave stacking out (slow with many classes)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fusion_study.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    rows = [run_subset(s, args.variants, args.keep, not args.no_stack) for s in args.subsets]
    keys = [k for k in rows[0] if k not in ("subset", "classes", "products", "input")]
    means = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    random = [r for r in rows if r["subset"].startswith("random")]
    means_random = {k: round(float(np.mean([r[k] for r in random])), 4) for k in keys} if random else {}
    result = {
        "date": date.today().isoformat(),
        "machine": "2 CPU cores, no GPU",
        "command": "python benchmarks/fusion_study.py " + " ".join(sys.argv[1:]),
        "rows": rows,
        "mean": means,
        "mean_random_subsets": means_random,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(means, indent=2))


if __name__ == "__main__":
    main()

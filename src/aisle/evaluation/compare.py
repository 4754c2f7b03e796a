"""``aisle compare``: a table and plots over several run folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.config import load_config
from aisle.evaluation.plotting import pyplot
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.tables import read_numeric_table, write_table

__all__ = ["METRICS", "compare_runs", "plot_curves", "run_history", "run_row"]

METRICS = ["acc", "top3", "macro_f1", "macro_precision", "macro_recall"]


def run_row(run_dir: str | Path) -> dict:
    """One summary row: model, fusion, towers, parameters, train time and the CV mean metrics (last stage).

    Raises:
        FileNotFoundError: the folder has no ``cv_summary.json`` (not a finished run).
    """
    rd = RunDir(run_dir).require_finished()
    s = read_json(rd.summary)
    m = load_config(rd.config).model
    names = [str(v).rsplit("/", 1)[-1] for v in m.tower_names().values()]
    if rd.is_ensemble():  # its config is its first member's: name the members instead
        names = [f"{x['name']} {x['weight']:.2f}" for x in read_json(rd.ensemble)["members"] if x["weight"] > 0]
    row = {
        "run": rd.root.name,
        "model": s.get("model_type", m.type),
        "fusion": m.fusion_kind if m.type in ("fusion", "dual") and not rd.is_ensemble() else "",
        "towers": " + ".join(names),
        "params": s["params"]["total"],
        "train_seconds": sum(st["train_seconds"] for st in s["stages"].values()),
        "folds": len(s["folds"]),
    }
    row.update({k: s["mean"].get(k, np.nan) for k in METRICS})
    return row


def run_history(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch history of the run's stages, averaged over folds, epochs numbered across stages."""
    rd = RunDir(run_dir)
    s = read_json(rd.summary)
    frames, offset = [], 0
    for stage in s["stages"]:
        hs = [read_numeric_table(p, (), finite=False) for p in rd.histories(stage)]
        if not hs:
            continue
        h = pd.concat(hs).groupby("epoch", as_index=False).mean(numeric_only=True)
        h["stage"], h["step"] = stage, h["epoch"] + offset
        offset = int(h["step"].max())
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _radar(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    angles = np.linspace(0, 2 * np.pi, len(METRICS), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(5.5, 5.5), subplot_kw={"polar": True})
    for _, r in df.iterrows():
        vals = [float(r[k]) for k in METRICS]
        ax.plot(angles + angles[:1], vals + vals[:1], label=r["run"])
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.08)
    ax.set_xticks(angles, METRICS, fontsize=8)
    lo = max(0.0, float(np.nanmin(df[METRICS].to_numpy())) - 0.05)
    ax.set_ylim(lo, 1.0)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=7)
    ax.set_title("CV metrics (mean over folds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scatter(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    sc = ax.scatter(df["params"], df["train_seconds"], c=df["macro_f1"], cmap="viridis", s=60)
    for _, r in df.iterrows():
        ax.annotate(r["run"], (r["params"], r["train_seconds"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("train time (s, all folds and stages)")
    fig.colorbar(sc, ax=ax, label="macro-F1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, h in histories.items():
        if h.empty:
            continue
        line = axes[0].plot(h["step"], h["train_loss"], label=f"{name} train")[0]
        axes[0].plot(h["step"], h["val_loss"], "--", color=line.get_color(), label=f"{name} val")
        axes[1].plot(h["step"], h["val_acc"], color=line.get_color(), label=name)
        axes[2].plot(h["step"], h["val_macro_f1"], color=line.get_color(), label=name)
    for ax, title in zip(axes, ("loss", "val accuracy", "val macro-F1")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (all stages)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    cols = ["run", "model", "fusion", "params", "train_seconds", *METRICS]
    cells = [
        [
            f"{v:.4f}"
            if isinstance(v, float) and c in METRICS
            else (f"{v:,.0f}" if isinstance(v, int | float | np.integer | np.floating) else str(v))
            for c, v in zip(cols, r)
        ]
        for r in df[cols].itertuples(index=False)
    ]
    fig, ax = plt.subplots(figsize=(min(16, 1.3 * len(cols)), 0.45 * len(df) + 0.9))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=cols, loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.3)
    best = df["macro_f1"].to_numpy().argmax()
    for j in range(len(cols)):
        t[(best + 1, j)].set_facecolor("#dff0d8")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Write ``comparison.csv`` and ``radar.png``, ``params_vs_time.png``, ``curves.png``, ``table.png``.

    Returns:
        The comparison table, best macro-F1 first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([run_row(r) for r in run_dirs]).sort_values("macro_f1", ascending=False, ignore_index=True)
    write_table(df, out / "comparison.csv")
    _radar(df, out / "radar.png")
    _scatter(df, out / "params_vs_time.png")
    plot_curves({Path(r).name: run_history(r) for r in run_dirs}, out / "curves.png")
    _table(df, out / "table.png")
    return df

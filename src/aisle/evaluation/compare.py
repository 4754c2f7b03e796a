"""``aisle compare``: a table and plots over several run folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aisle.config import load_config
from aisle.evaluation.evaluate import EvaluationDir
from aisle.evaluation.plotting import place_labels, pyplot, save_png
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.tables import read_numeric_table, write_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["METRICS", "TEST_METRICS", "compare_runs", "curves_figure", "has_test_metrics", "run_history", "run_row"]

METRICS = ["acc", "top3", "macro_f1", "macro_precision", "macro_recall"]
# the same metrics on the test set, from ``aisle evaluate`` of the run's predictions (NaN where not evaluated)
TEST_METRICS = [f"test_{k}" for k in METRICS]


def run_row(run_dir: str | Path) -> dict:
    """One summary row: model, fusion, towers, parameters, train time (wall and fitting), the CV mean metrics
    (last stage) and, where ``aisle evaluate`` scored the run's predictions (:meth:`EvaluationDir.of_run`), the
    test metrics (``test_*`` and ``test_rows``, NaN where it did not).

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
        # the training command's wall time (feature encoding and image checks included); fitting alone beside it
        "train_seconds": s["train_seconds"],
        "fitting_seconds": s.get("fitting_seconds", np.nan),  # an ensemble fits no folds of its own
        "folds": len(s["folds"]),
    }
    row.update({k: s["mean"].get(k, np.nan) for k in METRICS})
    test = EvaluationDir.of_run(rd.root).read_metrics() or {}
    row.update({f"test_{k}": test.get(k, np.nan) for k in METRICS})
    row["test_rows"] = test.get("n_scored", np.nan)
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


def _radar(df: pd.DataFrame) -> Figure:
    """CV metrics of each run (solid) and, where it was evaluated, its test metrics (dashed, same colour)."""
    plt = pyplot()
    angles = np.linspace(0, 2 * np.pi, len(METRICS), endpoint=False).tolist()
    loop = angles + angles[:1]
    fig, ax = plt.subplots(figsize=(6, 6 + 0.14 * len(df)), subplot_kw={"polar": True})
    for _, r in df.iterrows():
        vals = [float(r[k]) for k in METRICS]
        line = ax.plot(loop, vals + vals[:1], label=f"{r['run']} (CV)")[0]
        ax.fill(loop, vals + vals[:1], alpha=0.08, color=line.get_color())
        test = [float(r[k]) for k in TEST_METRICS]
        if not np.isnan(test).all():
            ax.plot(loop, test + test[:1], "--", color=line.get_color(), label=f"{r['run']} (test)")
    ax.set_xticks(angles, METRICS, fontsize=8)
    ax.set_rlabel_position(180 / len(METRICS))  # the radius labels between two metric axes
    ax.tick_params(axis="y", labelsize=7, labelcolor="#666")
    shown = df[METRICS + TEST_METRICS].to_numpy(dtype=float)
    ax.set_ylim(max(0.0, float(np.nanmin(shown)) - 0.05), 1.0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=7, frameon=False)
    title = "CV metrics (mean over folds)" + (", dashed: test set" if has_test_metrics(df) else "")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _scatter(df: pd.DataFrame) -> Figure:
    """Parameters against train time, coloured by CV macro-F1, each point labelled with its run (no overlaps)."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter(df["params"], df["train_seconds"], c=df["macro_f1"], cmap="viridis", s=60, zorder=3)
    ax.set_xscale("log")
    decades = np.log10(df["params"].max() / df["params"].min())
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1M: plain numbers read faster than 2x10^4
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.25, y=0.2)  # room for the labels beside the outermost points
    ax.set_ylim(bottom=0)
    ax.set_xlabel("parameters")
    ax.set_ylabel("train time (s, wall: encoding included)")
    fig.colorbar(sc, ax=ax, label="CV macro-F1")
    fig.tight_layout()
    place_labels(ax, list(zip(df["params"], df["train_seconds"])), [str(r) for r in df["run"]])
    return fig


def curves_figure(histories: dict[str, pd.DataFrame]) -> Figure:
    """Loss, validation accuracy and validation macro-F1 per epoch of each run (stages one after another), with
    one legend under the three panels (one colour per run; dashed: validation loss)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, h in histories.items():
        if h.empty:  # an ensemble has no epochs to draw
            continue
        line = axes[0].plot(h["step"], h["train_loss"], label=f"{name} train")[0]
        axes[0].plot(h["step"], h["val_loss"], "--", color=line.get_color(), label=f"{name} val")
        axes[1].plot(h["step"], h["val_acc"], color=line.get_color())
        axes[2].plot(h["step"], h["val_macro_f1"], color=line.get_color())
    for ax, title in zip(axes, ("loss", "val accuracy", "val macro-F1")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (all stages)")
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, frameon=False)
    return fig


def has_test_metrics(df: pd.DataFrame) -> bool:
    """Whether any run of a comparison table was scored on a test set."""
    return bool(df[TEST_METRICS].notna().any().any())


def _cell(column: str, value: Any) -> str:  # a table cell (pandas-stubs: any scalar)
    if column in METRICS or column in TEST_METRICS:
        return "–" if pd.isna(value) else f"{value:.4f}"
    if column == "train_seconds":
        return f"{value:,.1f}"
    if isinstance(value, int | float | np.integer | np.floating):
        return f"{value:,.0f}"
    return str(value)


def _header(column: str) -> str:
    """Two-line headers: the CV and test metrics are told apart by their first line."""
    if column in TEST_METRICS:
        return column.replace("_", "\n", 1)
    return f"CV\n{column}" if column in METRICS else column.replace("_", "\n")


def _table(df: pd.DataFrame) -> Figure:
    plt = pyplot()
    cols = ["run", "model", "fusion", "params", "train_seconds", *METRICS]
    if has_test_metrics(df):
        cols += TEST_METRICS
    cells = [[_cell(c, v) for c, v in zip(cols, r)] for r in df[cols].itertuples(index=False)]
    fig, ax = plt.subplots(figsize=(min(24, 1.2 * len(cols)), 0.3 * len(df) + 0.8))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=[_header(c) for c in cols], loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.auto_set_column_width(list(range(len(cols))))  # every cell whole, long run names included
    best = df["macro_f1"].to_numpy().argmax()
    for (i, _), cell in t.get_celld().items():
        cell.set_height(0.3 if i == 0 else 0.17)
        if i == best + 1:
            cell.set_facecolor("#dff0d8")
    return fig


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Write ``comparison.csv`` and ``radar.png``, ``params_vs_time.png``, ``curves.png``, ``table.png``.

    Returns:
        The comparison table (:func:`run_row` per run), best CV macro-F1 first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([run_row(r) for r in run_dirs]).sort_values("macro_f1", ascending=False, ignore_index=True)
    df["test_rows"] = df["test_rows"].astype("Int64")  # a count, empty where a run was not evaluated
    write_table(df, out / "comparison.csv")
    save_png(_radar(df), out / "radar.png")
    save_png(_scatter(df), out / "params_vs_time.png")
    save_png(curves_figure({Path(r).name: run_history(r) for r in run_dirs}), out / "curves.png")
    save_png(_table(df), out / "table.png")
    return df

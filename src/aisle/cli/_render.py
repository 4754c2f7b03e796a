"""Rendering reports for the terminal (rich). Library code returns data; this file shows it.

Text from the user's data (paths, ids, class and column names, texts) goes through ``escape``: rich would read
``[anything]`` in it as markup and drop it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aisle.evaluation.check import CheckReport

if TYPE_CHECKING:
    import pandas as pd


def render_check(report: CheckReport, console: Console, max_issue_rows: int = 25) -> None:
    cols = {k: escape(str(v)) for k, v in report.columns.items()}
    console.print(
        f"[bold]{escape(str(report.source))}[/]: {report.n_rows:,} rows · id=[cyan]{cols['id']}[/] "
        f"label=[cyan]{cols['label']}[/] text={cols['text']} image column=[cyan]{cols['image']}[/]"
    )
    t = Table(title=f"{len(report.sample)} sampled rows", show_lines=False)
    for name in ("id", "label", "text", "images", "image found?", "size"):
        t.add_column(name, overflow="fold")
    for r in report.sample:
        found = "[green]yes[/]" if r.image_ok else f"[red]no ({escape(str(r.reason))})[/]"
        size = f"{r.size[0]}x{r.size[1]}" if r.size else "-"
        t.add_row(escape(r.id), escape(str(r.label)), escape(r.text), str(r.n_images), found, size)
    console.print(t)
    _render_classes(report, console)
    if report.duplicate_ids:
        shown = escape(", ".join(report.duplicate_ids[:10]))
        console.print(f"[yellow]{len(report.duplicate_ids)} duplicate id(s): {shown}[/]")
    console.print(
        f"empty texts: {report.empty_texts:,} · products with at least one image file: "
        f"{report.products_with_images:,}/{report.n_rows:,}"
    )
    _render_image_issues(report, console, max_issue_rows)
    for name, path in report.files.items():
        console.print(f"wrote {name}: {path}", markup=False)


def _render_classes(report: CheckReport, console: Console) -> None:
    if report.class_counts:
        counts = sorted(report.class_counts.items(), key=lambda kv: -kv[1])
        ct = Table(
            title=f"class distribution: {report.n_classes} classes, "
            f"largest/smallest = {counts[0][1] / counts[-1][1]:.1f}x"
        )
        ct.add_column("class")
        ct.add_column("rows", justify="right")
        ct.add_column("share", justify="right")
        total = sum(report.class_counts.values())
        shown = counts if len(counts) <= 16 else [*counts[:8], ("…", 0), *counts[-8:]]
        for name, n in shown:
            ct.add_row(escape(name), f"{n:,}" if n else "", f"{n / total:.1%}" if n else "")
        console.print(ct)
    else:
        console.print("[yellow]no label column: unlabelled data[/]")
    if report.unlabelled and report.class_counts:
        console.print(f"[yellow]{report.unlabelled:,} row(s) have no label[/]")
    if report.rare_classes:
        console.print(
            f"[yellow]{len(report.rare_classes)} class(es) smaller than the fold count: "
            f"{escape(', '.join(report.rare_classes[:10]))}[/] (see data.rare_classes)"
        )


def _render_image_issues(report: CheckReport, console: Console, max_issue_rows: int) -> None:
    scope = "missing files only (--fast: images not decoded)" if report.fast else "every image decoded"
    if not report.image_issues:
        console.print(f"[green]images: no problems[/] ({scope})")
        return
    counts_txt = ", ".join(f"{k}: {v}" for k, v in sorted(report.issue_counts.items()))
    console.print(
        f"[yellow]images: {len(report.issue_ids)} product(s) with unusable images[/] ({scope}; "
        f"{counts_txt}); they get a placeholder in training and prediction"
    )
    it = Table(show_header=True)
    it.add_column("id")
    it.add_column("reason")
    it.add_column("path", overflow="fold")
    for issue in report.image_issues[:max_issue_rows]:
        it.add_row(escape(issue.id), escape(issue.reason), escape(str(issue.path)))
    console.print(it)
    if len(report.image_issues) > max_issue_rows:
        console.print(f"… {len(report.image_issues) - max_issue_rows} more in the issues CSV")


def render_cv(summary: dict, console: Console) -> None:
    t = Table(
        title=f"CV summary: {escape(summary['run_dir'])} ({summary['model_type']}"
        f"{', ' + summary['fusion'] if summary['model_type'] in ('fusion', 'dual') else ''})"
    )
    t.add_column("stage")
    t.add_column("fold")
    for key in ("acc", "top3", "macro_f1", "best_epoch", "seconds"):
        t.add_column(key, justify="right")
    for stage, s in summary["stages"].items():
        for fold, m in s["folds"].items():
            t.add_row(
                escape(stage),
                fold,
                *(f"{m[k]:.4f}" for k in ("acc", "top3", "macro_f1")),
                str(m["best_epoch"]),
                f"{m['seconds']:.1f}",
            )
        t.add_row(
            escape(stage),
            "mean ± std",
            *(f"{s['mean'][k]:.4f} ± {s['std'][k]:.4f}" for k in ("acc", "top3", "macro_f1")),
            "",
            f"{s['train_seconds']:.1f}",
            style="bold",
        )
    console.print(t)
    for stage, s in summary.get("stages", {"": summary}).items():  # what each stage trains (frozen towers: no)
        p = s["params"]
        where = f" in stage {stage}" if stage else ""
        console.print(f"parameters: {p['total']:,}, {p['trainable']:,} trained{where}", markup=False)


def render_evaluation(ev, console: Console, worst: int = 10) -> None:
    t = Table(
        title=f"evaluation on {ev.n_scored:,} rows"
        + (f" ({ev.n_unscored} unscored: label missing or unknown)" if ev.n_unscored else "")
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in ev.metrics.items():
        t.add_row(k, f"{v:.4f}")
    console.print(t)
    pc = ev.per_class[ev.per_class["support"] > 0].sort_values("f1-score").head(worst)
    w = Table(title=f"{len(pc)} weakest classes by F1")
    for c in ("class", "precision", "recall", "f1", "support"):
        w.add_column(c, justify="left" if c == "class" else "right")
    for name, r in pc.iterrows():
        w.add_row(
            escape(str(name)),
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['f1-score']:.3f}",
            str(int(r["support"])),
        )
    console.print(w)


def render_ensemble(spec: dict, console: Console) -> None:
    """Each member's out-of-fold scores and weight, then the blend's."""
    how = "peers, equal weights" if spec.get("method") == "peers" else spec["metric"]
    t = Table(title=f"ensemble fitted on out-of-fold predictions ({how})")
    for name in ("member", "weight", "acc", "macro_f1"):
        t.add_column(name, justify="left" if name == "member" else "right")
    for m in spec["members"]:
        t.add_row(escape(m["name"]), f"{m['weight']:.2f}", f"{m['oof']['acc']:.4f}", f"{m['oof']['macro_f1']:.4f}")
    t.add_row("[bold]blend[/]", "", f"{spec['blend']['acc']:.4f}", f"[bold]{spec['blend']['macro_f1']:.4f}[/]")
    console.print(t)


def _count(n: float) -> str:
    """A parameter count in at most 6 characters: 980, 45.3k, 1.24M, 3.1B."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def render_comparison(df: pd.DataFrame, console: Console) -> None:
    """The comparison table (:func:`aisle.evaluation.compare.compare_runs`) narrow enough for 80 columns: CV and,
    where a run was evaluated, test accuracy and macro-F1; the other metrics are in ``comparison.csv``."""
    from aisle.evaluation.compare import has_test_metrics

    test = has_test_metrics(df)
    t = Table(
        title=f"{len(df)} runs, best CV macro-F1 first",
        caption="train s: wall time, feature encoding included; F1: macro-F1; top-3, macro P/R and towers are in "
        "comparison.csv" + ("; –: not evaluated (aisle evaluate RUN/predictions/probabilities.csv)" if test else ""),
        caption_justify="left",
        box=box.SIMPLE_HEAD,  # no vertical rules and two-line headers: the room goes to the run names
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("run", overflow="fold", ratio=3)
    t.add_column("model", overflow="fold", ratio=1)
    t.add_column("params", justify="right", no_wrap=True)
    t.add_column("train\ns", justify="right", no_wrap=True)
    metrics = {"CV\nacc": "acc", "CV\nF1": "macro_f1"}
    if test:
        metrics |= {"test\nacc": "test_acc", "test\nF1": "test_macro_f1"}
    for name in metrics:
        t.add_column(name, justify="right", no_wrap=True)
    for _, r in df.iterrows():
        model = str(r["model"]) + (f" {r['fusion']}" if r["fusion"] else "")
        scores = ("–" if r[k] != r[k] else f"{r[k]:.4f}" for k in metrics.values())  # NaN: not evaluated
        t.add_row(escape(str(r["run"])), escape(model), _count(r["params"]), f"{r['train_seconds']:.1f}", *scores)
    console.print(t)

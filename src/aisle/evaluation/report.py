"""``aisle report``: one self-contained HTML page about a run (every picture embedded as a data URI)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from aisle.config import load_config
from aisle.data.images import open_image, placeholder_image
from aisle.data.labels import class_columns
from aisle.data.prepare import load_source
from aisle.evaluation.compare import METRICS, curves_figure, run_history
from aisle.evaluation.evaluate import EvaluationDir, confusion_figure, evaluate_probs
from aisle.evaluation.plotting import png_data_uri, pyplot, wrap_label
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.tables import read_numeric_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:10px;font-size:12px;max-height:360px;overflow:auto}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.card{width:170px;border:1px solid #ddd;border-radius:6px;padding:6px;font-size:12px;background:#fff;
overflow-wrap:anywhere}
.card img{width:158px;height:158px;object-fit:contain;background:#fafafa}
.true{color:#1a7f37}.pred{color:#c62828}.muted{color:#777}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _png_file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _clip(text: str, n: int) -> str:
    """The first ``n`` characters, with an ellipsis where the text goes on."""
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _thumb_uri(path: str | None, roots, size: int = 160) -> str:
    image = open_image(path, roots, draft=(size, size))[0] if path else None
    image = image or placeholder_image(size)
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _f1_bars(per_class: pd.DataFrame) -> Figure:
    plt = pyplot()
    pc = per_class[per_class["support"] > 0].sort_values("f1-score")
    names = ["\n".join(line.strip() for line in wrap_label(str(i), 36)) for i in pc.index]
    lines = sum(n.count("\n") + 1 for n in names)
    fig, ax = plt.subplots(figsize=(7, 0.13 * lines + 0.07 * len(pc) + 1.2))
    ax.barh(names, pc["f1-score"], color="#4C72B0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("out-of-fold F1")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def _test_section(run: RunDir) -> tuple[str, str]:
    """The summary sentence and the section for the run's test-set scores (``aisle evaluate``), or two empty
    strings where the run's predictions were not evaluated."""
    ed = EvaluationDir.of_run(run.root)
    m = ed.read_metrics()
    if m is None:
        return "", ""
    where = html.escape(str(ed.root.relative_to(run.root)))
    n = int(m.get("n_scored", 0))
    sentence = (
        f" Test set ({n:,} rows, <code>{where}</code>): accuracy <b>{m.get('acc', np.nan):.4f}</b>, "
        f"macro-F1 <b>{m.get('macro_f1', np.nan):.4f}</b>."
    )
    head = "".join(f"<th>{k}</th>" for k in METRICS)
    cells = "".join(f"<td>{m.get(k, np.nan):.4f}</td>" for k in METRICS)
    unscored = int(m.get("n_unscored", 0))
    section = (
        f'<h2 id="test">Test set</h2><p>Scored by <code>aisle evaluate</code> on {n:,} rows'
        + (f" ({unscored:,} more without a known label)" if unscored else "")
        + f"; files in <code>{where}</code>.</p>"
        + f"<table><tr><th>set</th>{head}</tr><tr><td>test</td>{cells}</tr></table>"
    )
    if ed.confusion_png.is_file():
        section += f'<p><img class="plot" src="{_png_file_uri(ed.confusion_png)}" alt="test confusion matrix"></p>'
    return sentence, section


def _metrics_table(summary: dict) -> str:
    keys = METRICS
    rows = [
        "<tr><th>stage / fold</th>" + "".join(f"<th>{k}</th>" for k in keys) + "<th>best epoch</th><th>fit s</th></tr>"
    ]
    for stage, s in summary["stages"].items():
        for fold, m in s["folds"].items():
            rows.append(
                f"<tr><td>{html.escape(stage)} / {fold}</td>"
                + "".join(f"<td>{m.get(k, np.nan):.4f}</td>" for k in keys)
                + f"<td>{m['best_epoch']}</td><td>{m['seconds']:.1f}</td></tr>"
            )
        rows.append(
            f"<tr><th>{html.escape(stage)} mean ± std</th>"
            + "".join(f"<th>{s['mean'].get(k, np.nan):.4f} ± {s['std'].get(k, np.nan):.4f}</th>" for k in keys)
            + f"<th></th><th>{s['train_seconds']:.1f}</th></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def write_report(run_dir: str | Path, out: str | Path | None = None, n_errors: int = 24) -> Path:
    """Write ``report.html`` for a finished run: config, CV metrics, test metrics (where ``aisle evaluate`` scored
    the run's predictions), curves, OOF confusion matrix, per-class F1 and a gallery of the most confident
    out-of-fold errors. Every picture is embedded in the page as a data URI: it is the only file written.

    Raises:
        FileNotFoundError: not a finished run folder.
    """
    run = RunDir(run_dir).require_finished()
    rd = run.root
    summary = read_json(run.summary)
    cfg = load_config(run.config)
    oof = read_numeric_table(run.stage_oof(summary["stage"]))
    classes = class_columns(oof.columns)
    probs = oof[classes].to_numpy()
    ev = evaluate_probs(oof["label"].tolist(), probs, classes)
    curves = png_data_uri(curves_figure({rd.name: run_history(rd)}))
    confusion = png_data_uri(confusion_figure(ev.confusion))
    f1_bars = png_data_uri(_f1_bars(ev.per_class))
    test_sentence, test_section = _test_section(run)

    products = load_source(cfg.data, require_label=False)
    lookup = {
        str(i): (p[0] if p else None, str(t)) for i, p, t in zip(products.ids, products.image_paths, products.texts)
    }
    p_pred = probs.max(1)
    wrong = np.flatnonzero(oof["label"].to_numpy() != oof["pred"].to_numpy())
    worst = wrong[np.argsort(-p_pred[wrong])][:n_errors]
    cards = []
    for i in worst:
        # columns read as str (pandas-stubs: any scalar)
        pid, label, pred = (cast(str, oof[c].iat[i]) for c in ("id", "label", "pred"))
        path, text = lookup.get(pid, (None, ""))
        true_p = probs[i, classes.index(label)] if label in classes else float("nan")
        cards.append(
            f'<div class="card"><img src="{_thumb_uri(path, products.roots)}" alt="{html.escape(pid)}">'
            f'<div class="muted">{html.escape(pid)}</div><div>{html.escape(_clip(text, 80))}</div>'
            f'<div class="true">true: {html.escape(label)} ({true_p:.2f})</div>'
            f'<div class="pred">predicted: {html.escape(pred)} ({p_pred[i]:.2f})</div></div>'
        )
    m = ev.metrics
    title = html.escape(rd.name)
    kind = summary.get("model_type", cfg.model.type)  # an ensemble's config is its first member's
    fusion = f", {html.escape(cfg.model.fusion_kind)} fusion" if kind in ("fusion", "dual") else ""
    total, acc, f1 = summary["params"]["total"], m["acc"], m["macro_f1"]
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>aisle report: {title}</title>
<style>{_CSS}</style></head><body>
<h1 id="title">aisle report: {title}</h1>
<p>{html.escape(kind)} model{fusion};
{total:,} parameters; trained in {summary["train_seconds"]:,.1f} s (wall time, feature encoding included);
out-of-fold accuracy <b>{acc:.4f}</b>, macro-F1 <b>{f1:.4f}</b> over {ev.n_scored:,} training rows.{test_sentence}</p>
<h2>Cross-validation</h2>{_metrics_table(summary)}
{test_section}
<h2>Training curves</h2><img class="plot" src="{curves}" alt="curves">
<h2>Out-of-fold confusion matrix</h2><img class="plot" src="{confusion}" alt="confusion matrix">
<h2>Per-class F1</h2><img class="plot" src="{f1_bars}" alt="per-class F1">
<h2>Most confident errors ({len(worst)} of {len(wrong):,} out-of-fold errors)</h2>
<div class="gallery" id="errors">{"".join(cards) or "<p>No errors.</p>"}</div>
<h2>Configuration</h2><pre>{html.escape(run.config.read_text())}</pre>
</body></html>"""
    target = Path(out) if out is not None else run.report
    target.write_text(page)
    return target

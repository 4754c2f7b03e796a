"""compare and report on tiny runs; the HTML page is rendered in a real headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from rich.console import Console

from aisle.cli import main
from aisle.cli._render import render_comparison
from aisle.data.demo import write_demo_catalogue
from aisle.evaluation.compare import METRICS, TEST_METRICS, compare_runs
from aisle.evaluation.evaluate import EvaluationDir

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("rep")
    write_demo_catalogue(root / "cat", n_train=48, n_test=8, seed=3, image_size=32)
    out = []
    for kind in ("text", "fusion"):
        cfg = {
            "name": kind,
            "data": {"train_csv": str(root / "cat" / "train.csv"), "folds": 2},
            "model": {"type": kind, "text": {"name": "tiny:bert", "max_length": 16}, "head_hidden": 16},
            "train": {"epochs": 2, "batch_size": 16},
            "runtime": {"num_workers": 0},
        }
        if kind == "fusion":
            cfg["model"].update(image={"name": "timm:test_resnet", "pretrained": False}, image_size=32, fusion_dim=16)
        (root / f"{kind}.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["-q", "train", "-c", str(root / f"{kind}.yaml"), "--run-dir", str(root / kind)]) == 0
        out.append(root / kind)
    return out


@pytest.fixture(scope="module")
def evaluated(runs) -> dict[str, float]:
    """The fusion run's test metrics, as ``aisle predict`` + ``aisle evaluate`` write them by default; the text
    run stays unevaluated."""
    cat = runs[1].parent / "cat"
    assert main(["-q", "predict", str(runs[1]), "--data", str(cat / "test.csv")]) == 0
    probs = runs[1] / "predictions" / "probabilities.csv"
    assert main(["-q", "evaluate", str(probs), "--labels", str(cat / "test_labels.csv")]) == 0
    written = EvaluationDir.beside(probs).metrics
    assert written == EvaluationDir.of_run(runs[1]).metrics  # where compare and report look
    return json.loads(written.read_text())


def test_compare_writes_table_and_plots(runs, tmp_path):
    assert main(["compare", *map(str, runs), "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "comparison.csv")
    assert set(df["run"]) == {"text", "fusion"}
    assert df["macro_f1"].is_monotonic_decreasing
    assert df.loc[df["run"] == "fusion", "params"].iloc[0] > df.loc[df["run"] == "text", "params"].iloc[0]
    for name in ("radar.png", "params_vs_time.png", "curves.png", "table.png"):
        assert Image.open(tmp_path / name).size[0] > 100
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # not a run folder


def test_compare_shows_test_metrics_of_evaluated_runs_only(runs, evaluated, tmp_path):
    df = compare_runs(runs, tmp_path)
    csv = pd.read_csv(tmp_path / "comparison.csv").set_index("run")
    assert {*TEST_METRICS, "test_rows"} <= set(csv.columns)
    for k in METRICS:
        assert csv.loc["fusion", f"test_{k}"] == pytest.approx(evaluated[k])
    assert csv.loc["fusion", "test_rows"] == evaluated["n_scored"] == 8
    assert csv.loc["text", [*TEST_METRICS, "test_rows"]].isna().all()  # never evaluated: empty, not zero
    for run in runs:  # the run's wall time, feature encoding included, not only its folds' fitting
        summary = json.loads((run / "cv_summary.json").read_text())
        assert csv.loc[run.name, "train_seconds"] == summary["train_seconds"]
        assert csv.loc[run.name, "train_seconds"] > csv.loc[run.name, "fitting_seconds"] > 0

    names = [f"{r}-vit-b16-bert-base-concat-lr3e-4-seed{i}" for i, r in enumerate(df["run"])]  # as users name runs
    console = Console(width=80, record=True, file=io.StringIO())
    render_comparison(df.assign(run=names), console)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80, "the compare table must fit an 80-column terminal"
    text = "\n".join(lines)
    assert "…" not in text, "a cell cut short to fit"
    assert all(any(name[:16] in line for line in lines) for name in names), "run names squeezed"
    for r in df.itertuples():
        assert f"{r.acc:.4f}" in text and f"{r.macro_f1:.4f}" in text
    assert "test" in text and f"{evaluated['macro_f1']:.4f}" in text and "–" in text  # – : text run, no test


def test_compare_table_has_no_test_columns_without_an_evaluation(runs, tmp_path):
    df = compare_runs(runs[:1], tmp_path)  # the text run: never evaluated
    console = Console(width=80, record=True, file=io.StringIO())
    render_comparison(df, console)
    text = console.export_text()
    assert "CV" in text and "test" not in text


def test_report_html_is_self_contained(runs, evaluated, tmp_path):
    assert main(["report", str(runs[1])]) == 0
    page = (runs[1] / "report.html").read_text()
    assert 'id="title"' in page and "Most confident errors" in page
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) >= 4 and all(s.startswith("data:image/") for s in sources), "pictures must be embedded"
    assert not (runs[1] / "report_files").exists(), "the page is the only file the report writes"
    assert re.search(r"\.card\{[^}]*overflow-wrap:anywhere", page), "long ids must wrap inside their cards"
    assert 'id="test"' in page and f"<td>{evaluated['macro_f1']:.4f}</td>" in page

    assert main(["report", str(runs[0]), "--out", str(tmp_path / "text.html")]) == 0
    assert 'id="test"' not in (tmp_path / "text.html").read_text()  # never evaluated: no test section


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium; .ci/run does)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    assert main(["report", str(runs[1]), "--out", str(tmp_path / "r.html")]) == 0
    flags = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1600",
    ]
    url = (tmp_path / "r.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "aisle report: fusion" in dom
    n_cards = dom.count('class="card"')
    errors = pd.read_csv(runs[1] / "main" / "oof.csv").pipe(lambda d: int((d["label"] != d["pred"]).sum()))
    assert n_cards == min(24, errors)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10, "the page rendered blank"

"""compare and report on tiny runs; the HTML page is rendered in a real headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from aisle.cli import main
from aisle.data.demo import write_demo_catalogue

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


def test_compare_writes_table_and_plots(runs, tmp_path):
    assert main(["compare", *map(str, runs), "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "comparison.csv")
    assert set(df["run"]) == {"text", "fusion"}
    assert df["macro_f1"].is_monotonic_decreasing
    assert df.loc[df["run"] == "fusion", "params"].iloc[0] > df.loc[df["run"] == "text", "params"].iloc[0]
    for name in ("radar.png", "params_vs_time.png", "curves.png", "table.png"):
        assert Image.open(tmp_path / name).size[0] > 100
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # not a run folder


def test_report_html_is_self_contained(runs):
    assert main(["report", str(runs[1])]) == 0
    page = (runs[1] / "report.html").read_text()
    assert 'id="title"' in page and "Most confident errors" in page
    assert 'src="file:' not in page and 'src="/' not in page, "pictures must be embedded"
    assert page.count("data:image/png;base64,") >= 3


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

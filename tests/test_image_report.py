"""Unusable images are reported once per run and per prediction: one summary line and a CSV naming every one."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import pytest

import aisle.data.image_report as image_report
from aisle.config import DataConfig, validate_config
from aisle.data.image_report import images_read, scan_image_issues, summarise, write_image_issues
from aisle.data.images import ImageIssue
from aisle.data.products import load_products
from conftest import write_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _summaries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("images:")]


@pytest.fixture
def messy(make_catalogue, tmp_path: Path):
    """good, two ids with no image file, one empty, one truncated, one text file, one 6400-pixel image, a symlink
    out of the data root, a FIFO; ``multi`` has a good first image and a truncated second one."""
    ids = ["good", "nofile1", "nofile2", "empty", "trunc", "text", "big", "outside", "fifo", "multi"]
    cat = make_catalogue(
        [{"id": i, "title": f"t {i}", "label": "x"} for i in ids],
        images={
            "good.jpg": RED,
            "empty.jpg": "empty",
            "trunc.jpg": "truncated",
            "text.jpg": "text",
            "multi.jpg": BLUE,
            "multi_1.jpg": "truncated",
        },
    )
    write_image(cat.images / "big.png", RED, size=80)
    (cat.images / "outside.jpg").symlink_to(write_image(tmp_path / "elsewhere.jpg", RED))
    os.mkfifo(cat.root / "pipe")  # inside the data root
    (cat.images / "fifo.jpg").symlink_to(cat.root / "pipe")
    return cat


def test_scan_names_every_unusable_image_in_table_order(messy) -> None:
    products = load_products(messy.csv, DataConfig())
    issues = scan_image_issues(products, 1, max_pixels=5000)
    assert [(i.id, i.reason) for i in issues] == [
        ("nofile1", "missing"),
        ("nofile2", "missing"),
        ("empty", "empty_file"),
        ("trunc", "truncated"),
        ("text", "not_an_image"),
        ("big", "decompression_bomb"),
        ("outside", "outside_data_root"),
        ("fifo", "not_a_file"),
    ]
    assert issues[0].path == "" and issues[3].path.endswith("trunc.jpg")
    every = scan_image_issues(products, None, max_pixels=5000)  # all images (random in training)
    assert [(i.id, Path(i.path).name) for i in every if i.id == "multi"] == [("multi", "multi_1.jpg")]


def test_images_read_follows_the_multi_image_mode() -> None:
    assert images_read("first", 4, train=True) == 1
    assert images_read("random", 4, train=True) is None
    assert images_read("random", 4, train=False) == 1
    assert images_read("mean_pool", 3, train=False) == 3


def test_refused_paths_are_reported_once(make_catalogue, tmp_path: Path) -> None:
    write_image(tmp_path / "secret.png", RED)
    cat = make_catalogue([{"id": "a", "image": "../secret.png"}, {"id": "b", "image": "../secret.png;ok.png"}])
    write_image(cat.root / "ok.png", BLUE)
    issues = scan_image_issues(load_products(cat.csv, DataConfig()))
    assert [(i.id, i.reason) for i in issues] == [("a", "outside_data_root"), ("b", "outside_data_root")]


def test_decode_results_are_remembered_per_file(messy, tmp_path: Path, monkeypatch) -> None:
    products = load_products(messy.csv, DataConfig())
    decoded: list[str] = []
    real = image_report.probe_image

    def counting(p, *a):
        decoded.append(Path(p).name)
        return real(p, *a)

    monkeypatch.setattr(image_report, "probe_image", counting)
    first = scan_image_issues(products, 1, 5000, cache_dir=tmp_path / "cache")
    assert sorted(decoded) == ["big.png", "good.jpg", "multi.jpg", "text.jpg", "trunc.jpg"]
    decoded.clear()
    assert scan_image_issues(products, 1, 5000, cache_dir=tmp_path / "cache") == first
    assert decoded == [], "a second scan of unchanged files only stats them"
    write_image(messy.images / "trunc.jpg", BLUE)  # repaired
    again = scan_image_issues(products, 1, 5000, cache_dir=tmp_path / "cache")
    assert decoded == ["trunc.jpg"] and "trunc" not in {i.id for i in again}
    decoded.clear()
    scan_image_issues(products, 1, 100_000, cache_dir=tmp_path / "cache")  # another limit: bombs are re-judged
    assert "big.png" in decoded


def test_summary_line_and_csv(tmp_path: Path) -> None:
    issues = [ImageIssue("a", "", "missing"), ImageIssue("b", "x/b.jpg", "truncated"), ImageIssue("c", "", "missing")]
    line = summarise(issues, 600, "runs/x/image_issues.csv")
    assert line == (
        "images: 3 of 600 products have an unusable image (missing 2, truncated 1); ids in runs/x/image_issues.csv"
    )
    assert summarise(issues, 600).endswith("; ids: a, b, c")
    assert summarise([], 600) == "images: all 600 products have a usable image"
    path = write_image_issues(issues, tmp_path / "out" / "image_issues.csv")
    assert _rows(path) == [{"id": i.id, "path": i.path, "reason": i.reason} for i in issues]


# ---------------------------------------------------------------- once per run, once per prediction


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-fold image-model run on 12 products: 2 without an image file, 1 with a truncated one."""
    from aisle.training import run_cv
    from conftest import write_csv, write_file

    root = tmp_path_factory.mktemp("report")
    ids = [f"p{k}" for k in range(12)]
    for k, pid in enumerate(ids):
        if pid not in ("p3", "p7"):  # no image file at all
            write_file(root / "data" / "images" / f"{pid}.jpg", "truncated" if pid == "p5" else (RED, BLUE)[k % 2])
    rows = [{"id": pid, "title": f"item {k}", "label": "ab"[k % 2]} for k, pid in enumerate(ids)]
    write_csv(root / "data" / "train.csv", rows)
    cfg = validate_config(
        {
            "data": {"train_csv": str(root / "data" / "train.csv"), "folds": 2},
            "model": {"type": "image", "image": {"name": "timm:test_resnet", "pretrained": False}, "image_size": 32},
            "train": {"epochs": 2, "batch_size": 4},
            "runtime": {"num_workers": 0, "cache_dir": str(root / "cache")},
        }
    )
    handler = _Collect()  # what a module-scoped fixture cannot get from caplog
    logger = logging.getLogger("aisle")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        run_cv(cfg, root / "run")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return root, handler.records


def test_a_run_reports_its_images_once_in_one_line_and_a_csv(trained) -> None:
    from aisle.rundir import RunDir

    root, records = trained
    rd = RunDir(root / "run")
    assert {(r["id"], r["reason"]) for r in _rows(rd.image_issues)} == {
        ("p3", "missing"),
        ("p7", "missing"),
        ("p5", "truncated"),
    }
    lines = [r.getMessage() for r in records if r.getMessage().startswith("images:")]
    assert lines == [
        f"images: 3 of 12 products have an unusable image (missing 2, truncated 1); ids in {rd.image_issues}"
    ]
    warned = [r.getMessage() for r in records if r.levelno >= logging.WARNING and "placeholder" in r.getMessage()]
    assert warned == [], "per-item image messages, read every epoch, stay at DEBUG level"
    assert any("placeholder" in r.getMessage() for r in records), "(the loaders did meet the broken images)"


def test_a_prediction_reports_its_images_once_and_writes_the_csv(trained, tmp_path, caplog) -> None:
    from aisle.inference import predict, write_outputs

    root, _ = trained
    with caplog.at_level(logging.DEBUG, logger="aisle"):
        pred = predict(root / "run", root / "data" / "train.csv")
    assert _summaries(caplog) == [
        "images: 3 of 12 products have an unusable image (missing 2, truncated 1); ids: p3, p5, p7"
    ]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and "placeholder" in r.getMessage()] == []
    files = write_outputs(pred, tmp_path / "out")
    assert files["image_issues"] == tmp_path / "out" / "image_issues.csv"
    assert sorted(r["id"] for r in _rows(files["image_issues"])) == ["p3", "p5", "p7"]

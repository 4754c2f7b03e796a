"""``aisle check``: the library report and the CLI command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from aisle.cli import main
from aisle.config import DataConfig
from aisle.data.products import load_products
from aisle.evaluation.check import caption, class_distribution_figure, contact_sheet_figure, run_check

EXPECTED_ISSUES = [("p4", "missing"), ("p5", "missing"), ("p6", "truncated"), ("p7", "empty_file")]


@pytest.fixture
def catalogue(make_catalogue):
    rows = [
        {
            "id": f"p{i}",
            "title": f"product {i}",
            "description": "" if i == 3 else "desc",
            "categories": "a" if i % 2 else "b",
        }
        for i in range(8)
    ]
    images = {f"p{i}.jpg": (40 * i, 100, 200) for i in range(4)}
    images.update({"p1_2.png": (9, 9, 9), "p6.jpg": "truncated", "p7.jpg": "empty"})  # p4, p5: no file
    return make_catalogue(rows, images=images)


def test_run_check_reports_exactly_the_broken_images(catalogue, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = run_check(DataConfig(folds=2), table=catalogue.csv, out_dir=out, workers=2)
    assert [(i.id, i.reason) for i in report.image_issues] == EXPECTED_ISSUES
    assert report.issue_ids == ["p4", "p5", "p6", "p7"]
    assert report.issue_counts == {"missing": 2, "truncated": 1, "empty_file": 1}
    assert report.image_issues[2].path.endswith("p6.jpg")
    assert report.n_rows == 8 and report.products_with_images == 6
    assert report.class_counts == {"a": 4, "b": 4} and report.n_classes == 2 and report.unlabelled == 0
    assert report.columns == {"id": "id", "label": "categories", "text": ["title", "description"], "image": None}
    assert report.rare_classes == [] and report.duplicate_ids == [] and report.empty_texts == 0
    assert not report.fast

    # every row sampled (n_sample > rows); the sample agrees with the issues
    sample = {r.id: r for r in report.sample}
    assert sorted(sample) == [f"p{i}" for i in range(8)]
    assert sample["p1"].n_images == 2 and sample["p1"].image_ok and sample["p1"].size == (16, 16)
    assert (sample["p6"].image_ok, sample["p6"].reason) == (False, "truncated")
    assert (sample["p4"].n_images, sample["p4"].reason) == (0, "missing")
    assert sample["p3"].text == "product 3"


def test_run_check_writes_report_files(catalogue, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = run_check(DataConfig(folds=2), table=catalogue.csv, out_dir=out, workers=2, n_sample=5)
    assert set(report.files) == {"contact_sheet", "class_distribution", "image_issues", "report"}
    for name in ("contact_sheet.png", "class_distribution.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 50 and im.height > 50
    with open(out / "image_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["reason"]) for r in rows] == EXPECTED_ISSUES
    data = json.loads((out / "check_report.json").read_text())
    assert data["n_rows"] == 8 and data["n_issue_ids"] == 4 and len(data["sample"]) == 5
    assert data["issue_counts"] == {"missing": 2, "truncated": 1, "empty_file": 1}
    assert [(i["id"], i["reason"]) for i in data["image_issues"]] == EXPECTED_ISSUES


def test_run_check_without_out_dir_writes_nothing(catalogue, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    report = run_check(DataConfig(folds=2), table=catalogue.csv, workers=1, n_sample=2)
    assert report.files == {}
    assert sorted(tmp_path.rglob("*")) == before


def test_run_check_fast_reports_only_missing(catalogue) -> None:
    report = run_check(DataConfig(folds=2), table=catalogue.csv, fast=True, workers=2)
    assert report.fast
    assert [(i.id, i.reason) for i in report.image_issues] == [("p4", "missing"), ("p5", "missing")]


def test_run_check_uses_the_configured_training_source(catalogue) -> None:
    report = run_check(DataConfig(train_csv=str(catalogue.csv), folds=2), workers=1, n_sample=3)
    assert [(i.id, i.reason) for i in report.image_issues] == EXPECTED_ISSUES
    assert len(report.sample) == 3


def test_run_check_flags_rare_classes_and_duplicates(make_catalogue) -> None:
    cat = make_catalogue([{"id": "x", "label": "a"}, {"id": "x", "label": "a"}, {"id": "y", "label": "b"}])
    report = run_check(DataConfig(folds=2), table=cat.csv, fast=True)
    assert report.rare_classes == ["b"]
    assert report.duplicate_ids == ["x"]
    assert report.empty_texts == 3


def test_run_check_counts_progress(catalogue) -> None:
    done: list[int] = []
    totals: list[int] = []
    run_check(DataConfig(folds=2), table=catalogue.csv, workers=2, progress=done.append, on_total=totals.append)
    assert totals == [7]  # image files listed: p0, p1 (two), p2, p3, p6, p7
    assert sum(done) == 7


def test_run_check_missing_id_column_is_fatal(make_catalogue) -> None:
    cat = make_catalogue([{"sku": "1", "title": "t"}])
    with pytest.raises(ValueError, match="data.id_col"):
        run_check(DataConfig(), table=cat.csv)


# ---------------------------------------------------------------- CLI


def test_cli_check_succeeds_and_writes_the_report(catalogue, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_out"
    rc = main(["check", "--data", str(catalogue.csv), "--out", str(out), "--workers", "1", "--set", "data.folds=2"])
    assert rc == 0
    data = json.loads((out / "check_report.json").read_text())
    assert data["issue_counts"] == {"missing": 2, "truncated": 1, "empty_file": 1}
    assert (out / "contact_sheet.png").is_file()
    assert "p6" in capsys.readouterr().out


def test_cli_check_fast_flag(catalogue, tmp_path: Path) -> None:
    out = tmp_path / "cli_fast"
    assert main(["check", "--data", str(catalogue.csv), "--out", str(out), "--fast"]) == 0
    data = json.loads((out / "check_report.json").read_text())
    assert data["fast"] is True and data["issue_counts"] == {"missing": 2}


def test_cli_check_unknown_key_is_reported(catalogue, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_bad"
    main(["check", "--set", "data.bogus=1", "--data", str(catalogue.csv), "--out", str(out)])
    err = capsys.readouterr().err
    assert "data.bogus" in err and "train_csv" in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--set", "data.bogus=1"], ["--set", "data.multi_image=bogus"]])
def test_cli_check_bad_config_exits_2(catalogue, tmp_path: Path, argv: list[str]) -> None:
    assert main(["check", *argv, "--data", str(catalogue.csv), "--out", str(tmp_path / "o")]) == 2


def test_cli_usage_error_is_non_zero() -> None:
    assert main(["check", "--no-such-option"]) == 2


def test_cli_check_image_dir_with_a_numeric_name(make_catalogue, tmp_path: Path, monkeypatch) -> None:
    cat = make_catalogue([{"id": "a", "label": "x"}], images={})
    from conftest import write_image

    write_image(tmp_path / "2024" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    rc = main(["check", "--data", str(cat.csv), "--image-dir", "2024", "--out", str(out)])
    assert rc == 0 and (out / "check_report.json").is_file()
    assert json.loads((out / "check_report.json").read_text())["image_issues"] == []


LONG_CLASS = "Home Decor & Festive Needs: Cushions, Throws and Seasonal Ornaments"
LONG_ID = "FLIPKART-SKU-00012345-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@pytest.mark.parametrize("label", ["Box", "Home Decor & Festive Needs", LONG_CLASS, "x" * 90])
def test_caption_keeps_the_whole_class_name_and_id(label: str) -> None:
    title, size = caption(label, LONG_ID)
    assert title.replace("\n", "") == label + LONG_ID  # wrapped, never cut
    assert size in (7, 6, 5)
    assert max(map(len, title.split("\n"))) <= int(26 * 7 / size)  # every line fits its cell


def test_contact_sheet_titles_carry_the_whole_class_name(make_catalogue) -> None:
    rows = [{"id": f"p{i}", "title": "t", "categories": LONG_CLASS if i else "b"} for i in range(3)]
    cat = make_catalogue(rows, images={"p0.jpg": (1, 2, 3)})
    cfg = DataConfig(folds=2)
    report = run_check(cfg, table=cat.csv, fast=True)
    fig = contact_sheet_figure(report.sample, load_products(cat.csv, cfg))
    titles = [ax.get_title().replace("\n", "") for ax in fig.axes]
    assert f"{LONG_CLASS}p1" in titles and f"{LONG_CLASS}p2" in titles and "bp0" in titles


@pytest.mark.parametrize(
    ("counts", "scale"),
    [({"a": 50, "b": 40, "c": 5}, "linear"), ({"a": 500, "b": 40, "c": 5}, "log"), ({"a": 7}, "linear")],
)
def test_class_distribution_axis_is_log_only_for_skewed_counts(counts: dict[str, int], scale: str) -> None:
    ax = class_distribution_figure(counts).axes[0]
    assert ax.get_xscale() == scale
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:,}" for v in counts.values())  # a count per bar

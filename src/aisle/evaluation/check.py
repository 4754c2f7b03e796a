"""``aisle check``: a sanity report on a products table before any training."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.data.images import MISSING, ImageIssue, ImageProbe, probe_image
from aisle.data.prepare import load_source
from aisle.data.products import Products, load_products
from aisle.evaluation.plotting import pyplot

__all__ = ["CheckReport", "SampleRow", "run_check"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRow:
    id: str
    label: str | None
    text: str
    n_images: int
    image_ok: bool
    size: tuple[int, int] | None
    reason: str | None


@dataclass
class CheckReport:
    """What ``check`` found. ``image_issues`` is complete unless ``fast`` (then it lists only missing files)."""

    source: str
    n_rows: int
    columns: dict[str, object]
    class_counts: dict[str, int]
    unlabelled: int
    duplicate_ids: list[str]
    empty_texts: int
    rare_classes: list[str]
    sample: list[SampleRow]
    image_issues: list[ImageIssue]
    fast: bool
    products_with_images: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_counts)

    @property
    def issue_counts(self) -> dict[str, int]:
        return dict(Counter(i.reason for i in self.image_issues))

    @property
    def issue_ids(self) -> list[str]:
        return sorted({i.id for i in self.image_issues})

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(n_classes=self.n_classes, issue_counts=self.issue_counts, n_issue_ids=len(self.issue_ids))
        return d


def _probe_all(
    products: Products, max_pixels: int, workers: int, progress: Callable[[int], None] | None
) -> list[ImageIssue]:
    """Decode every image of every product; PIL releases the GIL while decoding, so threads scale."""
    jobs = [(str(pid), p) for pid, paths in zip(products.ids, products.image_paths) for p in paths]

    def probe(job: tuple[str, str]) -> ImageProbe:
        return probe_image(job[1], products.roots, max_pixels)

    issues: list[ImageIssue] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (pid, path), result in zip(jobs, pool.map(probe, jobs, chunksize=64)):
            if not result.ok:
                issues.append(ImageIssue(pid, path, result.reason or "unknown"))
            if progress is not None:
                progress(1)
    return issues


def _contact_sheet(rows: list[SampleRow], products: Products, out: Path, thumb: int = 128) -> Path:
    plt = pyplot()

    from aisle.data.images import open_image, placeholder_image

    n = max(1, len(rows))
    cols = min(8, n)
    nrows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.9, nrows * 2.5), squeeze=False)
    paths = dict(zip(map(str, products.ids), products.image_paths))
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        image = None
        if paths.get(row.id):
            image, _ = open_image(paths[row.id][0], products.roots, draft=(thumb, thumb))
        if image is None:
            image = placeholder_image(thumb)
            ax.text(
                0.5,
                0.5,
                row.reason or "no image",
                color="red",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
        image.thumbnail((thumb, thumb))
        ax.imshow(np.asarray(image))
        label = (row.label or "?")[:22]
        ax.set_title(f"{label}\n{row.id[:22]}", fontsize=7)
    fig.suptitle(f"{products.source}: {len(rows)} sampled products", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _class_plot(counts: dict[str, int], out: Path, top: int = 40) -> Path:
    plt = pyplot()

    items = sorted(counts.items(), key=lambda kv: -kv[1])
    shown = items if len(items) <= top else items[: top // 2] + items[-top // 2 :]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(shown) + 1.2))
    ax.barh([k[:30] for k, _ in shown][::-1], [v for _, v in shown][::-1], color="#4C72B0")
    ax.set_xscale("log")
    ax.set_xlabel("rows (log scale)")
    title = f"{len(items)} classes" + (f" (largest and smallest {top // 2})" if len(items) > top else "")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_check(
    cfg: DataConfig,
    table: str | Path | None = None,
    n_sample: int = 16,
    fast: bool = False,
    out_dir: str | Path | None = None,
    workers: int = 4,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> CheckReport:
    """Inspect a products table and its images.

    Args:
        cfg: data settings (the table is ``data.train_csv`` / ``data.class_folder`` unless ``table`` is given).
        table: a CSV/parquet to check instead of the configured training source.
        n_sample: rows to sample for the table and the contact sheet.
        fast: skip decoding every image (missing files are still found; broken ones are not).
        out_dir: where to write ``check_report.json``, ``image_issues.csv``, ``contact_sheet.png`` and
            ``class_distribution.png``; None writes nothing.
        workers: decoding threads.
        seed: sampling seed.
        progress: called with the number of images done, for a progress bar.
        on_total: called once with the number of images to decode.

    Raises:
        FileNotFoundError / ValueError: the table cannot be read or has no id column (fatal problems).
    """
    products = load_products(table, cfg) if table is not None else load_source(cfg, require_label=False)
    n = len(products)
    labels = pd.Series(products.labels, dtype=object) if products.labels is not None else None
    class_counts = {str(k): int(v) for k, v in labels.value_counts().items()} if labels is not None else {}
    unlabelled = int(labels.isna().sum()) if labels is not None else n
    rare = sorted(k for k, v in class_counts.items() if v < cfg.folds)

    issues = _image_issues(products, cfg.max_image_pixels, fast, workers, progress, on_total)
    sample = _sample_rows(products, labels, n_sample, seed, cfg.max_image_pixels)
    schema = products.schema
    report = CheckReport(
        source=products.source,
        n_rows=n,
        columns={
            "id": schema.id_col,
            "label": schema.label_col,
            "text": list(schema.text_cols),
            "image": schema.image_col,
        },
        class_counts=class_counts,
        unlabelled=unlabelled,
        duplicate_ids=products.duplicate_ids(),
        empty_texts=int(sum(1 for t in products.texts if not str(t).strip())),
        rare_classes=rare,
        sample=sample,
        image_issues=issues,
        fast=fast,
        products_with_images=int(sum(1 for p in products.image_paths if p)),
    )
    if out_dir is not None:
        _write_files(report, products, Path(out_dir))
    return report


def _image_issues(
    products: Products,
    max_pixels: int,
    fast: bool,
    workers: int,
    progress: Callable[[int], None] | None,
    on_total: Callable[[int], None] | None,
) -> list[ImageIssue]:
    """Refused paths, products without an image file and (unless ``fast``) every image that does not decode."""
    no_image = [
        ImageIssue(str(pid), f"<no file for id {pid}>", MISSING)
        for pid, paths in zip(products.ids, products.image_paths)
        if not paths
    ]
    issues = list(products.refused) + no_image
    if not fast:
        if on_total is not None:
            on_total(sum(len(p) for p in products.image_paths))
        issues += _probe_all(products, max_pixels, workers, progress)
    return sorted(issues, key=lambda i: (i.id, i.path))


def _sample_rows(
    products: Products, labels: pd.Series | None, n_sample: int, seed: int, max_pixels: int
) -> list[SampleRow]:
    """``n_sample`` random rows, in table order, with their first image probed."""
    n = len(products)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(n, size=min(n_sample, n), replace=False)) if n else np.array([], dtype=int)
    sample = []
    for i in picks:
        paths = products.image_paths[i]
        probe = probe_image(paths[0], products.roots, max_pixels) if paths else ImageProbe(False, MISSING)
        text = str(products.texts[i])
        sample.append(
            SampleRow(
                str(products.ids[i]),
                None if labels is None else labels.iloc[i],
                text[:60] + ("…" if len(text) > 60 else ""),
                len(paths),
                probe.ok,
                probe.size,
                probe.reason,
            )
        )
    return sample


def _write_files(report: CheckReport, products: Products, out: Path) -> None:
    """The report as JSON, the image issues as CSV, the contact sheet and the class distribution as PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    report.files["contact_sheet"] = str(_contact_sheet(report.sample, products, out / "contact_sheet.png"))
    if report.class_counts:
        report.files["class_distribution"] = str(_class_plot(report.class_counts, out / "class_distribution.png"))
    with open(out / "image_issues.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "reason"])
        w.writerows((i.id, i.path, i.reason) for i in report.image_issues)
    report.files["image_issues"] = str(out / "image_issues.csv")
    report.files["report"] = str(out / "check_report.json")
    (out / "check_report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))

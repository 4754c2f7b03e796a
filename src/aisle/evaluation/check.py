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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from aisle.config import DataConfig
from aisle.data.images import MISSING, ImageIssue, ImageProbe, probe_image
from aisle.data.prepare import load_source
from aisle.data.products import Products, load_products
from aisle.evaluation.plotting import pyplot, save_png, wrap_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CheckReport", "SampleRow", "caption", "class_distribution_figure", "contact_sheet_figure", "run_check"]

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


def contact_sheet_figure(rows: list[SampleRow], products: Products, thumb: int = 128) -> Figure:
    """The sampled products' first images, each under its whole class name and id (wrapped, never cut)."""
    plt = pyplot()

    from aisle.data.images import open_image, placeholder_image

    n = max(1, len(rows))
    cols = min(8, n)
    nrows = int(np.ceil(n / cols))
    titles = [caption(row.label or "?", row.id) for row in rows]
    lines = max((t.count("\n") + 1 for t, _ in titles), default=1)
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.9, nrows * (2.1 + 0.14 * lines)), squeeze=False)
    paths = dict(zip(map(str, products.ids), products.image_paths))
    for ax in axes.flat:
        ax.axis("off")
    for ax, row, (title, size) in zip(axes.flat, rows, titles):
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
        ax.set_title(title, fontsize=size)
    fig.suptitle(f"{products.source}: {len(rows)} sampled products", fontsize=9)
    fig.tight_layout()
    return fig


def caption(
    label: str, pid: str, chars: int = 26, max_lines: int = 5, sizes: tuple[float, ...] = (7, 6, 5)
) -> tuple[str, float]:
    """A contact-sheet title: the class name, then the id, wrapped to the cell's width (``chars`` characters at
    the first size), at the largest font size of ``sizes`` where the two take at most ``max_lines`` lines. Past
    the smallest size they take more lines: nothing is cut, ``title.replace("\\n", "") == label + pid``.

    Returns:
        (title with its line breaks, font size)
    """

    def lines(size: float) -> list[str]:
        width = int(chars * sizes[0] / size)
        return wrap_label(label, width) + wrap_label(pid, width)

    size = next((s for s in sizes if len(lines(s)) <= max_lines), sizes[-1])
    return "\n".join(lines(size)), size


def class_distribution_figure(counts: dict[str, int], top: int = 40, max_ratio: float = 10) -> Figure:
    """Rows per class as bars with their counts; a log axis only where the largest class has more than
    ``max_ratio`` times the rows of the smallest (a linear one reads better for balanced classes)."""
    plt = pyplot()

    items = sorted(counts.items(), key=lambda kv: -kv[1])
    shown = items if len(items) <= top else items[: top // 2] + items[-top // 2 :]
    names = ["\n".join(line.strip() for line in wrap_label(k, 40)) for k, _ in shown][::-1]
    values = [v for _, v in shown][::-1]
    n_lines = sum(name.count("\n") + 1 for name in names)
    fig, ax = plt.subplots(figsize=(7.5, 0.13 * n_lines + 0.09 * len(names) + 1.2))
    bars = ax.barh(names, values, color="#4C72B0")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=7)
    log = items[0][1] > max_ratio * max(1, items[-1][1])
    if log:
        ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * (3 if log else 1.12))  # room for the counts
    ax.set_xlabel("rows (log scale)" if log else "rows")
    title = f"{len(items)} classes" + (f" (largest and smallest {top // 2})" if len(items) > top else "")
    ratio = items[0][1] / max(1, items[-1][1])
    ax.set_title(f"{title}, largest/smallest = {ratio:.1f}x", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


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
    sheet = contact_sheet_figure(report.sample, products)
    report.files["contact_sheet"] = str(save_png(sheet, out / "contact_sheet.png", dpi=100))
    if report.class_counts:
        bars = class_distribution_figure(report.class_counts)
        report.files["class_distribution"] = str(save_png(bars, out / "class_distribution.png", dpi=100))
    with open(out / "image_issues.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "reason"])
        w.writerows((i.id, i.path, i.reason) for i in report.image_issues)
    report.files["image_issues"] = str(out / "image_issues.csv")
    report.files["report"] = str(out / "check_report.json")
    (out / "check_report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))

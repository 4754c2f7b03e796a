"""The ``aisle`` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import contextvars
import logging
import sys
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.markup import escape

from aisle.config import ConfigError, load_config
from aisle.logging_setup import setup_logging
from aisle.progress import rich_progress, set_progress, step

__all__ = ["app", "main"]

app = typer.Typer(
    help="aisle: sort products into categories from their images and text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set train.lr.default=1e-4")]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO, err_console)
    set_progress("rich", err_console)  # every long step of the command draws a bar on stderr


# what a user can cause (bad config, data or paths, read-only folders, a folder in use): a message and exit 2, no
# traceback. FileNotFoundError, FileExistsError, PermissionError and aisle.locking.FolderLocked are OSErrors.
# A missing package (a tokenizer's sentencepiece, an extra) is one too: the message names it.
_USER_ERRORS = (ConfigError, ValueError, OSError, ImportError)


def _fail(msg: str | BaseException, code: int = 2) -> None:
    if isinstance(msg, ImportError) and "pip install" not in str(msg):  # a message that says what to install is kept
        fix = f"pip install {msg.name}" if msg.name else "install the package it names"
        msg = f"a package this needs is missing: {msg} ({fix}; `make venv` installs everything aisle uses)"
    err_console.print(f"[bold red]error:[/] {escape(str(msg))}", highlight=False)  # [brackets] printed as is
    raise typer.Exit(code)


def _writable(folder: Path, what: str) -> None:
    """Fail now, before any work, when ``folder`` cannot be written."""
    from aisle.paths import require_writable

    try:
        require_writable(folder, what)
    except PermissionError as e:
        _fail(e)


@app.command()
def check(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: Annotated[Path | None, typer.Option(help="Table to check instead of data.train_csv.")] = None,
    image_dir: Annotated[Path | None, typer.Option(help="Image folder (default: images/ beside the table).")] = None,
    rows: Annotated[int, typer.Option(min=1, help="Rows to sample for the table and contact sheet.")] = 16,
    fast: Annotated[bool, typer.Option("--fast", help="Skip decoding every image.")] = False,
    out: Annotated[Path | None, typer.Option(help="Folder for the report, issues CSV and PNGs.")] = Path("check"),
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 4,
) -> None:
    """Sanity-check a products table: columns, samples, class balance, missing and broken images."""
    from aisle.cli._render import render_check
    from aisle.evaluation.check import run_check

    if out is not None:
        _writable(out, "output folder (--out)")
    try:
        cfg = load_config(config, list(set_ or []))
        if image_dir is not None:
            cfg.data.image_dir = str(image_dir)  # a path, not a YAML value: set after parsing
        if data is None and not (cfg.data.train_csv or cfg.data.class_folder):
            _fail("nothing to check: pass --data TABLE or a --config with data.train_csv / data.class_folder")
        with rich_progress(err_console) as bar:
            task = bar.add_task("decoding images", total=None)
            report = run_check(
                cfg.data,
                data,
                n_sample=rows,
                fast=fast,
                out_dir=out,
                workers=workers,
                progress=lambda k: bar.advance(task, k),
                on_total=lambda n: bar.update(task, total=n),
            )
    except _USER_ERRORS as e:
        _fail(e)
    render_check(report, console)


@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (default: output_dir/name).")] = None,
    fold: Annotated[list[int] | None, typer.Option("--fold", help="Train only this fold (repeatable).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the interrupted run in this folder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
    preset: Annotated[
        str | None, typer.Option(help="Train a portfolio (cpu or gpu) on the config's data and blend it.")
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option(help="--preset: pretrained towers from this folder instead of the hubs.")
    ] = None,
) -> None:
    """Train with K-fold cross-validation (every stage, chosen folds) and write the run folder."""
    from aisle.cli._render import render_cv, render_ensemble
    from aisle.training import run_cv

    _check_train_options(config, set_, run_dir, resume, overwrite, preset, models_dir)
    try:
        if preset is not None:
            from aisle.training.portfolio import run_portfolio

            if resume is not None or fold:
                _fail("--preset trains every fold of every member; run the same command again to go on")
            cfg = load_config(config, list(set_ or []))
            summary = run_portfolio(cfg, preset, run_dir, models_dir, overwrite)
            render_ensemble(summary["ensemble"], console)
            return
        if resume is not None:
            summary = run_cv(load_config(), run_dir=resume, resume=True, folds=fold)
        else:
            cfg = load_config(config, list(set_ or []))
            summary = run_cv(cfg, run_dir=run_dir, overwrite=overwrite, folds=fold)
    except _USER_ERRORS as e:
        _fail(e)
    if summary:  # empty in the extra processes of a multi-process (DDP) run
        render_cv(summary, console)


def _check_train_options(
    config: Path | None,
    set_: list[str] | None,
    run_dir: Path | None,
    resume: Path | None,
    overwrite: bool,
    preset: str | None,
    models_dir: Path | None,
) -> None:
    """Refuse options that the chosen way of training would silently ignore."""
    if resume is not None:
        given = {"--config": config, "--set": set_, "--run-dir": run_dir, "--overwrite": overwrite}
        ignored = [name for name, value in given.items() if value]
        if ignored:
            _fail(
                f"--resume continues the run in {resume} with the config saved in it; {', '.join(ignored)} would be "
                f"ignored. To train with other settings, start a new run: aisle train -c CONFIG --set KEY=VALUE "
                f"--run-dir NEW_FOLDER (or --overwrite to replace a run)"
            )
    if models_dir is not None and preset is None:
        _fail("--models-dir only applies with --preset; for one model, name local folders in the config (hf:/path)")


_PredictData = Annotated[
    Path | None,
    typer.Option(
        help="Products table, or a folder of images (ids: their paths in it), to predict "
        "(default: the run's data.test_csv)."
    ),
]


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A trained run folder.")],
    data: _PredictData = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN_DIR/predictions).")] = None,
    fold: Annotated[list[int] | None, typer.Option("--fold", help="Use only this fold's model (repeatable).")] = None,
    tta: Annotated[list[str] | None, typer.Option("--tta", help="TTA policy, e.g. hflip (repeatable).")] = None,
    scale: Annotated[
        list[int] | None, typer.Option("--scale", min=8, help="Image size to average over (repeatable).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Rows per batch.")] = None,
    image_dir: Annotated[Path | None, typer.Option(help="Image folder (default: images/ beside the table).")] = None,
    allow_missing_text: Annotated[
        bool, typer.Option("--allow-missing-text", help="Go on when the table lacks text columns the run used.")
    ] = False,
    allow_missing_images: Annotated[
        bool, typer.Option("--allow-missing-images", help="Go on when no row has an image and the model reads them.")
    ] = False,
    stage: Annotated[str | None, typer.Option(help="Training stage whose models predict (default: the last).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change how the input is read or where it runs: data.max_image_pixels, data.encoding, data.sep, "
            "data.image_dir, data.data_root, data.image_col, data.image_sep, data.id_col, runtime.*",
        ),
    ] = None,
) -> None:
    """Predict with a run's fold models (averaged): writes submission.csv and probabilities.csv."""
    from aisle.inference import predict as run_predict
    from aisle.inference import write_outputs
    from aisle.rundir import RunDir

    out = out or RunDir(run_dir).predictions
    _writable(out, "output folder (--out)")
    try:
        with step("predicting", None) as advance:
            pred = run_predict(
                run_dir,
                data,
                folds=fold,
                tta=tta,
                scales=scale,
                batch_size=batch_size,
                image_dir=image_dir,
                progress=advance,
                allow_missing_text=allow_missing_text,
                allow_missing_images=allow_missing_images,
                stage=stage,
                overrides=list(set_ or []),
            )
        files = write_outputs(pred, out)
    except _USER_ERRORS as e:
        _fail(e)
    of_stage = f" of stage {pred.stage!r}" if pred.stage else ""
    console.print(f"{len(pred.ids):,} rows predicted with {len(pred.fold_probs)} fold model(s){of_stage}", markup=False)
    for name, path in files.items():
        console.print(f"wrote {name}: {path}", markup=False)


@app.command()
def evaluate(
    probabilities: Annotated[Path, typer.Argument(help="probabilities.csv from predict or ensemble.")],
    labels: Annotated[Path, typer.Option(help="Labelled table (id + label column), joined by id.")],
    out: Annotated[Path | None, typer.Option(help="Folder for metrics.json, per_class.csv, confusion matrix.")] = None,
    label_col: Annotated[str | None, typer.Option(help="Label column (default: categories, else label).")] = None,
) -> None:
    """Score predictions: accuracy, top-3, macro/weighted F1, precision/recall, confusion matrix (CSV + PNG)."""
    from aisle.cli._render import render_evaluation
    from aisle.evaluation.evaluate import EvaluationDir, evaluate_files

    try:
        ev = evaluate_files(probabilities, labels, out or EvaluationDir.beside(probabilities).root, label_col)
    except _USER_ERRORS as e:
        _fail(e)
    render_evaluation(ev, console)
    where = out or EvaluationDir.beside(probabilities).root
    console.print(f"wrote metrics, per-class report and confusion matrix to {where}", markup=False)


@app.command()
def ensemble(
    inputs: Annotated[list[Path], typer.Argument(help="probabilities.csv files; with --fit: finished run folders.")],
    weight: Annotated[list[float] | None, typer.Option("--weight", help="One weight per file (repeatable).")] = None,
    fit: Annotated[bool, typer.Option("--fit", help="Fit the weights on the runs' out-of-fold predictions.")] = False,
    metric: Annotated[str, typer.Option(help="--fit: what the weights optimise: log_loss or macro_f1.")] = "log_loss",
    method: Annotated[
        str, typer.Option(help="--fit: select (bagged selection on --metric) or peers (equal weights, best's peers).")
    ] = "select",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("ensemble"),
    label_col: Annotated[str, typer.Option(help="Label column name in submission.csv.")] = "categories",
) -> None:
    """Average several runs: given weights over probability files, or (--fit) weights fitted on the runs'
    out-of-fold predictions, saved as an ensemble that predict and report take like a run."""
    if fit:
        _fit_ensemble(inputs, metric, method, out)
        return
    import numpy as np

    from aisle.inference.ensemble import ensemble_probabilities
    from aisle.tables import write_table

    _writable(out, "output folder (--out)")
    try:
        probs = ensemble_probabilities(inputs, weight)
        out.mkdir(parents=True, exist_ok=True)
        write_table(probs, out / "probabilities.csv")
        classes = [c for c in probs.columns if c != "id"]
        best = np.asarray(classes, dtype=object)[probs[classes].to_numpy().argmax(1)]
        write_table(probs[["id"]].assign(**{label_col: best}), out / "submission.csv")
    except _USER_ERRORS as e:
        _fail(e)
    console.print(
        f"ensembled {len(inputs)} files over {len(probs):,} rows; wrote {out}/submission.csv, {out}/probabilities.csv",
        markup=False,
    )


def _fit_ensemble(runs: list[Path], metric: str, method: str, out: Path) -> None:

    from aisle.cli._render import render_ensemble
    from aisle.training.blend import BlendMethod, BlendMetric, fit_ensemble

    if metric not in ("log_loss", "macro_f1"):
        _fail(f"--metric {metric!r}: valid choices: log_loss, macro_f1")
    if method not in ("select", "peers"):
        _fail(f"--method {method!r}: valid choices: select, peers")
    try:
        summary = fit_ensemble(runs, out, metric=cast(BlendMetric, metric), method=cast(BlendMethod, method))
    except _USER_ERRORS as e:
        _fail(e)
    render_ensemble(summary["ensemble"], console)
    console.print(f"wrote the ensemble to {out} (aisle predict {out} / aisle report {out})", markup=False)


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished run folders.")],
    out: Annotated[Path, typer.Option(help="Output folder for comparison.csv and the plots.")] = Path("comparison"),
) -> None:
    """Compare runs: a summary table (CSV + PNG), radar chart, params-vs-time scatter, training curves."""
    from aisle.cli._render import render_comparison
    from aisle.evaluation.compare import compare_runs

    try:
        df = compare_runs(run_dirs, out)
    except _USER_ERRORS as e:
        _fail(e)
    render_comparison(df, console)
    console.print(f"wrote {out}/comparison.csv, table.png, radar.png, params_vs_time.png, curves.png", markup=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: RUN_DIR/report.html).")] = None,
    errors: Annotated[int, typer.Option(min=0, help="Worst errors to show as pictures.")] = 24,
) -> None:
    """One self-contained HTML page: config, CV metrics, curves, confusion matrix, per-class F1, worst errors."""
    from aisle.evaluation.report import write_report

    try:
        path = write_report(run_dir, out, errors)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(f"wrote {path}", markup=False)


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write train.csv, test.csv, test_labels.csv, images/.")],
    n_train: Annotated[int, typer.Option(help="Training products.")] = 600,
    n_test: Annotated[int, typer.Option(help="Test products.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    image_size: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 64,
) -> None:
    """Write the built-in synthetic product catalogue (image and text each carry part of the class)."""
    from aisle.data.demo import write_demo_catalogue

    if n_train < 1 or n_test < 0:
        _fail("--n-train must be >= 1 and --n-test >= 0")
    _writable(out, "output folder")
    try:
        summary = write_demo_catalogue(out, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(
        f"wrote {summary.n_train} train and {summary.n_test} test products, {len(summary.classes)} classes, "
        f"{len(summary.broken)} broken/missing images on purpose, to {summary.out_dir}",
        markup=False,
    )


from aisle.cli._export import export  # noqa: E402  (registered here: the modules need none of the above)
from aisle.cli._pseudo import pseudo_label_command  # noqa: E402
from aisle.cli._serve import serve  # noqa: E402
from aisle.cli._zero_shot import zero_shot  # noqa: E402

app.command()(serve)
app.command()(export)
app.command("pseudo-label")(pseudo_label_command)
app.command("zero-shot")(zero_shot)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (for tests and ``python -m aisle``)."""
    args = argv if argv is not None else sys.argv[1:]
    try:  # in a copy of the context: the progress choice made for this command does not outlive it
        contextvars.copy_context().run(app, args=args, prog_name="aisle", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0

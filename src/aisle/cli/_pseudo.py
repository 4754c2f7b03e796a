"""``aisle pseudo-label``: confident predictions on unlabelled products as a table for ``data.pseudo_labels``, and
``--rounds R`` of train -> pseudo-label -> train again (registered on the app in ``aisle.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["pseudo_label_command"]


def _print_counts(counts, rows: int, total: int, threshold: float, path: Path) -> None:
    from rich.table import Table

    from aisle.cli import console

    t = Table(title=f"{rows:,} of {total:,} rows pseudo-labelled (top probability >= {threshold:g})")
    for name in ("class", "predicted", "kept"):
        t.add_column(name, justify="left" if name == "class" else "right")
    for c, p, k in counts[["class", "predicted", "kept"]].itertuples(index=False):
        t.add_row(str(c), f"{p:,}", f"{k:,}")
    console.print(t)
    console.print(f"wrote {path} (train on it with --set data.pseudo_labels={path})", markup=False)


def pseudo_label_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run or ensemble folder.")],
    data: Annotated[Path, typer.Option(help="Unlabelled products (e.g. test.csv) with the run's columns.")],
    threshold: Annotated[float, typer.Option(help="The least top probability a row needs.")] = 0.95,
    max_per_class: Annotated[
        int | None, typer.Option(min=1, help="At most this many rows per predicted class (the most confident).")
    ] = None,
    soft: Annotated[bool, typer.Option("--soft", help="Keep the whole distribution: a soft-target loss.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="The table (default: RUN_DIR/pseudo_labels/pseudo_labels.csv).")
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=0, help="Then train again with the table, R times (folders RUN_DIR-pl1, -pl2, ...).")
    ] = 0,
    pseudo_weight: Annotated[
        float | None, typer.Option(help="--rounds: train.pseudo_weight of the new runs (default: the run's).")
    ] = None,
) -> None:
    """Write the run's confident predictions on --data as pseudo-labelled rows; with --rounds, retrain on them.

    The rows join the training part of every fold only: validation folds, out-of-fold predictions, CV scores and
    ensemble weights use the real labels alone, so a round's CV score compares with the original run's."""
    from aisle.cli import _USER_ERRORS, _fail, console

    try:
        if rounds == 0:
            from aisle.inference.pseudo_label import pseudo_label

            res = pseudo_label(run_dir, data, threshold, max_per_class, soft, out)
            _print_counts(res.counts, res.rows, res.total, threshold, res.path)
            return
        if out is not None:
            _fail("--out names one table; with --rounds each round writes into the model's folder that labelled it")
        from aisle.pseudo_rounds import pseudo_rounds

        for r in pseudo_rounds(run_dir, data, rounds, threshold, max_per_class, soft, pseudo_weight):
            _print_counts(r.table.counts, r.table.rows, r.table.total, threshold, r.table.path)
            console.print(
                f"round {r.round}: {r.run_dir} CV macro-F1 {r.summary['mean']['macro_f1']:.4f} (real rows only)",
                markup=False,
            )
    except _USER_ERRORS as e:
        _fail(e)

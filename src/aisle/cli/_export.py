"""``aisle export``: a run's fold models as one checked ONNX graph (registered on the app in ``aisle.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["export"]


def export(
    run_dir: Annotated[Path, typer.Argument(help="A trained run folder.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for model.onnx and preprocess.json (default: RUN_DIR/onnx).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Sample products for the parity check (default: the run's data.test_csv).")
    ] = None,
    image_dir: Annotated[
        Path | None, typer.Option(help="The sample's image folder (default: images/ beside it).")
    ] = None,
    fold: Annotated[
        list[int] | None, typer.Option("--fold", help="Export only this fold's model (repeatable).")
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Sample rows for the parity check.")] = 8,
    tolerance: Annotated[float, typer.Option(min=0, help="Largest allowed probability difference vs torch.")] = 1e-4,
) -> None:
    """Export a run to ONNX (folds averaged in one graph); onnxruntime is checked against torch on a sample."""
    from aisle.cli import _USER_ERRORS, _fail, console
    from aisle.config import load_config
    from aisle.rundir import RunDir

    try:
        from aisle.inference.export import ExportError, export_onnx
        from aisle.tables import read_table

        rd = RunDir(run_dir).require_finished()
        cfg = load_config(rd.config)
        if data is None and not cfg.data.test_csv:
            _fail("no sample products: pass --data TABLE (a few rows of the kind the run predicts)")
        table = data or Path(str(cfg.data.test_csv))
        sample = read_table(table, cfg.data.sep, cfg.data.encoding).head(rows)
        images = image_dir or (table.parent / "images")
        result = export_onnx(rd.root, out, sample, images, fold or None, tolerance)
    except ImportError as e:
        _fail(f"export needs onnx and onnxruntime: pip install 'aisle[onnx]' ({e})")
    except (ExportError, *_USER_ERRORS) as e:
        _fail(e)
    console.print(f"wrote {result['model']} (max |onnxruntime - torch| = {result['max_abs_diff']:.1e})", markup=False)

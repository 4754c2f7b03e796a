"""``aisle serve``: a trained run behind HTTP (registered on the app in ``aisle.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    run_dir: Annotated[Path, typer.Argument(help="A trained run or ensemble folder.")],
    host: Annotated[str, typer.Option(help="Address to bind (other than loopback: reachable from outside).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    fold: Annotated[list[int] | None, typer.Option("--fold", help="Use only this fold's model (repeatable).")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Items gathered into one forward pass (1: off).")] = 32,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for more items.")] = 2.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body.")] = 20.0,
    max_items: Annotated[int, typer.Option(min=1, help="Most items per request.")] = 64,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the model.")] = None,
    backend: Annotated[str, typer.Option(help="torch, or onnx (the graph `aisle export` wrote into RUN_DIR/onnx).")] = (
        "torch"
    ),
) -> None:
    """Serve a run over HTTP: POST /v1/predict, GET /health, /ready, /metrics, /v1/model."""
    from aisle.cli import _fail
    from aisle.rundir import RunDir

    try:
        import uvicorn

        from aisle.serve import ServeSettings
        from aisle.serve.app import create_app
    except ImportError as e:
        _fail(f"serving needs its extra: pip install 'aisle[serve]' ({e})")
    rd = RunDir(run_dir)
    if not (rd.is_ensemble() or rd.is_finished()):
        _fail(f"{run_dir} is not a finished run or ensemble folder: train one with `aisle train`")
    if backend not in ("torch", "onnx"):
        _fail(f"--backend {backend!r} is not one of: torch, onnx")
    if backend == "onnx" and not (rd.onnx / "model.onnx").is_file():
        _fail(f"{rd.onnx / 'model.onnx'} does not exist: export the run first (aisle export {rd.root})")
    settings = ServeSettings(
        rd.root, fold or None, max_batch, max_wait_ms, max_body_mb, max_items, threads=threads, backend=backend
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")

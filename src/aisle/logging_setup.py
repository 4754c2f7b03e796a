"""Logging for the CLI: rich-rendered, one place."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["setup_logging"]


def setup_logging(level: int = logging.INFO, console: Console | None = None) -> None:
    """Route the ``aisle`` loggers (and warnings) through rich; library code only calls ``logging``."""
    handler = RichHandler(console=console or Console(stderr=True), show_path=False, rich_tracebacks=False,
                          markup=False, log_time_format="[%X]")
    root = logging.getLogger("aisle")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)

"""Logging for the CLI: rich-rendered, one place."""

from __future__ import annotations

import logging
import warnings

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["setup_logging"]


def setup_logging(level: int = logging.INFO, console: Console | None = None) -> None:
    """Route the ``aisle`` loggers (and warnings) through rich; library code only calls ``logging``."""
    handler = RichHandler(
        console=console or Console(stderr=True),
        show_path=False,
        rich_tracebacks=False,
        markup=False,
        log_time_format="[%X]",
    )
    root = logging.getLogger("aisle")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)
    # Lightning's banners (accelerator summary, product tips) are noise next to our own progress lines
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # frozen towers are kept in eval mode on purpose (BatchNorm statistics, dropout)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

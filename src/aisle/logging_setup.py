"""Logging: rich-rendered for the CLI, and the third-party noise both the CLI and the Python API hide."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["hide_lightning_banners", "quiet_libraries", "setup_logging"]

# Lightning's banners (accelerator summary, product tips, "stopped: max_epochs reached") are noise next to ours
_CHATTY = ("lightning.pytorch", "lightning.fabric", "lightning")
_NOISE = (
    r"Found \d+ module\(s\) in eval mode",  # frozen towers are kept in eval mode on purpose (BatchNorm, dropout)
    r".*isinstance\(treespec, LeafSpec\)",  # a deprecation inside Lightning, nothing a user can act on
)


def hide_lightning_banners() -> None:
    """Lightning sets its loggers to INFO when it is imported (after the CLI set up logging, since torch is
    imported lazily): call this where aisle builds a Trainer, when Lightning is surely imported."""
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


def _hide_noise() -> None:
    hide_lightning_banners()
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide the third-party noise inside the block only (the Python API: the caller's logging is restored)."""
    loggers = [logging.getLogger(name) for name in _CHATTY]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings():
            _hide_noise()
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


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
    _hide_noise()

"""Progress of long steps, one owner: library code opens a :func:`step`; what is drawn is the caller's choice.

The CLI draws rich bars (rows, rows/s, time left) on stderr, the Python API tqdm bars (``Classifier(progress=...)``),
and with no choice made nothing is drawn. The same choice turns Lightning's epoch bar on or off
(:func:`bars_on`). ``AISLE_PROGRESS=0`` in the environment turns every bar off (benchmarks, CI logs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["Advance", "bar_kind", "bars_on", "rich_progress", "set_progress", "show_progress", "step"]

Advance = Callable[[int], None]
Kind = Literal["rich", "tqdm"]


class _Sink(Protocol):
    kind: Kind

    def open(self, description: str, total: int | None) -> tuple[Advance, Callable[[], None]]: ...


class _Rate(ProgressColumn):
    """``1,234 rows/s`` once a rate is known."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")


def rich_progress(console: Console) -> Progress:
    """The CLI's bar: description, bar, done/total, rows/s, time left; removed when finished."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class _RichSink:
    kind: Kind = "rich"

    def __init__(self, console: Console) -> None:
        self.console = console

    def open(self, description: str, total: int | None) -> tuple[Advance, Callable[[], None]]:
        bar = rich_progress(self.console)
        bar.start()
        task = bar.add_task(description, total=total)
        return (lambda k: bar.advance(task, k)), bar.stop


class _TqdmSink:
    kind: Kind = "tqdm"

    def open(self, description: str, total: int | None) -> tuple[Advance, Callable[[], None]]:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=description, unit="rows", leave=False, dynamic_ncols=True)
        return bar.update, bar.close


_SINK: ContextVar[_Sink | None] = ContextVar("aisle_progress", default=None)


def _sink(kind: Kind | None, console: Console | None) -> _Sink | None:
    if kind == "rich":
        return _RichSink(console or Console(stderr=True))
    return _TqdmSink() if kind == "tqdm" else None


def _enabled() -> bool:
    return os.environ.get("AISLE_PROGRESS", "1") != "0"


@contextmanager
def show_progress(kind: Kind | None, console: Console | None = None) -> Iterator[None]:
    """Draw the steps opened inside this block as ``kind`` bars (None: draw nothing)."""
    token = _SINK.set(_sink(kind, console))
    try:
        yield
    finally:
        _SINK.reset(token)


def set_progress(kind: Kind | None, console: Console | None = None) -> None:
    """Like :func:`show_progress` for the rest of the current context (the CLI's root callback)."""
    _SINK.set(_sink(kind, console))


def bar_kind() -> Kind | None:
    """The kind of bars the caller asked for, or None (Lightning's epoch bar follows this)."""
    sink = _SINK.get()
    return sink.kind if sink is not None and _enabled() else None


def bars_on() -> bool:
    """Whether a caller asked for bars."""
    return bar_kind() is not None


@contextmanager
def step(description: str, total: int | None) -> Iterator[Advance]:
    """A long step: yields ``advance(n_rows_done)``; draws a bar when the caller asked for bars."""
    sink = _SINK.get()
    if sink is None or not _enabled():
        yield lambda _k: None
        return
    advance, close = sink.open(description, total)
    try:
        yield advance
    finally:
        close()

"""What ``aisle serve`` is told: the run, the address and the limits on what a request may hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one server.

    Attributes:
        run_dir: a finished run or ensemble folder.
        folds: fold models to average (None: the run's ``infer.folds``, else all).
        max_batch: items gathered into one forward pass (1: no micro-batching).
        max_wait_ms: how long the first waiting item waits for others to join its batch.
        max_body_mb: the largest request body.
        max_items: the most items in one request.
        max_text_chars: the longest text field.
        threads: CPU threads for torch (None: torch's default).
        top_k: labels per item when the request does not say.
        backend: ``torch``, or ``onnx`` (the graph ``aisle export`` wrote into the run's ``onnx/`` folder).
    """

    run_dir: Path
    folds: list[int] | None = None
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_body_mb: float = 20.0
    max_items: int = 64
    max_text_chars: int = 20_000
    threads: int | None = None
    top_k: int = 5
    backend: str = "torch"

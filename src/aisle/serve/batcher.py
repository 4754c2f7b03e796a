"""Micro-batching: items of concurrent requests gathered into one forward pass.

Each request puts its items on a queue and waits; one task takes items until ``max_batch`` are gathered or
``max_wait_ms`` have passed since the first, runs the model once (in a worker thread, so the event loop keeps
accepting requests) and hands each request its rows. With ``max_batch=1`` every request runs alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Batcher"]


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future


class Batcher:
    """Gathers items into batches for ``run`` (items -> (N, C) probabilities).

    Args:
        run: the model call; it runs in one worker thread, one batch at a time.
        max_batch: the most items in one call (a request with more runs alone).
        max_wait_ms: how long a batch waits for more items after its first.
        on_batch: called with each batch's size (metrics).
    """

    def __init__(
        self,
        run: Callable[[Sequence[Any]], np.ndarray],
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run, self.max_batch, self.max_wait = run, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aisle-model")
        self._task: asyncio.Task | None = None
        self._carried: _Job | None = None  # a job that did not fit the last batch: it starts the next one

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def predict(self, items: Sequence[Any]) -> np.ndarray:
        """This request's rows, in order (raises what the model call raised)."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(items, future))
        return await future

    async def _gather(self) -> list[_Job]:
        first, self._carried = self._carried, None
        jobs = [first if first is not None else await self._queue.get()]
        size, deadline = len(jobs[0].items), time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:
                job = (
                    self._queue.get_nowait()
                    if self.max_wait == 0
                    else await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic()))
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if size + len(job.items) > self.max_batch:
                self._carried = job
                break
            jobs.append(job)
            size += len(job.items)
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            items = [item for job in jobs for item in job.items]
            if self.on_batch is not None:
                self.on_batch(len(items))
            try:
                probs = await loop.run_in_executor(self._pool, self.run, items)
            except Exception as e:  # every waiting request gets the error; the server keeps serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(probs[start : start + len(job.items)])
                start += len(job.items)

"""The HTTP service: ``POST /v1/predict``, ``GET /health``, ``/ready``, ``/metrics``, ``/v1/model``.

The model is loaded once, in the background, from the run folder alone (``/ready`` turns true when it is in
memory). Requests are checked before any model work: body size, item count, field types and text length, and
every image is decoded up front, so a bad item gets a 4xx naming it and never reaches a batch. Nothing from a
request is written to disk and no URL in it is ever fetched.

``POST /v1/predict`` takes a JSON body (:func:`aisle.serve.items.parse_items`) or, when the Content-Type says
``multipart/form-data``, a form with image files (:mod:`aisle.serve.forms`: a text field ``items`` with the JSON
list of items and a file ``image.<i>`` per item, ``i`` its position from 0; or one item's fields and one ``image``
file). Both are read through the same body limit and give the same items, so the same answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from aisle.serve.batcher import Batcher
from aisle.serve.forms import media_type, parse_form
from aisle.serve.items import RequestError, parse_items, top_k
from aisle.serve.settings import ServeSettings

if TYPE_CHECKING:
    from aisle.inference.predictor import Predictor

__all__ = ["create_app"]


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aisle_requests", "Prediction requests", ["status"], registry=self.registry)
        self.items = Counter("aisle_items", "Items predicted", registry=self.registry)
        self.latency = Histogram(
            "aisle_request_seconds",
            "Prediction request latency",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.batch = Histogram(
            "aisle_batch_items", "Items per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry
        )


class _State:
    """The model, loaded in a background thread, and what the endpoints need of it."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.predictor: Predictor | None = None
        self.error: str | None = None
        self.loaded = threading.Event()

    def predict(self, items: Sequence[Any]) -> np.ndarray:
        if self.predictor is None:
            raise ValueError("the model is not loaded")
        return self.predictor.predict_proba(items)

    def load(self) -> None:
        try:
            import torch

            from aisle.inference.predictor import Predictor

            if self.settings.threads:
                torch.set_num_threads(self.settings.threads)
            self.predictor = Predictor(self.settings.run_dir, self.settings.folds, self.settings.backend)
        except Exception as e:  # /ready says why
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.loaded.set()


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _info_routes(app: FastAPI, state: _State, metrics: _Metrics) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        ok = state.predictor is not None
        body = {"ready": ok, "loading": not state.loaded.is_set(), "error": state.error}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model() -> JSONResponse:
        if state.predictor is None:
            return _error(503, "the model is not loaded yet", loading=not state.loaded.is_set())
        return JSONResponse(state.predictor.describe())


def _too_big(limit: int, size: int | None = None) -> JSONResponse:
    what = "request body" if size is None else f"request body of {size:,} bytes"
    return _error(413, f"{what} is over the limit of {limit:,} bytes (--max-body-mb)")


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes (one sent without a Content-Length, which the
    middleware cannot check, is never held whole)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, content_type: str, predictor: Predictor, settings: ServeSettings) -> list[dict[str, Any]]:
    """The items of a multipart form or, whatever else the Content-Type says, of a JSON body.

    Raises:
        RequestError: a bad body; 415 for a form without files (``x-www-form-urlencoded``): send it as multipart.
    """
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return parse_form(body, content_type, predictor, settings)
    if kind == "application/x-www-form-urlencoded":
        raise RequestError(415, "send the form as multipart/form-data (even with no file in it) or send JSON")
    return parse_items(body, predictor, settings)


def _predict_route(app: FastAPI, state: _State, metrics: _Metrics, settings: ServeSettings) -> None:
    limit = int(settings.max_body_mb * 2**20)

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limit:
            return _too_big(limit, int(size))
        return await call_next(request)

    async def answer(request: Request, k: int) -> JSONResponse:
        if state.predictor is None:
            return _error(503, "the model is not loaded yet; poll /ready")
        body = await _read_body(request, limit)
        if body is None:
            return _too_big(limit)
        try:
            content_type = request.headers.get("content-type", "")
            items = await asyncio.to_thread(_parse, body, content_type, state.predictor, settings)
        except RequestError as e:
            return _error(e.status, str(e), item=e.item, field=e.field)
        try:
            probs = await request.app.state.batcher.predict(items)
        except ValueError as e:
            return _error(500, str(e))
        metrics.items.inc(len(items))
        return JSONResponse({"predictions": top_k(items, probs, state.predictor.classes, k)})

    @app.post("/v1/predict")
    async def predict(request: Request, k: int = Query(default=settings.top_k, ge=1)) -> JSONResponse:
        start = time.perf_counter()
        response = await answer(request, k)
        metrics.requests.labels(status=str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - start)
        return response


def create_app(settings: ServeSettings, load_in_background: bool = True) -> FastAPI:
    """The FastAPI app for one run (uvicorn serves it; tests call it in process).

    Args:
        settings: the run and the limits.
        load_in_background: load the model in a thread (``/health`` answers at once, ``/ready`` when loaded).
    """
    state, metrics = _State(settings), _Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if load_in_background:
            threading.Thread(target=state.load, daemon=True, name="aisle-load").start()
        else:
            state.load()
        app.state.batcher = Batcher(state.predict, settings.max_batch, settings.max_wait_ms, metrics.batch.observe)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    app = FastAPI(title="aisle", lifespan=lifespan)
    _info_routes(app, state, metrics)
    _predict_route(app, state, metrics, settings)
    return app

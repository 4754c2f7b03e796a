"""``aisle serve``: a trained run behind HTTP (FastAPI + uvicorn), with micro-batching and Prometheus metrics."""

from aisle.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
